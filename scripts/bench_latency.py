"""`bench.py latency`: from an oracle round to the keeper's action on chain, on anvil mining a
block every 1 s and every 12 s, with ticks on every new head (the default) against ticks on
the interval alone — measured in the same run, on the same chain.

A trial: the keeper runs its real loop (`KeeperLoop`, wall clock, the chosen interval); the
market crashes in one block (every spot, vol and option-mark round sent at once, so they land
together); the trial ends when the balanced vault's risk-reducing action is mined. Latency is
counted from the block holding the oracle rounds to the block holding the action, in blocks and
in chain seconds (block timestamps). The crash is sent just after the keeper's first tick: for
interval-only ticking that is the worst case (a whole interval to wait; half of one on
average). The chain is reverted to its pre-crash snapshot between trials; each trial has a
fresh keeper and journal.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from keeper.clock import SystemClock
from keeper.devnet.anvil import Anvil
from keeper.devnet.deploy import deploy_everything, feed_answer
from keeper.devnet.local import local_chain
from keeper.devnet.market import Market
from keeper.devnet.service import build_local_service
from keeper.scheduler import KeeperLoop

#: What the crash makes the balanced vault send first (as in the keeper tests).
RISK_REDUCING = ("deleverage", "repayDebt")
#: The crash: spot × these factors in one block.
CRASH = {"ETH": 0.65, "BTC": 0.70}
#: Seconds a trial may take before it is reported as missed.
TRIAL_LIMIT_S = 300.0
HEAD_POLL_S = 0.25


@dataclass(frozen=True)
class Trial:
    blocks: int
    seconds: int


def _crash_in_one_block(market: Market) -> int:
    """Send every feed round of the crash without waiting, then wait for them; the block that
    holds the last one (they share it when the chain mines on an interval)."""
    market.spot = {u: market.spot[u] * f for u, f in CRASH.items()}
    sent = []
    values = {f"{u}_USD": market.spot[u] for u in CRASH} | {f"{u}_IV": market.iv[u] for u in CRASH}
    for name, value in values.items():
        fn = market.feeds[name].functions.updateAnswer(feed_answer(value))
        sent.append(fn.transact({"from": market.admin}))
    blocks = [int(market.w3.eth.wait_for_transaction_receipt(h, 120)["blockNumber"]) for h in sent]
    return max(blocks)


def _trial(anvil_w3, dep, market: Market, interval_s: float, head_poll_s: float) -> Trial | None:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory(prefix="keeper-latency-") as tmp:
        service = build_local_service(
            anvil_w3,
            dep,
            Path(tmp) / "journal.sqlite",
            SystemClock(),
            POLL_INTERVAL=str(interval_s),
            TX_TIMEOUT="60",
        )
        service.start()
        loop = KeeperLoop(service, interval_s, head_poll_s=head_poll_s)
        thread = threading.Thread(target=loop.run, daemon=True)
        thread.start()
        try:
            while service.last_block == 0:  # the first tick, at start
                time.sleep(0.05)
            oracle_block = _crash_in_one_block(market)
            balanced = dep.vaults[0]
            deadline = time.monotonic() + TRIAL_LIMIT_S
            while time.monotonic() < deadline:
                for intent in service.journal.recent_intents(vault=balanced):
                    mined = [t for t in intent.transactions if t.status == "mined"]
                    if intent.kind in RISK_REDUCING and mined and mined[0].block is not None:
                        action_block = mined[0].block
                        t0 = int(anvil_w3.eth.get_block(oracle_block)["timestamp"])
                        t1 = int(anvil_w3.eth.get_block(action_block)["timestamp"])
                        return Trial(action_block - oracle_block, t1 - t0)
                time.sleep(0.1)
            return None
        finally:
            loop.stop()
            thread.join(60)


def run_latency_bench(args: argparse.Namespace) -> int:
    block_times = [int(b) for b in args.block_times.split(",")]
    print(
        f"oracle round → action mined, on anvil; keeper interval {args.interval:g} s; "
        f"{args.trials} trials per row; head polled every {HEAD_POLL_S:g} s when on"
    )
    header = ("block time", "ticks", "blocks med (max)", "chain s med (max)")
    print(f"{header[0]:>10} | {header[1]:<16} | {header[2]:>16} | {header[3]:>17}")
    print("-" * 70)
    started = time.perf_counter()
    missed = 0
    for block_time in block_times:
        with Anvil() as w3:
            dep = deploy_everything(w3)
            chain = local_chain(w3)
            market = Market(w3, chain, dep)
            w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
            w3.provider.make_request("evm_setIntervalMining", [block_time])  # type: ignore[arg-type]
            medians: dict[str, float] = {}
            for label, poll in (("every new head", HEAD_POLL_S), ("interval only", 0.0)):
                results: list[Trial] = []
                for _ in range(args.trials):
                    snap = chain.snapshot()
                    trial = _trial(w3, dep, market, args.interval, poll)
                    chain.revert(snap)
                    market.spot = {u: float(s) for u, s in Market(w3, chain, dep).spot.items()}
                    if trial is None:
                        missed += 1
                    else:
                        results.append(trial)
                if not results:
                    print(f"{block_time:>9}s | {label:<16} | {'missed':>16} |")
                    continue
                blocks = [r.blocks for r in results]
                secs = [r.seconds for r in results]
                medians[label] = statistics.median(secs)
                b_med, s_med = statistics.median(blocks), statistics.median(secs)
                print(
                    f"{block_time:>9}s | {label:<16} | {b_med:>9g} ({max(blocks):>3})"
                    f"    | {s_med:>10g} ({max(secs):>3})"
                )
            if len(medians) == 2 and medians["every new head"] > 0:
                ratio = medians["interval only"] / medians["every new head"]
                print(f"{'':>10}   interval only / every new head (median chain s): {ratio:.1f}×")
    print(f"whole run {time.perf_counter() - started:.0f} s; {missed} trials missed")
    return 0 if missed == 0 else 1


def add_latency(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("latency", help="oracle round → action mined, head ticks vs interval")
    p.add_argument("--block-times", default="1,12", help="anvil block times, seconds")
    p.add_argument("--trials", type=int, default=3, help="trials per row")
    p.add_argument(
        "--interval", type=float, default=60.0, help="the keeper's poll interval, seconds"
    )
    p.set_defaults(func=run_latency_bench)
