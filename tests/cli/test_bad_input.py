"""Issue 4, "Bad input", at the command line: every bad setting gives one clear line naming the
setting, exit code 2, no traceback and no secret — and a good configuration still works.

Settings and key problems go through `check-config` (settings and key are checked before any
node is asked; a few also through `run --once`, which configures logging first); the network
problems (unreachable RPC, wrong chain, an address that is not a vault, a signer without the
keeper role or without gas money, a fallback RPC on another chain) through `run --once`,
`check-config` (which runs the same start-up checks) and `status`. Each bad case changes one
thing in a configuration that a `*_is_valid` test shows to be good, so no case can pass for the
wrong reason.

The bad cases are tables; each table's keeper processes run side by side (see `run_cases`) and
each case is then asserted by its own test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from eth_typing import HexStr

from keeper.config import format_eth
from tests.cli.conftest import (
    HALF_KEEPER_KEY,
    KEEPER_KEY,
    OTHER_CHAIN_ID,
    STRANGER_KEY,
    UNFUNDED_KEEPER_KEY,
    UNKNOWN_NAME_WARNING,
    Case,
    Node,
    Run,
    address_of,
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
#: A PostgreSQL journal nobody listens for (port 1), with a password that must never show.
DEAD_JOURNAL = "postgresql://keeper:Journal-Secret-42@127.0.0.1:1/keeper"
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
    key_digits(STRANGER_KEY),
    key_digits(HALF_KEEPER_KEY),
    key_digits(UNFUNDED_KEEPER_KEY),
    KEYSTORE_PASSWORD,
    WRONG_PASSWORD,
    *RPC_SECRETS,
)
#: The default minimum gas balance: 450,000 gas x 1.25 margin x 1,000 gwei CRITICAL cap.
DEFAULT_MIN_GAS = "0.5625 ETH"


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


def credentialed_root(url: str) -> str:
    """`url` with user:password and a secret query but the root path: anvil answers only at
    `/`, so this is the credentialed form a live node still serves."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{RPC_USER}:{RPC_PASSWORD}@{rest}/?apikey={RPC_QUERY_SECRET}"


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
    #: What the line must not say (e.g. a vault on which the signer does hold the role).
    absent: tuple[str, ...] = ()


def check(expected: BadInput, run: Run) -> None:
    """`run` is the one clear line `expected` asks for, and leaks no secret — not even a malformed
    key given in the case (under its name or a typo of it)."""
    given_keys = (
        key_digits(value)
        for name, value in expected.case.settings.items()
        if "PRIVATE" in name and len(key_digits(value)) >= 8
    )
    line = assert_user_error(
        run,
        expected.setting,
        *expected.phrases,
        secrets=(*SECRETS, *given_keys),
        allow_unknown_name_warnings=bool(expected.warnings),
    )
    for text in expected.absent:
        assert text not in line, run.describe()
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
    absent: tuple[str, ...] = (),
) -> BadInput:
    return BadInput(Case(id, settings, args, files or {}), setting, phrases, warnings, absent)


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
        # check-config asks the node by default (--offline is the only way not to)
        bad("rpc-unreachable-check-config", changed(OFFLINE, KEEPER_RPC_URL=DEAD_RPC),
            "KEEPER_RPC_URL", f"RPC {DEAD_RPC} unreachable"),
        # --- fallback RPCs
        bad("fallback-url-not-http",
            changed(OFFLINE, KEEPER_RPC_FALLBACK_URLS="http://127.0.0.1:8546,"
                    + credentialed("ws://node.example:8546")),
            "KEEPER_RPC_FALLBACK_URLS", "entry 2 must be an http(s) URL",
            "ws://***@node.example:8546/***"),
        bad("fallback-url-repeats-primary",
            changed(OFFLINE, KEEPER_RPC_URL=credentialed("http://node.example:8545"),
                    KEEPER_RPC_FALLBACK_URLS=credentialed("http://node.example:8545")),
            "KEEPER_RPC_FALLBACK_URLS", "entry 1 repeats KEEPER_RPC_URL"),
        # --- the minimum gas balance
        bad("min-gas-balance-negative", changed(OFFLINE, KEEPER_MIN_GAS_BALANCE_ETH="-0.1"),
            "KEEPER_MIN_GAS_BALANCE_ETH", "must be >= 0", "got -0.1"),
        bad("min-gas-balance-not-a-number", changed(OFFLINE, KEEPER_MIN_GAS_BALANCE_ETH="lots"),
            "KEEPER_MIN_GAS_BALANCE_ETH", "must be a number", "got 'lots'"),
        # --- the settings file
        bad("env-file-is-a-directory", OFFLINE,
            "--env-file .", "is a directory", args=("--env-file", ".", "check-config")),
        bad("env-file-is-a-directory-run", OFFLINE,
            "--env-file .", "is a directory", args=("--env-file", ".", "run", "--once")),
        bad("env-file-missing", OFFLINE,
            "--env-file no-such.env", "no such file",
            args=("--env-file", "no-such.env", "check-config")),
        # the default .env (in the working directory) is read, and validated like the rest
        bad("dotenv-bad-value", OFFLINE,
            "KEEPER_POLL_INTERVAL", "must be > 0", "got -5",
            files={".env": "KEEPER_POLL_INTERVAL=-5\n"}),
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
    """The configuration every offline case breaks in one place passes as it is (offline:
    there is no node behind it; the cases fail on their settings before a node is asked)."""
    run = run_keeper(workdir, OFFLINE, "check-config", "--offline")
    assert run.returncode == 0, run.describe()
    assert "configuration OK" in run.stdout
    assert Account.from_key(KEEPER_KEY).address in run.stdout
    assert_no_secret(run, SECRETS)


def test_keystore_with_right_password_is_valid(workdir: Path) -> None:
    """The keystore of the bad-password cases is a real one: the right password opens it."""
    settings, files = with_keystore(KEYSTORE_PASSWORD)
    for name, content in files.items():
        (workdir / name).write_text(content, encoding="utf-8")
    run = run_keeper(workdir, settings, "check-config", "--offline")
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


def _node_cases(node: Node, other_chain: str) -> list[BadInput]:
    run_once, status = ("run", "--once"), ("status",)
    token = node.deployment.contracts["USDC"]  # has code, but no snapshot()
    eoa = node.deployment.accounts["depositor"]  # no code at all
    other_chain_deployment = json.dumps({**node.deployment.to_json(), "chain_id": 1})
    weth = node.deployment.contracts["WETH"]
    listing_a_token = json.dumps({**node.deployment.to_json(), "vaults": [node.vaults[0], weth]})
    first, second = node.vaults
    deployed = f"(KEEPER_DEPLOYMENT {node.deployment_file})"
    stranger, half, unfunded = (
        address_of(STRANGER_KEY), address_of(HALF_KEEPER_KEY), address_of(UNFUNDED_KEEPER_KEY)
    )
    other_port = other_chain.rsplit(":", 1)[1]
    # The same node under another host name: a good fallback, so entry 2 is the bad one.
    same_node = node.url.replace("127.0.0.1", "localhost")
    keystore = with_keystore(KEYSTORE_PASSWORD)

    def watching(address: str) -> dict[str, str]:
        return node_settings(node, KEEPER_DEPLOYMENT=None, KEEPER_VAULTS=address)

    def signing(key: str, **changes: str | None) -> dict[str, str]:
        """Not a dry run: the start-up checks a real start would face."""
        return node_settings(node, KEEPER_PRIVATE_KEY=key, KEEPER_DRY_RUN="false", **changes)

    return [
        # --- the chain
        bad("wrong-chain-id",
            node_settings(node, KEEPER_DEPLOYMENT=None, KEEPER_VAULTS=first, KEEPER_CHAIN_ID="1"),
            "KEEPER_CHAIN_ID", "expected chain 1", "is on chain 31337", args=run_once),
        bad("wrong-chain-id-check-config",
            node_settings(node, KEEPER_DEPLOYMENT=None, KEEPER_VAULTS=first, KEEPER_CHAIN_ID="1"),
            "KEEPER_CHAIN_ID", "expected chain 1", "is on chain 31337"),
        # the expected chain id comes from a deployment file written for another chain
        bad("wrong-chain-id-from-deployment",
            node_settings(node, KEEPER_DEPLOYMENT="deployment.json"),
            "KEEPER_CHAIN_ID / KEEPER_DEPLOYMENT", "expected chain 1", args=run_once,
            files={"deployment.json": other_chain_deployment}),
        # --- the vaults
        bad("not-a-vault-token-run", watching(token),
            f"KEEPER_VAULTS: {token}", "is not a RiskVault", args=run_once),
        bad("not-a-vault-token-status", watching(token),
            f"KEEPER_VAULTS: {token}", "is not a RiskVault", args=status),
        bad("not-a-vault-token-check-config", watching(token),
            f"KEEPER_VAULTS: {token}", "is not a RiskVault"),
        bad("not-a-vault-eoa-run", watching(eoa),
            f"KEEPER_VAULTS: {eoa}", "has no contract code", args=run_once),
        bad("not-a-vault-eoa-status", watching(eoa),
            f"KEEPER_VAULTS: {eoa}", "has no contract code", args=status),
        # named after the setting it came from: the deployment, not KEEPER_VAULTS
        bad("not-a-vault-in-deployment", node_settings(node, KEEPER_DEPLOYMENT="deployment.json"),
            f"KEEPER_DEPLOYMENT deployment.json: {weth}", "is not a RiskVault", args=run_once,
            files={"deployment.json": listing_a_token}),
        # --- the keeper role: a start refused, not a warning every tick
        bad("no-keeper-role-run", signing(STRANGER_KEY),
            "KEEPER_PRIVATE_KEY", f"signer {stranger} lacks the keeper role (KEEPER_ROLE) on "
            f"vaults {first} {deployed}, {second} {deployed}", args=run_once),
        bad("no-keeper-role-check-config", signing(STRANGER_KEY),
            "KEEPER_PRIVATE_KEY", f"signer {stranger} lacks the keeper role", first, second),
        bad("no-keeper-role-listed-vault",
            signing(STRANGER_KEY, KEEPER_DEPLOYMENT=None, KEEPER_VAULTS=second),
            "KEEPER_PRIVATE_KEY", f"on vault {second} (KEEPER_VAULTS)", args=run_once),
        # only the vault without the role is named
        bad("keeper-role-on-one-vault-only", signing(HALF_KEEPER_KEY),
            "KEEPER_PRIVATE_KEY", f"signer {half} lacks the keeper role", f"on vault {second}",
            args=run_once, absent=(first,)),
        bad("no-keeper-role-keystore",
            changed(signing(STRANGER_KEY), KEEPER_PRIVATE_KEY=None, KEEPER_KEYSTORE=KEYSTORE_FILE,
                    KEEPER_KEYSTORE_PASSWORD_FILE=PASSWORD_FILE),
            f"KEEPER_KEYSTORE {KEYSTORE_FILE}",
            f"signer {address_of(KEYSTORE_KEY)} lacks the keeper role", args=run_once,
            files=keystore[1]),
        # --- gas money
        bad("no-gas-money-run", signing(UNFUNDED_KEEPER_KEY),
            "KEEPER_MIN_GAS_BALANCE_ETH", f"signer {unfunded} (KEEPER_PRIVATE_KEY) holds 0 ETH",
            f"less than the {DEFAULT_MIN_GAS} it needs", args=run_once),
        bad("no-gas-money-check-config", signing(UNFUNDED_KEEPER_KEY),
            "KEEPER_MIN_GAS_BALANCE_ETH", f"signer {unfunded} (KEEPER_PRIVATE_KEY) holds 0 ETH"),
        bad("gas-minimum-above-balance",
            signing(KEEPER_KEY, KEEPER_MIN_GAS_BALANCE_ETH="1000000"),
            "KEEPER_MIN_GAS_BALANCE_ETH", "less than the 1000000 ETH it needs", args=run_once),
        # --- fallback RPCs
        bad("fallback-other-chain-run",
            node_settings(node, KEEPER_RPC_FALLBACK_URLS=credentialed_root(other_chain)),
            "KEEPER_RPC_FALLBACK_URLS entry 1", "expected chain 31337",
            f"RPC http://***@127.0.0.1:{other_port}/*** is on chain {OTHER_CHAIN_ID}",
            args=run_once),
        bad("fallback-other-chain-check-config",
            node_settings(node, KEEPER_RPC_FALLBACK_URLS=other_chain),
            "KEEPER_RPC_FALLBACK_URLS entry 1", f"is on chain {OTHER_CHAIN_ID}"),
        bad("fallback-second-on-other-chain",
            node_settings(node, KEEPER_RPC_FALLBACK_URLS=f"{same_node},{other_chain}"),
            "KEEPER_RPC_FALLBACK_URLS entry 2", f"is on chain {OTHER_CHAIN_ID}", args=run_once),
        bad("fallback-unreachable-check-config",
            node_settings(node, KEEPER_RPC_FALLBACK_URLS=DEAD_RPC),
            "KEEPER_RPC_FALLBACK_URLS entry 1", f"RPC {DEAD_RPC} unreachable"),
        # `run` would start on the fallback; check-config reports the primary that is down
        bad("primary-unreachable-behind-a-fallback-check-config",
            node_settings(node, KEEPER_RPC_URL=DEAD_RPC, KEEPER_RPC_FALLBACK_URLS=node.url),
            "KEEPER_RPC_URL", f"RPC {DEAD_RPC} unreachable"),
        # --- a PostgreSQL journal that is not there (after the start-up checks passed)
        bad("journal-database-unreachable-run",
            node_settings(node, KEEPER_JOURNAL=DEAD_JOURNAL, KEEPER_CHAIN_ID="31337"),
            "KEEPER_JOURNAL", "postgresql://***@127.0.0.1:1/***: cannot connect",
            args=run_once, absent=("Journal-Secret-42",)),
    ]


NODE_CASE_IDS = [
    "wrong-chain-id",
    "wrong-chain-id-check-config",
    "wrong-chain-id-from-deployment",
    "not-a-vault-token-run",
    "not-a-vault-token-status",
    "not-a-vault-token-check-config",
    "not-a-vault-eoa-run",
    "not-a-vault-eoa-status",
    "not-a-vault-in-deployment",
    "no-keeper-role-run",
    "no-keeper-role-check-config",
    "no-keeper-role-listed-vault",
    "keeper-role-on-one-vault-only",
    "no-keeper-role-keystore",
    "no-gas-money-run",
    "no-gas-money-check-config",
    "gas-minimum-above-balance",
    "fallback-other-chain-run",
    "fallback-other-chain-check-config",
    "fallback-second-on-other-chain",
    "fallback-unreachable-check-config",
    "primary-unreachable-behind-a-fallback-check-config",
    "journal-database-unreachable-run",
]


@pytest.fixture(scope="module")
def node_cases(node: Node, other_chain: str) -> dict[str, BadInput]:
    cases = {c.case.id: c for c in _node_cases(node, other_chain)}
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
@pytest.mark.parametrize(
    "case_id", ["no-keeper-role-run", "no-gas-money-run", "fallback-other-chain-run"]
)
def test_a_refused_start_leaves_no_journal(
    node_runs: dict[str, Run | BaseException], case_id: str
) -> None:
    """The start-up checks run before the journal is opened (or a nonce read): a refused
    start leaves nothing to reconcile. The same run with good settings does write one."""
    run = result_of(node_runs, case_id)
    assert run.returncode == 2, run.describe()
    assert not list(run.cwd.glob("keeper-journal.sqlite*")), run.describe()


@pytest.mark.anvil
def test_a_started_run_writes_its_journal(node: Node, workdir: Path) -> None:
    """The counterpart of the refused starts: the journal they lack is there after a start."""
    run = run_keeper(workdir, node_settings(node), "run", "--once")
    assert run.returncode == 0, run.describe()
    assert (workdir / "keeper-journal.sqlite").exists()


@pytest.mark.anvil
def test_check_config_valid_masks_secrets(node: Node, workdir: Path) -> None:
    """check-config asks the node (through credentials it must not print) and reports what
    each start-up check found."""
    settings = node_settings(
        node, KEEPER_RPC_URL=credentialed_root(node.url), KEEPER_DRY_RUN="false"
    )
    run = run_keeper(workdir, settings, "check-config")
    assert run.returncode == 0, run.describe()
    assert run.stderr == "", run.describe()
    assert run.stdout.endswith("configuration OK\n"), run.describe()
    port = node.url.rsplit(":", 1)[1]
    assert f"http://***@127.0.0.1:{port}/***" in run.stdout
    keeper = node.deployment.accounts["keeper"]
    assert keeper in run.stdout  # the signer, derived from the key
    for vault in node.vaults:
        assert vault in run.stdout
    found = check_rows(run)
    assert found["chain id"] == "31337 (as KEEPER_CHAIN_ID / KEEPER_DEPLOYMENT expects)"
    assert found["fallback RPCs"] == "none configured"
    assert found["vaults"] == "2 RiskVaults"
    assert found["keeper role"] == f"{keeper} holds KEEPER_ROLE on all 2"
    balance = node.w3.eth.get_balance(keeper)
    assert found["gas balance"] == f"{format_eth(balance)} (minimum {DEFAULT_MIN_GAS})"
    assert "not contacted" not in run.stdout
    assert_no_secret(run, SECRETS)


def check_rows(run: Run) -> dict[str, str]:
    """check-config's table of start-up checks: check name → what was found."""
    lines = run.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"check\s{2,}found$", line))
    rows = (re.split(r"\s{2,}", line, maxsplit=1) for line in lines[start + 2 : -1])
    return {row[0]: row[1] for row in rows}


def test_check_config_offline_contacts_no_node(workdir: Path) -> None:
    """--offline validates the settings only: the node at a dead address is never asked."""
    settings = changed(OFFLINE, KEEPER_RPC_URL=credentialed(DEAD_RPC),
                       KEEPER_RPC_FALLBACK_URLS=credentialed("http://fallback.example:8545"))
    run = run_keeper(workdir, settings, "check-config", "--offline")
    assert run.returncode == 0, run.describe()
    assert run.stderr == "", run.describe()
    assert "http://***@127.0.0.1:1/***" in run.stdout
    assert "http://***@fallback.example:8545/***" in run.stdout
    assert "node not contacted (--offline): not checked: chain id, fallback RPCs, vaults, " \
        "keeper role, gas balance" in run.stdout
    assert run.stdout.endswith("configuration OK\n")
    assert_no_secret(run, SECRETS)


@pytest.mark.anvil
def test_check_config_dry_run_without_a_key_skips_role_and_balance(
    node: Node, workdir: Path
) -> None:
    """No key, no signer: the role and balance checks say they were skipped, and why; the
    node checks still run."""
    settings = node_settings(node, KEEPER_PRIVATE_KEY=None)
    run = run_keeper(workdir, settings, "check-config")
    assert run.returncode == 0, run.describe()
    found = check_rows(run)
    assert found["keeper role"] == "skipped: dry run without a key"
    assert found["gas balance"] == "skipped: dry run without a key"
    assert found["vaults"] == "2 RiskVaults"
    assert "none (dry run)" in run.stdout


@pytest.mark.anvil
def test_run_starts_when_a_fallback_is_down(node: Node, workdir: Path) -> None:
    """A fallback that does not answer may be down for a while: `run` warns (masked, naming
    the setting) and starts on the primary; check-config fails on it (see the table)."""
    down = credentialed_root(DEAD_RPC)
    run = run_keeper(workdir, node_settings(node, KEEPER_RPC_FALLBACK_URLS=down), "run", "--once")
    assert run.returncode == 0, run.describe()
    warnings = [line for line in run.stderr.splitlines() if " WARNING " in line]
    assert len(warnings) == 1, run.describe()
    assert "KEEPER_RPC_FALLBACK_URLS entry 1: RPC http://***@127.0.0.1:1/*** unreachable" in (
        warnings[0]
    )
    assert warnings[0].endswith("; starting without it")
    assert sum("no action" in line for line in run.stderr.splitlines()) == len(node.vaults)
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
    # The Balanced vault's 50 written ETH calls lock 50 WETH (the seed's own numbers), shown on
    # the series' row; its long puts lock nothing.
    assert "50.0000 WETH" in run.stdout
    # The scenario grid's summary, one per vault (its numbers: tests/unit/test_risk_scenarios.py).
    assert run.stdout.count("scenario grid (±16% in 9 moves") == len(node.vaults)
    assert run.stdout.count("extended table (vol up): -66%: $") == len(node.vaults)
    assert_no_secret(run, SECRETS)
    # Read-only: no journal file appears, wherever KEEPER_JOURNAL points.
    journal = node_settings(node).get("KEEPER_JOURNAL")
    assert journal is None or not Path(journal).exists()
    assert not list(workdir.glob("*.sqlite*"))


@pytest.mark.anvil
def test_status_reads_the_running_keepers_journal_without_writing_it(
    node: Node, workdir: Path
) -> None:
    """After a tick, `status` shows the journal's last tick, halts and transactions in flight,
    and leaves the database file byte for byte as it was (SQLite may add its WAL index files
    beside it: reading a WAL database needs them)."""
    settings = node_settings(node, KEEPER_JOURNAL=str(workdir / "keeper.sqlite"))
    run = run_keeper(workdir, settings, "run", "--once")
    assert run.returncode == 0, run.describe()
    journal = workdir / "keeper.sqlite"
    before = journal.read_bytes()
    status = run_keeper(workdir, settings, "status")
    assert status.returncode == 0, status.describe()
    assert f"journal {journal}:" in status.stdout
    block = int(node.w3.eth.block_number)
    assert f"last tick: block {block}, ok" in status.stdout
    assert "no vault halted or failing" in status.stdout
    assert "no transaction in flight" in status.stdout
    assert journal.read_bytes() == before
    assert_no_secret(status, SECRETS)
