import pytest

from services.fetcher.account import Account, InvalidAccountFile
from services.fetcher.account_file import read_account_file as load_accounts

GOOD = """
accounts:
  - id: desk
    name: Desk
    host: 127.0.0.1
    port: 10993
    username: demo
    password: s3cret-value
    ca_file: tls/ca.pem
"""


def test_load_accounts_resolves_ca_file_beside_the_file(tmp_path):
    path = tmp_path / "accounts.yaml"
    path.write_text(GOOD)
    (account,) = load_accounts(path)
    assert account.ca_file == tmp_path / "tls" / "ca.pem"
    assert account.after_fetch == "mark_seen" and account.prevent_plaintext_login


def test_password_is_not_in_repr_or_dump(tmp_path):
    path = tmp_path / "accounts.yaml"
    path.write_text(GOOD)
    (account,) = load_accounts(path)
    assert "s3cret-value" not in repr(account)
    assert "s3cret-value" not in account.model_dump_json()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("port: 10993", "port: 70000"), "account desk: port: Input should be less than or equal to 65535"),
        (("    name: Desk\n", "    name: Desk\n    after_fetch: archive\n"), "after_fetch: Value error, must be delete"),
        (("    name: Desk\n", "    name: Desk\n    colour: red\n"), "colour: Extra inputs are not permitted"),
    ],
)
def test_bad_account_names_file_account_and_field(tmp_path, change, expected):
    path = tmp_path / "accounts.yaml"
    path.write_text(GOOD.replace(*change))
    with pytest.raises(InvalidAccountFile) as error:
        load_accounts(path)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_duplicate_ids_are_refused(tmp_path):
    path = tmp_path / "accounts.yaml"
    body = GOOD.split("accounts:\n")[1]
    path.write_text("accounts:\n" + body + body)
    with pytest.raises(InvalidAccountFile, match="duplicate account ids"):
        load_accounts(path)


def test_username_in_shared_mailbox_form_is_kept_intact():
    account = Account(id="x", name="x", host="h", port=1, username="Domain\\Max.Mustermann\\Shared.MailboxAlias", password="p")
    assert account.username == "Domain\\Max.Mustermann\\Shared.MailboxAlias"


def _account(**fields):
    base = {"id": "desk", "name": "Desk", "host": "mail.example", "port": 993, "username": "desk@example.com"}
    return Account.model_validate({**base, **fields})


MICROSOFT_APP = {"tenant": "contoso.onmicrosoft.com", "client_id": "app-1", "client_secret": "app-secret"}


def test_an_old_ews_account_without_a_method_keeps_logging_in_with_kerberos():
    assert _account(protocol="ews", port=443, password="pw").authentication == "kerberos"
    assert _account(protocol="ews", port=443, password="pw", prevent_ntlm=False).authentication == "password"
    assert _account(password="pw").authentication == "password"


def test_oauth2_accounts_take_their_secrets_in_the_oauth2_section_and_hide_them():
    account = _account(protocol="graph", port=443, authentication="oauth2_client_credentials", oauth2=MICROSOFT_APP)
    assert account.oauth2.issuer == "https://login.microsoftonline.com/contoso.onmicrosoft.com"
    assert "app-secret" not in repr(account) and "app-secret" not in account.model_dump_json()
    with pytest.raises(ValueError, match="not a password"):
        account.secret_password()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"authentication": "oauth2_refresh_token", "oauth2": {**MICROSOFT_APP, "client_secret": None}},
         "needs oauth2.refresh_token"),
        ({"authentication": "oauth2_client_credentials", "oauth2": {"tenant": "t", "client_id": "c"}},
         "needs oauth2.client_secret or oauth2.certificate_file"),
        ({"authentication": "oauth2_client_credentials"}, "needs an oauth2 section"),
        ({"authentication": "oauth2_client_credentials", "oauth2": MICROSOFT_APP, "password": "pw"}, "takes no password"),
        ({"authentication": "password"}, "needs a password"),
        ({"authentication": "password", "password": "pw", "oauth2": MICROSOFT_APP}, "takes no oauth2 section"),
        ({"authentication": "kerberos", "password": "pw"}, "kerberos is for ews accounts only"),
        ({"protocol": "graph", "port": 443, "password": "pw"}, "graph accounts authenticate with oauth2"),
        ({"protocol": "graph", "port": 443, "security": "starttls", "authentication": "oauth2_client_credentials",
          "oauth2": MICROSOFT_APP}, "Graph runs over HTTPS only"),
        ({"authentication": "oauth2_client_credentials", "oauth2": {"provider": "oidc", "client_id": "c",
          "client_secret": "s"}}, "oidc needs an authority"),
        ({"authentication": "oauth2_client_credentials", "oauth2": {"client_id": "c", "client_secret": "s"}},
         "microsoft needs a tenant"),
    ],
)
def test_credentials_must_fit_the_authentication_method(fields, message):
    with pytest.raises(ValueError, match=message):
        _account(**fields)
