"""OAuth2 accounts in the store and in account files: the client secret and the refresh
token are encrypted like the password, never in the ``settings`` JSONB (where a dump would
write them masked, and reading back would replace the secret with the mask), and
exports write references, never values. On the stack's PostgreSQL, in a migrated schema
of the test's own."""

from __future__ import annotations

import textwrap

import pytest
from sqlalchemy import create_engine, select

from services.fetcher.account import Account
from services.fetcher.account_file import export_text, read_account_file
from services.fetcher.account_store import AccountStore, ChangeAction
from services.fetcher.password_cipher import PasswordCipher, generate_key
from services.fetcher.tables import StoredAccount
from tests.database_schemas import migrated_schema

CLIENT_SECRET = "Cl13nt-secret-never-shown"
REFRESH_TOKEN = "R3fresh-token-never-shown"


@pytest.fixture
def store(stack):
    with migrated_schema(stack.database_url, "oauth_accounts") as url:
        engine = create_engine(url)
        yield AccountStore(engine, PasswordCipher([generate_key()], "test keys"))
        engine.dispose()


def delegated(**oauth2) -> Account:
    return Account.model_validate(
        {
            "id": "shared-desk",
            "name": "Shared desk",
            "host": "outlook.office365.com",
            "port": 993,
            "username": "desk@example.com",
            "authentication": "oauth2_refresh_token",
            "oauth2": {"tenant": "example.com", "client_id": "app-1", "client_secret": CLIENT_SECRET,
                       "refresh_token": REFRESH_TOKEN} | oauth2,
        }
    )


def stored_row(store: AccountStore, account_id: str):
    with store.engine.connect() as connection:
        return connection.execute(select(StoredAccount).where(StoredAccount.id == account_id)).one()


def test_oauth2_secrets_are_encrypted_and_come_back_intact(store):
    store.upsert(delegated())
    row = stored_row(store, "shared-desk")
    assert "client_secret" not in row.settings["oauth2"] and "refresh_token" not in row.settings["oauth2"]
    assert "**" not in str(row.settings)
    assert row.password_ciphertext is None
    assert CLIENT_SECRET.encode() not in row.oauth2_secrets_ciphertext and REFRESH_TOKEN.encode() not in row.oauth2_secrets_ciphertext
    back = store.get("shared-desk")
    assert back.oauth2.client_secret.get_secret_value() == CLIENT_SECRET
    assert back.oauth2.refresh_token.get_secret_value() == REFRESH_TOKEN
    assert back == delegated()
    # Stored again unchanged, it is unchanged: the secrets compare equal, the revision stays.
    assert store.upsert(back).action is ChangeAction.UNCHANGED


def test_a_changed_secret_is_a_change_named_but_never_shown(store):
    store.upsert(delegated())
    change = store.upsert(delegated(client_secret="another-secret"))
    assert change.action is ChangeAction.CHANGED
    assert change.fields == ("oauth2.client_secret",)


def test_rotated_refresh_token_replaces_only_the_one_it_came_from(store):
    store.upsert(delegated())
    assert store.store_rotated_refresh_token("shared-desk", REFRESH_TOKEN, "rotated-1")
    assert store.get("shared-desk").oauth2.refresh_token.get_secret_value() == "rotated-1"
    assert stored_row(store, "shared-desk").revision == 1
    # A rotation of a token that is no longer the stored one (a new consent won) is not stored.
    assert not store.store_rotated_refresh_token("shared-desk", REFRESH_TOKEN, "rotated-2")
    assert store.get("shared-desk").oauth2.refresh_token.get_secret_value() == "rotated-1"
    assert store.get("shared-desk").oauth2.client_secret.get_secret_value() == CLIENT_SECRET


def test_reencrypt_covers_the_oauth2_secrets(store):
    store.upsert(delegated())
    before = stored_row(store, "shared-desk").oauth2_secrets_ciphertext
    assert store.reencrypt() == 1
    assert stored_row(store, "shared-desk").oauth2_secrets_ciphertext != before
    assert store.get("shared-desk").oauth2.refresh_token.get_secret_value() == REFRESH_TOKEN


def test_account_file_takes_references_and_export_writes_references(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "refresh").write_text(REFRESH_TOKEN + "\n")
    path = tmp_path / "accounts.yaml"
    path.write_text(
        textwrap.dedent(
            """
            accounts:
              - id: shared-desk
                name: Shared desk
                host: outlook.office365.com
                port: 993
                username: desk@example.com
                authentication: oauth2_refresh_token
                oauth2:
                  tenant: example.com
                  client_id: app-1
                  client_secret: {env: DESK_CLIENT_SECRET}
                  refresh_token: {file: secrets/refresh}
            """
        )
    )
    accounts = read_account_file(path, environ={"DESK_CLIENT_SECRET": CLIENT_SECRET})
    assert accounts == [delegated()]

    exported = export_text(accounts)
    assert CLIENT_SECRET not in exported and REFRESH_TOKEN not in exported and "**" not in exported
    assert "client_secret: {env: MAILINTAKE_ACCOUNT_SHARED_DESK_CLIENT_SECRET}" in exported
    assert "refresh_token: {env: MAILINTAKE_ACCOUNT_SHARED_DESK_REFRESH_TOKEN}" in exported
    assert "password" not in exported.split("accounts:", 1)[1]
    again = tmp_path / "again.yaml"
    again.write_text(exported)
    environ = {"MAILINTAKE_ACCOUNT_SHARED_DESK_CLIENT_SECRET": CLIENT_SECRET, "MAILINTAKE_ACCOUNT_SHARED_DESK_REFRESH_TOKEN": REFRESH_TOKEN}
    assert read_account_file(again, environ=environ) == accounts


def test_unresolvable_secret_reference_names_the_field(tmp_path):
    path = tmp_path / "accounts.yaml"
    path.write_text(
        "accounts:\n  - {id: a, name: A, host: h, port: 993, username: a@example.com, authentication: oauth2_client_credentials,\n"
        "     oauth2: {tenant: t, client_id: c, client_secret: {env: NOT_SET_ANYWHERE}}}\n"
    )
    with pytest.raises(Exception, match=r"account a: oauth2.client_secret: environment variable NOT_SET_ANYWHERE is not set"):
        read_account_file(path, environ={})


def test_exports_of_stored_oauth2_accounts_need_no_key(store):
    store.upsert(delegated())
    keyless = AccountStore(store.engine, None)
    exported = export_text(keyless.configured_accounts())
    assert "MAILINTAKE_ACCOUNT_SHARED_DESK_REFRESH_TOKEN" in exported and REFRESH_TOKEN not in exported
