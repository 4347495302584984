"""`bench.py metrics`: what the Prometheus metrics cost a keeper tick, as a ratio.

On a fresh anvil, the bundled market and a fleet of seeded vaults (as ``bench.py cycle`` builds
them: collateral, debt, perps, options; feeds warmed up with hourly rounds so the volatility
models fit). One real keeper (``KeeperService``, batched reads, its own Web3 from
``keeper.chain.connect``) ticks the same fleet at the
same chain state, no action needed, alternately without metrics and with them: after the tick
``KeeperMetrics.observe_tick`` (every vault's gauges, its net delta through the risk core) and
one ``GET /metrics`` of the keeper's own endpoint (the page rendered, as a Prometheus scrape
would). Alternating cancels drift; the medians are compared. The observe and scrape steps are
also timed alone, since their few milliseconds sit inside a tick's much larger noise.

Timings are wall-clock on a shared machine: the ratio is the point, never asserted anywhere.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: anvil's default mnemonic, account 2: the keeper of `unlocked_roles` (as bench.py cycle).
ANVIL_KEEPER_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"
#: The issue's figure: a 100-vault tick.
DEFAULT_VAULTS = 100
#: Ticks of each kind (alternated); the first of each is not counted (history bootstrap).
DEFAULT_ROUNDS = 15
#: Hourly feed rounds before the fleet: from 201 the policy fits GARCH, as in production.
DEFAULT_HISTORY = 250


@dataclass(frozen=True, slots=True)
class Overhead:
    """Medians of the measured steps, in seconds, and what the metrics add to a tick."""

    tick_s: float
    tick_with_metrics_s: float
    observe_s: float
    scrape_s: float
    page_bytes: int
    samples: int

    @property
    def ratio(self) -> float:
        """Median tick with metrics / median tick without (1.0: free)."""
        return self.tick_with_metrics_s / self.tick_s

    @property
    def direct_ratio(self) -> float:
        """(tick + observe + scrape) / tick, from the medians of each step alone."""
        return (self.tick_s + self.observe_s + self.scrape_s) / self.tick_s


def summarise(
    without: Sequence[float],
    with_metrics: Sequence[float],
    observe: Sequence[float],
    scrape: Sequence[float],
    page_bytes: int,
) -> Overhead:
    """The medians of each series (seconds). `with_metrics` holds whole steps: the tick, its
    observe and its scrape together."""
    if not without or not with_metrics or not observe or not scrape:
        raise ValueError("every series needs at least one sample")
    if min(without) <= 0:
        raise ValueError("a tick cannot take 0 s")
    return Overhead(
        tick_s=statistics.median(without),
        tick_with_metrics_s=statistics.median(with_metrics),
        observe_s=statistics.median(observe),
        scrape_s=statistics.median(scrape),
        page_bytes=page_bytes,
        samples=min(len(without), len(with_metrics)),
    )


def report_lines(o: Overhead, vaults: int) -> list[str]:
    """The printed result: the ratio first, then what it is made of."""
    ms = 1e3
    return [
        f"metrics overhead on a {vaults}-vault no-action tick (median of {o.samples} each, "
        f"alternated): {o.ratio:.3f}x ({(o.ratio - 1) * 100:+.1f} %)",
        f"  tick without metrics {o.tick_s * ms:.1f} ms; with observe_tick + GET /metrics "
        f"{o.tick_with_metrics_s * ms:.1f} ms",
        f"  observe_tick alone {o.observe_s * ms:.2f} ms; GET /metrics alone "
        f"{o.scrape_s * ms:.2f} ms ({o.page_bytes:,} bytes); "
        f"(tick + both) / tick = {o.direct_ratio:.3f}x",
    ]


def run_metrics_bench(args: argparse.Namespace) -> int:
    from keeper.app import build_service
    from keeper.chain.connect import connect
    from keeper.chain.multicall import ensure_multicall3
    from keeper.config import load_settings
    from keeper.devnet.anvil import Anvil
    from keeper.devnet.deploy import Deployment, MarketDeployer, unlocked_roles
    from keeper.devnet.fleet import Fleet
    from keeper.devnet.local import AnvilChain
    from keeper.devnet.market import Market
    from keeper.devnet.txsend import Sender
    from keeper.metrics import KeeperMetrics
    from keeper.signer import account_from_private_key

    started = time.perf_counter()
    anvil = Anvil()
    with anvil as w3:
        roles = unlocked_roles(w3)
        account = account_from_private_key(ANVIL_KEEPER_KEY)
        if account.address != roles["keeper"]:
            print(f"anvil's account 2 is {roles['keeper']}, not the bench key's")
            return 2
        deployer = MarketDeployer(w3, Sender(w3), roles)
        ensure_multicall3(w3, deployer.admin)
        deployer.deploy_market()
        dep = Deployment(int(w3.eth.chain_id), int(w3.eth.block_number),
                         {k: c.address for k, c in deployer.c.items()}, accounts=dict(roles))
        market = Market(w3, AnvilChain(w3), dep)
        market.warm_up(args.history, random.Random(args.seed))
        fleet = Fleet(deployer)
        vaults = fleet.add(args.vaults)
        market.push()  # fresh rounds on every feed: nothing is stale, however long that took
        print(f"{args.vaults} vaults on anvil, feeds warmed up with {args.history} rounds, in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            settings = load_settings(env={
                "KEEPER_RPC_URL": anvil.url,
                "KEEPER_PRIVATE_KEY": ANVIL_KEEPER_KEY,
                "KEEPER_VAULTS": ",".join(vaults),
                "KEEPER_JOURNAL": str(Path(tmp) / "journal.sqlite"),
                "KEEPER_POLL_INTERVAL": "3600",  # no tick deadline cuts a measured tick short
            }, env_file=None)
            # The keeper's own Web3 (chain id asked once, read retries), not the deployer's.
            service = build_service(settings, account, w3=connect(anvil.url))
            service.start()
            metrics = KeeperMetrics(interval_s=settings.poll_interval)
            server = metrics.serve(0)
            url = f"{server.url}/metrics"
            try:
                without, with_metrics, observe, scrape = [], [], [], []
                page = b""
                actions = 0
                for i in range(args.rounds + 1):
                    t0 = time.perf_counter()
                    report = service.tick()
                    t1 = time.perf_counter()
                    metrics.observe_tick(report, service)
                    t2 = time.perf_counter()
                    with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310
                        page = answer.read()
                    t3 = time.perf_counter()
                    bare = service.tick()
                    t4 = time.perf_counter()
                    actions += sum(map(len, report.actions.values()))
                    actions += sum(map(len, bare.actions.values()))
                    if i == 0:
                        continue  # the first tick reads each feed's history once
                    with_metrics.append(t3 - t0)
                    observe.append(t2 - t1)
                    scrape.append(t3 - t2)
                    without.append(t4 - t3)
            finally:
                server.close()
                service.journal.close()
    result = summarise(without, with_metrics, observe, scrape, len(page))
    for line in report_lines(result, args.vaults):
        print(line)
    if actions:
        print(f"  note: {actions} actions were decided; the ticks were not all no-action")
    print(f"whole run {time.perf_counter() - started:.0f} s")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def add_metrics(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("metrics", help="metrics overhead on a keeper tick: ratio with/without")
    p.add_argument("--vaults", type=_positive, default=DEFAULT_VAULTS,
                   help=f"fleet size (default {DEFAULT_VAULTS})")
    p.add_argument("--rounds", type=_positive, default=DEFAULT_ROUNDS,
                   help=f"ticks of each kind, alternated (default {DEFAULT_ROUNDS})")
    p.add_argument("--history", type=_positive, default=DEFAULT_HISTORY,
                   help="hourly feed rounds before the fleet (< 201: EWMA, else GARCH)")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=run_metrics_bench)


__all__ = ["Overhead", "add_metrics", "report_lines", "run_metrics_bench", "summarise"]
