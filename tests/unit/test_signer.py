"""Loading the signing key: private key or encrypted keystore; errors never reveal secrets."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import pytest
from eth_account import Account
from eth_typing import HexStr

from keeper.config import Settings, load_settings
from keeper.errors import ConfigError
from keeper.signer import (
    account_from_keystore,
    account_from_private_key,
    key_setting,
    load_signer,
    read_password_file,
)

#: web3.py documentation's example key and the address it controls.
KEY_HEX = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
KEY = "0x" + KEY_HEX
ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
PASSWORD = "correct horse battery staple"
VAULT = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
#: secp256k1 group order: keys must be in [1, N).
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def settings(**env: str) -> Settings:
    base = {"KEEPER_RPC_URL": "http://127.0.0.1:8545", "KEEPER_VAULTS": VAULT}
    base.update({f"KEEPER_{name.upper()}": value for name, value in env.items()})
    return load_settings(base, env_file=None)


def write_keystore(
    path: Path,
    password: str = PASSWORD,
    kdf: Literal["pbkdf2", "scrypt"] = "pbkdf2",
    **changes: Any,
) -> Path:
    # Low work factors keep the test fast; the format is the same as a production keystore.
    iterations = 2 if kdf == "pbkdf2" else 16
    keyfile = Account.encrypt(HexStr(KEY), password, kdf=kdf, iterations=iterations)
    keyfile.update(changes)
    path.write_text(json.dumps(keyfile))
    return path


def write_password(path: Path, text: str) -> Path:
    path.write_text(text, newline="")
    return path


def keystore_settings(tmp_path: Path, password_text: str = PASSWORD + "\n") -> Settings:
    keystore = write_keystore(tmp_path / "keystore.json")
    password_file = write_password(tmp_path / "password.txt", password_text)
    return settings(keystore=str(keystore), keystore_password_file=str(password_file))


def signer_error(s: Settings) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_signer(s)
    exc = info.value
    assert "\n" not in str(exc)
    assert exc.__cause__ is None and exc.__suppress_context__  # nothing chained behind it
    return exc


# --- private key ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", [KEY, KEY_HEX, KEY.upper().replace("0X", "0x"), f" {KEY}\n"])
def test_private_key_forms(key: str) -> None:
    account = load_signer(settings(private_key=key))
    assert account is not None and account.address == ADDRESS


@pytest.mark.parametrize("value", [0, SECP256K1_N, SECP256K1_N + 1])
def test_private_key_out_of_curve_range(value: int) -> None:
    key = f"0x{value:064x}"
    exc = signer_error(settings(private_key=key))
    assert str(exc) == "KEEPER_PRIVATE_KEY: not a valid private key"
    assert f"{value:064x}" not in str(exc)


@pytest.mark.parametrize(
    "bad", [KEY[:-1], KEY + "0", "0x" + "zz" * 32, "0x", "", "0x0x" + KEY_HEX[:62], "üñ" * 32]
)
def test_malformed_private_key(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        account_from_private_key(bad)
    assert str(info.value) == "KEEPER_PRIVATE_KEY: not a valid private key"
    assert info.value.__suppress_context__


# --- keystore ------------------------------------------------------------------------------


@pytest.mark.parametrize("kdf", ["pbkdf2", "scrypt"])
def test_keystore_round_trip(tmp_path: Path, kdf: Literal["pbkdf2", "scrypt"]) -> None:
    keystore = write_keystore(tmp_path / "k.json", kdf=kdf)
    assert account_from_keystore(keystore, PASSWORD).address == ADDRESS


def test_load_signer_from_keystore_and_password_file(tmp_path: Path) -> None:
    account = load_signer(keystore_settings(tmp_path))
    assert account is not None and account.address == ADDRESS
    assert account.key.hex() == KEY_HEX


@pytest.mark.parametrize(
    ("file_text", "password"),
    [
        ("pw", "pw"),
        ("pw\n", "pw"),
        ("pw\r\n", "pw"),
        ("pw\n\n", "pw\n"),  # only one line ending comes off
        ("pw \n", "pw "),  # spaces are part of the password
    ],
)
def test_password_file_strips_one_line_ending(
    tmp_path: Path, file_text: str, password: str
) -> None:
    assert read_password_file(write_password(tmp_path / "p", file_text)) == password


def test_password_with_trailing_newline_in_it(tmp_path: Path) -> None:
    write_keystore(tmp_path / "keystore.json", password="pw\n")
    write_password(tmp_path / "password.txt", "pw\n\n")
    s = settings(keystore=str(tmp_path / "keystore.json"),
                 keystore_password_file=str(tmp_path / "password.txt"))
    account = load_signer(s)
    assert account is not None and account.address == ADDRESS


def test_wrong_password(tmp_path: Path) -> None:
    s = keystore_settings(tmp_path, password_text="hunter2\n")
    exc = signer_error(s)
    assert str(exc) == f"KEEPER_KEYSTORE: wrong password for {tmp_path / 'keystore.json'}"
    assert "hunter2" not in str(exc) and PASSWORD not in str(exc)


def test_missing_keystore(tmp_path: Path) -> None:
    password_file = write_password(tmp_path / "p", PASSWORD)
    s = settings(keystore=str(tmp_path / "absent.json"), keystore_password_file=str(password_file))
    assert str(signer_error(s)) == (
        f"KEEPER_KEYSTORE: cannot read {tmp_path / 'absent.json'} (No such file or directory)"
    )


def test_missing_password_file(tmp_path: Path) -> None:
    keystore = write_keystore(tmp_path / "k.json")
    s = settings(keystore=str(keystore), keystore_password_file=str(tmp_path / "absent"))
    assert str(signer_error(s)) == (
        f"KEEPER_KEYSTORE_PASSWORD_FILE: cannot read {tmp_path / 'absent'} "
        "(No such file or directory)"
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("not json at all", "is not a JSON keystore"),
        ("[1, 2, 3]", "is not a JSON keystore (no 'crypto' section)"),
        ('{"version": 3}', "is not a JSON keystore (no 'crypto' section)"),
    ],
)
def test_keystore_not_a_keystore(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "k.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        account_from_keystore(path, PASSWORD)
    assert str(info.value) == f"KEEPER_KEYSTORE: {path} {problem}"


def test_keystore_with_damaged_crypto_section(tmp_path: Path) -> None:
    path = write_keystore(tmp_path / "k.json")
    data = json.loads(path.read_text())
    del data["crypto"]["mac"]
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"^KEEPER_KEYSTORE: .* is not a valid keystore$"):
        account_from_keystore(path, PASSWORD)


def test_keystore_declaring_another_address(tmp_path: Path) -> None:
    other = "5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
    path = write_keystore(tmp_path / "k.json", address=other)
    with pytest.raises(ConfigError) as info:
        account_from_keystore(path, PASSWORD)
    assert str(info.value) == (
        f"KEEPER_KEYSTORE: {path} declares address {other} but holds the key of {ADDRESS}"
    )


# --- dry run ---------------------------------------------------------------------------------


def test_dry_run_without_key_has_no_signer() -> None:
    assert load_signer(settings(dry_run="true")) is None


def test_dry_run_with_key_still_loads_it() -> None:
    account = load_signer(settings(dry_run="true", private_key=KEY))
    assert account is not None and account.address == ADDRESS


# --- secrets stay out of logs ----------------------------------------------------------------


def test_key_and_password_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        load_signer(settings(private_key=KEY))
        load_signer(keystore_settings(tmp_path))
        wrong = tmp_path / "wrong"
        wrong.mkdir()
        with pytest.raises(ConfigError) as info:
            load_signer(keystore_settings(wrong, password_text="hunter2"))
    assert caplog.text.count(ADDRESS) == 2  # something was logged: the address, twice
    for secret in (KEY_HEX, KEY_HEX.upper(), PASSWORD, "hunter2"):
        assert secret not in caplog.text
        assert secret not in str(info.value)


def test_key_setting_names_the_key_source_without_the_key(tmp_path: Path) -> None:
    """What a start-up check's error line starts with: the setting the key came from."""
    assert key_setting(settings(private_key=KEY)) == "KEEPER_PRIVATE_KEY"
    from_keystore = keystore_settings(tmp_path)
    assert key_setting(from_keystore) == f"KEEPER_KEYSTORE {tmp_path / 'keystore.json'}"
    assert load_signer(from_keystore) is not None  # the source named is the one that loads
    assert key_setting(settings(dry_run="true")) == "KEEPER_PRIVATE_KEY"  # no key: what to set
