"""Issue 4, "Bad input", at the command line: every bad setting gives one clear line naming the
setting, exit code 2, no traceback and no secret — and a good configuration still works.

Settings and key problems go through `check-config` (it validates without connecting; a few
also through `run --once`, which configures logging first); the network problems (unreachable
RPC, wrong chain, an address that is not a vault) through `run --once` and `status`, the two
commands that connect. Each bad case changes one thing in a configuration that a `*_is_valid`
test shows to be good, so no case can pass for the wrong reason.

The bad cases are tables; each table's keeper processes run side by side (see `run_cases`) and
each case is then asserted by its own test.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from eth_typing import HexStr

from tests.cli.conftest import (
    KEEPER_KEY,
    UNKNOWN_NAME_WARNING,
    Case,
    Node,
    Run,
    assert_no_secret,
    assert_user_error,
    result_of,
    run_cases,
    run_keeper,
)

#: A vault address in EIP-55 form (mixed case): any address will do until a node is asked.
VAULT = "0x84eA74d481Ee0A5332c457a4d796187F6Ba67fEB"
#: Credentials, an API-key path and query in an RPC URL: none of it may ever be printed.
RPC_USER, RPC_PASSWORD, RPC_PATH_SECRET, RPC_QUERY_SECRET = (
    "alice",
    "hunter2",
    "SECRETPATHKEY",
    "QUERYTOKEN",
)
RPC_SECRETS = (f"{RPC_USER}:{RPC_PASSWORD}", RPC_PASSWORD, RPC_PATH_SECRET, RPC_QUERY_SECRET)
#: Nothing listens on port 1: connecting is refused at once.
DEAD_RPC = "http://127.0.0.1:1"
#: Keystore passwords; the keystore is real (eth-account, pbkdf2 with few iterations: instant).
KEYSTORE_PASSWORD = "correct horse battery staple"
WRONG_PASSWORD = "Tr0ub4dor&3"
KEYSTORE_ITERATIONS = 2
#: The key inside the test keystore (not the keeper's, so a leak of either is told apart).
KEYSTORE_KEY = "0x" + "4c" * 32
KEYSTORE_FILE, PASSWORD_FILE = "keeper.keystore.json", "password.txt"


def key_digits(key: str) -> str:
    """What must never be printed of a key: its hex digits, with or without 0x."""
    return key.removeprefix("0x")


#: Never printed by any case, good or bad.
SECRETS = (
    key_digits(KEEPER_KEY),
    key_digits(KEYSTORE_KEY),
    KEYSTORE_PASSWORD,
    WRONG_PASSWORD,
    *RPC_SECRETS,
)


def flip_one_letter_case(address: str) -> str:
    """`address` with the case of its first hex letter flipped: a bad EIP-55 checksum."""
    digits = address[2:]
    index = next(i for i, ch in enumerate(digits) if ch.isalpha())
    return "0x" + digits[:index] + digits[index].swapcase() + digits[index + 1 :]


def credentialed(url: str) -> str:
    """`url` (scheme://host:port) with user:password, a secret path and a secret query."""
    scheme, rest = url.split("://", 1)
    return (
        f"{scheme}://{RPC_USER}:{RPC_PASSWORD}@{rest}/v2/{RPC_PATH_SECRET}"
        f"?apikey={RPC_QUERY_SECRET}"
    )


def changed(base: Mapping[str, str], **changes: str | None) -> dict[str, str]:
    """`base` with `changes` applied; None removes a setting."""
    out = dict(base)
    for name, value in changes.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


#: A valid configuration that needs no node; every offline case changes it in one place.
OFFLINE = {
    "KEEPER_RPC_URL": "http://127.0.0.1:8545",
    "KEEPER_PRIVATE_KEY": KEEPER_KEY,
    "KEEPER_VAULTS": VAULT,
}


def keystore_json(password: str = KEYSTORE_PASSWORD) -> str:
    encrypted = Account.encrypt(
        HexStr(KEYSTORE_KEY), password, kdf="pbkdf2", iterations=KEYSTORE_ITERATIONS
    )
    return json.dumps(encrypted)


def with_keystore(
    password_in_file: str | None, **changes: str | None
) -> tuple[dict[str, str], dict[str, str]]:
    """Settings and files for a keystore holding KEYSTORE_KEY under KEYSTORE_PASSWORD, with
    `password_in_file` in the password file (None: no password file)."""
    files = {KEYSTORE_FILE: keystore_json()}
    settings = changed(OFFLINE, KEEPER_PRIVATE_KEY=None, KEEPER_KEYSTORE=KEYSTORE_FILE)
    if password_in_file is not None:
        files[PASSWORD_FILE] = password_in_file + "\n"
        settings["KEEPER_KEYSTORE_PASSWORD_FILE"] = PASSWORD_FILE
    return changed(settings, **changes), files


@dataclass(frozen=True)
class BadInput:
    """A case and what its one error line must say."""

    case: Case
    #: The setting the line must name (the line is "keeper: error: <setting ...>").
    setting: str
    phrases: tuple[str, ...] = ()
    #: Exact warning lines expected besides the error (unknown KEEPER_ names only).
    warnings: tuple[str, ...] = ()


def check(expected: BadInput, run: Run) -> None:
    """`run` is the one clear line `expected` asks for, and leaks no secret — not even a malformed
    key given in the case (under its name or a typo of it)."""
    given_keys = (
        key_digits(value)
        for name, value in expected.case.settings.items()
        if "PRIVATE" in name and len(key_digits(value)) >= 8
    )
    assert_user_error(
        run,
        expected.setting,
        *expected.phrases,
        secrets=(*SECRETS, *given_keys),
        allow_unknown_name_warnings=bool(expected.warnings),
    )
    warnings = tuple(
        line for line in run.stderr.splitlines() if line.endswith(UNKNOWN_NAME_WARNING)
    )
    assert warnings == expected.warnings, run.describe()


def bad(
    id: str,
    settings: Mapping[str, str],
    setting: str,
    *phrases: str,
    args: tuple[str, ...] = ("check-config",),
    files: Mapping[str, str] | None = None,
    warnings: tuple[str, ...] = (),
) -> BadInput:
    return BadInput(Case(id, settings, args, files or {}), setting, phrases, warnings)


def _offline_cases() -> list[BadInput]:
    run_once = ("run", "--once")
    short_key, non_hex_key = KEEPER_KEY[:-2], KEEPER_KEY[:-2] + "zz"
    wrong_password = with_keystore(WRONG_PASSWORD)
    both = with_keystore(KEYSTORE_PASSWORD, KEEPER_PRIVATE_KEY=KEEPER_KEY)
    no_password = with_keystore(None)
    return [
        # --- addresses
        bad("address-too-short", changed(OFFLINE, KEEPER_VAULTS="0x12"),
            "KEEPER_VAULTS", "'0x12'", "not an address"),
        bad("address-bad-checksum", changed(OFFLINE, KEEPER_VAULTS=flip_one_letter_case(VAULT)),
            "KEEPER_VAULTS", flip_one_letter_case(VAULT), "bad checksum", f"expected {VAULT}"),
        # --- the key
        bad("key-too-short", changed(OFFLINE, KEEPER_PRIVATE_KEY=short_key),
            "KEEPER_PRIVATE_KEY", "not a valid private key"),
        bad("key-not-hex", changed(OFFLINE, KEEPER_PRIVATE_KEY=non_hex_key),
            "KEEPER_PRIVATE_KEY", "not a valid private key"),
        bad("key-not-hex-run", changed(OFFLINE, KEEPER_PRIVATE_KEY=non_hex_key),
            "KEEPER_PRIVATE_KEY", "not a valid private key", args=run_once),
        # well-formed hex but not a secp256k1 key: the signer, not the settings, rejects it
        bad("key-zero", changed(OFFLINE, KEEPER_PRIVATE_KEY="0x" + "00" * 32),
            "KEEPER_PRIVATE_KEY", "not a valid private key"),
        bad("key-missing", changed(OFFLINE, KEEPER_PRIVATE_KEY=None),
            "KEEPER_PRIVATE_KEY / KEEPER_KEYSTORE", "signing key is required", "KEEPER_DRY_RUN"),
        # a typo'd name leaves the key unset; the warning names the typo, never its value
        bad("key-under-a-typo-name",
            changed(OFFLINE, KEEPER_PRIVATE_KEY=None, KEEPER_PRIVATEKEY=KEEPER_KEY),
            "KEEPER_PRIVATE_KEY / KEEPER_KEYSTORE", "signing key is required",
            warnings=(f"ignoring KEEPER_PRIVATEKEY: {UNKNOWN_NAME_WARNING}",)),
        bad("key-and-keystore", both[0],
            "KEEPER_PRIVATE_KEY and KEEPER_KEYSTORE", "both set", files=both[1]),
        bad("keystore-wrong-password", wrong_password[0],
            "KEEPER_KEYSTORE", "wrong password", KEYSTORE_FILE, files=wrong_password[1]),
        bad("keystore-wrong-password-run", wrong_password[0],
            "KEEPER_KEYSTORE", "wrong password", KEYSTORE_FILE, files=wrong_password[1],
            args=run_once),
        bad("keystore-without-password-file", no_password[0],
            "KEEPER_KEYSTORE_PASSWORD_FILE", "required with KEEPER_KEYSTORE",
            files=no_password[1]),
        # --- intervals
        bad("poll-interval-negative", changed(OFFLINE, KEEPER_POLL_INTERVAL="-5"),
            "KEEPER_POLL_INTERVAL", "must be > 0", "-5"),
        bad("tick-deadline-above-interval",
            changed(OFFLINE, KEEPER_POLL_INTERVAL="10", KEEPER_TICK_DEADLINE="20"),
            "KEEPER_TICK_DEADLINE", "must be <= KEEPER_POLL_INTERVAL (10)", "got 20"),
        # --- fee caps
        bad("fee-cap-negative", changed(OFFLINE, KEEPER_MAX_FEE_GWEI_LOW="-1"),
            "KEEPER_MAX_FEE_GWEI_LOW", "must be > 0"),
        bad("fee-caps-out-of-order",
            changed(OFFLINE, KEEPER_MAX_FEE_GWEI_NORMAL="60", KEEPER_MAX_FEE_GWEI_HIGH="50"),
            "KEEPER_MAX_FEE_GWEI_HIGH (50)", "must be >= KEEPER_MAX_FEE_GWEI_NORMAL (60)"),
        bad("base-fee-above-normal-cap",
            changed(OFFLINE, KEEPER_MAX_FEE_GWEI_NORMAL="60", KEEPER_ACCEPTABLE_BASE_FEE_GWEI="61"),
            "KEEPER_ACCEPTABLE_BASE_FEE_GWEI (61)", "must be <= KEEPER_MAX_FEE_GWEI_NORMAL (60)"),
        bad("priority-fee-bounds-reversed",
            changed(OFFLINE, KEEPER_PRIORITY_FEE_MIN_GWEI="6", KEEPER_PRIORITY_FEE_MAX_GWEI="5"),
            "KEEPER_PRIORITY_FEE_MIN_GWEI (6)", "must be <= KEEPER_PRIORITY_FEE_MAX_GWEI (5)"),
        # --- the RPC
        bad("rpc-url-not-http", changed(OFFLINE, KEEPER_RPC_URL=credentialed("ws://node.example:8546")),
            "KEEPER_RPC_URL", "must be an http(s) URL", "ws://***@node.example:8546/***"),
        bad("rpc-unreachable", changed(OFFLINE, KEEPER_RPC_URL=DEAD_RPC),
            "KEEPER_RPC_URL", f"RPC {DEAD_RPC} unreachable", args=run_once),
        bad("rpc-unreachable-credentials", changed(OFFLINE, KEEPER_RPC_URL=credentialed(DEAD_RPC)),
            "KEEPER_RPC_URL", "RPC http://***@127.0.0.1:1/*** unreachable", args=run_once),
        bad("rpc-unreachable-status", changed(OFFLINE, KEEPER_RPC_URL=DEAD_RPC),
            "KEEPER_RPC_URL", f"RPC {DEAD_RPC} unreachable", args=("status",)),
        # --- the deployment file
        bad("deployment-missing-file",
            changed(OFFLINE, KEEPER_VAULTS=None, KEEPER_DEPLOYMENT="no-such-deployment.json"),
            "KEEPER_DEPLOYMENT: no-such-deployment.json", "cannot read"),
        bad("deployment-truncated-json",
            changed(OFFLINE, KEEPER_VAULTS=None, KEEPER_DEPLOYMENT="deployment.json"),
            "KEEPER_DEPLOYMENT: deployment.json", "not valid JSON", "line 1",
            files={"deployment.json": '{"chain_id": 31337, "vaults": ['}),
        bad("deployment-bad-vault-address",
            changed(OFFLINE, KEEPER_VAULTS=None, KEEPER_DEPLOYMENT="deployment.json"),
            "KEEPER_DEPLOYMENT: deployment.json", "vaults", "'0x12' is not an address",
            files={"deployment.json": json.dumps({"chain_id": 31337, "vaults": ["0x12"]})}),
    ]


OFFLINE_CASES = {c.case.id: c for c in _offline_cases()}


@pytest.fixture(scope="module")
def offline_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run | BaseException]:
    return run_cases([c.case for c in OFFLINE_CASES.values()], tmp_path_factory.mktemp("offline"))


@pytest.mark.parametrize("case_id", list(OFFLINE_CASES))
def test_bad_input_offline(offline_runs: dict[str, Run | BaseException], case_id: str) -> None:
    check(OFFLINE_CASES[case_id], result_of(offline_runs, case_id))


def test_offline_base_config_is_valid(workdir: Path) -> None:
    """The configuration every offline case breaks in one place passes as it is."""
    run = run_keeper(workdir, OFFLINE, "check-config")
    assert run.returncode == 0, run.describe()
    assert "configuration OK" in run.stdout
    assert Account.from_key(KEEPER_KEY).address in run.stdout
    assert_no_secret(run, SECRETS)


def test_keystore_with_right_password_is_valid(workdir: Path) -> None:
    """The keystore of the bad-password cases is a real one: the right password opens it."""
    settings, files = with_keystore(KEYSTORE_PASSWORD)
    for name, content in files.items():
        (workdir / name).write_text(content, encoding="utf-8")
    run = run_keeper(workdir, settings, "check-config")
    assert run.returncode == 0, run.describe()
    assert Account.from_key(KEYSTORE_KEY).address in run.stdout
    assert_no_secret(run, SECRETS)


# ================================================================== a live node


def node_settings(node: Node, **changes: str | None) -> dict[str, str]:
    """A valid configuration for `node`: the deployment's vaults, the keeper's key, dry run."""
    base = {
        "KEEPER_RPC_URL": node.url,
        "KEEPER_PRIVATE_KEY": KEEPER_KEY,
        "KEEPER_DEPLOYMENT": str(node.deployment_file),
        "KEEPER_DRY_RUN": "true",
    }
    return changed(base, **changes)


def _node_cases(node: Node) -> list[BadInput]:
    run_once, status = ("run", "--once"), ("status",)
    token = node.deployment.contracts["USDC"]  # has code, but no snapshot()
    eoa = node.deployment.accounts["depositor"]  # no code at all
    other_chain = json.dumps({**node.deployment.to_json(), "chain_id": 1})
    weth = node.deployment.contracts["WETH"]
    listing_a_token = json.dumps({**node.deployment.to_json(), "vaults": [node.vaults[0], weth]})

    def watching(address: str) -> dict[str, str]:
        return node_settings(node, KEEPER_DEPLOYMENT=None, KEEPER_VAULTS=address)

    return [
        bad("wrong-chain-id",
            node_settings(node, KEEPER_DEPLOYMENT=None, KEEPER_VAULTS=node.vaults[0],
                          KEEPER_CHAIN_ID="1"),
            "KEEPER_CHAIN_ID", "expected chain 1", "is on chain 31337", args=run_once),
        # the expected chain id comes from a deployment file written for another chain
        bad("wrong-chain-id-from-deployment",
            node_settings(node, KEEPER_DEPLOYMENT="deployment.json"),
            "KEEPER_CHAIN_ID / KEEPER_DEPLOYMENT", "expected chain 1", args=run_once,
            files={"deployment.json": other_chain}),
        bad("not-a-vault-token-run", watching(token),
            f"KEEPER_VAULTS: {token}", "is not a RiskVault", args=run_once),
        bad("not-a-vault-token-status", watching(token),
            f"KEEPER_VAULTS: {token}", "is not a RiskVault", args=status),
        bad("not-a-vault-eoa-run", watching(eoa),
            f"KEEPER_VAULTS: {eoa}", "has no contract code", args=run_once),
        bad("not-a-vault-eoa-status", watching(eoa),
            f"KEEPER_VAULTS: {eoa}", "has no contract code", args=status),
        # named after the setting it came from: the deployment, not KEEPER_VAULTS
        bad("not-a-vault-in-deployment", node_settings(node, KEEPER_DEPLOYMENT="deployment.json"),
            f"KEEPER_DEPLOYMENT deployment.json: {weth}", "is not a RiskVault", args=run_once,
            files={"deployment.json": listing_a_token}),
    ]


NODE_CASE_IDS = [
    "wrong-chain-id",
    "wrong-chain-id-from-deployment",
    "not-a-vault-token-run",
    "not-a-vault-token-status",
    "not-a-vault-eoa-run",
    "not-a-vault-eoa-status",
    "not-a-vault-in-deployment",
]


@pytest.fixture(scope="module")
def node_cases(node: Node) -> dict[str, BadInput]:
    cases = {c.case.id: c for c in _node_cases(node)}
    assert list(cases) == NODE_CASE_IDS
    return cases


@pytest.fixture(scope="module")
def node_runs(
    node_cases: dict[str, BadInput], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Run | BaseException]:
    return run_cases([c.case for c in node_cases.values()], tmp_path_factory.mktemp("node"))


@pytest.mark.anvil
@pytest.mark.parametrize("case_id", NODE_CASE_IDS)
def test_bad_input_on_a_node(
    node_cases: dict[str, BadInput], node_runs: dict[str, Run | BaseException], case_id: str
) -> None:
    check(node_cases[case_id], result_of(node_runs, case_id))


@pytest.mark.anvil
def test_check_config_valid_masks_secrets(node: Node, workdir: Path) -> None:
    settings = node_settings(node, KEEPER_RPC_URL=credentialed(node.url))
    run = run_keeper(workdir, settings, "check-config")
    assert run.returncode == 0, run.describe()
    assert run.stderr == "", run.describe()
    assert "configuration OK" in run.stdout
    port = node.url.rsplit(":", 1)[1]
    assert f"http://***@127.0.0.1:{port}/***" in run.stdout
    assert node.deployment.accounts["keeper"] in run.stdout  # the signer, derived from the key
    for vault in node.vaults:
        assert vault in run.stdout
    assert_no_secret(run, SECRETS)


@pytest.mark.anvil
def test_run_once_valid_config(node: Node, workdir: Path) -> None:
    """Dry run on the seeded vaults: a full tick, each vault assessed, nothing sent."""
    keeper = node.deployment.accounts["keeper"]
    nonce_before = node.w3.eth.get_transaction_count(keeper)
    run = run_keeper(workdir, node_settings(node), "run", "--once")
    assert run.returncode == 0, run.describe()
    assert "Traceback" not in run.stderr
    for vault in node.vaults:
        assert any(
            f"vault {vault}" in line and "no action" in line for line in run.stderr.splitlines()
        ), run.describe()
    assert node.w3.eth.get_transaction_count(keeper) == nonce_before
    assert_no_secret(run, SECRETS)


@pytest.mark.anvil
def test_status_valid_config(node: Node, workdir: Path) -> None:
    run = run_keeper(workdir, node_settings(node), "status")
    assert run.returncode == 0, run.describe()
    assert run.stderr == "", run.describe()
    for vault in node.vaults:
        assert vault in run.stdout
    assert run.stdout.count("vs minimum") == len(node.vaults)
    assert_no_secret(run, SECRETS)
    # Read-only: no journal file appears, wherever KEEPER_JOURNAL points.
    journal = node_settings(node).get("KEEPER_JOURNAL")
    assert journal is None or not Path(journal).exists()
    assert not list(workdir.glob("*.sqlite*"))
