"""Loading the keeper's signing key: a hex private key, or an encrypted JSON keystore.

Errors are one ConfigError line naming the setting; no message, log line or exception context
ever carries the key or the keystore password.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from keeper.config import Settings, env_name
from keeper.errors import ConfigError

logger = logging.getLogger(__name__)

_KEY = env_name("private_key")
_KEYSTORE = env_name("keystore")
_PASSWORD_FILE = env_name("keystore_password_file")


def key_setting(settings: Settings) -> str:
    """Where the signing key comes from, as an error line names it: ``KEEPER_PRIVATE_KEY`` or
    ``KEEPER_KEYSTORE <path>`` (never any of the key itself)."""
    if settings.keystore is not None:
        return f"{_KEYSTORE} {settings.keystore}"
    return _KEY


def load_signer(settings: Settings) -> LocalAccount | None:
    """The account that signs the keeper's transactions; None only in dry-run without a key."""
    if settings.private_key is not None:
        account = account_from_private_key(settings.private_key.get_secret_value())
    elif settings.keystore is not None:
        if settings.keystore_password_file is None:  # Settings rejects this; stay defensive
            raise ConfigError(f"{_PASSWORD_FILE}: required with {_KEYSTORE}")
        password = read_password_file(settings.keystore_password_file)
        account = account_from_keystore(settings.keystore, password)
    elif settings.dry_run:
        logger.info("dry-run without a signing key: nothing can be signed")
        return None
    else:
        raise ConfigError(f"{_KEY} / {_KEYSTORE}: a signing key is required")
    logger.info("signer %s loaded from %s", account.address, key_setting(settings))
    return account


def account_from_private_key(key: str) -> LocalAccount:
    """The account for a 32-byte hex key, with or without 0x."""
    text = key.strip()
    digits = text[2:] if text[:2].lower() == "0x" else text
    try:
        if len(digits) != 64:
            raise ValueError
        raw = bytes.fromhex(digits)
        account: LocalAccount = Account.from_key(raw)  # rejects 0 and >= the curve order
    except ValueError:
        # `from None`: the original exception may quote the key.
        raise ConfigError(f"{_KEY}: not a valid private key") from None
    return account


def read_password_file(path: Path) -> str:
    """The keystore password: the file's text without one trailing newline."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{_PASSWORD_FILE}: cannot read {path} ({exc.strerror or type(exc).__name__})"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{_PASSWORD_FILE}: {path} is not UTF-8 text") from None
    # Exactly one line ending comes off: a password may itself end in spaces or newlines.
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text


def account_from_keystore(path: Path, password: str) -> LocalAccount:
    """Decrypt the JSON keystore at `path` (v3, scrypt or pbkdf2) with `password`."""
    keyfile = _read_keystore(path)
    try:
        raw = Account.decrypt(keyfile, password)
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise ConfigError(f"{_KEYSTORE}: wrong password for {path}") from None
        raise ConfigError(f"{_KEYSTORE}: {path} is not a valid keystore") from None
    except (KeyError, TypeError, NotImplementedError):
        raise ConfigError(f"{_KEYSTORE}: {path} is not a valid keystore") from None
    account: LocalAccount = Account.from_key(raw)
    declared = keyfile.get("address")
    if isinstance(declared, str) and declared.lower().removeprefix("0x") != (
        account.address.lower().removeprefix("0x")
    ):
        raise ConfigError(
            f"{_KEYSTORE}: {path} declares address {declared} but holds the key of "
            f"{account.address}"
        )
    return account


def _read_keystore(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{_KEYSTORE}: cannot read {path} ({exc.strerror or type(exc).__name__})"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{_KEYSTORE}: {path} is not a JSON keystore (not text)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError(f"{_KEYSTORE}: {path} is not a JSON keystore") from None
    if not isinstance(data, dict) or not isinstance(data.get("crypto", data.get("Crypto")), dict):
        raise ConfigError(f"{_KEYSTORE}: {path} is not a JSON keystore (no 'crypto' section)")
    return data
