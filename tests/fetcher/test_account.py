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
