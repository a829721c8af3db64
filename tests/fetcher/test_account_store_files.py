"""The pure parts of stored accounts: the YAML file, password references, the plan, the cipher."""

from __future__ import annotations

import stat

import pytest
from pydantic import SecretStr

from services.fetcher.account import Account, InvalidAccountFile
from services.fetcher.account_file import export_text, password_variable, read_account_file
from services.fetcher.account_store import ChangeAction, StoredView, changed_fields, plan_import, settings_of
from services.fetcher.password_cipher import (
    EncryptionKeyError,
    PasswordCipher,
    PasswordDecryptionError,
    cipher_from_settings,
    ensure_key_file,
    generate_key,
    local_stack_key_file,
)
from services.fetcher.settings import AccountEncryptionSettings

ENTRY = """
accounts:
  - id: desk
    name: Desk
    protocol: imap
    host: 127.0.0.1
    port: 10993
    username: desk
    password: {password}
"""


def write(tmp_path, password="inline-pw", replace=("", "")):
    path = tmp_path / "accounts.yaml"
    path.write_text(ENTRY.format(password=password).replace(*replace))
    return path


def account(**changes):
    values = dict(id="desk", name="Desk", host="h", port=993, username="u", password="pw")
    return Account(**{**values, **changes})


# --- the file ----------------------------------------------------------------------


def test_inline_env_and_file_passwords(tmp_path):
    assert read_account_file(write(tmp_path), {})[0].password.get_secret_value() == "inline-pw"
    env = read_account_file(write(tmp_path, "{env: DESK_PW}"), {"DESK_PW": "from-env"})
    assert env[0].password.get_secret_value() == "from-env"
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "desk").write_text(" spaced pw \n")
    from_file = read_account_file(write(tmp_path, "{file: keys/desk}"), {})
    assert from_file[0].password.get_secret_value() == " spaced pw "


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ("{env: MISSING_PW}", "account desk: password: environment variable MISSING_PW is not set"),
        ("{file: nowhere}", "account desk: password: file "),
        ("{vault: x}", "account desk: password: must be a string, {env: VARIABLE} or {file: path}"),
    ],
)
def test_unresolvable_password_reference_names_file_account_and_field(tmp_path, password, expected):
    path = write(tmp_path, password)
    with pytest.raises(InvalidAccountFile) as error:
        read_account_file(path, {})
    assert str(error.value).startswith(f"{path}: ") and expected in str(error.value)


@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        (("port: 10993", "port: 0"), "account desk: port: Input should be greater than or equal to 1"),
        (("port: 10993", "port: 65536"), "account desk: port: Input should be less than or equal to 65535"),
        (("protocol: imap", "protocol: mapi"), "account desk: protocol: Input should be 'imap', 'pop3', 'ews' or 'graph'"),
        (("    name: Desk\n", "    name: Desk\n    after_fetch: keep\n"), "account desk: after_fetch: Value error, must be"),
        (
            ("protocol: imap", "protocol: pop3\n    after_fetch: move:Done"),
            "account desk: after_fetch: Value error, POP3 has no folders",
        ),
        (("protocol: imap", "protocol: ews\n    security: starttls"), "account desk: security: Value error, EWS runs over HTTPS"),
    ],
)
def test_invalid_account_names_file_account_and_field(tmp_path, replace, expected):
    path = write(tmp_path, "s3cret-not-echoed", replace)
    with pytest.raises(InvalidAccountFile) as error:
        read_account_file(path, {})
    assert str(error.value).startswith(f"{path}: ") and expected in str(error.value)
    assert "s3cret-not-echoed" not in str(error.value)


def test_export_refers_to_a_variable_per_account_and_refuses_colliding_ids():
    text = export_text([account(id="desk.eu", password="never-exported")])
    assert "never-exported" not in text
    assert "password: {env: MAILINTAKE_ACCOUNT_DESK_EU_PASSWORD}" in text
    assert password_variable("a-b") == password_variable("a.b")
    with pytest.raises(ValueError, match="would share the variable"):
        export_text([account(id="a-b"), account(id="a.b")])


def test_export_reads_back_as_the_same_accounts(tmp_path):
    original = account(id="desk", sender={"name": "Desk", "address": "desk@example.com"}, after_fetch="move:Done")
    path = tmp_path / "exported.yaml"
    path.write_text(export_text([original]))
    (again,) = read_account_file(path, {"MAILINTAKE_ACCOUNT_DESK_PASSWORD": "pw"})
    assert again == original


# --- the plan ----------------------------------------------------------------------


def test_plan_names_changed_fields_including_nested_and_password():
    stored = {
        "desk": StoredView(settings_of(account()), SecretStr("pw")),
        "old": StoredView(settings_of(account(id="old")), SecretStr("pw")),
    }
    desired = [account(port=995, sender={"name": "Desk"}, password="new"), account(id="new")]
    plan = plan_import(stored, desired, prune=False)
    assert [(c.account_id, c.action, c.fields) for c in plan] == [
        ("desk", ChangeAction.CHANGED, ("port", "sender.name", "password")),
        ("new", ChangeAction.ADDED, ()),
        ("old", ChangeAction.KEPT, ()),
    ]
    assert plan_import(stored, desired, prune=True)[-1].action is ChangeAction.REMOVED


def test_a_password_that_no_longer_decrypts_shows_as_changed():
    plan = plan_import({"desk": StoredView(settings_of(account()), None)}, [account()], prune=False)
    assert plan[0].action is ChangeAction.CHANGED and plan[0].fields == ("password",)


def test_changed_fields_of_equal_settings_is_empty():
    assert changed_fields(settings_of(account()), settings_of(account())) == []


# --- the cipher and its keys ---------------------------------------------------------


def test_ciphertext_differs_from_the_password_and_decrypts_back():
    key = generate_key()
    cipher = PasswordCipher([key], "test")
    token = cipher.encrypt(SecretStr("hunter2"))
    assert b"hunter2" not in token
    assert cipher.decrypt(token, "desk").get_secret_value() == "hunter2"
    assert key not in repr(cipher)


def test_rotation_first_key_encrypts_every_key_decrypts():
    old, new = generate_key(), generate_key()
    token = PasswordCipher([old], "old").encrypt(SecretStr("pw"))
    both = PasswordCipher([new, old], "both")
    assert both.decrypt(token, "desk").get_secret_value() == "pw"
    rotated = both.reencrypt(token, "desk")
    assert PasswordCipher([new], "new").decrypt(rotated, "desk").get_secret_value() == "pw"
    with pytest.raises(PasswordDecryptionError, match="account 'desk'.*MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS"):
        PasswordCipher([new], "MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS").decrypt(token, "desk")


def test_keys_come_from_the_variable_or_the_file(tmp_path, monkeypatch):
    # The stack fixture exports the local stack's key file; this test sets its own sources.
    monkeypatch.delenv("MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("MAILINTAKE_ACCOUNTS_ENCRYPTION_KEY_FILE", raising=False)
    first, second = generate_key(), generate_key()
    from_variable = cipher_from_settings(AccountEncryptionSettings(encryption_keys=f" {first} ,{second}"))
    assert from_variable.source == "MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS"
    key_file = tmp_path / "keys"
    key_file.write_text(f"{first}\n{second}\n")
    from_file = cipher_from_settings(AccountEncryptionSettings(encryption_key_file=key_file))
    assert from_file.decrypt(from_variable.encrypt(SecretStr("pw")), "desk").get_secret_value() == "pw"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, "set MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS or MAILINTAKE_ACCOUNTS_ENCRYPTION_KEY_FILE"),
        ({"encryption_keys": "short"}, "MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS: key #1 is not a Fernet key"),
        ({"encryption_keys": " , "}, "MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS holds no key"),
        ({"encryption_key_file": "/nonexistent/key"}, "MAILINTAKE_ACCOUNTS_ENCRYPTION_KEY_FILE (/nonexistent/key) cannot be read"),
    ],
)
def test_missing_or_wrong_key_names_the_variable(settings, expected, monkeypatch):
    monkeypatch.delenv("MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("MAILINTAKE_ACCOUNTS_ENCRYPTION_KEY_FILE", raising=False)
    with pytest.raises(EncryptionKeyError) as error:
        cipher_from_settings(AccountEncryptionSettings(**settings))
    assert expected in str(error.value) and "short" not in str(error.value)


def test_settings_read_the_documented_variables(monkeypatch, tmp_path):
    key = generate_key()
    monkeypatch.setenv("MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS", key)
    monkeypatch.setenv("MAILINTAKE_ACCOUNTS_ENCRYPTION_KEY_FILE", str(tmp_path / "k"))
    settings = AccountEncryptionSettings()
    assert settings.encryption_keys.get_secret_value() == key and key not in repr(settings)
    with pytest.raises(EncryptionKeyError, match="only one of"):
        cipher_from_settings(settings)


def test_local_stack_key_is_generated_once_and_private(tmp_path):
    path = local_stack_key_file(tmp_path)
    assert path == tmp_path / "accounts.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text()
    assert ensure_key_file(path).read_text() == key
    PasswordCipher([key.strip()], str(path))
