#!/usr/bin/env python3
"""Benchmarks of the keeper, by subcommand (no timed assertions anywhere; this only reports).

    python scripts/bench.py risk [--options N] [--vaults N] [--repeat N]
    python scripts/bench.py cycle [--sizes 1,100,1000 | --quick] [--repeat N] [--history N]
    python scripts/bench.py sim [--chains anvil,tester] [--steps N]   (see scripts/bench_sim.py)
    python scripts/bench.py latency [--block-times 1,12] [--trials N]   (scripts/bench_latency.py)
    python scripts/bench.py metrics [--vaults N] [--rounds N]   (scripts/bench_metrics.py)

``risk``: Black–Scholes greeks for N options, vectorised vs a plain per-element Python loop
(``math`` module, same formulas) on a slice, extrapolated per element; then one full
assess-and-decide pass over N vaults × 3 underlyings × 10 options, the vectorised batch vs
calling ``decide`` per vault.

``cycle``: on a fresh anvil, the bundled market with a fleet of seeded vaults (collateral, debt,
perps, options; feeds warmed up with hourly rounds so the volatility models fit). For each fleet
size: the read of every vault's ``snapshot()`` at one block, Multicall3-batched vs one eth_call
per vault; one full keeper cycle (``KeeperService.tick``, no action needed) three ways — the
keeper (Multicall3 chunks, JSON-RPC batches), the keeper sending one request per round trip
(its reads before batching), and the naive reader (one eth_call per vault, no batches) — and,
for the smaller fleets, a cycle in which every vault must hedge. Wall time, every JSON-RPC
request and every HTTP round trip (counted at each Web3's HTTP session), with time ratios from
the same run.

Add a subcommand by writing ``_add_<name>(subparsers)``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

# Small arrays, many calls: BLAS thread pools only add wake-up latency on a 2-core box.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import requests  # noqa: E402
from eth_typing import ChecksumAddress  # noqa: E402
from web3 import Web3  # noqa: E402
from web3.providers.rpc import HTTPProvider  # noqa: E402
from web3.types import RPCEndpoint  # noqa: E402

from keeper.app import build_service  # noqa: E402
from keeper.chain import batch  # noqa: E402
from keeper.chain.multicall import MULTICALL3_ABI, MULTICALL3_ADDRESS, ensure_multicall3  # noqa: E402
from keeper.chain.reader import SNAPSHOTS_PER_CALL, SnapshotReader  # noqa: E402
from keeper.chain.snapshot import VaultSnapshot  # noqa: E402
from keeper.config import load_settings  # noqa: E402
from keeper.devnet.anvil import Anvil, anvil_path  # noqa: E402
from keeper.devnet.deploy import Deployment, MarketDeployer, unlocked_roles  # noqa: E402
from keeper.devnet.fleet import Fleet, check_fleet  # noqa: E402
from keeper.devnet.local import AnvilChain  # noqa: E402
from keeper.devnet.market import Market  # noqa: E402
from keeper.devnet.txsend import Sender  # noqa: E402
from keeper.policy import Action, decide, decide_batch  # noqa: E402
from keeper.risk.forecast import build_forecast  # noqa: E402
from keeper.risk.greeks import black_scholes  # noqa: E402
from keeper.risk.health import nav_from_positions  # noqa: E402
from keeper.risk.params import PolicyParams  # noqa: E402
from keeper.risk.types import (  # noqa: E402
    SECONDS_PER_YEAR,
    AssetState,
    Costs,
    Mandate,
    MarketView,
    OptionPosition,
    PerpPosition,
    PriceHistory,
    VaultState,
)
from keeper.service import KeeperService, TickReport  # noqa: E402
from keeper.signer import account_from_private_key  # noqa: E402

#: Start of the synthetic clock (unix s); any fixed value works.
NOW_S: int = 1_700_000_000
UNDERLYINGS: tuple[tuple[str, float, float], ...] = (
    ("ETH", 3_000.0, 0.70), ("BTC", 60_000.0, 0.55), ("SOL", 150.0, 0.95),
)


def _best_of(fn: Callable[[], object], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _bs_loop(s: Sequence[float], k: Sequence[float], t: Sequence[float], r: float,
             v: Sequence[float], call: Sequence[bool]) -> list[tuple[float, ...]]:
    """The same Black–Scholes formulas, one option at a time with the math module."""
    out: list[tuple[float, ...]] = []
    for si, ki, ti, vi, ci in zip(s, k, t, v, call, strict=True):
        sq = math.sqrt(ti)
        d1 = (math.log(si / ki) + (r + 0.5 * vi * vi) * ti) / (vi * sq)
        d2 = d1 - vi * sq
        nd1 = 0.5 * math.erfc(-d1 / math.sqrt(2.0))
        nd2 = 0.5 * math.erfc(-d2 / math.sqrt(2.0))
        pdf = math.exp(-0.5 * d1 * d1) / math.sqrt(2.0 * math.pi)
        dk = ki * math.exp(-r * ti)
        call_px = si * nd1 - dk * nd2
        decay = -si * pdf * vi / (2.0 * sq)
        if ci:
            out.append((call_px, nd1, pdf / (si * vi * sq), si * pdf * sq, decay - r * dk * nd2))
        else:
            out.append((call_px - si + dk, nd1 - 1.0, pdf / (si * vi * sq), si * pdf * sq,
                        decay + r * dk * (1.0 - nd2)))
    return out


def _synthetic_market(rng: np.random.Generator, n_points: int) -> MarketView:
    hist = []
    for i, (name, s0, vol) in enumerate(UNDERLYINGS):
        steps = rng.uniform(1_800.0, 5_400.0, n_points - 1)  # irregular feed rounds
        ts = NOW_S - 60.0 - np.concatenate(([0.0], np.cumsum(steps)))[::-1]
        r = rng.standard_t(4, n_points - 1) * vol * np.sqrt(steps / SECONDS_PER_YEAR / 2.0)
        px = s0 * np.exp(np.concatenate(([0.0], np.cumsum(r))) - np.sum(r) * (i == 0) * 0)
        hist.append(PriceHistory(name, ts, px / px[-1] * s0))
    return MarketView(now=NOW_S, risk_free_rate=0.04, histories=tuple(hist),
                      max_staleness_s=3_600, expected_returns={})


def _synthetic_vaults(rng: np.random.Generator, n_vaults: int
                      ) -> tuple[list[VaultState], list[Mandate]]:
    states, mandates = [], []
    for v in range(n_vaults):
        lev = rng.uniform(0.3, 2.4)
        nav0 = rng.uniform(1e5, 1e7)
        w = rng.dirichlet(np.ones(len(UNDERLYINGS)))
        assets, perps, options = [], [], []
        for (name, s0, vol), wi in zip(UNDERLYINGS, w, strict=True):
            coll = lev * nav0 * wi / s0
            assets.append(AssetState(name, coll, 0.0, s0, NOW_S - 30, 0.80, 0.75, vol, NOW_S - 30))
            hedge = -coll * rng.uniform(0.8, 1.2)
            perps.append(PerpPosition(name, hedge, s0, 0.0, 0.05))
            for _ in range(10 // len(UNDERLYINGS) + (1 if name == "ETH" else 0)):
                strike = s0 * rng.uniform(0.7, 1.3)
                options.append(OptionPosition(
                    name, bool(rng.integers(2)), strike, NOW_S + int(rng.uniform(1, 90) * 86_400),
                    float(rng.normal(0, 0.05 * coll + 1e-9)), 0.0, vol))
        debt = (lev - 1.0) * nav0 if lev > 1.0 else 0.0
        idle = (1.0 - lev) * nav0 if lev < 1.0 else 0.0
        margin = 0.1 * nav0 * lev
        draft = VaultState(f"0x{v:040x}", 1, NOW_S, 1.0, idle, debt, margin, tuple(assets),
                           tuple(perps), tuple(options[:10]))
        states.append(VaultState(draft.address, 1, NOW_S, max(nav_from_positions(draft), 0.0),
                                 idle, debt, margin, draft.assets, draft.perps, draft.options))
        mandates.append(Mandate(target_vol=float(rng.uniform(0.3, 0.9)), max_leverage=3.0,
                                min_health=1.25, hedge_target=0.0, hedge_band=0.02,
                                cppi_floor=0.7, cppi_multiplier=4.0, kelly_fraction=0.5,
                                max_slippage_bps=50))
    return states, mandates


def _settle(states: list[VaultState], decided: list[list[Action]], keep_out: float,
            rng: np.random.Generator) -> list[VaultState]:
    """The fleet one tick later: most vaults executed last tick's actions (no fees), a fraction
    ``keep_out`` did not and still needs them."""
    out = []
    for st, acts in zip(states, decided, strict=True):
        if not acts or rng.random() < keep_out:
            out.append(st)
            continue
        spot: dict[str, float] = {}
        perp: dict[str, float] = {}
        for a in acts:
            for k, x in a.spot_legs.items():
                spot[k] = spot.get(k, 0.0) + x
            for k, x in a.perp_legs.items():
                perp[k] = perp.get(k, 0.0) + x
        # Buys spend idle USDC first, then borrow; sale proceeds repay debt, then sit idle
        # (PolicyParams.fund_buys_from_idle).
        flow = sum(x * st.asset(k).price_usd for k, x in spot.items())
        from_idle = min(st.idle_usdc, max(flow, 0.0))
        debt = st.debt_usdc + flow - from_idle
        idle = st.idle_usdc - from_idle + max(-debt, 0.0)
        assets = tuple(replace(a, collateral=max(a.collateral + spot.get(a.symbol, 0.0), 0.0))
                       for a in st.assets)
        perps = tuple(replace(p, size=p.size + perp.get(p.underlying, 0.0)) for p in st.perps)
        out.append(replace(st, assets=assets, perps=perps, debt_usdc=max(debt, 0.0),
                           idle_usdc=idle))
    return out


def _table(rows: list[tuple[str, str, str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for n, row in enumerate(rows):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def run_risk(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    n = args.options
    s = rng.uniform(50.0, 150.0, n)
    k = rng.uniform(50.0, 150.0, n)
    t = rng.uniform(0.02, 2.0, n)
    v = rng.uniform(0.1, 1.2, n)
    call = rng.integers(0, 2, n).astype(bool)
    vec = _best_of(lambda: black_scholes(s, k, t, 0.03, v, call), args.repeat)
    m = min(n, args.loop_slice)
    sl, kl, tl, vl, cl = (a[:m].tolist() for a in (s, k, t, v, call))
    loop = _best_of(lambda: _bs_loop(sl, kl, tl, 0.03, vl, cl), 1) / m * n

    market = _synthetic_market(rng, args.history)
    costs = Costs(gas_price_usd_per_gas=2e-6, swap_fee_bps=30.0, swap_slippage_bps=10.0,
                  perp_fee_bps=5.0)
    params = PolicyParams()
    forecast = build_forecast(market, params)
    t_fc = _best_of(lambda: build_forecast(market, params), args.repeat)
    raw_states, mandates = _synthetic_vaults(rng, args.vaults)
    first = decide_batch(raw_states, mandates, market, costs, params, forecast)
    settled = _settle(raw_states, first, args.out_of_band, rng)

    def run(states: list[VaultState]) -> tuple[float, float, bool, dict[str, int]]:
        out: list[list[Action]] = []

        def batch() -> None:
            out[:] = decide_batch(states, mandates, market, costs, params, forecast)

        t_batch = _best_of(batch, args.repeat)
        t0 = time.perf_counter()
        loop_out = [decide(st, md, market, costs, params, forecast)
                    for st, md in zip(states, mandates, strict=True)]
        t_loop = time.perf_counter() - t0
        same = ([[(a.kind, a.spot_legs, a.perp_legs) for a in acts] for acts in loop_out]
                == [[(a.kind, a.spot_legs, a.perp_legs) for a in acts] for acts in out])
        kinds: dict[str, int] = {}
        for acts in out:
            for a in acts:
                kinds[a.kind.value] = kinds.get(a.kind.value, 0) + 1
        return t_batch, t_loop, same, kinds

    t_set, t_set_loop, same_set, kinds_set = run(settled)
    t_all, t_all_loop, same_all, kinds_all = run(raw_states)

    print(f"risk benchmark (numpy {np.__version__}, {os.cpu_count()} cpu, best of "
          f"{args.repeat})\n")
    _table([
        ("greeks (price, delta, gamma, vega, theta)", "time", "throughput"),
        (f"vectorised, {n:,} options", f"{vec * 1e3:.1f} ms", f"{n / vec / 1e6:.2f} M/s"),
        (f"python loop, {m:,} options → ×{n // m}", f"{loop * 1e3:.0f} ms",
         f"{n / loop / 1e6:.3f} M/s"),
        ("speed-up", f"{loop / vec:.0f}×", ""),
    ])
    print()
    nv = len(raw_states)

    def counts(k: dict[str, int]) -> str:
        return ", ".join(f"{v} {n}" for n, v in sorted(k.items())) or "none"

    _table([
        (f"assess + decide, {nv:,} vaults × 3 underlyings × 10 options", "time", "per vault"),
        ("market forecast (GARCH, t-fit, correlation; once per tick)", f"{t_fc * 1e3:.1f} ms",
         ""),
        (f"settled fleet ({counts(kinds_set)})", "", ""),
        ("  batch decide_batch()", f"{t_set * 1e3:.1f} ms", f"{t_set / nv * 1e6:.1f} µs"),
        ("  per-vault decide() loop", f"{t_set_loop * 1e3:.0f} ms",
         f"{t_set_loop / nv * 1e6:.0f} µs"),
        ("  speed-up", f"{t_set_loop / t_set:.0f}×", ""),
        ("  forecast + batch (one whole tick)", f"{(t_fc + t_set) * 1e3:.1f} ms", ""),
        (f"worst case, every vault acts ({counts(kinds_all)})", "", ""),
        ("  batch decide_batch()", f"{t_all * 1e3:.1f} ms", f"{t_all / nv * 1e6:.1f} µs"),
        ("  per-vault decide() loop", f"{t_all_loop * 1e3:.0f} ms",
         f"{t_all_loop / nv * 1e6:.0f} µs"),
        ("  speed-up", f"{t_all_loop / t_all:.0f}×", ""),
    ])
    same = same_set and same_all
    print(f"\nbatch actions == per-vault actions: {same}")
    return 0 if same else 1


def _add_risk(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("risk", help="greeks throughput and the many-vault decision pass")
    p.add_argument("--options", type=int, default=1_000_000)
    p.add_argument("--loop-slice", type=int, default=50_000)
    p.add_argument("--vaults", type=int, default=1_000)
    p.add_argument("--history", type=int, default=1_000, help="feed rounds per underlying")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out-of-band", type=float, default=0.05,
                   help="fraction of the settled fleet still needing last tick's action")
    p.set_defaults(func=run_risk)

# ====================================================================== cycle
#: anvil's default mnemonic, account 2: the keeper of `unlocked_roles` (checked by address).
ANVIL_KEEPER_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"
CYCLE_SIZES: tuple[int, ...] = (1, 100, 1_000)
QUICK_SIZES: tuple[int, ...] = (1, 10, 100)
#: Largest fleet whose every-vault-hedges cycle is measured: actions are sent one at a time,
#: each awaited, so that cycle grows by about a second per vault.
HEDGE_MAX = 100
QUICK_HEDGE_MAX = 10
#: The issue's requirement: the read of this many vaults takes at most READ_CALLS_MAX eth_calls.
READ_REQUIREMENT_VAULTS = 100
READ_CALLS_MAX = 2
#: And: a no-action tick over this many vaults costs at most ROUND_TRIPS_MAX HTTP round trips.
ROUND_TRIP_REQUIREMENT_VAULTS = 1_000
ROUND_TRIPS_MAX = 2
T = TypeVar("T")


def parse_sizes(text: str) -> tuple[int, ...]:
    """Fleet sizes from "1,10,100": positive, de-duplicated, ascending (the fleet only grows)."""
    try:
        sizes = {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes: not a list of integers: {text!r}") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"--sizes: need positive vault counts, got {text!r}")
    return tuple(sorted(sizes))


def times(numerator: float, denominator: float) -> str:
    """A ratio for the table: "12.3x" (or "n/a" when the baseline is zero)."""
    if denominator <= 0:
        return "n/a"
    r = numerator / denominator
    return f"{r:.0f}x" if r >= 100 else f"{r:.1f}x"


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured call: wall time, the JSON-RPC requests it sent by method, and the HTTP
    round trips that carried them."""

    seconds: float
    methods: dict[str, int]
    round_trips: int

    @property
    def requests(self) -> int:
        return sum(self.methods.values())

    @property
    def eth_calls(self) -> int:
        return self.methods.get("eth_call", 0)


class CountingSession(requests.Session):
    """An HTTP session that counts every POST (one round trip) and the JSON-RPC requests in it
    (several in a batch), by method."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False  # loopback: no proxy lookup per request
        self.counts: Counter[str] = Counter()
        self.round_trips = 0

    def post(self, url: Any, data: Any = None, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        body = json.loads(data)
        self.round_trips += 1
        self.counts.update(r["method"] for r in (body if isinstance(body, list) else [body]))
        return super().post(url, data=data, **kwargs)


def counting_web3(url: str, batches: bool = True) -> tuple[Web3, CountingSession]:
    """A Web3 as `keeper.chain.connect` builds it (eth_chainId asked once, web3's own retries
    off) on a counting session; `batches=False`: every request in its own round trip."""
    session = CountingSession()
    provider = HTTPProvider(
        url, request_kwargs={"timeout": 300}, session=session, exception_retry_configuration=None,
        cache_allowed_requests=True, cacheable_requests={RPCEndpoint("eth_chainId")},
    )
    if not batches:
        batch.turn_off(provider, "bench: one request per round trip")
    return Web3(provider), session


def measure(session: CountingSession, fn: Callable[[], T], repeat: int) -> tuple[Sample, T]:
    """Best wall time of `repeat` runs of `fn`, with the requests and round trips of that run."""
    best: Sample | None = None
    out: T | None = None
    for _ in range(repeat):
        before, trips = Counter(session.counts), session.round_trips
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
        if best is None or dt < best.seconds:
            best = Sample(dt, dict(session.counts - before), session.round_trips - trips)
            out = result
    assert best is not None and out is not None  # repeat >= 1 (argparse checks)
    return best, out


class NaiveSnapshotReader(SnapshotReader):
    """The same reader, one eth_call per vault: the baseline cycle."""

    def read(self, vaults: Sequence[ChecksumAddress], block: int
             ) -> dict[ChecksumAddress, VaultSnapshot]:
        return self.read_naive(vaults, block)


def _keeper_service(w3: Web3, vaults: Sequence[ChecksumAddress], journal: Path,
                    naive: bool) -> KeeperService:
    """A real keeper (settings, signer, journal, nonce owner, sender) with the chosen reader."""
    settings = load_settings(env={
        "KEEPER_RPC_URL": "http://127.0.0.1:8545",  # unused: w3 is injected
        "KEEPER_PRIVATE_KEY": ANVIL_KEEPER_KEY,
        "KEEPER_VAULTS": ",".join(vaults),
        "KEEPER_JOURNAL": str(journal),
        "KEEPER_POLL_INTERVAL": "3600",  # no tick deadline cuts a measured cycle short
        "KEEPER_TX_TIMEOUT": "120",
    }, env_file=None)
    built = build_service(settings, account_from_private_key(ANVIL_KEEPER_KEY), w3=w3)
    if not naive:
        return built
    return KeeperService(w3, built.vaults, NaiveSnapshotReader(w3), built.sender, built.journal,
                         built.clock, built.max_staleness_s, built.tick_deadline_s,
                         built.expected_chain_id)


def _n_actions(report: TickReport) -> int:
    return sum(len(a) for a in report.actions.values())


@dataclass
class CycleRow:
    vaults: int
    deploy_s: float
    read: Sample
    read_naive: Sample
    same: bool
    first: Sample
    tick: Sample
    tick_seq: Sample
    tick_naive: Sample
    actions: int
    hedge: Sample | None = None
    hedge_mined: int = 0
    hedge_kinds: str = ""


@dataclass
class Chain:
    """One anvil seen through three Web3s, each with its own counting HTTP session: the
    keeper's (batches on), the keeper one request per round trip, and the naive reader's."""

    w3: Web3
    session: CountingSession
    w3_seq: Web3
    session_seq: CountingSession
    w3_naive: Web3
    session_naive: CountingSession


def _measure_size(chain: Chain, fleet: Fleet, market: Market, n: int,
                  args: argparse.Namespace) -> CycleRow:
    w3, session = chain.w3, chain.session
    t0 = time.perf_counter()
    fleet.add(n - len(fleet.vaults))
    deploy_s = time.perf_counter() - t0
    vaults = fleet.vaults[:n]
    market.push()  # fresh rounds on every feed: nothing is stale, however long deploying took
    block = int(w3.eth.block_number)
    reader = SnapshotReader(w3)
    naive_reader = SnapshotReader(chain.w3_naive)
    read, batched = measure(session, lambda: reader.read(vaults, block), args.repeat)
    read_naive, naive = measure(chain.session_naive,
                                lambda: naive_reader.read_naive(vaults, block), args.repeat)
    check_fleet(batched, vaults)
    anvil = AnvilChain(w3)
    with tempfile.TemporaryDirectory() as tmp:
        service = _keeper_service(w3, vaults, Path(tmp) / "batched.sqlite", naive=False)
        one_by_one = _keeper_service(chain.w3_seq, vaults, Path(tmp) / "seq.sqlite", naive=False)
        baseline = _keeper_service(chain.w3_naive, vaults, Path(tmp) / "naive.sqlite", naive=True)
        for s in (service, one_by_one, baseline):
            s.start()
        first, _ = measure(session, service.tick, 1)  # bootstraps the feeds' price history
        measure(chain.session_seq, one_by_one.tick, 1)
        measure(chain.session_naive, baseline.tick, 1)
        tick, report = measure(session, service.tick, args.repeat)
        tick_seq, report_seq = measure(chain.session_seq, one_by_one.tick, args.repeat)
        tick_naive, report_naive = measure(chain.session_naive, baseline.tick, args.repeat)
        same = batched == naive and report.snapshots == report_seq.snapshots
        row = CycleRow(n, deploy_s, read, read_naive, same, first, tick, tick_seq, tick_naive,
                       _n_actions(report) + _n_actions(report_seq) + _n_actions(report_naive))
        if n <= args.hedge_max:
            snap = anvil.snapshot()
            fleet.set_hedge_targets(vaults, args.hedge_shift)
            row.hedge, acted = measure(session, service.tick, 1)
            row.hedge_mined = sum(o.status == "mined" for o in acted.outcomes)
            kinds = Counter(a.kind.name.lower() for acts in acted.actions.values() for a in acts)
            row.hedge_kinds = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
            anvil.revert(snap)
        for s in (service, one_by_one, baseline):
            s.journal.close()
    return row


def _snapshot_gas(w3: Web3, vaults: Sequence[ChecksumAddress]) -> int:
    """Gas of one full Multicall3 chunk of snapshot() calls, as an eth_call would use it.
    allowFailure is off here: with it on, an inner call starved of gas does not fail the outer
    one, and the node's estimate would stop at a gas amount where the snapshots fail."""
    multicall = w3.eth.contract(address=MULTICALL3_ADDRESS, abi=MULTICALL3_ABI)
    selector = Web3.keccak(text="snapshot()")[:4]
    calls = [(v, False, selector) for v in vaults[:SNAPSHOTS_PER_CALL]]
    return int(multicall.functions.aggregate3(calls).estimate_gas())


def _ms(sample: Sample) -> str:
    ms = sample.seconds * 1e3
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}"


def _by_method(sample: Sample) -> str:
    return ", ".join(f"{m} {c}" for m, c in sorted(sample.methods.items(), key=lambda x: -x[1]))


def _print_cycle(rows: list[CycleRow], args: argparse.Namespace) -> None:
    from keeper.report import table

    print(f"\nread: every vault's snapshot() at one pinned block (best of {args.repeat})")
    print(table(
        ["vaults", "batched ms", "requests", "eth_call", "naive ms", "requests", "eth_call",
         "time naive/batched", "requests naive/batched", "same snapshots"],
        [[str(r.vaults), _ms(r.read), str(r.read.requests), str(r.read.eth_calls),
          _ms(r.read_naive), str(r.read_naive.requests), str(r.read_naive.eth_calls),
          times(r.read_naive.seconds, r.read.seconds),
          times(r.read_naive.requests, r.read.requests), str(r.same)] for r in rows]))
    print(f"\none keeper cycle, service.tick() after start(), no action needed (read + history "
          f"+ decide; best of {args.repeat}): requests / HTTP round trips per tick. keeper: "
          f"Multicall3 chunks and JSON-RPC batches; one by one: the same reads, one request "
          f"per round trip (before batching); naive: one eth_call per vault, no batches")
    print(table(
        ["vaults", "keeper ms", "requests", "round trips", "one-by-one ms", "requests",
         "round trips", "naive ms", "requests", "round trips", "time one-by-one/keeper",
         "time naive/keeper", "actions", "first tick ms", "requests"],
        [[str(r.vaults), _ms(r.tick), str(r.tick.requests), str(r.tick.round_trips),
          _ms(r.tick_seq), str(r.tick_seq.requests), str(r.tick_seq.round_trips),
          _ms(r.tick_naive), str(r.tick_naive.requests), str(r.tick_naive.round_trips),
          times(r.tick_seq.seconds, r.tick.seconds), times(r.tick_naive.seconds, r.tick.seconds),
          str(r.actions), _ms(r.first), str(r.first.requests)] for r in rows]))
    big = rows[-1]
    print(f"  requests of one batched cycle at {big.vaults} vaults: {_by_method(big.tick)}")
    print(f"  first tick (reads each feed's last {args.history} rounds once): "
          f"{_by_method(big.first)}")
    hedged = [r for r in rows if r.hedge is not None]
    if hedged:
        print(f"\none keeper cycle in which every vault must hedge (the strategist moved each "
              f"hedge target by {args.hedge_shift:+.0%} of NAV; batched reader, transactions "
              f"signed, journaled, sent and awaited)")
        print(table(
            ["vaults", "cycle ms", "requests", "eth_call", "mined", "decided", "ms per tx",
             "requests per tx"],
            [[str(r.vaults), _ms(r.hedge), str(r.hedge.requests), str(r.hedge.eth_calls),
              str(r.hedge_mined), r.hedge_kinds or "none",
              f"{r.hedge.seconds / max(r.hedge_mined, 1) * 1e3:.1f}",
              f"{(r.hedge.requests - r.tick.requests) / max(r.hedge_mined, 1):.1f}"]
             for r in hedged if r.hedge is not None]))
        last = hedged[-1].hedge
        assert last is not None
        print(f"  requests of that cycle at {hedged[-1].vaults} vaults: {_by_method(last)}")


def run_cycle(args: argparse.Namespace) -> int:
    sizes: tuple[int, ...] = QUICK_SIZES if args.quick else args.sizes
    if args.hedge_max is None:
        args.hedge_max = QUICK_HEDGE_MAX if args.quick else HEDGE_MAX
    started = time.perf_counter()
    anvil = anvil_path()
    version = (subprocess.run([str(anvil), "--version"], capture_output=True, text=True)
               .stdout.strip().splitlines()[0] if anvil else "?")
    print(f"cycle benchmark on anvil ({version}); fleet sizes {', '.join(map(str, sizes))}; "
          f"{os.cpu_count()} cpu", flush=True)
    with Anvil() as boot:
        url = str(boot.provider.endpoint_uri)  # type: ignore[attr-defined]
        w3, session = counting_web3(url)
        chain = Chain(w3, session, *counting_web3(url, batches=False),
                      *counting_web3(url, batches=False))
        roles = unlocked_roles(w3)
        keeper = account_from_private_key(ANVIL_KEEPER_KEY).address
        if keeper != roles["keeper"]:
            print(f"anvil's account 2 is {roles['keeper']}, not the bench key's {keeper}",
                  file=sys.stderr)
            return 2
        deployer = MarketDeployer(w3, Sender(w3), roles)
        ensure_multicall3(w3, deployer.admin)
        deployer.deploy_market()
        dep = Deployment(int(w3.eth.chain_id), int(w3.eth.block_number),
                         {k: c.address for k, c in deployer.c.items()}, accounts=dict(roles))
        market = Market(w3, AnvilChain(w3), dep)
        t0 = time.perf_counter()
        market.warm_up(args.history, random.Random(args.seed))
        print(f"market deployed, feeds warmed up with {args.history} hourly rounds in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        fleet = Fleet(deployer)
        rows: list[CycleRow] = []
        for n in sizes:
            rows.append(_measure_size(chain, fleet, market, n, args))
            r = rows[-1]
            print(f"  {n} vaults: fleet grown in {r.deploy_s:.0f} s; batched cycle "
                  f"{_ms(r.tick)} ms", flush=True)
        chunk_gas = _snapshot_gas(w3, fleet.vaults)
        gas_cap = int(w3.eth.get_block("latest")["gasLimit"])
    _print_cycle(rows, args)
    chunk = min(SNAPSHOTS_PER_CALL, len(fleet.vaults))
    print(f"\nMulticall3 chunk of {chunk} snapshot() calls: {chunk_gas:,} gas "
          f"({chunk_gas // chunk:,} per snapshot) vs the eth_call gas cap {gas_cap:,} "
          f"(= anvil's block gas limit): {'fits' if chunk_gas <= gas_cap else 'DOES NOT FIT'}")
    req = next((r for r in rows if r.vaults == READ_REQUIREMENT_VAULTS), None)
    if req is not None:
        ok = req.read.eth_calls <= READ_CALLS_MAX and req.tick.eth_calls <= READ_CALLS_MAX
        print(f"requirement: {READ_REQUIREMENT_VAULTS} vaults read in <= {READ_CALLS_MAX} "
              f"eth_calls: read {req.read.eth_calls}, whole steady cycle {req.tick.eth_calls} "
              f"-> {'met' if ok else 'NOT MET'}")
    trips = next((r for r in rows if r.vaults == ROUND_TRIP_REQUIREMENT_VAULTS), None)
    if trips is not None:
        ok = trips.tick.round_trips <= ROUND_TRIPS_MAX
        print(f"requirement: a no-action tick over {ROUND_TRIP_REQUIREMENT_VAULTS:,} vaults in <= "
              f"{ROUND_TRIPS_MAX} HTTP round trips: {trips.tick.round_trips} "
              f"({trips.tick.requests} requests; {trips.tick_seq.round_trips} one by one) "
              f"-> {'met' if ok else 'NOT MET'}")
    big = rows[-1]
    print(f"summary: at {big.vaults} vaults one no-action cycle takes {_ms(big.tick)} ms, "
          f"{big.tick.requests} requests in {big.tick.round_trips} round trips; one by one "
          f"{_ms(big.tick_seq)} ms in {big.tick_seq.round_trips}; naive {_ms(big.tick_naive)} ms "
          f"in {big.tick_naive.round_trips} ({times(big.tick_seq.seconds, big.tick.seconds)} and "
          f"{times(big.tick_naive.seconds, big.tick.seconds)} the keeper's time); "
          f"whole run {time.perf_counter() - started:.0f} s")
    return 0 if all(r.same and r.actions == 0 for r in rows) else 1


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _add_cycle(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cycle", help="one keeper cycle on anvil: batched vs naive reads")
    p.add_argument("--sizes", type=parse_sizes, default=CYCLE_SIZES,
                   help="comma-separated fleet sizes (default 1,100,1000)")
    p.add_argument("--quick", action="store_true", help="sizes 1,10,100")
    p.add_argument("--repeat", type=_positive, default=3, help="best of this many runs")
    p.add_argument("--history", type=_positive, default=250,
                   help="hourly feed rounds before the fleet: < 201 makes the policy use EWMA, "
                        "from 201 it fits GARCH (included in the cycle time)")
    p.add_argument("--hedge-max", type=int, default=None,
                   help="measure the every-vault-hedges cycle up to this fleet size (0: never; "
                        "default 100, with --quick 10: each hedge takes ~1 s, see the table)")
    p.add_argument("--hedge-shift", type=float, default=0.40,
                   help="hedge target move per vault, fraction of NAV")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=run_cycle)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_risk(sub)
    _add_cycle(sub)
    from scripts.bench_sim import add_sim

    add_sim(sub)
    from scripts.bench_latency import add_latency

    add_latency(sub)
    from scripts.bench_metrics import add_metrics

    add_metrics(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
