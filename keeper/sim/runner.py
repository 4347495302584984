"""One chain, many paths: deploy once, warm the feeds up, snapshot; then every (path, policy,
order) starts from that snapshot and replays its scenario step by step.

Per step: the market driver mines a block at the step's time and pushes every feed (the oracle
update), expired series are settled, the vaults are read (the breach is seen here), then the
two actors move in the run's order — the liquidator bot and the policy — each right after the
base fee is anchored at the path's level, and the vaults are read again.

Determinism: every block's timestamp is fixed (anvil starts at `START_TIMESTAMP` with a 1 s
block interval; the in-process chain is started there too and stamps parent + 1 s), the
warm-up walk has a fixed seed, and the keeper runs on a virtual clock; so the same seed and
scenario give the same blocks, decisions and metrics on any worker.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_typing import ChecksumAddress
from web3 import Web3

from keeper.chain.convert import nav_high_water_usd, to_vault_state
from keeper.chain.reader import SnapshotReader
from keeper.chain.snapshot import VaultSnapshot, wad_to_float
from keeper.devnet.anvil import Anvil, anvil_path, devnet_web3
from keeper.devnet.deploy import UNDERLYINGS, VAULT_SPECS, Deployment, deploy_everything
from keeper.devnet.local import LocalChain, local_chain
from keeper.devnet.market import WARMUP_HOURLY_VOL
from keeper.devnet.service import build_local_service
from keeper.devnet.tester import in_process_web3
from keeper.errors import ChainReadError, ConfigError
from keeper.inputs import RISK_FREE_RATE
from keeper.risk.health import net_delta
from keeper.service import KeeperService
from keeper.sim.actors import Liquidator, liquidatable
from keeper.sim.driver import MarketDriver, TxPump
from keeper.sim.policies import make_policy
from keeper.sim.records import (
    PHASE_END,
    PHASE_ORACLE,
    Bands,
    MarketStep,
    Observation,
    PathRun,
    VaultRun,
)

if TYPE_CHECKING:
    from keeper.sim.scenarios import ScenarioPath

logger = logging.getLogger(__name__)

#: Where every simulated chain's clock starts (2033, ahead of any wall clock this code will
#: meet, so the in-process chain's parent + 1 s stamping holds).
START_TIMESTAMP = 2_000_000_000
#: Hourly warm-up rounds before a path (volatility models need history), with a fixed seed so
#: every path starts from the same state.
WARMUP_ROUNDS = 48
WARMUP_SEED = 20200312
#: ETH/BTC correlation of the warm-up's hourly moves, the scenario library's (0.8). Drawn
#: independently, the warm-up taught the keeper a correlation near 0 that no path has, so its
#: pre-move basket vol (0.37) and target leverage were ones it could never return to.
WARMUP_CORRELATION = 0.8
ORDERS = ("keeper-first", "liquidator-first")
#: Keeper settings in the loop: an hourly tick, and the deployment's own feed age limit.
KEEPER_SETTINGS = {"POLL_INTERVAL": "3600", "TX_TIMEOUT": "60", "MAX_STALENESS": "3600"}


class SimClock:
    """The keeper's clock in a simulation: virtual seconds that move only when it sleeps, so
    deadlines and timeouts never depend on how fast the machine is. While the policy moves the
    chain mines only when the clock sleeps (`on_sleep`): a wave's transactions share one block,
    at the path's base fee."""

    def __init__(self, start: float) -> None:
        self.t = start
        self.on_sleep: Callable[[], None] | None = None

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        if self.on_sleep is not None:
            self.on_sleep()


@dataclass
class World:
    """A chain with the market deployed, the liquidator funded, the feeds warmed up."""

    w3: Web3
    chain: LocalChain
    dep: Deployment
    pump: TxPump
    driver: MarketDriver
    liquidator: Liquidator
    start_ts: int
    spot0: dict[str, float]
    iv0: dict[str, float]
    names: dict[ChecksumAddress, str]
    snapshot_id: object
    kind: str
    reader: SnapshotReader

    def reset(self) -> None:
        """Back to the warmed-up state (a snapshot is used up by reverting to it)."""
        self.chain.revert(self.snapshot_id)
        self.snapshot_id = self.chain.snapshot()
        self.driver.reset()  # also forgets the shared pump's nonces

    def read_if_changed(self, snaps: dict[ChecksumAddress, VaultSnapshot], seen: int
                        ) -> tuple[dict[ChecksumAddress, VaultSnapshot], int]:
        """The vaults' snapshots at the head, read again only if a block since `seen` holds a
        transaction: otherwise only time moved (a few empty blocks, seconds of accrual), and
        the reading at `seen` stands. Returns the snapshots and the block they were read at."""
        head, changed = self.pump.changes_since(seen)
        if not changed:
            return snaps, seen
        return self.reader.read(list(self.dep.vaults), head), head


def chain_kind(requested: str, rpc_url: str | None) -> str:
    """'rpc' with a URL; else 'anvil' when the binary is installed, else the in-process chain."""
    if rpc_url:
        return "rpc"
    if requested == "auto":
        return "anvil" if anvil_path() is not None else "tester"
    return requested


@contextmanager
def open_world(kind: str, rpc_url: str | None = None) -> Iterator[World]:
    """Start (or connect to) a chain and build the world on it; stops what it started."""
    anvil: Anvil | None = None
    try:
        if kind == "anvil":
            anvil = Anvil("--timestamp", str(START_TIMESTAMP))
            w3 = anvil.start()
            _rpc(w3, "anvil_setBlockTimestampInterval", 1)
        elif kind == "tester":
            w3 = in_process_web3(START_TIMESTAMP)
        elif kind == "rpc" and rpc_url:
            w3 = _connect(rpc_url)
        else:
            raise ConfigError(f"--chain: unknown chain {kind!r} (anvil, tester, or --rpc-url)")
        yield build_world(w3, kind)
    finally:
        if anvil is not None:
            anvil.stop()


def _rpc(w3: Web3, method: str, *params: object) -> Any:
    return w3.provider.make_request(method, list(params))  # type: ignore[arg-type]


def _connect(url: str) -> Web3:
    from keeper.chain.connect import mask_rpc_url

    w3 = devnet_web3(url)
    try:
        w3.eth.chain_id  # noqa: B018 - the reachability check
    except Exception as exc:  # any transport failure: one line, the URL masked
        raise ChainReadError(
            f"--rpc-url {mask_rpc_url(url)}: not reachable ({type(exc).__name__})"
        ) from None
    reply = _rpc(w3, "anvil_setBlockTimestampInterval", 1)
    if "error" in reply:
        logger.warning("--rpc-url: the node has no anvil_setBlockTimestampInterval; block "
                       "timestamps (and so metrics) may differ between runs")
    return w3


def build_world(w3: Web3, kind: str) -> World:
    chain = local_chain(w3)
    dep = deploy_everything(w3)
    pump = TxPump(w3)
    driver = MarketDriver(w3, chain, dep, pump)
    liquidator = Liquidator(w3, dep, pump)
    liquidator.fund()
    rng = random.Random(WARMUP_SEED)
    spot = {u: float(spec[2]) for u, spec in UNDERLYINGS.items()}
    iv = {u: spec[3] for u, spec in UNDERLYINGS.items()}
    ts = int(w3.eth.get_block("latest")["timestamp"])
    rho = WARMUP_CORRELATION
    for _ in range(WARMUP_ROUNDS):
        ts += 3600
        common, own = rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0)
        for u in UNDERLYINGS:
            z = common if u == "ETH" else rho * common + math.sqrt(1.0 - rho * rho) * own
            spot[u] *= math.exp(z * WARMUP_HOURLY_VOL[u])
        driver.push(ts, spot, iv)
    names = {v: VAULT_SPECS[i].name.removeprefix("RiskVault ") for i, v in enumerate(dep.vaults)}
    return World(w3, chain, dep, pump, driver, liquidator, ts, dict(spot), dict(iv), names,
                 chain.snapshot(), kind, SnapshotReader(w3))


# ---------------------------------------------------------------------------- observations
def _health(value: int) -> float:
    return wad_to_float(value) if value < 2**255 else math.inf


def observe(snap: VaultSnapshot, symbols: dict[ChecksumAddress, str], step: int,
            phase: str) -> Observation:
    state = to_vault_state(snap, symbols)
    deltas = net_delta(state, snap.timestamp, RISK_FREE_RATE)
    delta_usd = sum(deltas.get(a.symbol, 0.0) * a.price_usd for a in state.assets)
    return Observation(
        step=step, phase=phase, block=snap.block_number, timestamp=snap.timestamp,
        nav_usd=snap.total_assets / 1e6, health=_health(snap.health),
        lending_health=_health(snap.lending_health), perp_health=_health(snap.perp_health),
        leverage=_health(snap.leverage), net_delta_usd=delta_usd, debt_usd=snap.debt / 1e6,
        idle_usd=snap.idle_usdc / 1e6, nav_high_water_usd=nav_high_water_usd(snap),
    )


def bands_of(snap: VaultSnapshot) -> Bands:
    m = snap.mandate
    return Bands(m.min_health / 1e18, m.max_leverage / 1e18, m.hedge_target / 1e18,
                 m.hedge_band / 1e18, m.cppi_floor / 1e18, m.cppi_multiplier / 1e18)


# ---------------------------------------------------------------------------- timing
class Stopwatch:
    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - t

    def wrap(self, obj: object, method: str, part: str) -> None:
        """Time every call of `obj.method` as `part` (instance attribute, the class untouched)."""
        original = getattr(obj, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.part(part):
                return original(*args, **kwargs)

        setattr(obj, method, timed)


def _instrument(service: KeeperService, watch: Stopwatch) -> None:
    """The policy's own reads and sends; what is left of its time is deciding (and fee reads)."""
    watch.wrap(service.reader, "read", "read")
    watch.wrap(service.sender, "submit", "send")
    watch.wrap(service.sender, "confirm_all", "send")
    watch.wrap(service.sender, "resume", "send")


# ---------------------------------------------------------------------------- one path
def run_path(world: World, path: ScenarioPath, policy_name: str, order: str, path_index: int,
             on_step: Callable[[], None] | None = None) -> PathRun:
    """Replay `path` under `policy_name` with `order` from the world's warmed-up state."""
    if order not in ORDERS:
        raise ConfigError(f"--order: unknown order {order!r} (known: {', '.join(ORDERS)})")
    world.reset()
    watch = Stopwatch()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="keeper-sim-") as tmp:
        clock = SimClock(float(world.start_ts))
        service = build_local_service(world.w3, world.dep, Path(tmp) / "journal.sqlite",
                                      clock, **KEEPER_SETTINGS)
        service.start()
        _instrument(service, watch)
        policy = make_policy(policy_name, service)
        try:
            with _mining_by_hand(world):
                run = _replay(world, service, policy, path, order, path_index, watch, on_step,
                              clock)
        finally:
            service.journal.close()
    total = time.perf_counter() - started
    run.timings = dict(watch.spent)
    run.timings["decide"] = max(0.0, run.timings.pop("policy", 0.0)
                                - run.timings.get("read", 0.0) - run.timings.get("send", 0.0))
    run.timings["total"] = total
    return run


def _replay(world: World, service: KeeperService, policy: Any, path: ScenarioPath, order: str,
            path_index: int, watch: Stopwatch, on_step: Callable[[], None] | None,
            clock: SimClock) -> PathRun:
    vaults = list(world.dep.vaults)
    symbols = service.symbols
    seen = int(world.w3.eth.block_number)
    snaps = world.reader.read(vaults, seen)
    runs = {v: VaultRun(world.names[v], v, bands_of(snaps[v])) for v in vaults}
    for v in vaults:
        runs[v].observations.append(observe(snaps[v], symbols, 0, PHASE_END))
    run = PathRun(path.name, path_index, path.seed, policy.name, order, path.step_s, 0.0,
                  vaults=list(runs.values()), shock_step=path.shock_step,
                  move_end=path.tail_start)
    first_block = int(world.w3.eth.block_number)
    lag = path.oracle_lag_steps
    for k in range(1, path.n_steps + 1):
        ts = world.start_ts + k * path.step_s
        shown = max(0, k - lag)
        spot = {u: world.spot0[u] * float(path.spot[u][shown]) for u in UNDERLYINGS}
        iv = {u: float(path.iv[u][k]) for u in UNDERLYINGS}
        fee = float(path.base_fee_gwei[k])
        run.market.append(MarketStep(k, ts, spot, iv, fee))
        with watch.part("chain"):
            world.driver.push(ts, spot, iv)
            snaps, seen = world.read_if_changed(snaps, seen)
            holdings = {v: [o.series_id for o in s.options if o.size != 0 and o.expiry <= ts]
                        for v, s in snaps.items()}
            if any(holdings.values()):
                world.driver.settle_expired(ts, holdings)
                snaps, seen = world.read_if_changed(snaps, seen)
        for v in vaults:
            runs[v].observations.append(observe(snaps[v], symbols, k, PHASE_ORACLE))
        actors = ("liquidator", "policy") if order == "liquidator-first" else (
            "policy", "liquidator")
        for i, actor in enumerate(actors):
            if actor == "liquidator":
                with watch.part("chain"):
                    if i > 0:
                        snaps, seen = world.read_if_changed(snaps, seen)
                    if any(liquidatable(s) for s in snaps.values()):
                        world.driver.anchor_base_fee(fee)
                        for v, recs in world.liquidator.act(k, snaps).items():
                            runs[v].liquidations.extend(recs)
            else:
                with watch.part("chain"):
                    world.driver.anchor_base_fee(fee)
                with watch.part("policy"), _mining_on_sleep(world, clock):
                    for v, recs in policy.act(k, spot["ETH"]).items():
                        runs[v].actions.extend(recs)
                for v, target in policy.targets().items():
                    if v in runs:
                        runs[v].targets[k] = target
        with watch.part("chain"):
            snaps, seen = world.read_if_changed(snaps, seen)
        for v in vaults:
            runs[v].observations.append(observe(snaps[v], symbols, k, PHASE_END))
        if on_step is not None:
            on_step()
    run.blocks_per_step = (int(world.w3.eth.block_number) - first_block) / max(1, path.n_steps)
    return run


@contextmanager
def _mining_by_hand(world: World) -> Iterator[None]:
    """Automine off for the whole replay (on a chain that queues transactions): every block is
    mined by whoever needs one — the driver's round block, a block per actor's send, a block
    per keeper wait — exactly the blocks automine would have made, without switching it off and
    on around every move (two requests a move)."""
    if not world.chain.queues_transactions:  # in-process: every transaction its own block
        yield
        return
    world.chain.set_automine(False)
    world.pump.mine_each = lambda: world.chain.mine(1)
    try:
        yield
    except BaseException:
        # The replay is already failing (or interrupted, its chain perhaps gone): a cleanup
        # request must not replace that error with its own ConnectionError.
        world.pump.mine_each = None
        with contextlib.suppress(Exception):
            world.chain.set_automine(True)
        raise
    world.pump.mine_each = None
    world.chain.set_automine(True)


@contextmanager
def _mining_on_sleep(world: World, clock: SimClock) -> Iterator[None]:
    """The keeper's transactions land when it waits for them: each wait (its clock's sleep)
    mines a block (automine is off: see `_mining_by_hand`)."""
    if not world.chain.queues_transactions:
        yield
        return
    clock.on_sleep = lambda: world.chain.mine(1)
    try:
        yield
    except BaseException:
        clock.on_sleep = None  # failing already: no cleanup request (see `_mining_by_hand`)
        raise
    clock.on_sleep = None
    world.chain.mine(1)  # whatever is still pending lands before anyone else moves


__all__ = ["ORDERS", "START_TIMESTAMP", "SimClock", "World", "build_world", "chain_kind",
           "open_world", "run_path"]
