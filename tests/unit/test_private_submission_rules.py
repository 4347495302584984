"""The private-submission rules that need no chain: which urgencies go private, when a private
transaction counts as dropped, the relay's distrust window, and the KEEPER_PRIVATE_* settings
(a bad URL is one masked error line, exit code 2 at the command line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from keeper.config import load_settings
from keeper.errors import ConfigError
from keeper.masking import mask_text
from keeper.risk.actions import Urgency
from keeper.tx.private import (
    DEFAULT_PRIVATE_DROP_BLOCKS,
    RELAY_DISTRUST_WINDOWS,
    PrivateRelay,
    drop_due,
    goes_private,
)
from tests.cli.conftest import KEEPER_KEY, assert_user_error, run_keeper

VAULT = "0x84eA74d481Ee0A5332c457a4d796187F6Ba67fEB"
BASE = {
    "KEEPER_RPC_URL": "http://127.0.0.1:8545",
    "KEEPER_PRIVATE_KEY": KEEPER_KEY,
    "KEEPER_VAULTS": VAULT,
}
RELAY = "https://user:hunter2@rpc.relay.example/fast/RELAYPATHKEY42?token=RELAYQUERYTOKEN7"
RELAY_SECRETS = ("hunter2", "RELAYPATHKEY42", "RELAYQUERYTOKEN7")


def load(**extra: str) -> object:
    return load_settings(env={**BASE, **extra}, env_file=None)


def test_only_low_and_normal_go_private() -> None:
    assert [u for u in Urgency if goes_private(u)] == [Urgency.LOW, Urgency.NORMAL]


@pytest.mark.parametrize(
    ("sent", "head", "due"),
    [(100, 100, False), (100, 124, False), (100, 125, True), (100, 300, True)],
)
def test_a_private_transaction_is_dropped_after_exactly_its_window(
    sent: int, head: int, due: bool
) -> None:
    assert drop_due(sent, head, DEFAULT_PRIVATE_DROP_BLOCKS) is due


def test_after_a_drop_the_relay_is_skipped_for_ten_windows() -> None:
    relay = PrivateRelay("http://127.0.0.1:1/k", drop_blocks=5)
    assert relay.trusted(0)
    relay.distrust(1_000)
    assert RELAY_DISTRUST_WINDOWS == 10
    assert not relay.trusted(1_000) and not relay.trusted(1_049)
    assert relay.trusted(1_050)


def test_the_relay_registers_its_secrets_for_masking() -> None:
    relay = PrivateRelay(RELAY, drop_blocks=3)
    assert relay.shown == "https://***@rpc.relay.example/***"
    line = mask_text(f"POST {RELAY} failed; path /fast/RELAYPATHKEY42 token RELAYQUERYTOKEN7")
    for secret in RELAY_SECRETS:
        assert secret not in line


def test_the_relay_refuses_a_zero_window() -> None:
    with pytest.raises(ValueError, match="drop_blocks must be >= 1"):
        PrivateRelay("http://127.0.0.1:1/k", drop_blocks=0)


def test_settings_default_off_and_the_window_defaults_to_25() -> None:
    settings = load()
    assert settings.private_rpc_url is None  # type: ignore[attr-defined]
    assert settings.private_drop_blocks == 25  # type: ignore[attr-defined]
    assert "http://127.0.0.1:8545" in settings.secret_urls()  # type: ignore[attr-defined]


def test_the_relay_url_is_masked_in_the_settings_and_registered_as_a_secret() -> None:
    settings = load(KEEPER_PRIVATE_RPC_URL=RELAY, KEEPER_PRIVATE_DROP_BLOCKS="40")
    assert settings.private_drop_blocks == 40  # type: ignore[attr-defined]
    assert RELAY in settings.secret_urls()  # type: ignore[attr-defined]
    shown = dict(settings.describe())  # type: ignore[attr-defined]
    assert shown["KEEPER_PRIVATE_RPC_URL"] == "https://***@rpc.relay.example/***"
    assert shown["KEEPER_PRIVATE_DROP_BLOCKS"] == "40"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"KEEPER_PRIVATE_RPC_URL": "ws://user:hunter2@relay.example/RELAYPATHKEY42"},
            "KEEPER_PRIVATE_RPC_URL: must be an http(s) URL, got ws://***@relay.example/***",
        ),
        (
            {"KEEPER_PRIVATE_RPC_URL": "http://127.0.0.1:8545/"},
            "KEEPER_PRIVATE_RPC_URL: repeats KEEPER_RPC_URL (a public node)",
        ),
        (
            {
                "KEEPER_RPC_FALLBACK_URLS": "http://127.0.0.1:8546",
                "KEEPER_PRIVATE_RPC_URL": "http://127.0.0.1:8546",
            },
            "KEEPER_PRIVATE_RPC_URL: repeats KEEPER_RPC_FALLBACK_URLS entry 1 (a public node)",
        ),
        (
            {"KEEPER_PRIVATE_RPC_URL": RELAY, "KEEPER_PRIVATE_DROP_BLOCKS": "0"},
            "KEEPER_PRIVATE_DROP_BLOCKS: must be >= 1, got 0",
        ),
    ],
    ids=["not-http", "repeats-primary", "repeats-fallback", "zero-window"],
)
def test_bad_private_settings_are_one_clear_line(extra: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(**extra)
    assert str(caught.value) == message
    for secret in RELAY_SECRETS:
        assert secret not in str(caught.value)


def test_check_config_refuses_a_bad_relay_url_with_exit_code_2(tmp_path: Path) -> None:
    bad = {**BASE, "KEEPER_PRIVATE_RPC_URL": "ftp://user:hunter2@relay.example/RELAYPATHKEY42"}
    run = run_keeper(tmp_path, bad, "check-config", "--offline")
    line = assert_user_error(
        run, "KEEPER_PRIVATE_RPC_URL", "must be an http(s) URL", secrets=RELAY_SECRETS
    )
    assert "ftp://***@relay.example/***" in line
