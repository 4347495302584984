"""Prometheus metrics of the keeper process, fed from what each tick reports.

`KeeperMetrics` only observes: the composition root calls :meth:`KeeperMetrics.observe_tick`
after every tick (and :meth:`observe_started` once the service has started), and
:meth:`serve` starts the one HTTP endpoint (``/metrics``, ``/healthz``, ``/readyz``, see
:mod:`keeper.health`). Nothing here talks to the chain; the few journal reads (a mined
transaction's effective gas price and first broadcast) are the journal's own, in the tick
thread.

Names follow the Prometheus conventions: prefix ``keeper_``, base units in the name
(``_seconds``, ``_wei``, ``_ratio``, ``_usd``), counters end in ``_total``. Where Chainlink's
transaction manager exports a counterpart, ours counts the same event:

- ``keeper_tx_replacements_total`` ↔ ``tx_manager_num_gas_bumps``: a stuck transaction
  re-signed at the same nonce with bumped fees (one per replacement broadcast);
- ``keeper_tx_fee_cap_reached_total`` ↔ ``tx_manager_gas_bump_exceeds_limit``: fees could not
  go up because the cap was reached (ours also counts a first offer the cap cannot pay);
- ``keeper_action_outcomes_total{status="mined"|"reverted"}`` ↔
  ``tx_manager_num_confirmed_transactions`` / ``tx_manager_num_tx_reverted`` (ours counts each
  action once when its receipt is recorded; a reorg that reopens it can count it again, as
  Chainlink's note says of its own);
- ``keeper_tx_confirmation_seconds`` ↔ ``tx_manager_time_until_tx_confirmed``: from the first
  broadcast of an action to its receipt (Chainlink's buckets, 0.5 s to 10 min);
- ``keeper_pending_transactions`` ↔ Chainlink's ``unconfirmed_transactions`` gauge.

Values are floats (Prometheus has nothing else); money stays integer everywhere else.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from eth_typing import ChecksumAddress
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from keeper.chain.convert import to_vault_state
from keeper.chain.snapshot import VaultSnapshot, wad_to_float
from keeper.errors import KeeperError
from keeper.health import DEFAULT_HOST, STALE_INTERVALS, HealthState, MetricsServer, make_app
from keeper.health import serve as serve_app
from keeper.inputs import RISK_FREE_RATE
from keeper.journal import IntentRecord, JournalError, LeaseRecord, TxRecord
from keeper.risk.actions import ActionKind, Urgency
from keeper.risk.health import portfolio_greeks
from keeper.tx.sender import GAP_FILL_KIND, Outcome

if TYPE_CHECKING:
    from keeper.service import TickReport

logger = logging.getLogger(__name__)

#: Tick durations: a read-only tick takes tens of ms on a local node and ~1 s on a remote one; a
#: tick that awaits confirmations runs up to its deadline (0.8 × the poll interval by default).
TICK_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
#: Broadcast → receipt: Chainlink's tx_manager_time_until_tx_confirmed buckets.
CONFIRMATION_BUCKETS_S = (0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: Vault function → the action kind label (`keeper.tx.builder` builds one from the other).
FUNCTION_KINDS: Mapping[str, str] = {
    "deleverage": ActionKind.DELEVERAGE.value,
    "hedge": ActionKind.HEDGE.value,
    "rebalance": ActionKind.REBALANCE.value,
    "repayDebt": ActionKind.REPAY.value,
    "settleOption": ActionKind.SETTLE.value,
    GAP_FILL_KIND: GAP_FILL_KIND,
}
#: The sender prices every gap-filling no-op at HIGH.
GAP_FILL_URGENCY = Urgency.HIGH
#: Urgency label of an outcome whose action this process did not decide (a transaction an
#: earlier process sent, reconciled at start).
UNKNOWN = "unknown"
#: `Outcome.status` values counted in keeper_action_outcomes_total ('pending' is not an end:
#: the action is still in flight, and is counted when it ends).
OUTCOME_STATUSES = (
    "mined",
    "reverted",
    "simulation_reverted",
    "deferred",
    "dry_run",
    "timeout",
    "failed",
)
#: Statuses with the action still in flight afterwards.
IN_FLIGHT_STATUSES = ("pending", "timeout")
#: What `TickReport.error` says of a tick skipped because the previous one still ran.
OVERLAP = "overlap"
#: How the sender words a fee cap that stopped a send or a replacement (`FeeCapTooLow`, and
#: the reason a flight stops being replaced). Until Outcome carries it as a field.
FEE_CAP_MARKER = "fee cap"
#: Native units per whole USDC (the vault's NAV is in USDC units).
USDC_UNIT = 10**6


class _Nonces(Protocol):
    @property
    def in_flight(self) -> frozenset[int]: ...


class _Sender(Protocol):
    @property
    def in_flight(self) -> Mapping[int, str]: ...

    @property
    def nonces(self) -> _Nonces | None: ...

    @property
    def seen_block(self) -> int: ...


@runtime_checkable
class ReceiptJournal(Protocol):
    """The journal reads that price a receipt (`keeper.journal.Journal` has them)."""

    def transaction(self, tx_hash: str | bytes) -> TxRecord: ...

    def intent(self, intent_id: int) -> IntentRecord: ...


class ServiceView(Protocol):
    """What the metrics read of `KeeperService` (it satisfies this as it is)."""

    @property
    def vaults(self) -> Sequence[ChecksumAddress]: ...

    @property
    def halted(self) -> Mapping[ChecksumAddress, str]: ...

    @property
    def failures(self) -> Mapping[ChecksumAddress, int]: ...

    @property
    def head_stalled_since(self) -> float | None: ...

    @property
    def symbols(self) -> Mapping[ChecksumAddress, str]: ...

    @property
    def journal(self) -> object: ...

    @property
    def sender(self) -> _Sender: ...

    @property
    def last_block(self) -> int: ...


@dataclass(slots=True)
class _Flight:
    """An action this process has seen broadcast and not yet seen end."""

    kind: str
    urgency: str
    replacements: int


def _label(urgency: Urgency | str | None) -> str:
    if urgency is None:
        return UNKNOWN
    return urgency.name.lower() if isinstance(urgency, Urgency) else str(urgency).lower()


def kind_of(function: str) -> str:
    """The action kind label of a vault function (the function itself when unknown)."""
    return FUNCTION_KINDS.get(function, function)


class KeeperMetrics:
    """Every keeper metric on one registry (a fresh one unless given), and the health state
    the probes answer from. `clock` is wall time (epoch seconds), injected by tests."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        interval_s: float,
        clock: Callable[[], float] = time.time,
        stale_intervals: int = STALE_INTERVALS,
        min_gas_balance_wei: int | None = None,
        runtime_collectors: bool = True,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.health = HealthState(interval_s, clock, stale_intervals)
        self._clock = clock
        self._failed_in_a_row = 0
        self._head_seen = -1
        #: The head poll (`observe_head`) runs in another scheduler thread than the tick.
        self._head_lock = threading.Lock()
        self._tick_block = -1
        self._flights: dict[tuple[str, str], _Flight] = {}
        #: Vault → first block at which it was seen below its mandate's min health.
        self._below_since: dict[str, int] = {}
        r = self.registry
        # One `_created` sample per counter child would double the page; Prometheus 2 drops
        # them anyway. A process-wide switch of prometheus-client: the keeper owns the process.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        if runtime_collectors:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)

        V, KU = ("vault",), ("kind", "urgency")

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=r)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=r)

        # ---- ticks
        self.tick_duration = Histogram(
            "keeper_tick_duration_seconds",
            "Wall time of one tick (read, decide, act).",
            buckets=TICK_BUCKETS_S,
            registry=r,
        )
        self.ticks = counter(
            "keeper_ticks_total",
            "Ticks by result: ok, error (a KeeperError ended it), skipped (the previous tick "
            "was still running).",
            ("result",),
        )
        self.consecutive_failed_ticks = gauge(
            "keeper_consecutive_failed_ticks",
            "Ticks in a row that ended in an error (the scheduler stops, exit code 3, at "
            "KEEPER_MAX_CONSECUTIVE_FAILURES).",
        )
        self.last_tick = gauge("keeper_last_tick_timestamp_seconds", "When the last tick ended.")
        self.last_good_tick = gauge(
            "keeper_last_successful_tick_timestamp_seconds",
            "When the last tick that ended without an error ended.",
        )
        self.interval = gauge("keeper_tick_interval_seconds", "Configured seconds between ticks.")
        self.ready = gauge("keeper_ready", "1 once the service has started (/readyz answers 200).")
        # ---- replicas (PostgreSQL journal)
        self.lease_held = gauge(
            "keeper_lease_held", "1 while this replica holds the leader lease of its chain."
        )
        self.standby = gauge(
            "keeper_standby",
            "1 while this replica stands by for the leader lease (it does not tick; "
            "KeeperTicksStalled ignores it).",
        )
        self.lease_term = gauge(
            "keeper_lease_epoch", "Term of the leader lease as this replica last saw it."
        )
        self.lease_holder = gauge(
            "keeper_lease_holder",
            "1 for the replica this one last saw holding the leader lease (label: its name).",
            ("holder",),
        )
        # ---- chain
        self.head_block = gauge("keeper_head_block_number", "Newest block this process has seen.")
        self.tick_block = gauge("keeper_tick_block_number", "Block the last tick read vaults at.")
        self.block_lag = gauge(
            "keeper_block_lag_blocks", "Newest block seen minus the block the last tick read at."
        )
        self.head_stalled = gauge(
            "keeper_head_stalled", "1 while the scheduler's watchdog sees the node's head stopped."
        )
        # ---- vaults
        self.vaults = gauge("keeper_vaults", "Vaults watched.")
        self.halted_vaults = gauge(
            "keeper_halted_vaults", "Vaults halted (no action until restart)."
        )
        self.vault_halted = gauge("keeper_vault_halted", "1 when the vault is halted.", V)
        self.vault_failures = gauge(
            "keeper_vault_consecutive_failures",
            "Ticks in a row in which the vault's read, decision or build failed.",
            V,
        )
        self.vault_faults = counter(
            "keeper_vault_faults_total",
            "Ticks in which the vault failed, by stage (read, decide, build).",
            ("vault", "stage"),
        )
        self.vault_health = gauge(
            "keeper_vault_health_ratio",
            "Vault health: the lower of lending and perp health (+Inf without debt or perps).",
            V,
        )
        self.vault_min_health = gauge(
            "keeper_vault_min_health_ratio", "The mandate's minimum health.", V
        )
        self.vault_below_min = gauge(
            "keeper_vault_below_min_health_blocks",
            "Blocks since the vault was first read below its min health (0: at or above).",
            V,
        )
        self.vault_leverage = gauge("keeper_vault_leverage_ratio", "Collateral value / NAV.", V)
        self.vault_max_leverage = gauge(
            "keeper_vault_max_leverage_ratio", "The mandate's maximum leverage.", V
        )
        self.vault_nav = gauge("keeper_vault_nav_usd", "Net asset value (USDC, as USD).", V)
        self.vault_net_delta = gauge(
            "keeper_vault_net_delta",
            "Net delta per underlying in its units (collateral, idle, perps, option deltas).",
            ("vault", "underlying"),
        )
        self.vault_net_delta_usd = gauge(
            "keeper_vault_net_delta_usd", "Net delta valued at the feed prices.", V
        )
        self.vault_block = gauge(
            "keeper_vault_snapshot_block_number", "Block of the vault's last snapshot read.", V
        )
        self.vault_stale = gauge(
            "keeper_vault_feeds_stale", "1 when the vault's feeds were too old to act on.", V
        )
        self.breaker_open = gauge(
            "keeper_vault_breaker_open",
            "1 while the vault's circuit breaker holds back risk-increasing actions.",
            V,
        )
        # ---- actions and transactions
        self.decided = counter("keeper_actions_decided_total", "Actions the policy decided.", KU)
        self.sent = counter(
            "keeper_actions_sent_total",
            "Actions whose transaction was broadcast (once per action, at its first broadcast).",
            KU,
        )
        self.outcomes = counter(
            "keeper_action_outcomes_total",
            "How actions ended: mined, reverted (on chain), simulation_reverted (nothing "
            "sent), deferred (base fee too high), dry_run, timeout (out of replacements, still "
            "in flight), failed.",
            ("kind", "urgency", "status"),
        )
        self.replacements = counter(
            "keeper_tx_replacements_total",
            "Stuck transactions re-signed at the same nonce with bumped fees "
            "(Chainlink: tx_manager_num_gas_bumps).",
            KU,
        )
        self.fee_cap_reached = counter(
            "keeper_tx_fee_cap_reached_total",
            "Sends or replacements stopped by the urgency's fee cap "
            "(Chainlink: tx_manager_gas_bump_exceeds_limit).",
            KU,
        )
        self.gas_used = counter(
            "keeper_tx_gas_used_total", "Gas used by mined and reverted transactions.", KU
        )
        self.fees = counter(
            "keeper_tx_fees_wei_total",
            "Fees paid by mined and reverted transactions (gas used x effective gas price).",
            KU,
        )
        self.confirmation = Histogram(
            "keeper_tx_confirmation_seconds",
            "First broadcast of an action to its receipt "
            "(Chainlink: tx_manager_time_until_tx_confirmed).",
            buckets=CONFIRMATION_BUCKETS_S,
            registry=r,
        )
        self.pending = gauge("keeper_pending_transactions", "Transactions this process awaits.")
        self.lowest_nonce = gauge(
            "keeper_lowest_pending_nonce", "Lowest nonce allocated, not yet confirmed (-1: none)."
        )
        self.balance = gauge("keeper_signer_balance_wei", "The signer's native balance.")
        self.min_balance = gauge(
            "keeper_signer_min_balance_wei",
            "The balance the keeper requires at start (KEEPER_MIN_GAS_BALANCE_ETH).",
        )

        self.interval.set(interval_s)
        # Until a tick ends, "since" counts from start: a fresh process gets the same grace
        # from the stalled-ticks alert as from /healthz.
        started = clock()
        self.last_tick.set(started)
        self.last_good_tick.set(started)
        self.lowest_nonce.set(-1)
        # NaN until known: no balance alert fires on a keeper that does not report one.
        self.balance.set(math.nan)
        self.min_balance.set(math.nan if min_gas_balance_wei is None else min_gas_balance_wei)
        # Known label values start at 0, so an alert's increase() sees the first event.
        by_kind = (self.decided, self.sent, self.replacements, self.fee_cap_reached)
        for kind in ActionKind:
            for urgency in Urgency:
                k, u = kind.value, _label(urgency)
                for family in (*by_kind, self.gas_used, self.fees):
                    family.labels(k, u)
                for status in OUTCOME_STATUSES:
                    self.outcomes.labels(k, u, status)
        for result in ("ok", "error", "skipped"):
            self.ticks.labels(result)

    # ------------------------------------------------------------------ hooks
    def serve(self, port: int, host: str = DEFAULT_HOST) -> MetricsServer:
        """Start /metrics, /healthz and /readyz on `host:port` in a daemon thread."""
        return serve_app(make_app(self.registry, self.health), port, host)

    def observe_started(self, service: ServiceView, outcomes: Iterable[Outcome] = ()) -> None:
        """After `service.start()`: ready, and the transactions it reconciled."""
        for o in outcomes:
            self.observe_outcome(o, None, journal=service.journal, resumed=True)
        self._observe_service(service)
        self.health.mark_started()
        self.ready.set(1)

    def observe_lease(self, held: bool, record: LeaseRecord | None) -> None:
        """This replica took (`held`) or lost the lease; `record` as it stands."""
        self.lease_held.set(1 if held else 0)
        if held:
            self.standby.set(0)
            self.health.leading()
        else:
            self.ready.set(0)
        self._set_holder(record)

    def observe_standby(self, record: LeaseRecord | None) -> None:
        """A standby's failed attempt at the lease: alive, not ready, who leads."""
        self.lease_held.set(0)
        self.standby.set(1)
        self.ready.set(0)
        live = record if record is not None and record.live else None
        self.health.standing_by(live.holder if live is not None else None)
        self._set_holder(live)

    def _set_holder(self, record: LeaseRecord | None) -> None:
        self.lease_holder.clear()
        if record is not None:
            self.lease_holder.labels(holder=record.holder).set(1)
            self.lease_term.set(record.epoch)

    def observe_head(self, block: int) -> None:
        """The node's head as the scheduler's head poll sees it (between ticks)."""
        self._set_head(block)

    def observe_balance(self, wei: int, minimum_wei: int | None = None) -> None:
        """The signer's native balance (and, optionally, the minimum it must keep)."""
        self.balance.set(wei)
        if minimum_wei is not None:
            self.min_balance.set(minimum_wei)

    def observe_tick(self, report: TickReport, service: ServiceView) -> None:
        """Everything one tick reported, and the service's state after it."""
        now = self._clock()
        if report.error == OVERLAP:
            self.ticks.labels("skipped").inc()
            return
        ok = report.error is None
        self.ticks.labels("ok" if ok else "error").inc()
        self.tick_duration.observe(report.seconds)
        self._failed_in_a_row = 0 if ok else self._failed_in_a_row + 1
        self.consecutive_failed_ticks.set(self._failed_in_a_row)
        self.last_tick.set(now)
        if ok:
            self.last_good_tick.set(now)
        self.health.tick_completed(ok)

        if report.block >= 0:
            with self._head_lock:
                self._tick_block = report.block
            self.tick_block.set(report.block)
        for snap in report.snapshots.values():
            self._observe_vault(snap, report, service)
        for vault, why in report.faults.items():
            self.vault_faults.labels(vault, why.split(":", 1)[0].strip() or "unknown").inc()
        for actions in report.actions.values():
            for action in actions:
                self.decided.labels(action.kind.value, _label(action.urgency)).inc()
        for o in report.outcomes:
            self.observe_outcome(o, self._urgency_of(o, report), journal=service.journal)
        self._observe_service(service)

    def observe_outcome(
        self,
        outcome: Outcome,
        urgency: Urgency | str | None,
        *,
        journal: object = None,
        resumed: bool = False,
    ) -> None:
        """One action's outcome. `urgency` None: the one it was sent with, if this process saw
        it sent, else 'unknown'. With `journal`, a receipt's fees and confirmation time are
        read from the journal's record of the transaction. `resumed`: a transaction an earlier
        process sent (reconciled at start): not counted as sent again."""
        key = (outcome.vault, outcome.function)
        flight = self._flights.get(key)
        kind = kind_of(outcome.function)
        if urgency is None and flight is not None:
            u = flight.urgency
        elif urgency is None and outcome.function == GAP_FILL_KIND:
            u = _label(GAP_FILL_URGENCY)
        else:
            u = _label(urgency)
        if outcome.tx_hash is not None and flight is None:
            if not resumed:
                self.sent.labels(kind, u).inc()
            flight = _Flight(kind, u, 0)
        if flight is not None:
            bumps = max(0, outcome.replacements - flight.replacements)
            flight.replacements = max(flight.replacements, outcome.replacements)
        else:
            bumps = outcome.replacements
        if bumps:
            self.replacements.labels(kind, u).inc(bumps)
        if outcome.status in IN_FLIGHT_STATUSES and flight is not None:
            self._flights[key] = flight
        else:
            self._flights.pop(key, None)
        if outcome.status != "pending":
            self.outcomes.labels(kind, u, outcome.status).inc()
        if _fee_capped(outcome):
            self.fee_cap_reached.labels(kind, u).inc()
        if outcome.gas_used is not None and outcome.status in ("mined", "reverted"):
            self.gas_used.labels(kind, u).inc(outcome.gas_used)
            price, seconds = _receipt_facts(outcome, journal)
            if price is not None:
                self.fees.labels(kind, u).inc(outcome.gas_used * price)
            if seconds is not None:
                self.confirmation.observe(seconds)

    # ------------------------------------------------------------------ internals
    def _urgency_of(self, o: Outcome, report: TickReport) -> Urgency | None:
        """The urgency of the action this tick decided for `o`'s vault and kind (None when
        the outcome is of an earlier tick's action)."""
        if (o.vault, o.function) in self._flights:
            return None
        kind = kind_of(o.function)
        for vault, actions in report.actions.items():
            for action in actions if vault == o.vault else ():
                if action.kind.value == kind:
                    return action.urgency
        return None

    def _observe_vault(self, snap: VaultSnapshot, report: TickReport, service: ServiceView) -> None:
        v = snap.vault
        health, min_health = wad_to_float(snap.health), wad_to_float(snap.mandate.min_health)
        self.vault_health.labels(v).set(health)
        self.vault_min_health.labels(v).set(min_health)
        self.vault_leverage.labels(v).set(wad_to_float(snap.leverage))
        self.vault_max_leverage.labels(v).set(wad_to_float(snap.mandate.max_leverage))
        self.vault_nav.labels(v).set(snap.total_assets / USDC_UNIT)
        self.vault_block.labels(v).set(snap.block_number)
        self.vault_stale.labels(v).set(1 if v in report.stale else 0)
        self.breaker_open.labels(v).set(1 if v in report.breaker else 0)
        if snap.health < snap.mandate.min_health:
            since = self._below_since.setdefault(v, snap.block_number)
            self.vault_below_min.labels(v).set(max(0, snap.block_number - since))
        else:
            self._below_since.pop(v, None)
            self.vault_below_min.labels(v).set(0)
        try:
            state = to_vault_state(snap, service.symbols)
            greeks = portfolio_greeks(state, snap.timestamp, RISK_FREE_RATE)
        except KeeperError as exc:  # the tick reports this vault's fault itself
            logger.warning("metrics: vault %s net delta not computed: %s", v, exc)
            return
        usd = 0.0
        for underlying, g in greeks.items():
            self.vault_net_delta.labels(v, underlying).set(g.delta)
            usd += g.delta * state.asset(underlying).price_usd
        self.vault_net_delta_usd.labels(v).set(usd)

    def _set_head(self, block: int) -> None:
        with self._head_lock:
            self._head_seen = max(self._head_seen, block)
            if self._head_seen < 0:
                return
            self.head_block.set(self._head_seen)
            if self._tick_block >= 0:
                self.block_lag.set(max(0, self._head_seen - self._tick_block))

    def _observe_service(self, service: ServiceView) -> None:
        # The sender's newest receipt is newer than the tick's head when the tick's actions
        # mined (the service learns it at its next head read).
        self._set_head(max(service.last_block, service.sender.seen_block))
        self.head_stalled.set(0 if service.head_stalled_since is None else 1)
        self.vaults.set(len(service.vaults))
        self.halted_vaults.set(sum(1 for v in service.vaults if v in service.halted))
        for v in service.vaults:
            self.vault_halted.labels(v).set(1 if v in service.halted else 0)
            self.vault_failures.labels(v).set(service.failures.get(v, 0))
        self.health.set_vaults(len(service.vaults), len(service.halted))
        sender = service.sender
        self.pending.set(len(sender.in_flight))
        nonces = sender.nonces.in_flight if sender.nonces is not None else frozenset()
        self.lowest_nonce.set(min(nonces) if nonces else -1)


def _fee_capped(o: Outcome) -> bool:
    """A send the cap refused ('failed', nothing broadcast) or a flight it stopped
    replacing ('timeout')."""
    if o.error is None or FEE_CAP_MARKER not in o.error:
        return False
    return o.status == "timeout" or (o.status == "failed" and o.tx_hash is None)


def _receipt_facts(o: Outcome, journal: object) -> tuple[int | None, float | None]:
    """(effective gas price in wei, seconds from the action's first broadcast to its receipt)
    of a mined or reverted outcome: from `o.details` when the sender puts them there, else
    from the journal's record of the transaction."""
    price = o.details.get("effective_gas_price")
    seconds = o.details.get("confirmation_seconds")
    lookup = journal if isinstance(journal, ReceiptJournal) else None
    if (price is None or seconds is None) and lookup is not None and o.tx_hash is not None:
        try:
            tx = lookup.transaction(o.tx_hash)
            first = lookup.intent(tx.intent_id).transactions[0]
        except JournalError as exc:  # a read failure must not end the tick; counted as unknown
            logger.warning("metrics: transaction %s not read from the journal: %s", o.tx_hash, exc)
        else:
            if price is None and tx.effective_gas_price is not None:
                price = int(tx.effective_gas_price)
            if seconds is None:
                seconds = max(0.0, tx.updated_at - first.created_at)
    return (int(price) if price is not None else None), (
        float(seconds) if seconds is not None else None
    )


__all__ = [
    "CONFIRMATION_BUCKETS_S",
    "FUNCTION_KINDS",
    "TICK_BUCKETS_S",
    "KeeperMetrics",
    "ServiceView",
    "kind_of",
]
