"""Command-line fixtures: the `keeper` command run as the operator runs it, in a subprocess with
a clean environment, and one anvil node with the bundled market for the cases that connect.

Every subprocess gets only PATH, HOME, SYSTEMROOT and the case's ``KEEPER_*`` variables and runs
in a fresh temporary directory, so no stray `.env` is read (the default `.env` is looked for in
that directory, where only a case that writes one has one) and no journal is written elsewhere.

The node fixture also prepares the signers the start-up checks refuse: one without the keeper
role, one with it on the first vault only, one with the role everywhere and no gas money.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from eth_account import Account
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.types import RPCEndpoint

from keeper.chain.abi import load_artifact
from keeper.devnet.anvil import Anvil, anvil_path
from keeper.devnet.deploy import Deployment, deploy_everything

#: Anvil's account #2, the keeper role in the deployment (public test key, never a real one).
KEEPER_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"
#: Test keys of the signers the start-up checks must refuse (made up; funded by the fixture).
STRANGER_KEY = "0x" + "51" * 32  # 100 ETH, no keeper role anywhere
HALF_KEEPER_KEY = "0x" + "52" * 32  # 100 ETH, the keeper role on the first vault only
UNFUNDED_KEEPER_KEY = "0x" + "53" * 32  # the keeper role on every vault, 0 ETH
#: What the fixture gives the funded ones: far above the default minimum (0.5625 ETH).
TEST_SIGNER_BALANCE_WEI = 100 * 10**18
#: Chain id of the second anvil, for a fallback RPC on the wrong chain (the first is 31337).
OTHER_CHAIN_ID = 5
#: Seconds one keeper subprocess may take (imports ~1-2 s, a tick on anvil ~1 s more).
SUBPROCESS_TIMEOUT_S = 60
#: Variables a Python process needs to start at all; nothing else leaks in from the test run.
PASSTHROUGH_ENV = ("PATH", "HOME", "SYSTEMROOT")
#: The one log line the keeper may print besides the error: a KEEPER_ name no setting reads
#: (logged by name only, before the settings are validated). It is a hint worth keeping — a
#: typo'd name is often the very reason for the error that follows.
UNKNOWN_NAME_WARNING = "no such setting (typo?)"


@dataclass(frozen=True)
class Run:
    """One finished `keeper` invocation."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    #: The working directory it ran in (what it left behind: a journal or not).
    cwd: Path

    def describe(self) -> str:
        return (
            f"keeper {' '.join(self.args)} -> exit {self.returncode}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}---"
        )


def keeper_env(settings: Mapping[str, str]) -> dict[str, str]:
    """The subprocess environment: the pass-through variables and `settings` (KEEPER_* only)."""
    unexpected = [name for name in settings if not name.startswith("KEEPER_")]
    if unexpected:
        raise ValueError(f"only KEEPER_* variables belong in a case: {unexpected}")
    env = {name: os.environ[name] for name in PASSTHROUGH_ENV if name in os.environ}
    env.update(settings)
    return env


def run_keeper(cwd: Path, settings: Mapping[str, str], *args: str) -> Run:
    """`python -m keeper ARGS` in `cwd` with only `settings` set (and `cwd`'s `.env`, if any)."""
    proc = subprocess.run(
        [sys.executable, "-m", "keeper", *args],
        cwd=cwd,
        env=keeper_env(settings),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )
    return Run(tuple(args), proc.returncode, proc.stdout, proc.stderr, cwd)


@dataclass(frozen=True)
class Case:
    """One invocation: settings, files to write into its working directory, arguments."""

    id: str
    settings: Mapping[str, str]
    args: tuple[str, ...] = ("check-config",)
    files: Mapping[str, str] = field(default_factory=dict)


#: Keeper processes at once: each spends ~1.5 s of CPU importing web3/eth-account, so the cases
#: run side by side, one per core (at least two: half the time is waiting on the node).
PARALLEL_RUNS = max(2, os.cpu_count() or 2)


def run_cases(cases: Sequence[Case], base: Path) -> dict[str, Run | BaseException]:
    """Run every case in its own directory under `base`, side by side; results by case id
    (a case that could not run at all, e.g. a timeout, gives its exception)."""
    ids = [case.id for case in cases]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate case ids: {ids}")

    def one(case: Case) -> Run | BaseException:
        cwd = base / case.id
        cwd.mkdir()
        for name, content in case.files.items():
            (cwd / name).write_text(content, encoding="utf-8")
        try:
            return run_keeper(cwd, case.settings, *case.args)
        except subprocess.TimeoutExpired as exc:
            return exc

    with ThreadPoolExecutor(max_workers=PARALLEL_RUNS) as pool:
        return dict(zip(ids, pool.map(one, cases), strict=True))


def result_of(results: Mapping[str, Run | BaseException], case_id: str) -> Run:
    result = results[case_id]
    if isinstance(result, BaseException):
        raise result
    return result


def assert_user_error(
    run: Run,
    setting: str,
    *phrases: str,
    secrets: tuple[str, ...] = (),
    allow_unknown_name_warnings: bool = False,
) -> str:
    """The bad-input contract: exit 2, nothing on stdout, exactly one `keeper: error:` line on
    stderr that starts with `setting` and contains every phrase, no traceback, no secret.

    Returns the error line.
    """
    context = run.describe()
    assert run.returncode == 2, context
    assert run.stdout == "", context
    assert "Traceback" not in run.stderr, context
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    if allow_unknown_name_warnings:
        lines = [line for line in lines if not line.endswith(UNKNOWN_NAME_WARNING)]
    assert len(lines) == 1, context
    line = lines[0]
    assert line.startswith(f"keeper: error: {setting}"), context  # the setting comes first
    for phrase in phrases:
        assert phrase in line, context
    assert_no_secret(run, secrets)
    return line


def assert_no_secret(run: Run, secrets: tuple[str, ...]) -> None:
    """No secret, in any letter case, on stdout or stderr."""
    for secret in secrets:
        for stream, text in (("stdout", run.stdout), ("stderr", run.stderr)):
            assert secret.lower() not in text.lower(), f"{secret!r} leaked on {stream}"


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    """The subprocess's working directory (and where a case writes its files)."""
    path = tmp_path / "cwd"
    path.mkdir()
    return path


@dataclass(frozen=True)
class Node:
    """A live anvil with the market and the two seeded vaults deployed."""

    url: str
    w3: Web3
    deployment: Deployment
    deployment_file: Path

    @property
    def vaults(self) -> list[ChecksumAddress]:
        return list(self.deployment.vaults)


def address_of(key: str) -> ChecksumAddress:
    return Web3.to_checksum_address(Account.from_key(key).address)


def _prepare_signers(w3: Web3, deployment: Deployment) -> None:
    """Give the test signers their roles and balances (the admin is unlocked on anvil)."""
    admin = deployment.accounts["admin"]
    abi = load_artifact("RiskVault").abi
    grants = {HALF_KEEPER_KEY: deployment.vaults[:1], UNFUNDED_KEEPER_KEY: deployment.vaults}
    for key, vaults in grants.items():
        for address in vaults:
            vault = w3.eth.contract(address=address, abi=abi)
            role = vault.functions.KEEPER_ROLE().call()
            tx = vault.functions.grantRole(role, address_of(key)).transact({"from": admin})
            assert w3.eth.wait_for_transaction_receipt(tx)["status"] == 1
    for key in (STRANGER_KEY, HALF_KEEPER_KEY):
        w3.provider.make_request(
            RPCEndpoint("anvil_setBalance"), [address_of(key), hex(TEST_SIGNER_BALANCE_WEI)]
        )
    assert w3.eth.get_balance(address_of(UNFUNDED_KEEPER_KEY)) == 0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One anvil per module, deployed once (~2 s); the cases only read from it."""
    if anvil_path() is None:
        pytest.skip("anvil not installed (make test installs it from npm)")
    anvil = Anvil()
    with anvil as w3:
        deployment = deploy_everything(w3)
        _prepare_signers(w3, deployment)
        path = tmp_path_factory.mktemp("deployment") / "deployment.json"
        path.write_text(json.dumps(deployment.to_json()), encoding="utf-8")
        yield Node(anvil.url, w3, deployment, path)


@pytest.fixture(scope="module")
def other_chain() -> Iterator[str]:
    """The URL of a bare anvil on chain OTHER_CHAIN_ID: a node, but of another chain."""
    if anvil_path() is None:
        pytest.skip("anvil not installed (make test installs it from npm)")
    anvil = Anvil("--chain-id", str(OTHER_CHAIN_ID))
    with anvil as w3:
        assert w3.eth.chain_id == OTHER_CHAIN_ID
        yield anvil.url
