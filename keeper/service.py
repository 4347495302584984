"""Composition root and the cycle: tick = read → assess/decide → act, one at a time.

`KeeperService` only reacts (pymaker's Lifecycle owns the loop): `start()` checks the chain and
the vaults and reconciles journaled transactions; `tick()` runs one cycle. The loop, with its
failure policy, is :mod:`keeper.scheduler`; the pure decision inputs are :mod:`keeper.inputs`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from eth_typing import ChecksumAddress
from web3 import Web3
from web3.exceptions import BlockNotFound

from keeper.breaker import BreakerBook
from keeper.chain.batch import hex_int, post
from keeper.chain.convert import to_mandate, to_vault_state
from keeper.chain.reader import PriceHistoryBook
from keeper.chain.rpc_errors import read_failure
from keeper.chain.snapshot import VaultSnapshot
from keeper.clock import Clock
from keeper.errors import KeeperError, StaleDataError
from keeper.inputs import costs, market_view
from keeper.journal import LeaseLost
from keeper.policy import decide_batch, settlements
from keeper.ports import JournalPort, PriceHistorySource, SnapshotSource
from keeper.risk.actions import Action, ActionKind
from keeper.risk.types import Costs, MarketView
from keeper.tx.builder import build_call
from keeper.tx.fees import FeeAnswers, fee_requests, fetch_fee_inputs
from keeper.tx.sender import Outcome, Submitted, TxSender

logger = logging.getLogger(__name__)

Snapshots = dict[ChecksumAddress, VaultSnapshot]

#: Consecutive ticks in which one vault's read, decision or build fails before it is halted.
HALT_AFTER = 3
#: Extra head reads when a node answers a block behind one seen before (a lagging backend).
HEAD_REREADS = 2
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
    #: Vaults whose breaker is open → why (risk-increasing actions held back).
    breaker: dict[ChecksumAddress, str] = field(default_factory=dict)
    #: Vaults whose read, decision or build failed this tick → what failed.
    faults: dict[ChecksumAddress, str] = field(default_factory=dict)
    error: str | None = None
    eth_calls: int = 0
    seconds: float = 0.0


class KeeperService:
    def __init__(
        self,
        w3: Web3,
        vaults: Sequence[ChecksumAddress],
        reader: SnapshotSource,
        sender: TxSender,
        journal: JournalPort,
        clock: Clock,
        max_staleness_s: int,
        tick_deadline_s: float,
        expected_chain_id: int | None = None,
        halt_after: int = HALT_AFTER,
        history: PriceHistorySource | None = None,
    ) -> None:
        self.w3 = w3
        self.vaults = list(vaults)
        self.reader = reader
        self.history: PriceHistorySource = (
            history if history is not None else PriceHistoryBook(reader)
        )
        self.sender = sender
        self.journal = journal
        self.clock = clock
        self.max_staleness_s = max_staleness_s
        self.tick_deadline_s = tick_deadline_s
        self.expected_chain_id = expected_chain_id
        self.halt_after = halt_after
        #: Consecutive failed ticks per vault, and the vaults halted (vault → why).
        self.failures: dict[ChecksumAddress, int] = {}
        self.halted: dict[ChecksumAddress, str] = {}
        self._faulted: dict[ChecksumAddress, str] = {}
        #: Set by the scheduler's watchdog while the node's head does not move (epoch s).
        self.head_stalled_since: float | None = None
        self.symbols: dict[ChecksumAddress, str] = {}
        #: The newest block this process has seen (see `_read_head`).
        self._head = 0
        #: Nonce gaps open at the end of the last tick (see `_fill_old_gaps`).
        self._gaps_seen: set[int] = set()
        #: Feed jumps and venue disagreement: risk-increasing actions held back while open.
        self.breaker = BreakerBook()
        self.feed_decimals: dict[ChecksumAddress, int] = {}
        #: The fee inputs that rode in this tick's head batch (see `_read_head_and_fees`).
        self._fee_answers: FeeAnswers | None = None
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
        self.breaker.seed(self.reader.previous_rounds(snaps.values(), block))
        self.breaker.update(snaps, self.symbols)
        self._head = block
        self.journal.clear_halts()
        outcomes = self.sender.reconcile(until=self.clock.now() + self.tick_deadline_s)
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

    @property
    def last_block(self) -> int:
        """The newest block a tick (or a receipt) has shown this process."""
        return self._head

    @property
    def busy(self) -> bool:
        """A tick is running."""
        return self._lock.locked()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no tick runs (at most `timeout_s`); whether none does."""
        if not self._lock.acquire(timeout=max(0.0, timeout_s)):
            return False
        self._lock.release()
        return True

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
            report.block = self._read_head(with_fees=True)
            tick_id = self.journal.start_tick(report.block, int(self.w3.eth.chain_id))
            self._faulted = {}
            self._tick(report, tick_id, started)
            self._count_faults(report)
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

    # ------------------------------------------------------------------ faults
    def _vault_fault(self, vault: ChecksumAddress, stage: str, exc: BaseException) -> None:
        """One vault's read, conversion, decision or build failed this tick: logged (with the
        traceback when it is not a KeeperError — a bug, to be fixed) and counted; the other
        vaults go on."""
        if isinstance(exc, LeaseLost):  # not this vault's fault: the whole tick stops
            raise exc
        first = vault not in self._faulted
        self._faulted.setdefault(vault, f"{stage}: {type(exc).__name__}: {exc}")
        if isinstance(exc, KeeperError):
            logger.error("vault %s: %s failed: %s; skipped this tick", vault, stage, exc)
        else:
            logger.error(
                "vault %s: %s failed (%s); skipped this tick",
                vault,
                stage,
                type(exc).__name__,
                exc_info=first,
            )

    def _count_faults(self, report: TickReport) -> None:
        """Consecutive failed ticks per vault; at `halt_after` the vault is halted (no action
        until restart, shown by `keeper status`). A clean tick resets the count."""
        for vault in self.vaults:
            if vault in self.halted:
                continue
            why = self._faulted.get(vault)
            if why is None:
                if self.failures.pop(vault, 0):
                    self.journal.record_vault_fault(vault, 0, False, None)
                continue
            count = self.failures.get(vault, 0) + 1
            self.failures[vault] = count
            halt = count >= self.halt_after
            if halt:
                self.halted[vault] = f"{count} failed ticks in a row; last {why}"
                logger.critical("vault %s halted: %s", vault, self.halted[vault])
            self.journal.record_vault_fault(vault, count, halt, why)
            report.faults[vault] = why

    def _read_head(self, with_fees: bool = False) -> int:
        """The block to read at: never behind one this process has already seen. A node that
        answers an older head (a lagging backend behind a load balancer) is overruled — the
        state at our high-water block is read instead — unless that block is gone (a reorg to
        a shorter chain): then its head is taken, and the reorg check looks at what we mined.
        `with_fees` (a tick's first read): the fee inputs ride in the same JSON-RPC batch."""
        self._head = max(self._head, self.sender.seen_block)
        if with_fees:
            head = self._read_head_and_fees()
        else:
            head = int(self.w3.eth.block_number)
        if head >= self._head:
            self._head = head
            return head
        for _ in range(HEAD_REREADS):
            head = max(head, int(self.w3.eth.block_number))
        if head >= self._head:
            self._head = head
            return head
        try:
            self.w3.eth.get_block(self._head)
        except BlockNotFound:
            logger.warning(
                "node head %d is behind block %d seen before, which it no longer has: "
                "a reorg; re-reading from %d",
                head,
                self._head,
                head,
            )
            self._head = head
            self.sender.seen_block = min(self.sender.seen_block, head)
            return head
        except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
            raise read_failure(exc, f"block {self._head}") from None
        logger.info(
            "node answered head %d, behind %d seen before: reading at %d",
            head,
            self._head,
            self._head,
        )
        return self._head

    def _read_head_and_fees(self) -> int:
        """The head, with the fee inputs the cost model needs, in one JSON-RPC batch (one HTTP
        round trip where the node takes batches). What the batch did not answer is read the
        ordinary way: the head here, the fee inputs when the costs need them (`_costs`), so each
        fails where and as it did before batching."""
        head_answer, history, priority = post(
            self.w3, [("eth_blockNumber", []), *fee_requests()]
        )
        self._fee_answers = FeeAnswers(history, priority)
        head = hex_int(head_answer)
        return int(self.w3.eth.block_number) if head is None else head

    def _tick(self, report: TickReport, tick_id: int, started: float) -> None:
        self.sender.check_reorgs(report.block)
        for o in self.sender.resume(until=self.clock.now()):
            report.outcomes.append(o)
            logger.info(
                "vault %s: earlier %s → %s %s", o.vault, o.function, o.status, o.tx_hash or ""
            )
        snaps = self.reader.read(self.vaults, report.block)
        report.snapshots = snaps
        if not snaps:
            raise StaleDataError(f"no vault could be read at block {report.block}")
        for vault in self.vaults:
            if vault not in snaps:
                self._vault_fault(vault, "read", StaleDataError("snapshot() reverted"))
            if vault in self.halted:
                logger.error(
                    "vault %s halted (%s): no action until the keeper is restarted",
                    vault,
                    self.halted[vault],
                )
        self._learn_metadata(list(snaps.values()), report.block)
        self.breaker.update(snaps, self.symbols)
        report.breaker = {v: self.breaker.describe(v) for v in snaps if self.breaker.is_open(v)}
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

        def decide_all(some: Snapshots) -> dict[ChecksumAddress, list[Action]]:
            vs = list(some)
            decided = decide_batch(
                [to_vault_state(some[v], self.symbols) for v in vs],
                [to_mandate(some[v]) for v in vs],
                market,
                costs,
            )
            out = {}
            for v, risk_actions in zip(vs, decided, strict=True):
                expired = [(o.series_id, o.expiry, o.size) for o in some[v].options]
                actions = settlements(v, expired, some[v].timestamp) + risk_actions
                out[v] = self.breaker.gate(v, actions)
            return out

        def decide(some: Snapshots) -> dict[ChecksumAddress, list[Action]]:
            """All at once; if that fails, one vault at a time: a vault whose conversion or
            decision fails is skipped (and counted), the others go on."""
            try:
                return decide_all(some)
            except Exception as exc:  # isolated below, vault by vault; never swallowed there
                if len(some) == 1:
                    self._vault_fault(next(iter(some)), "decide", exc)
                    return {}
            out: dict[ChecksumAddress, list[Action]] = {}
            for v, snap in some.items():
                try:
                    out.update(decide_all({v: snap}))
                except Exception as exc:  # this vault's fault: counted, logged with its cause
                    self._vault_fault(v, "decide", exc)
            return out

        busy = {i.vault for i in self.journal.unfinished_intents()}  # after `resume` above
        queues: dict[ChecksumAddress, list[Action]] = {}
        active = {v: s for v, s in snaps.items() if v not in self.halted}
        for vault, actions in decide(active).items():
            snap = snaps[vault]
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
        self._fill_old_gaps(report, started)

    def _fill_old_gaps(self, report: TickReport, started: float) -> None:
        """A nonce gap (a nonce released, or reopened by a reorg, below one still in flight)
        blocks every transaction above it. The next action of any vault takes it; one still
        open after a whole tick is filled with a no-op, so nothing waits on it longer."""
        nonces = self.sender.nonces
        if nonces is None:
            return
        gaps = set(nonces.gaps)
        stale = gaps & self._gaps_seen
        self._gaps_seen = gaps - stale
        subs: list[Submitted] = []
        for _ in stale:
            filled = self.sender.fill_gap()
            if isinstance(filled, Submitted):
                subs.append(filled)
            elif filled is not None:
                report.outcomes.append(filled)
        if subs:
            report.outcomes.extend(
                self.sender.confirm_all(subs, until=started + self.tick_deadline_s)
            )

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
            confirmed = self.sender.confirm_all(
                [sub for _, sub in in_flight], until=started + self.tick_deadline_s
            )
            for (vault, _), outcome in zip(in_flight, confirmed, strict=True):
                report.outcomes.append(outcome)
                if outcome.status != "mined":
                    queues.pop(vault, None)
                elif vault in queues:
                    landed.append(vault)
            if landed:
                # At least the block our transactions are in (`_read_head`).
                fresh = self.reader.read(landed, self._read_head())
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
        try:
            plan = build_call(action, snap, self.symbols)
        except Exception as exc:  # this vault's fault: counted, logged with its cause
            self._vault_fault(snap.vault, "build", exc)
            return None
        if plan is None:
            return None
        return self.sender.submit(plan, action.urgency, decision_id)

    # ------------------------------------------------------------------ inputs
    def _market_view(self, snaps: list[VaultSnapshot], now: int) -> MarketView:
        feeds = {a.price_feed for s in snaps for a in s.assets}
        series = {f: self.history.series(f) for f in feeds}
        return market_view(snaps, self.symbols, series, now, self.max_staleness_s)

    def _costs(self, snaps: list[VaultSnapshot]) -> Costs:
        answers, self._fee_answers = self._fee_answers, None  # this tick's, used once
        fee_inputs = fetch_fee_inputs(self.w3, answers=answers)
        return costs(snaps, self.symbols, fee_inputs, self.sender.fee_policy)


def _ratio(value: int) -> float:
    return float("inf") if value >= 2**255 else value / 1e18


__all__ = ["KeeperService", "TickReport"]
