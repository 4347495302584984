"""Composition root and the cycle: tick = read → assess/decide → act, one at a time.

`KeeperService` only reacts (pymaker's Lifecycle owns the loop): `start()` checks the chain and
the vaults and reconciles journaled transactions; `tick()` runs one cycle. `run_scheduler()`
owns the loop: an APScheduler interval job, never overlapping, coalesced, stopped cleanly by
SIGINT/SIGTERM after the tick in flight.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType

from eth_typing import ChecksumAddress
from web3 import Web3

from keeper.chain.convert import nav_high_water_usd, to_mandate, to_vault_state
from keeper.chain.reader import PriceHistoryBook, SnapshotReader
from keeper.chain.snapshot import VaultSnapshot
from keeper.clock import Clock
from keeper.errors import KeeperError, StaleDataError
from keeper.journal import Journal
from keeper.policy import decide_batch, settlements
from keeper.risk.actions import Action, ActionKind, Urgency
from keeper.risk.types import Costs, MarketView, histories_from
from keeper.tx.builder import build_call
from keeper.tx.fees import fetch_fee_inputs
from keeper.tx.sender import Outcome, Submitted, TxSender

logger = logging.getLogger(__name__)

Snapshots = dict[ChecksumAddress, VaultSnapshot]

#: Annualised risk-free rate for option greeks: the lending pool's USDC rate is the fair proxy.
RISK_FREE_RATE = 0.05
#: Expected swap price impact assumed by the cost model, bps (the venue's fee comes from chain).
SWAP_IMPACT_BPS = 5.0
#: Symbols whose price is the chain's native token price (gas is paid in it).
NATIVE_SYMBOLS = ("WETH", "ETH")


@dataclass
class TickReport:
    """What one tick saw and did, for logs, the demo table and tests."""

    block: int
    snapshots: dict[ChecksumAddress, VaultSnapshot] = field(default_factory=dict)
    actions: dict[ChecksumAddress, list[Action]] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    stale: list[ChecksumAddress] = field(default_factory=list)
    error: str | None = None
    eth_calls: int = 0
    seconds: float = 0.0


class KeeperService:
    def __init__(
        self,
        w3: Web3,
        vaults: Sequence[ChecksumAddress],
        reader: SnapshotReader,
        sender: TxSender,
        journal: Journal,
        clock: Clock,
        max_staleness_s: int,
        tick_deadline_s: float,
        expected_chain_id: int | None = None,
    ) -> None:
        self.w3 = w3
        self.vaults = list(vaults)
        self.reader = reader
        self.history = PriceHistoryBook(reader)
        self.sender = sender
        self.journal = journal
        self.clock = clock
        self.max_staleness_s = max_staleness_s
        self.tick_deadline_s = tick_deadline_s
        self.expected_chain_id = expected_chain_id
        self.symbols: dict[ChecksumAddress, str] = {}
        self.feed_decimals: dict[ChecksumAddress, int] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ start
    def start(self, verify_vaults: bool = True) -> list[Outcome]:
        """Check chain id and vaults, learn token symbols and feed decimals, and reconcile the
        journal's unfinished transactions — all before any new action. `verify_vaults=False`
        when the caller has already checked them (the CLI does, to name the setting at fault)."""
        chain_id = int(self.w3.eth.chain_id)
        if self.expected_chain_id is not None and chain_id != self.expected_chain_id:
            raise KeeperError(f"connected to chain {chain_id}, expected {self.expected_chain_id}")
        if verify_vaults:
            self.reader.verify_vaults(self.vaults)
        block = int(self.w3.eth.block_number)
        snaps = self.reader.read(self.vaults, block)
        self._learn_metadata(list(snaps.values()), block)
        outcomes = self.sender.reconcile()
        for o in outcomes:
            logger.warning(
                "reconciled at start: vault %s %s → %s %s",
                o.vault,
                o.function,
                o.status,
                o.tx_hash or "",
            )
        return outcomes

    def _learn_metadata(self, snaps: Sequence[VaultSnapshot], block: int) -> None:
        tokens: set[ChecksumAddress] = set()
        feeds: set[ChecksumAddress] = set()
        for snap in snaps:
            for a in snap.assets:
                tokens.add(a.token)
                feeds.add(a.price_feed)
        erc20 = self.w3.eth.contract(
            abi=[
                {
                    "name": "symbol",
                    "type": "function",
                    "stateMutability": "view",
                    "inputs": [],
                    "outputs": [{"name": "", "type": "string"}],
                },
                {
                    "name": "decimals",
                    "type": "function",
                    "stateMutability": "view",
                    "inputs": [],
                    "outputs": [{"name": "", "type": "uint8"}],
                },
            ]
        )
        sym_data = bytes.fromhex(erc20.encode_abi("symbol", [])[2:])
        dec_data = bytes.fromhex(erc20.encode_abi("decimals", [])[2:])
        new_tokens = sorted(t for t in tokens if t not in self.symbols)
        new_feeds = sorted(f for f in feeds if f not in self.feed_decimals)
        if not new_tokens and not new_feeds:
            return
        results = self.reader.aggregate(
            [(t, sym_data) for t in new_tokens] + [(f, dec_data) for f in new_feeds], block
        )
        for token, (ok, data) in zip(new_tokens, results[: len(new_tokens)], strict=True):
            self.symbols[token] = self.w3.codec.decode(["string"], data)[0] if ok else token
        for feed, (ok, data) in zip(new_feeds, results[len(new_tokens) :], strict=True):
            self.feed_decimals[feed] = int(self.w3.codec.decode(["uint8"], data)[0]) if ok else 8

    def read_now(self) -> dict[ChecksumAddress, VaultSnapshot]:
        """Every vault's snapshot at the latest block (read-only: for `keeper status`)."""
        block = int(self.w3.eth.block_number)
        snaps = self.reader.read(self.vaults, block)
        self._learn_metadata(list(snaps.values()), block)
        return snaps

    # ------------------------------------------------------------------ tick
    def tick(self) -> TickReport:
        """One cycle. A KeeperError ends this tick (logged with context); anything else is a bug
        and propagates to stop the process."""
        if not self._lock.acquire(blocking=False):
            logger.warning("tick skipped: the previous tick is still running")
            return TickReport(block=-1, error="overlap")
        started = self.clock.now()
        calls_before = self.reader.counter.eth_calls
        report = TickReport(block=-1)
        tick_id: int | None = None
        try:
            report.block = int(self.w3.eth.block_number)
            tick_id = self.journal.start_tick(report.block, int(self.w3.eth.chain_id))
            self._tick(report, tick_id, started)
            self.journal.finish_tick(tick_id, "ok")
        except KeeperError as exc:
            report.error = str(exc)
            logger.error("tick at block %d failed: %s", report.block, exc)
            if tick_id is not None:
                self.journal.finish_tick(tick_id, "error", str(exc))
        finally:
            report.eth_calls = self.reader.counter.eth_calls - calls_before
            report.seconds = self.clock.now() - started
            self._lock.release()
        return report

    def _tick(self, report: TickReport, tick_id: int, started: float) -> None:
        snaps = self.reader.read(self.vaults, report.block)
        report.snapshots = snaps
        if not snaps:
            raise StaleDataError(f"no vault could be read at block {report.block}")
        self._learn_metadata(list(snaps.values()), report.block)
        latest = {
            a.price_feed: (a.price_round, self.feed_decimals.get(a.price_feed, 8))
            for s in snaps.values()
            for a in s.assets
        }
        self.history.update(latest, report.block)

        now = max(s.timestamp for s in snaps.values())
        for s in snaps.values():
            oldest = (
                min(min(a.price_updated_at, a.vol_updated_at) for a in s.assets)
                if s.assets
                else now
            )
            if now - oldest > self.max_staleness_s:
                report.stale.append(s.vault)
                logger.warning(
                    "vault %s: feed data %ds old at block %d (limit %ds): no action this tick",
                    s.vault,
                    now - oldest,
                    report.block,
                    self.max_staleness_s,
                )
        market = self._market_view(list(snaps.values()), now)
        costs = self._costs(list(snaps.values()))

        def decide(some: Snapshots) -> dict[ChecksumAddress, list[Action]]:
            vs = list(some)
            decided = decide_batch(
                [to_vault_state(some[v], self.symbols) for v in vs],
                [to_mandate(some[v]) for v in vs],
                market,
                costs,
            )
            return dict(zip(vs, decided, strict=True))

        busy = {i.vault for i in self.journal.unfinished_intents()}
        queues: dict[ChecksumAddress, list[Action]] = {}
        for vault, risk_actions in decide(snaps).items():
            snap = snaps[vault]
            expired = [(o.series_id, o.expiry, o.size) for o in snap.options]
            actions = settlements(vault, expired, snap.timestamp) + risk_actions
            report.actions[vault] = actions
            if not actions:
                logger.info(
                    "vault %s block %d: no action (health %.3f, leverage %.3f)",
                    vault,
                    report.block,
                    _ratio(snap.health),
                    _ratio(snap.leverage),
                )
            elif vault in busy:
                logger.warning("vault %s: a transaction is still in flight; no new action", vault)
            else:
                queues[vault] = list(actions)
        self._act_in_waves(tick_id, report, snaps, queues, started, decide)

    def _act_in_waves(
        self,
        tick_id: int,
        report: TickReport,
        snaps: dict[ChecksumAddress, VaultSnapshot],
        queues: dict[ChecksumAddress, list[Action]],
        started: float,
        redecide: Callable[[Snapshots], dict[ChecksumAddress, list[Action]]],
    ) -> None:
        """Each wave submits the next action of every vault (nonces in order), then awaits them
        all: one block can carry every vault's deleverage. A vault with more to do after its
        action mined is read again at the new head and decided again — every later action of a
        tick is built from a fresh read — skipping kinds it already sent this tick."""
        sent: dict[ChecksumAddress, set[ActionKind]] = {}
        while queues:
            if self.clock.now() - started > self.tick_deadline_s:
                left = sum(len(q) for q in queues.values())
                logger.warning(
                    "tick deadline (%.1fs) reached; %d actions wait for the next tick",
                    self.tick_deadline_s,
                    left,
                )
                return
            in_flight: list[tuple[ChecksumAddress, Submitted]] = []
            for vault in list(queues):
                action = queues[vault].pop(0)
                sent.setdefault(vault, set()).add(action.kind)
                if not queues[vault]:
                    del queues[vault]
                submitted = self._act(tick_id, report.block, snaps[vault], action)
                if isinstance(submitted, Submitted):
                    in_flight.append((vault, submitted))
                elif submitted is not None:
                    report.outcomes.append(submitted)
                    if submitted.status != "dry_run":
                        queues.pop(vault, None)  # later actions assumed this one happened
            landed: list[ChecksumAddress] = []
            for vault, sub in in_flight:
                outcome = self.sender.confirm(sub)
                report.outcomes.append(outcome)
                if outcome.status != "mined":
                    queues.pop(vault, None)
                elif vault in queues:
                    landed.append(vault)
            if landed:
                fresh = self.reader.read(landed, int(self.w3.eth.block_number))
                snaps.update(fresh)
                again = redecide(fresh)
                for vault in landed:
                    rest = [a for a in again.get(vault, []) if a.kind not in sent[vault]]
                    if rest:
                        queues[vault] = rest
                    else:
                        queues.pop(vault, None)

    def _act(
        self, tick_id: int, block: int, snap: VaultSnapshot, action: Action
    ) -> Submitted | Outcome | None:
        decision_id = self.journal.record_decision(
            tick_id,
            snap.vault,
            action.kind.name,
            action.urgency.name,
            action.expected_benefit_usd,
            action.expected_cost_usd,
            action.reason,
            dict(action.inputs),
        )
        logger.info(
            "vault %s block %d: %s (%s) — %s; benefit $%.2f vs cost $%.2f; inputs %s",
            snap.vault,
            block,
            action.kind.name,
            action.urgency.name,
            action.reason,
            action.expected_benefit_usd,
            action.expected_cost_usd,
            dict(action.inputs),
        )
        plan = build_call(action, snap, self.symbols)
        if plan is None:
            return None
        return self.sender.submit(plan, action.urgency, decision_id)

    # ------------------------------------------------------------------ inputs
    def _market_view(self, snaps: list[VaultSnapshot], now: int) -> MarketView:
        series: dict[str, tuple[list[float], list[float]]] = {}
        for s in snaps:
            for a in s.assets:
                sym = self.symbols.get(a.token, a.token)
                if sym not in series:
                    series[sym] = self.history.series(a.price_feed)
        return MarketView(
            now=now,
            risk_free_rate=RISK_FREE_RATE,
            histories=histories_from({k: v for k, v in series.items() if len(v[0]) >= 2}),
            max_staleness_s=self.max_staleness_s,
            nav_high_water_usd={s.vault: nav_high_water_usd(s) for s in snaps},
        )

    def _costs(self, snaps: list[VaultSnapshot]) -> Costs:
        inputs = fetch_fee_inputs(self.w3)
        tip = (
            inputs.priority_samples[len(inputs.priority_samples) // 2]
            if inputs.priority_samples
            else (inputs.fallback_priority or 0)
        )
        native = next(
            (
                a.price / 1e18
                for s in snaps
                for a in s.assets
                if self.symbols.get(a.token) in NATIVE_SYMBOLS
            ),
            0.0,
        )
        first = snaps[0]
        critical_cap = self.sender.fee_policy.cap_for(Urgency.CRITICAL)
        return Costs(
            gas_price_usd_per_gas=(inputs.base_fee + tip) / 1e18 * native,
            critical_gas_price_usd_per_gas=critical_cap / 1e18 * native,
            swap_fee_bps=float(first.swap_fee_bps),
            swap_slippage_bps=SWAP_IMPACT_BPS,
            perp_fee_bps=float(first.perp_fee_bps),
        )


def _ratio(value: int) -> float:
    return float("inf") if value >= 2**255 else value / 1e18


def run_scheduler(
    service: KeeperService, interval_s: float, on_stop: list[object] | None = None
) -> int:
    """Run `service.tick` every `interval_s` until SIGINT/SIGTERM; finish the tick in flight,
    then return 0. Ticks never overlap (max_instances=1) and missed runs coalesce into one."""
    from apscheduler.schedulers.blocking import BlockingScheduler

    scheduler = BlockingScheduler(
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": max(1, int(interval_s)),
        }
    )
    scheduler.add_job(
        service.tick, "interval", seconds=interval_s, id="tick", next_run_time=datetime.now(UTC)
    )

    def stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %d: finishing the tick in flight, then stopping", signum)
        scheduler.shutdown(wait=True)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    logger.info("keeper running: %d vaults, every %.1fs", len(service.vaults), interval_s)
    scheduler.start()
    service.journal.close()
    logger.info("keeper stopped cleanly")
    return 0


__all__ = ["KeeperService", "TickReport", "run_scheduler"]
