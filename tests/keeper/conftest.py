"""The keeper end to end, on the in-process chain and on anvil.

One deployment per backend per session; every test runs between a chain snapshot and a revert
(titanoboa's anchor), with its own journal and its own keeper service. Time is a FakeClock:
no test sleeps; a clock hook can mine blocks when the sender waits.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from web3 import Web3

from keeper.devnet.anvil import Anvil, anvil_path
from keeper.devnet.deploy import Deployment, deploy_everything
from keeper.devnet.local import LocalChain, local_chain
from keeper.devnet.market import Market
from keeper.devnet.service import build_local_service
from keeper.devnet.tester import in_process_web3
from keeper.logs import configure_logging
from keeper.service import KeeperService

BACKENDS = ("tester", "anvil")


class FakeClock:
    """Virtual seconds; `sleep` advances them and runs `on_sleep` (e.g. mine a block)."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0
        self.sleeps = 0
        self.on_sleep: Callable[[FakeClock], None] | None = None

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        self.sleeps += 1
        if self.on_sleep is not None:
            self.on_sleep(self)


@dataclass
class Env:
    backend: str
    w3: Web3
    dep: Deployment
    chain: LocalChain

    @property
    def keeper(self) -> str:
        return self.dep.accounts["keeper"]

    def nonce(self, block: str = "pending") -> int:
        return int(self.w3.eth.get_transaction_count(self.keeper, block))  # type: ignore[arg-type]

    def rpc(self, method: str, *params: object) -> object:
        return self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]


@pytest.fixture(scope="session", params=BACKENDS)
def env_session(request: pytest.FixtureRequest) -> Iterator[Env]:
    if request.param == "tester":
        w3 = in_process_web3()
        yield Env("tester", w3, deploy_everything(w3), local_chain(w3))
        return
    if anvil_path() is None:
        pytest.skip("anvil is not installed (make install puts it in node_modules)")
    with Anvil() as w3:
        yield Env("anvil", w3, deploy_everything(w3), local_chain(w3))


@pytest.fixture
def env(env_session: Env) -> Iterator[Env]:
    snap = env_session.chain.snapshot()
    yield env_session
    if env_session.backend == "anvil":
        env_session.rpc("evm_setAutomine", True)
        env_session.rpc("anvil_dropAllTransactions")
    env_session.chain.revert(snap)


@pytest.fixture
def anvil_env(env: Env) -> Env:
    if env.backend != "anvil":
        pytest.skip("needs anvil (automine off, base-fee control)")
    return env


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def market(env: Env) -> Market:
    return Market(env.w3, env.chain, env.dep)


@pytest.fixture
def make_service(env: Env, clock: FakeClock, tmp_path: Path) -> Callable[..., KeeperService]:
    """A started keeper service; keyword args are extra settings (TX_TIMEOUT="5", …)."""

    def make(journal: str = "journal.sqlite", start: bool = True, **settings: str) -> KeeperService:
        service = build_local_service(env.w3, env.dep, tmp_path / journal, clock, **settings)
        if start:
            service.start()
        return service

    return make


def move(market: Market, env: Env, eth: float, btc: float, hours: float = 1.0) -> None:
    """Advance time and set spot to the deployment's prices × the given factors (fresh feeds)."""
    market.spot = {"ETH": 3_000.0 * eth, "BTC": 60_000.0 * btc}
    market.advance(hours)
    market.push()


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Everything the keeper process would log, at DEBUG (web3 and urllib3 included: they quote
    URLs, the loudest leakers of secrets), through configure_logging's masking handler."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = ("web3", "urllib3", "apscheduler", "asyncio", "eth")
    levels = {name: logging.getLogger(name).level for name in noisy}
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    for name in ("web3", "urllib3"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)
