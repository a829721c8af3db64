"""The account store on the stack's PostgreSQL: declarative import, encryption at rest, the CLI.

Each test gets its own schema holding just the two account tables, so ``--prune`` can
never remove another test's (or another developer's) accounts.
"""

from __future__ import annotations

import textwrap
import time

import pytest
import typer
from sqlalchemy import create_engine, select, text
from typer.testing import CliRunner

from services.fetcher.account_commands import register_account_commands
from services.fetcher.account_file import read_account_file
from services.fetcher.account_store import AccountStore, ChangeAction
from services.fetcher.password_cipher import (
    PasswordCipher,
    PasswordDecryptionError,
    generate_key,
)
from services.fetcher.tables import AccountStatus, StoredAccount
from tests.database_schemas import migrated_schema
from tests.topic_reading import read_topic

pytestmark = pytest.mark.stack

PASSWORD = "Pw-3x4mple-never-shown"

ACCOUNTS = """
accounts:
  - id: desk
    name: Help desk
    host: 127.0.0.1
    port: 10993
    username: desk
    password: {env: DESK_PASSWORD}
  - id: sales
    name: Sales
    protocol: pop3
    host: 127.0.0.1
    port: 10995
    username: sales
    password: {file: secrets/sales}
    after_fetch: delete
"""


@pytest.fixture(scope="module")
def stack_database_url():
    # Only PostgreSQL is needed, and only these two tables: no topics, no full migration run.
    from mailintake.stack import Stack

    return Stack().up().database_url


@pytest.fixture
def database_url(stack_database_url, unique):
    schema = f"accounts_test_{unique}"
    admin = create_engine(stack_database_url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{stack_database_url}?options=-csearch_path%3D{schema}"
    engine = create_engine(url)
    StoredAccount.metadata.create_all(engine, tables=[StoredAccount.__table__, AccountStatus.__table__])
    try:
        yield url
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def key():
    return generate_key()


@pytest.fixture
def store(database_url, key):
    return AccountStore(create_engine(database_url), PasswordCipher([key], "test keys"))


@pytest.fixture
def account_file(tmp_path, monkeypatch):
    monkeypatch.setenv("DESK_PASSWORD", PASSWORD)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "sales").write_text("sales-Pw-from-file\n")
    path = tmp_path / "accounts.yaml"
    path.write_text(ACCOUNTS)
    return path


def revisions(store):
    with store._engine.connect() as connection:
        return dict(connection.execute(select(StoredAccount.id, StoredAccount.revision)).all())


def test_importing_the_same_file_twice_changes_nothing(store, account_file):
    first = store.import_accounts(read_account_file(account_file))
    assert [c.action for c in first.changes] == [ChangeAction.ADDED, ChangeAction.ADDED]
    second = store.import_accounts(read_account_file(account_file))
    assert [c.action for c in second.changes] == [ChangeAction.UNCHANGED, ChangeAction.UNCHANGED]
    assert not second.changes_anything
    assert revisions(store) == {"desk": 1, "sales": 1}


def test_a_change_bumps_the_revision_and_the_diff_names_fields_not_values(store, account_file, monkeypatch):
    store.import_accounts(read_account_file(account_file))
    account_file.write_text(ACCOUNTS.replace("port: 10993", "port: 993"))
    monkeypatch.setenv("DESK_PASSWORD", "Another-Pw-never-shown")
    report = store.import_accounts(read_account_file(account_file))
    (desk,) = [c for c in report.changes if c.account_id == "desk"]
    assert desk.action is ChangeAction.CHANGED and desk.fields == ("port", "password")
    text_report = "\n".join(report.lines())
    assert "~ changed   desk: port, password" in text_report
    assert "= unchanged sales" in text_report
    assert "Another-Pw" not in text_report and "993" not in text_report.replace("10993", "")
    assert revisions(store) == {"desk": 2, "sales": 1}
    assert store.get("desk").password.get_secret_value() == "Another-Pw-never-shown"


def test_prune_removes_accounts_missing_from_the_file_and_dry_run_writes_nothing(store, account_file):
    store.import_accounts(read_account_file(account_file))
    account_file.write_text(ACCOUNTS.split("  - id: sales")[0])
    kept = store.import_accounts(read_account_file(account_file))
    assert [c.action for c in kept.changes] == [ChangeAction.UNCHANGED, ChangeAction.KEPT]
    dry = store.import_accounts(read_account_file(account_file), prune=True, dry_run=True)
    assert dry.changes[-1].action is ChangeAction.REMOVED and "dry run" in dry.lines()[-1]
    assert store.get("sales") is not None
    store.import_accounts(read_account_file(account_file), prune=True)
    assert store.get("sales") is None and store.get("desk") is not None


def test_the_table_holds_ciphertext_and_settings_without_the_password(store, account_file):
    store.import_accounts(read_account_file(account_file))
    with store._engine.connect() as connection:
        row = connection.execute(select(StoredAccount).where(StoredAccount.id == "desk")).one()
    assert PASSWORD.encode() not in row.password_ciphertext
    assert "password" not in row.settings and PASSWORD not in str(row.settings)
    assert row.settings["port"] == 10993 and row.protocol == "imap"
    # The model validates on the way out, and the password decrypts.
    account = store.get("desk")
    assert account.password.get_secret_value() == PASSWORD and PASSWORD not in repr(account)
    assert store.get("sales").password.get_secret_value() == "sales-Pw-from-file"


def test_key_rotation_new_key_first_old_still_decrypts_then_reencrypt(database_url, account_file):
    old, new = generate_key(), generate_key()
    AccountStore(create_engine(database_url), PasswordCipher([old], "old")).import_accounts(read_account_file(account_file))
    rotating = AccountStore(create_engine(database_url), PasswordCipher([new, old], "new,old"))
    assert rotating.get("desk").password.get_secret_value() == PASSWORD
    assert not rotating.import_accounts(read_account_file(account_file)).changes_anything
    assert rotating.reencrypt() == 2
    only_new = AccountStore(create_engine(database_url), PasswordCipher([new], "new"))
    assert only_new.get("desk").password.get_secret_value() == PASSWORD
    assert revisions(only_new) == {"desk": 1, "sales": 1}


def test_a_wrong_key_names_the_account(database_url, account_file):
    AccountStore(create_engine(database_url), PasswordCipher([generate_key()], "a")).import_accounts(
        read_account_file(account_file)
    )
    wrong = AccountStore(create_engine(database_url), PasswordCipher([generate_key()], "MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS"))
    with pytest.raises(PasswordDecryptionError) as error:
        wrong.enabled_accounts()
    assert "account 'desk'" in str(error.value) and "MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS" in str(error.value)


def test_enabled_accounts_set_enabled_upsert_and_delete(store, account_file):
    store.import_accounts(read_account_file(account_file))
    assert store.set_enabled("sales", False)
    assert [a.id for a in store.enabled_accounts()] == ["desk"]
    assert store.set_enabled("sales", False)  # no change, no revision bump
    assert revisions(store)["sales"] == 2
    assert not store.set_enabled("nobody", True)
    desk = store.get("desk")
    assert store.upsert(desk).action is ChangeAction.UNCHANGED
    assert store.upsert(desk.model_copy(update={"poll_interval_seconds": 120})).fields == ("poll_interval_seconds",)
    assert store.delete("desk") and not store.delete("desk")
    assert store.get("desk") is None


# --- the CLI ---------------------------------------------------------------------


@pytest.fixture
def cli(database_url, key, monkeypatch):
    monkeypatch.setenv("MAILINTAKE_FETCHER_DATABASE_URL", database_url)
    monkeypatch.setenv("MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS", key)
    monkeypatch.delenv("MAILINTAKE_ACCOUNTS_ENCRYPTION_KEY_FILE", raising=False)
    app = typer.Typer()
    register_account_commands(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(map(str, args)))


def test_cli_import_reports_a_diff_and_the_second_import_changes_nothing(cli, account_file, stack):
    started_ms = int(time.time() * 1000)
    first = cli("import", account_file)
    assert first.exit_code == 0, first.output
    assert "+ added     desk" in first.output and "2 added" in first.output
    second = cli("import", account_file)
    assert second.exit_code == 0 and "2 unchanged" in second.output and "added" not in second.output
    assert PASSWORD not in first.output + second.output
    # The first import told the accounts' owners (a notice per account); the second nothing.
    notices = read_topic(
        stack.kafka_bootstrap, "accounts", started_ms,
        lambda m: m.key.decode() if m.key in (b"desk", b"sales") else None, timeout=5,
    )
    assert sorted(notices) == ["desk", "sales"]


def test_cli_export_holds_references_only_and_imports_back_unchanged(cli, account_file, tmp_path, monkeypatch):
    cli("import", account_file)
    exported = cli("export")
    assert exported.exit_code == 0, exported.output
    assert PASSWORD not in exported.output and "sales-Pw" not in exported.output
    assert "password: {env: MAILINTAKE_ACCOUNT_DESK_PASSWORD}" in exported.output
    path = tmp_path / "exported.yaml"
    path.write_text(exported.output)
    monkeypatch.setenv("MAILINTAKE_ACCOUNT_DESK_PASSWORD", PASSWORD)
    monkeypatch.setenv("MAILINTAKE_ACCOUNT_SALES_PASSWORD", "sales-Pw-from-file")
    again = cli("import", path, "--prune")
    assert again.exit_code == 0 and "2 unchanged" in again.output, again.output


def test_cli_list_shows_protocol_host_and_status(cli, account_file, database_url):
    cli("import", account_file)
    with create_engine(database_url).begin() as connection:
        connection.execute(
            AccountStatus.__table__.insert().values(
                account_id="sales", consecutive_failures=3, last_error_step="authentication", last_error="no"
            )
        )
    listed = cli("list")
    assert listed.exit_code == 0, listed.output
    desk, sales = [line for line in listed.output.splitlines() if line.startswith(("desk", "sales"))]
    assert "imap" in desk and "127.0.0.1" in desk and "never polled" in desk
    assert "pop3" in sales and "failing x3 at authentication" in sales


def test_cli_without_a_key_names_the_variables(cli, account_file, monkeypatch):
    monkeypatch.delenv("MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS")
    result = cli("import", account_file)
    assert result.exit_code == 2
    assert "MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS" in result.output and "MAILINTAKE_ACCOUNTS_ENCRYPTION_KEY_FILE" in result.output


def test_cli_with_a_malformed_key_names_the_variable(cli, account_file, monkeypatch):
    monkeypatch.setenv("MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS", "not-a-key")
    result = cli("import", account_file)
    assert result.exit_code == 2 and "MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS: key #1 is not a Fernet key" in result.output
    assert "not-a-key" not in result.output


def test_cli_key_from_a_mounted_file(cli, account_file, key, tmp_path, monkeypatch):
    monkeypatch.delenv("MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS")
    key_file = tmp_path / "key"
    key_file.write_text(key + "\n")
    monkeypatch.setenv("MAILINTAKE_ACCOUNTS_ENCRYPTION_KEY_FILE", str(key_file))
    result = cli("import", account_file)
    assert result.exit_code == 0 and "2 added" in result.output, result.output


def test_cli_invalid_file_names_file_account_and_field(cli, account_file):
    account_file.write_text(ACCOUNTS.replace("after_fetch: delete", "after_fetch: move:Archive"))
    result = cli("import", account_file)
    assert result.exit_code == 2
    assert f"{account_file}: account sales: after_fetch:" in result.output and "POP3" in result.output


def test_cli_import_refuses_accounts_naming_reference_data_that_does_not_exist(stack, key, tmp_path, monkeypatch):
    with migrated_schema(stack.database_url, "accounts_refdata") as url:
        monkeypatch.setenv("MAILINTAKE_FETCHER_DATABASE_URL", url)
        monkeypatch.setenv("MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS", key)
        monkeypatch.delenv("MAILINTAKE_ACCOUNTS_ENCRYPTION_KEY_FILE", raising=False)
        monkeypatch.setenv("DESK_PASSWORD", PASSWORD)
        (tmp_path / "secrets").mkdir()
        (tmp_path / "secrets" / "sales").write_text("sales-Pw-from-file\n")
        path = tmp_path / "accounts.yaml"
        path.write_text(ACCOUNTS.replace("    username: desk\n", "    username: desk\n    ticket_options: {resource: 2nd-level-ghosts}\n", 1))
        app = typer.Typer()
        register_account_commands(app)
        refused = CliRunner().invoke(app, ["import", str(path)])
        assert refused.exit_code == 2
        assert "desk: ticket_options.resource: resource '2nd-level-ghosts' does not exist" in refused.output
        assert AccountStore(create_engine(url), None).summaries() == [], "nothing was imported"
