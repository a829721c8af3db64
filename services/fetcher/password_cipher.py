"""Encryption at rest of account passwords: Fernet tokens under one or more keys.

MultiFernet gives key rotation: the first key encrypts, every key decrypts, and
``reencrypt`` moves a token to the first key. Keys come from
``MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS`` or the file named by
``MAILINTAKE_ACCOUNTS_ENCRYPTION_KEY_FILE``; no key is ever built into the code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from mailintake.runtime.settings import env_name
from services.fetcher.settings import AccountEncryptionSettings

KEYS_VARIABLE = env_name(AccountEncryptionSettings, "encryption_keys")
KEY_FILE_VARIABLE = env_name(AccountEncryptionSettings, "encryption_key_file")
#: Name of the generated development key inside the local stack's state directory.
LOCAL_STACK_KEY_FILE = "accounts.key"


class EncryptionKeyError(Exception):
    """No usable key: the message names the variable (or file) to fix, never a key."""


class PasswordDecryptionError(Exception):
    """A stored password does not decrypt with any configured key; names the account."""

    def __init__(self, account_id: str, source: str) -> None:
        super().__init__(
            f"the stored password of account {account_id!r} does not decrypt with any key in {source}"
            " (was it encrypted with a key that has since been removed?)"
        )
        self.account_id = account_id


class PasswordCipher:
    """Encrypts and decrypts account passwords. ``source`` says where the keys came from, for error messages."""

    def __init__(self, keys: Sequence[str], source: str) -> None:
        if not keys:
            raise EncryptionKeyError(f"{source} holds no key")
        fernets = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.encode("ascii")))
            except (ValueError, UnicodeEncodeError):
                raise EncryptionKeyError(
                    f"{source}: key #{position} is not a Fernet key (44 characters of url-safe base64;"
                    " `mailintake accounts generate-key` makes one)"
                ) from None
        self._fernet = MultiFernet(fernets)
        self.source = source

    def encrypt(self, password: SecretStr) -> bytes:
        return self._fernet.encrypt(password.get_secret_value().encode("utf-8"))

    def decrypt(self, ciphertext: bytes, account_id: str) -> SecretStr:
        try:
            return SecretStr(self._fernet.decrypt(ciphertext).decode("utf-8"))
        except (InvalidToken, UnicodeDecodeError):
            raise PasswordDecryptionError(account_id, self.source) from None

    def reencrypt(self, ciphertext: bytes, account_id: str) -> bytes:
        """The same password encrypted under the first key (key rotation)."""
        try:
            return self._fernet.rotate(ciphertext)
        except InvalidToken:
            raise PasswordDecryptionError(account_id, self.source) from None

    def __repr__(self) -> str:
        return f"PasswordCipher(source={self.source!r})"


def split_keys(text: str) -> list[str]:
    """Keys separated by commas and/or line breaks; blanks ignored."""
    return [key for key in (part.strip() for part in re.split(r"[,\s]+", text)) if key]


def cipher_from_settings(settings: AccountEncryptionSettings) -> PasswordCipher:
    """The cipher for the configured key(s); an ``EncryptionKeyError`` names the variable when there is none."""
    if settings.encryption_keys is not None and settings.encryption_key_file is not None:
        raise EncryptionKeyError(f"set only one of {KEYS_VARIABLE} and {KEY_FILE_VARIABLE}")
    if settings.encryption_keys is not None:
        return PasswordCipher(split_keys(settings.encryption_keys.get_secret_value()), KEYS_VARIABLE)
    if settings.encryption_key_file is not None:
        path = settings.encryption_key_file
        source = f"{KEY_FILE_VARIABLE} ({path})"
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise EncryptionKeyError(f"{source} cannot be read: {exc.__class__.__name__}") from None
        return PasswordCipher(split_keys(text), source)
    raise EncryptionKeyError(
        f"no key to encrypt account passwords: set {KEYS_VARIABLE} or {KEY_FILE_VARIABLE}"
        " (`mailintake accounts generate-key` makes a key)"
    )


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def ensure_key_file(path: Path) -> Path:
    """Create ``path`` with a fresh key (mode 0600) unless it exists; return it. For development only:
    the local stack keeps its key in ``<state dir>/accounts.key`` (see ``local_stack_key_file``)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(generate_key() + "\n")
    try:
        # A hard link never replaces an existing file, and no reader ever sees a half-written key.
        os.link(draft, path)
    except FileExistsError:
        pass  # another process was first; its key stands
    finally:
        draft.unlink()
    return path


def local_stack_key_file(state_dir: Path) -> Path:
    """The local stack's development key file, created on first use."""
    return ensure_key_file(state_dir / LOCAL_STACK_KEY_FILE)
