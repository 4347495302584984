"""Settings: defaults, every validation rule and its message, sources, deployment, masking."""

from __future__ import annotations

import json
import logging
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeper.chain.connect import mask_rpc_url
from keeper.config import (
    Settings,
    env_name,
    eth_to_wei,
    format_eth,
    gwei_to_wei,
    load_deployment,
    load_settings,
    parse_address,
    resolve_vaults,
)
from keeper.errors import ConfigError
from keeper.risk.actions import Urgency

#: Published EIP-55 test vectors (checksummed form).
ADDR_A = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
ADDR_B = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
ADDR_C = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB"
ADDR_D = "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb"
MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11"

KEY_HEX = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
KEY = "0x" + KEY_HEX
RPC_SECRETS = ("hunter2", "APIKEY123", "QSECRET", "alice")
RPC = "https://alice:hunter2@eth-mainnet.example.com/v2/APIKEY123?token=QSECRET"


def base_env(**overrides: str | None) -> dict[str, str]:
    """A valid environment; keyword `poll_interval="5"` sets KEEPER_POLL_INTERVAL, None drops."""
    env = {"KEEPER_RPC_URL": RPC, "KEEPER_PRIVATE_KEY": KEY, "KEEPER_VAULTS": ADDR_A}
    for field, value in overrides.items():
        if value is None:
            env.pop(env_name(field), None)
        else:
            env[env_name(field)] = value
    return env


def load(**overrides: str | None) -> Settings:
    return load_settings(base_env(**overrides), env_file=None)


def error(**overrides: str | None) -> str:
    with pytest.raises(ConfigError) as info:
        load(**overrides)
    message = str(info.value)
    assert "\n" not in message, message
    assert "Traceback" not in message and "validation error" not in message
    return message


def write_deployment(path: Path, vaults: list[str], chain_id: int = 31337, **extra: Any) -> Path:
    data: dict[str, Any] = {
        "chain_id": chain_id,
        "block": 42,
        "contracts": {"USDC": ADDR_D, "ETH_USD": ADDR_C, "Multicall3": MULTICALL3.lower()},
        "vaults": vaults,
        "accounts": {"keeper": ADDR_B},
        "series": {},
    }
    data.update(extra)
    path.write_text(json.dumps(data))
    return path


# --- defaults ------------------------------------------------------------------------------


def test_defaults() -> None:
    s = load()
    assert s.rpc_url.get_secret_value() == RPC
    assert s.chain_id is None
    assert s.vaults == (ADDR_A,)
    assert s.deployment is None
    assert s.poll_interval == 12.0
    assert s.tick_deadline == pytest.approx(9.6)
    assert s.effective_tick_deadline == pytest.approx(9.6)
    assert s.max_staleness == 3600
    assert (s.max_fee_gwei_low, s.max_fee_gwei_normal) == (30.0, 60.0)
    assert (s.max_fee_gwei_high, s.max_fee_gwei_critical) == (150.0, 1000.0)
    assert s.acceptable_base_fee_gwei == 25.0
    assert (s.priority_fee_min_gwei, s.priority_fee_max_gwei) == (0.01, 5.0)
    assert s.gas_limit_margin == 1.25
    assert s.tx_timeout == 60.0
    assert s.max_replacements == 5
    assert s.fee_bump_percent == 12.5
    assert s.journal == Path("keeper-journal.sqlite")
    assert s.dry_run is False and s.log_json is False
    assert s.log_level == "INFO"


def test_default_gas_policy_in_integer_wei() -> None:
    s = load()
    gas = s.gas
    assert dict(gas.max_fee_cap) == {
        "LOW": 30_000_000_000,
        "NORMAL": 60_000_000_000,
        "HIGH": 150_000_000_000,
        "CRITICAL": 1_000_000_000_000,
    }
    assert gas.acceptable_base_fee == 25_000_000_000
    assert gas.priority_fee_min == 10_000_000
    assert gas.priority_fee_max == 5_000_000_000
    assert s.gas_limit_margin == 1.25
    assert gas.bump_percent == 12.5
    assert s.tx_timeout == 60.0 and gas.max_replacements == 5
    for value in (*gas.max_fee_cap.values(), gas.acceptable_base_fee,
                  gas.priority_fee_min, gas.priority_fee_max):
        assert type(value) is int


def test_fee_caps_cover_every_urgency_by_name() -> None:
    s = load(max_fee_gwei_high="151.5")
    caps = s.fee_caps_wei()
    assert set(caps) == {u.name for u in Urgency}
    assert s.gas.cap_for(Urgency.HIGH) == 151_500_000_000
    assert s.gas.cap_for(Urgency.CRITICAL) == 1_000_000_000_000
    with pytest.raises(TypeError):
        caps["LOW"] = 1  # type: ignore[index]


def test_every_field_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, name


def test_settings_are_immutable() -> None:
    s = load()
    with pytest.raises(Exception, match="frozen"):
        s.poll_interval = 1.0


# --- gwei → wei ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gwei", "wei"),
    [
        (0.01, 10_000_000),
        (12.5, 12_500_000_000),
        (0.57, 570_000_000),  # 0.57 * 1e9 in binary floats is 569_999_999.99…
        (1.1, 1_100_000_000),
        (1e-9, 1),
        (1.9e-9, 1),  # floor
        (0.0, 0),
        (123456.123456789, 123_456_123_456_789),
    ],
)
def test_gwei_to_wei_is_exact_and_floors(gwei: float, wei: int) -> None:
    assert gwei_to_wei(gwei) == wei


@given(st.decimals(min_value=0, max_value=100_000, places=9, allow_nan=False))
def test_gwei_to_wei_matches_decimal_arithmetic(amount: Decimal) -> None:
    assert gwei_to_wei(float(amount)) == int(amount * 10**9)


def test_gwei_to_wei_rejects_negative_and_non_finite() -> None:
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            gwei_to_wei(bad)


def test_settings_convert_configured_gwei_exactly() -> None:
    gas = load(priority_fee_min_gwei="0.57", max_fee_gwei_low="12.5").gas
    assert gas.priority_fee_min == 570_000_000
    assert gas.max_fee_cap["LOW"] == 12_500_000_000


# --- one rule, one message naming the setting --------------------------------------------------


def test_negative_poll_interval() -> None:
    assert error(poll_interval="-5") == "KEEPER_POLL_INTERVAL: must be > 0, got -5"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("poll_interval", "0", "KEEPER_POLL_INTERVAL: must be > 0, got 0"),
        ("poll_interval", "abc", "KEEPER_POLL_INTERVAL: must be a number, got 'abc'"),
        ("poll_interval", "nan", "KEEPER_POLL_INTERVAL: must be a finite number, got 'nan'"),
        ("poll_interval", "inf", "KEEPER_POLL_INTERVAL: must be a finite number, got 'inf'"),
        ("tick_deadline", "-1", "KEEPER_TICK_DEADLINE: must be > 0, got -1"),
        ("max_staleness", "0", "KEEPER_MAX_STALENESS: must be > 0, got 0"),
        ("max_staleness", "1.5", "KEEPER_MAX_STALENESS: must be a whole number, got 1.5"),
        ("max_fee_gwei_high", "-1", "KEEPER_MAX_FEE_GWEI_HIGH: must be > 0, got -1"),
        ("acceptable_base_fee_gwei", "0", "KEEPER_ACCEPTABLE_BASE_FEE_GWEI: must be > 0, got 0"),
        ("priority_fee_min_gwei", "-0.5", "KEEPER_PRIORITY_FEE_MIN_GWEI: must be > 0, got -0.5"),
        ("gas_limit_margin", "0.99", "KEEPER_GAS_LIMIT_MARGIN: must be >= 1, got 0.99"),
        ("tx_timeout", "0", "KEEPER_TX_TIMEOUT: must be > 0, got 0"),
        ("max_replacements", "-1", "KEEPER_MAX_REPLACEMENTS: must be >= 0, got -1"),
        ("fee_bump_percent", "10", "KEEPER_FEE_BUMP_PERCENT: must be >= 12.5, got 10"),
        ("chain_id", "0", "KEEPER_CHAIN_ID: must be > 0, got 0"),
        ("chain_id", "mainnet", "KEEPER_CHAIN_ID: must be a whole number, got 'mainnet'"),
        ("dry_run", "maybe", "KEEPER_DRY_RUN: must be true or false, got 'maybe'"),
    ],
)
def test_field_rule_messages(field: str, value: str, expected: str) -> None:
    assert error(**{field: value}) == expected


def test_log_level_is_case_insensitive_and_checked() -> None:
    assert load(log_level="debug").log_level == "DEBUG"
    message = error(log_level="verbose")
    assert message.startswith("KEEPER_LOG_LEVEL: must be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'")


def test_several_errors_on_one_line() -> None:
    message = error(poll_interval="-5", max_staleness="0")
    assert message == (
        "KEEPER_POLL_INTERVAL: must be > 0, got -5; KEEPER_MAX_STALENESS: must be > 0, got 0"
    )


def test_boundaries_that_are_allowed() -> None:
    s = load(gas_limit_margin="1", fee_bump_percent="12.5", max_replacements="0",
             tick_deadline="12", poll_interval="12")
    assert s.gas_limit_margin == 1.0 and s.gas.bump_percent == 12.5
    assert s.max_replacements == 0 and s.tick_deadline == 12.0


def test_tick_deadline_defaults_to_share_of_interval() -> None:
    s = load(poll_interval="5")
    assert s.tick_deadline == pytest.approx(4.0)
    assert load(poll_interval="5", tick_deadline="2.5").tick_deadline == 2.5


def test_tick_deadline_longer_than_interval() -> None:
    assert error(poll_interval="10", tick_deadline="11") == (
        "KEEPER_TICK_DEADLINE: must be <= KEEPER_POLL_INTERVAL (10), got 11"
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"max_fee_gwei_normal": "29"},
         "KEEPER_MAX_FEE_GWEI_NORMAL (29) must be >= KEEPER_MAX_FEE_GWEI_LOW (30)"),
        ({"max_fee_gwei_high": "59.5"},
         "KEEPER_MAX_FEE_GWEI_HIGH (59.5) must be >= KEEPER_MAX_FEE_GWEI_NORMAL (60)"),
        ({"max_fee_gwei_critical": "149"},
         "KEEPER_MAX_FEE_GWEI_CRITICAL (149) must be >= KEEPER_MAX_FEE_GWEI_HIGH (150)"),
    ],
)
def test_fee_caps_must_not_decrease_with_urgency(
    overrides: dict[str, str], expected: str
) -> None:
    message = error(acceptable_base_fee_gwei="1", **overrides)
    assert message == expected + ": caps rise with urgency"


def test_equal_fee_caps_are_allowed() -> None:
    s = load(max_fee_gwei_low="40", max_fee_gwei_normal="40", max_fee_gwei_high="40",
             max_fee_gwei_critical="40")
    assert set(s.fee_caps_wei().values()) == {40_000_000_000}


def test_fee_cap_below_one_wei() -> None:
    message = error(max_fee_gwei_low="1e-12", acceptable_base_fee_gwei="1")
    assert message == "KEEPER_MAX_FEE_GWEI_LOW: must be at least 1 wei (1e-9 gwei)"


def test_acceptable_base_fee_above_normal_cap() -> None:
    assert error(acceptable_base_fee_gwei="61") == (
        "KEEPER_ACCEPTABLE_BASE_FEE_GWEI (61) must be <= KEEPER_MAX_FEE_GWEI_NORMAL (60)"
    )
    assert load(acceptable_base_fee_gwei="60").gas.acceptable_base_fee == 60_000_000_000


def test_priority_fee_bounds_inverted() -> None:
    assert error(priority_fee_min_gwei="6") == (
        "KEEPER_PRIORITY_FEE_MIN_GWEI (6) must be <= KEEPER_PRIORITY_FEE_MAX_GWEI (5)"
    )


def test_rpc_url_required_and_http() -> None:
    assert error(rpc_url=None) == "KEEPER_RPC_URL: required"
    assert error(rpc_url="") == "KEEPER_RPC_URL: required"  # empty counts as unset
    message = error(rpc_url="ftp://bob:pw@host.example/KEY42")
    assert message == "KEEPER_RPC_URL: must be an http(s) URL, got ftp://***@host.example/***"


def test_journal_directory_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "j.sqlite"
    assert error(journal=str(missing)) == (
        f"KEEPER_JOURNAL: directory {missing.parent} does not exist"
    )
    assert load(journal=str(tmp_path / "j.sqlite")).journal == tmp_path / "j.sqlite"


# --- key source -----------------------------------------------------------------------------


def test_key_and_keystore_both_set(tmp_path: Path) -> None:
    message = error(keystore=str(tmp_path / "k.json"), keystore_password_file=str(tmp_path / "p"))
    assert message == (
        "KEEPER_PRIVATE_KEY and KEEPER_KEYSTORE: both set; give exactly one key source"
    )


def test_keystore_without_password_file(tmp_path: Path) -> None:
    message = error(private_key=None, keystore=str(tmp_path / "k.json"))
    assert message == "KEEPER_KEYSTORE_PASSWORD_FILE: required with KEEPER_KEYSTORE"


def test_password_file_without_keystore(tmp_path: Path) -> None:
    message = error(private_key=None, keystore_password_file=str(tmp_path / "p"))
    assert message == "KEEPER_KEYSTORE_PASSWORD_FILE: set without KEEPER_KEYSTORE"


def test_keystore_source_accepted(tmp_path: Path) -> None:
    s = load(private_key=None, keystore=str(tmp_path / "k.json"),
             keystore_password_file=str(tmp_path / "p"))
    assert s.keystore == tmp_path / "k.json" and s.private_key is None


def test_no_key_outside_dry_run() -> None:
    message = error(private_key=None)
    assert message.startswith("KEEPER_PRIVATE_KEY / KEEPER_KEYSTORE: a signing key is required")
    assert "KEEPER_DRY_RUN" in message


def test_dry_run_without_key_is_fine() -> None:
    s = load(private_key=None, dry_run="true")
    assert s.dry_run is True and s.private_key is None and s.keystore is None


@pytest.mark.parametrize(
    "bad_key",
    [KEY[:-2], KEY + "00", "0x" + "zz" * 32, "not-a-key-" + KEY_HEX[:20], "0x"],
)
def test_malformed_private_key_is_not_echoed(bad_key: str) -> None:
    message = error(private_key=bad_key)
    assert message == "KEEPER_PRIVATE_KEY: not a valid private key"


def test_private_key_without_0x_and_padded() -> None:
    assert load(private_key=KEY_HEX).private_key is not None
    s = load(private_key=f"  {KEY}\n")
    assert s.private_key is not None and s.private_key.get_secret_value() == KEY


# --- vaults ----------------------------------------------------------------------------------


def test_comma_separated_vaults_with_spaces_are_checksummed_and_deduplicated() -> None:
    raw = f" {ADDR_A.lower()} ,{ADDR_B},  {ADDR_C.upper().replace('0X', '0x')} ,{ADDR_A}, "
    assert load(vaults=raw).vaults == (ADDR_A, ADDR_B, ADDR_C)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0x12", "KEEPER_VAULTS: '0x12' is not an address"),
        ("0x" + "g" * 40, f"KEEPER_VAULTS: '0x{'g' * 40}' is not an address"),
        (ADDR_A[2:], f"KEEPER_VAULTS: '{ADDR_A[2:]}' is not an address"),
        (f"{ADDR_B},0x12", "KEEPER_VAULTS: '0x12' is not an address"),
    ],
)
def test_not_an_address(value: str, expected: str) -> None:
    assert error(vaults=value) == expected


def test_bad_checksum() -> None:
    bad = ADDR_A[:-1] + "D"  # last letter's case flipped: mixed case, wrong EIP-55
    message = error(vaults=bad)
    assert message == f"KEEPER_VAULTS: '{bad}' has a bad checksum (expected {ADDR_A})"


def test_parse_address_reference_vectors() -> None:
    for addr in (ADDR_A, ADDR_B, ADDR_C, ADDR_D):
        assert parse_address(addr.lower()) == addr
        assert parse_address(addr) == addr


def test_no_vault_at_all() -> None:
    message = error(vaults=None)
    assert message.startswith("KEEPER_VAULTS / KEEPER_DEPLOYMENT: no vault to watch")


# --- deployment ----------------------------------------------------------------------------


def test_deployment_alone_gives_vaults_and_chain_id(tmp_path: Path) -> None:
    path = write_deployment(tmp_path / "d.json", [ADDR_C.lower(), ADDR_D])
    s = load(vaults=None, deployment=str(path))
    assert s.chain_id == 31337
    assert resolve_vaults(s) == (ADDR_C, ADDR_D)
    assert s.vaults == ()
    assert dict(s.describe())["KEEPER_CHAIN_ID"] == "31337 (from KEEPER_DEPLOYMENT)"
    assert s.deployment_data is not None
    assert s.deployment_data["contracts"]["Multicall3"] == MULTICALL3


def test_vaults_merged_with_deployment_without_duplicates(tmp_path: Path) -> None:
    path = write_deployment(tmp_path / "d.json", [ADDR_B.lower(), ADDR_C])
    s = load(vaults=f"{ADDR_A},{ADDR_B}", deployment=str(path))
    assert resolve_vaults(s) == (ADDR_A, ADDR_B, ADDR_C)


def test_explicit_chain_id_must_match_deployment(tmp_path: Path) -> None:
    path = write_deployment(tmp_path / "d.json", [ADDR_C])
    assert load(chain_id="31337", deployment=str(path)).chain_id == 31337
    assert error(chain_id="1", deployment=str(path)) == (
        f"KEEPER_CHAIN_ID: 1 differs from chain_id 31337 in KEEPER_DEPLOYMENT {path}"
    )


def test_chain_id_explicit_without_deployment() -> None:
    s = load(chain_id="10")
    assert s.chain_id == 10 and dict(s.describe())["KEEPER_CHAIN_ID"] == "10"


def test_missing_deployment_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    assert error(deployment=str(path)) == (
        f"KEEPER_DEPLOYMENT: {path}: cannot read (No such file or directory)"
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"chain_id": 1,', "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"vaults": []}', "'chain_id' must be a positive integer, got None"),
        ('{"chain_id": true, "vaults": []}', "'chain_id' must be a positive integer, got True"),
        ('{"chain_id": 1, "vaults": "0xabc"}', "'vaults' must be a list of addresses"),
        ('{"chain_id": 1, "vaults": ["0x12"]}', "vaults: '0x12' is not an address"),
        ('{"chain_id": 1, "vaults": [], "contracts": {"X": "0x1"}}',
         "contracts: '0x1' is not an address"),
        ('{"chain_id": 1, "vaults": [], "contracts": []}',
         "'contracts' must map names to addresses"),
    ],
)
def test_malformed_deployment(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "d.json"
    path.write_text(content)
    message = error(deployment=str(path))
    assert message.startswith(f"KEEPER_DEPLOYMENT: {path}: ")
    assert problem in message


def test_deployment_is_a_directory(tmp_path: Path) -> None:
    message = error(deployment=str(tmp_path))
    assert message.startswith(f"KEEPER_DEPLOYMENT: {tmp_path}: cannot read")


def test_deployment_without_vaults_and_no_vaults_setting(tmp_path: Path) -> None:
    path = write_deployment(tmp_path / "d.json", [])
    assert error(vaults=None, deployment=str(path)).startswith(
        "KEEPER_VAULTS / KEEPER_DEPLOYMENT: no vault to watch"
    )


def test_load_deployment_checksums_every_address(tmp_path: Path) -> None:
    path = write_deployment(tmp_path / "d.json", [ADDR_A.lower()])
    data = load_deployment(path)
    assert data["chain_id"] == 31337 and data["block"] == 42
    assert data["vaults"] == [ADDR_A]
    assert data["contracts"] == {"USDC": ADDR_D, "ETH_USD": ADDR_C, "Multicall3": MULTICALL3}
    assert data["accounts"] == {"keeper": ADDR_B}


# --- sources: environment, .env ------------------------------------------------------------------


def test_dotenv_file(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# operator settings\n"
        f"KEEPER_RPC_URL={RPC}\n"
        f"KEEPER_PRIVATE_KEY={KEY}\n"
        f'KEEPER_VAULTS="{ADDR_A}, {ADDR_B}"  # two vaults\n'
        "KEEPER_POLL_INTERVAL=30\n"
        "KEEPER_MAX_FEE_GWEI_CRITICAL=800\n"
        "KEEPER_LOG_JSON=true\n"
    )
    s = load_settings({}, env_file=dotenv)
    assert s.vaults == (ADDR_A, ADDR_B)
    assert s.poll_interval == 30.0 and s.tick_deadline == pytest.approx(24.0)
    assert s.gas.cap_for(Urgency.CRITICAL) == 800_000_000_000
    assert s.log_json is True


def test_environment_overrides_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"KEEPER_RPC_URL={RPC}\nKEEPER_POLL_INTERVAL=30\nKEEPER_VAULTS={ADDR_A}\n")
    s = load_settings({"KEEPER_POLL_INTERVAL": "7", "KEEPER_DRY_RUN": "1"}, env_file=dotenv)
    assert s.poll_interval == 7.0
    assert s.vaults == (ADDR_A,)  # from .env, not overridden


def test_dotenv_values_are_validated_like_the_environment(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"KEEPER_RPC_URL={RPC}\nKEEPER_VAULTS=0x12\nKEEPER_DRY_RUN=1\n")
    with pytest.raises(ConfigError, match=r"^KEEPER_VAULTS: '0x12' is not an address$"):
        load_settings({}, env_file=dotenv)


def test_missing_dotenv_is_ignored(tmp_path: Path) -> None:
    s = load_settings(base_env(), env_file=tmp_path / "no.env")
    assert s.vaults == (ADDR_A,)


def test_missing_env_file_is_an_error_when_required(tmp_path: Path) -> None:
    """An --env-file the operator names must exist: a typo'd name is not an empty file."""
    missing = tmp_path / "no.env"
    with pytest.raises(ConfigError) as info:
        load_settings(base_env(), env_file=missing, env_file_required=True)
    assert str(info.value) == f"--env-file {missing}: no such file"


@pytest.mark.parametrize("required", [False, True])
def test_env_file_that_is_a_directory_is_an_error(tmp_path: Path, required: bool) -> None:
    """pydantic-settings skips a directory silently; the operator meant a file there."""
    with pytest.raises(ConfigError) as info:
        load_settings(base_env(), env_file=tmp_path, env_file_required=required)
    assert str(info.value) == f"--env-file {tmp_path}: is a directory, not a settings file"


def test_env_file_that_is_not_text_is_an_error(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_bytes(b"KEEPER_POLL_INTERVAL=\xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_settings(base_env(), env_file=dotenv, env_file_required=True)
    assert str(info.value) == f"--env-file {dotenv}: not UTF-8 text"


def test_required_env_file_that_exists_is_read(tmp_path: Path) -> None:
    dotenv = tmp_path / "keeper.env"
    dotenv.write_text("KEEPER_POLL_INTERVAL=30\n")
    assert load_settings(base_env(), env_file=dotenv, env_file_required=True).poll_interval == 30


def test_given_env_replaces_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPER_POLL_INTERVAL", "-1")
    monkeypatch.setenv("KEEPER_KEYSTORE", "/nope")
    assert load().poll_interval == 12.0


def test_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in list(os.environ):
        if name.upper().startswith("KEEPER_"):
            monkeypatch.delenv(name)
    for name, value in base_env(poll_interval="3").items():
        monkeypatch.setenv(name, value)
    s = load_settings(env_file=tmp_path / "absent.env")
    assert s.poll_interval == 3.0 and s.vaults == (ADDR_A,)


def test_unknown_keeper_names_are_warned_by_name_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = base_env()
    env["KEEPER_POLL_INTERVALL"] = "5"
    env["KEEPER_DEPLOYER_KEY"] = KEY
    with caplog.at_level(logging.WARNING, logger="keeper.config"):
        s = load_settings(env, env_file=None)
    assert s.poll_interval == 12.0
    assert "KEEPER_POLL_INTERVALL" in caplog.text
    assert "KEEPER_DEPLOYER_KEY" not in caplog.text
    assert KEY_HEX not in caplog.text


# --- masking -------------------------------------------------------------------------------


def _assert_no_secret(text: str) -> None:
    assert KEY_HEX not in text and KEY_HEX.upper() not in text
    for secret in RPC_SECRETS:
        assert secret not in text, secret


def test_describe_masks_secrets_and_shows_everything(tmp_path: Path) -> None:
    s = load(max_fee_gwei_low="12.5")
    rows = s.describe()
    names = [name for name, _ in rows]
    assert names == [env_name(field) for field in Settings.model_fields]
    shown = dict(rows)
    assert shown["KEEPER_RPC_URL"] == "https://***@eth-mainnet.example.com/***"
    assert shown["KEEPER_RPC_URL"] == mask_rpc_url(RPC)
    assert shown["KEEPER_PRIVATE_KEY"] == "***"
    assert shown["KEEPER_KEYSTORE"] == "(not set)"
    assert shown["KEEPER_VAULTS"] == ADDR_A
    assert shown["KEEPER_MAX_FEE_GWEI_LOW"] == "12.5 gwei"
    assert shown["KEEPER_PRIORITY_FEE_MIN_GWEI"] == "0.01 gwei"
    assert shown["KEEPER_TICK_DEADLINE"] == "9.6"
    assert shown["KEEPER_DRY_RUN"] == "false"
    _assert_no_secret(repr(rows))


def test_describe_shows_keystore_paths(tmp_path: Path) -> None:
    s = load(private_key=None, keystore=str(tmp_path / "k.json"),
             keystore_password_file=str(tmp_path / "pw.txt"))
    shown = dict(s.describe())
    assert shown["KEEPER_KEYSTORE"] == str(tmp_path / "k.json")
    assert shown["KEEPER_KEYSTORE_PASSWORD_FILE"] == str(tmp_path / "pw.txt")
    assert shown["KEEPER_PRIVATE_KEY"] == "(not set)"


@pytest.mark.parametrize(
    "url",
    [
        RPC,
        "https://eth-mainnet.example.com/v2/APIKEY123",
        "http://alice:hunter2@127.0.0.1:8545",
        "https://node.example.com/?token=QSECRET",
    ],
)
def test_repr_str_and_dumps_never_hold_secrets(url: str) -> None:
    s = load(rpc_url=url)
    assert s.rpc_url.get_secret_value() == url  # the value itself is intact for connecting
    for text in (repr(s), str(s), f"{s}", s.model_dump_json(), repr(s.describe())):
        _assert_no_secret(text)


def test_errors_never_hold_secrets() -> None:
    message = error(poll_interval="-5", private_key=KEY_HEX + "0")
    assert "KEEPER_PRIVATE_KEY: not a valid private key" in message
    _assert_no_secret(message)
    with pytest.raises(ConfigError) as info:
        load(poll_interval="-5")
    # No chained pydantic error (its dump would show inputs) behind the one line.
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_ratios_reach_the_fee_policy_exactly() -> None:
    # A gas margin or a fee bump rounded down could undershoot (a bump below 12.5 % is refused):
    # the exact values reach the policy; each bump is rounded up in wei (tests/unit/test_fees.py).
    s = load(gas_limit_margin="1.00005", fee_bump_percent="12.50001")
    assert s.gas_limit_margin == 1.00005
    assert s.gas.bump_percent == 12.50001


# --- fallback RPC URLs ---------------------------------------------------------------------------

FALLBACK_A = "https://bob:sekret99@backup.example.org/v3/FALLBACKKEY1?k=FQUERY1"
FALLBACK_B = "http://10.0.0.7:8545"
FALLBACK_SECRETS = ("sekret99", "FALLBACKKEY1", "FQUERY1", "bob")


def test_fallback_urls_are_split_in_order_and_kept_intact() -> None:
    s = load(rpc_fallback_urls=f" {FALLBACK_A} ,, {FALLBACK_B},")
    assert [u.get_secret_value() for u in s.rpc_fallback_urls] == [FALLBACK_A, FALLBACK_B]
    assert s.rpc_urls() == (RPC, FALLBACK_A, FALLBACK_B)  # primary first: connect order
    assert load().rpc_fallback_urls == () and load().rpc_urls() == (RPC,)
    assert load(rpc_fallback_urls="").rpc_fallback_urls == ()  # empty is unset


def test_fallback_urls_are_masked_wherever_shown() -> None:
    s = load(rpc_fallback_urls=f"{FALLBACK_A},{FALLBACK_B}")
    shown = dict(s.describe())["KEEPER_RPC_FALLBACK_URLS"]
    assert shown == "https://***@backup.example.org/***, http://10.0.0.7:8545"
    for text in (repr(s), str(s), s.model_dump_json(), repr(s.describe())):
        for secret in FALLBACK_SECRETS:
            assert secret not in text, (secret, text)
    assert dict(load().describe())["KEEPER_RPC_FALLBACK_URLS"] == "(none)"


def test_fallback_url_must_be_http_and_the_error_shows_it_masked() -> None:
    message = error(rpc_fallback_urls=f"{FALLBACK_B},wss://bob:sekret99@ws.example/FALLBACKKEY1")
    assert message == (
        "KEEPER_RPC_FALLBACK_URLS: entry 2 must be an http(s) URL, got wss://***@ws.example/***"
    )
    assert error(rpc_fallback_urls="backup.example.org:8545") == (
        "KEEPER_RPC_FALLBACK_URLS: entry 1 must be an http(s) URL, got <unparseable url>"
    )


@pytest.mark.parametrize(
    ("fallbacks", "expected"),
    [
        (RPC + "/", "entry 1 repeats KEEPER_RPC_URL"),  # a trailing slash is the same endpoint
        (f"{FALLBACK_B},{FALLBACK_A},{FALLBACK_B}", "entry 3 repeats entry 1"),
    ],
)
def test_a_repeated_endpoint_is_no_fallback(fallbacks: str, expected: str) -> None:
    message = error(rpc_fallback_urls=fallbacks)
    assert message == f"KEEPER_RPC_FALLBACK_URLS: {expected}"
    _assert_no_secret(message)


# --- minimum gas balance -------------------------------------------------------------------------


def test_min_gas_balance_defaults_to_one_deleverage_at_the_critical_cap() -> None:
    # 450,000 gas x 1.25 = 562,500 gas limit, x 1,000 gwei = 0.5625 ETH
    s = load()
    assert s.min_gas_balance_eth is None
    assert s.min_gas_balance_wei == 562_500 * 1000 * 10**9 == 562_500_000_000_000_000
    shown = dict(s.describe())["KEEPER_MIN_GAS_BALANCE_ETH"]
    assert shown == "0.5625 ETH (one deleverage at the CRITICAL cap)"
    # it follows the margin (rounded down, as the sender's gas limit) and the CRITICAL cap
    s = load(gas_limit_margin="1.333333", max_fee_gwei_critical="200")
    assert s.min_gas_balance_wei == 599_999 * 200 * 10**9


@pytest.mark.parametrize(
    ("eth", "wei", "shown"),
    [
        ("0.05", 50_000_000_000_000_000, "0.05 ETH"),
        ("2", 2 * 10**18, "2 ETH"),
        ("1e-19", 1, "0.000000000000000001 ETH"),  # rounded up: a minimum is never lowered
        ("0", 0, "0 ETH (check off)"),
    ],
)
def test_min_gas_balance_in_eth_becomes_exact_wei(eth: str, wei: int, shown: str) -> None:
    s = load(min_gas_balance_eth=eth)
    assert s.min_gas_balance_wei == wei
    assert dict(s.describe())["KEEPER_MIN_GAS_BALANCE_ETH"] == shown


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("-0.01", "KEEPER_MIN_GAS_BALANCE_ETH: must be >= 0, got -0.01"),
        ("lots", "KEEPER_MIN_GAS_BALANCE_ETH: must be a number, got 'lots'"),
        ("inf", "KEEPER_MIN_GAS_BALANCE_ETH: must be a finite number, got 'inf'"),
    ],
)
def test_min_gas_balance_errors(value: str, expected: str) -> None:
    assert error(min_gas_balance_eth=value) == expected


def test_eth_to_wei_and_back_are_exact() -> None:
    assert eth_to_wei(0.57) == 570_000_000_000_000_000  # int(0.57 * 1e18) is ...999936
    assert eth_to_wei(1.5e-18) == 2  # up
    assert format_eth(281_250_000_000_000_000) == "0.28125 ETH"
    assert format_eth(10_000 * 10**18) == "10000 ETH"
    assert format_eth(0) == "0 ETH"
    with pytest.raises(ValueError):
        eth_to_wei(-1.0)


PG = "postgresql://keeper:Pg-Pass-77x@db.internal:5432/keeper"


def test_a_postgresql_journal_is_a_secret_url_and_needs_the_chain_id() -> None:
    s = load(journal=PG, chain_id="1")
    assert s.journal_is_postgres and s.journal_target == PG
    shown = dict(s.describe())["KEEPER_JOURNAL"]
    assert "Pg-Pass-77x" not in shown and shown.startswith("postgresql://***@db.internal:5432")
    assert PG in s.secret_urls() and RPC in s.secret_urls()
    assert "needs KEEPER_CHAIN_ID" in error(journal=PG)
    no_db = error(journal="postgresql://keeper:Pg-Pass-77x@db.internal:5432", chain_id="1")
    assert "names no host or database" in no_db and "Pg-Pass-77x" not in no_db
    assert "not a valid postgresql:// URL" in error(
        journal="postgresql://keeper:Pg-Pass-77x@db.internal:99999/k", chain_id="1")


def test_a_sqlite_journal_stays_a_path_and_the_lease_timing_is_checked(tmp_path: Path) -> None:
    s = load(journal=str(tmp_path / "j.sqlite"))
    assert not s.journal_is_postgres and s.journal == tmp_path / "j.sqlite"
    assert s.secret_urls() == s.rpc_urls()
    assert (s.lease_seconds, s.lease_renew_interval) == (10.0, 1.0)
    assert s.effective_replica_id.endswith(f":{os.getpid()}")
    assert load(replica_id="keeper-eu-1").effective_replica_id == "keeper-eu-1"
    slow = error(journal=PG, chain_id="1", lease_seconds="10", lease_renew_interval="4")
    assert "fewer than 3 renewals" in slow and "KEEPER_LEASE_RENEW_INTERVAL" in slow
    assert load(journal=PG, chain_id="1", lease_seconds="3", lease_renew_interval="1")


def test_the_journal_alone_is_read_for_status_without_the_other_settings(
    tmp_path: Path,
) -> None:
    from keeper.config import load_journal_target

    assert load_journal_target({"KEEPER_JOURNAL": PG}, env_file=None) == PG
    env_file = tmp_path / ".env"
    env_file.write_text(f"KEEPER_JOURNAL={tmp_path}/from-file.sqlite\n")
    assert load_journal_target({}, env_file=env_file) == f"{tmp_path}/from-file.sqlite"
    assert load_journal_target({"KEEPER_JOURNAL": PG}, env_file=env_file) == PG  # env wins
    assert load_journal_target({}, env_file=None) == "keeper-journal.sqlite"
    with pytest.raises(ConfigError, match="no such file"):
        load_journal_target({}, env_file=tmp_path / "missing.env", env_file_required=True)
