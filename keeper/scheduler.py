"""The loop around `KeeperService.tick`, with its failure policy.

Ticks run on an APScheduler interval job (never overlapping, missed runs coalesced) and, with
head polling on, as soon as a new block appears: a cheap `eth_blockNumber` every
`head_poll_s` moves the next tick to now when the head is past the last tick's block, so the
time from an oracle round to our action is about one block plus one tick instead of up to a
whole interval. The same poll is the watchdog: a head that has not moved for `head_stall_s`
is logged as stalled (once, and again when it moves) and shown by `service.head_stalled_since`
— a node that stopped following the chain is the most common way a keeper goes idle.

The failure boundary: a tick that raises anything but a KeeperError is a bug — the scheduler
stops and `run_scheduler` returns EXIT_BUG (1), after logging it with its traceback; after
`max_consecutive_failures` ticks in a row that ended in a KeeperError (an RPC down, a stale
chain) it returns EXIT_FAILING (3), so a supervisor restarts it or pages someone. SIGINT and
SIGTERM finish the tick in flight, then return 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_SCHEDULER_STARTED, JobExecutionEvent
from apscheduler.schedulers.blocking import BlockingScheduler

from keeper.chain.rpc_errors import RpcErrorKind, classify
from keeper.journal import LeaseLost

if TYPE_CHECKING:
    from keeper.lease import LeaderLease
    from keeper.metrics import KeeperMetrics
    from keeper.notify import Notifier
    from keeper.service import KeeperService

logger = logging.getLogger(__name__)

#: Ticks in a row that may fail (a KeeperError) before `run_scheduler` gives up.
MAX_CONSECUTIVE_FAILURES = 10
#: Seconds between head polls (0: off, ticks on the interval only).
HEAD_POLL_S = 1.0
#: Seconds without a new head before the watchdog calls it stalled (ten 12 s blocks).
HEAD_STALL_S = 120.0
#: Exit codes: a bug (an exception that is not a KeeperError); too many failed ticks in a row;
#: the leader lease lost (the replica stands by again; `keeper run` does not exit with it).
EXIT_BUG, EXIT_FAILING, EXIT_LEASE_LOST = 1, 3, 4


class SignalRelay:
    """SIGINT/SIGTERM handed to a thread. A signal handler runs on the main thread in the middle
    of whatever it was doing, possibly holding a non-reentrant lock (a thread pool's mid-submit,
    an Event's, threading's own): anything that takes a lock from there can deadlock the
    process. `handler` only records the signal number (one attribute store, no lock); a watcher
    thread polling it every `poll_s` runs `action(signum)`."""

    def __init__(self, action: Callable[[int], object], poll_s: float = 0.05) -> None:
        self.action = action
        self.poll_s = poll_s
        self.signum: int | None = None
        self._closed = False
        threading.Thread(target=self._watch, name="signal-relay", daemon=True).start()

    def handler(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = signum

    def _watch(self) -> None:
        while not self._closed:
            signum = self.signum
            if signum is not None:
                self.signum = None
                self.action(signum)
            time.sleep(self.poll_s)

    def close(self) -> None:
        self._closed = True


@dataclass
class _Watch:
    head: int = -1
    moved_at: float = 0.0
    failed: int = 0
    exit: int = 0


class KeeperLoop:
    """`service` on a BlockingScheduler; `run()` blocks until stopped and returns the exit
    code; `stop()` may be called from any thread."""

    def __init__(
        self,
        service: KeeperService,
        interval_s: float,
        max_consecutive_failures: int = MAX_CONSECUTIVE_FAILURES,
        head_poll_s: float = HEAD_POLL_S,
        head_stall_s: float = HEAD_STALL_S,
        metrics: KeeperMetrics | None = None,
        notifier: Notifier | None = None,
        min_gas_balance_wei: int = 0,
        lease: LeaderLease | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        """`lease`: this replica leads while it holds it (renewed here); once it is lost the
        loop stops with EXIT_LEASE_LOST. `stopping`: set by a signal handler of the caller's
        before this loop installed its own (it then stops as soon as it starts)."""
        self.service = service
        self.lease = lease
        self.stopping = stopping
        self.metrics = metrics
        self.notifier = notifier
        self.min_gas_balance_wei = min_gas_balance_wei
        self.interval_s = interval_s
        self.max_consecutive_failures = max_consecutive_failures
        self.head_poll_s = head_poll_s
        self.head_stall_s = head_stall_s
        self._watch = _Watch(moved_at=time.monotonic())
        self._lost_lock = threading.Lock()
        self.scheduler = BlockingScheduler(
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": max(1, int(interval_s)),
            }
        )
        self.scheduler.add_listener(self._on_error, EVENT_JOB_ERROR)
        self.scheduler.add_listener(self._on_started, EVENT_SCHEDULER_STARTED)
        self._stop_requested = False
        #: The signal that stopped the loop, if one did (a replica then does not stand by again).
        self.signalled: int | None = None
        self.scheduler.add_job(
            self._tick, "interval", seconds=interval_s, id="tick", next_run_time=datetime.now(UTC)
        )
        if head_poll_s > 0:
            self.scheduler.add_job(self._poll_head, "interval", seconds=head_poll_s, id="head")
        # One line per job run at INFO would drown the keeper's own lines at 1 s head polls.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)

    # ------------------------------------------------------------------ jobs
    def _tick(self) -> None:
        if self.lease is not None and not self.lease.held:
            return  # lost: the loop is stopping
        try:
            report = self.service.tick()
        except LeaseLost as exc:  # a write refused by the fence: another replica leads
            self._lease_lost(str(exc))
            return
        if self.metrics is not None:
            self.metrics.observe_tick(report, self.service)
        if self.notifier is not None:
            self.notifier.from_tick(report, self.service.halted)
        if self.metrics is not None or self.notifier is not None:
            self._observe_balance()
        w = self._watch
        w.failed = w.failed + 1 if report.error is not None else 0
        if w.failed >= self.max_consecutive_failures and w.exit == 0:
            logger.critical(
                "%d ticks in a row failed (last: %s); stopping with exit code %d",
                w.failed,
                report.error,
                EXIT_FAILING,
            )
            self._stop_with(EXIT_FAILING)

    def _poll_head(self) -> None:
        try:
            head = int(self.service.w3.eth.block_number)
        except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
            if classify(exc).kind is RpcErrorKind.NOT_RPC:
                raise
            logger.debug("head poll failed: %s", type(exc).__name__)
            head = self._watch.head
        now = time.monotonic()
        w, service = self._watch, self.service
        if self.metrics is not None and head >= 0:
            self.metrics.observe_head(head)
        if head > w.head:
            if service.head_stalled_since is not None:
                logger.warning("head moving again: block %d", head)
                service.head_stalled_since = None
            w.head, w.moved_at = head, now
            if head > service.last_block and not service.busy:
                job = self.scheduler.get_job("tick")
                if job is not None:
                    job.modify(next_run_time=datetime.now(UTC))
        elif service.head_stalled_since is None and now - w.moved_at > self.head_stall_s:
            service.head_stalled_since = time.time() - (now - w.moved_at)
            logger.error(
                "head stalled: block %d for %.0fs (limit %.0fs); the node may have stopped "
                "following the chain",
                w.head,
                now - w.moved_at,
                self.head_stall_s,
            )

    def _observe_balance(self) -> None:
        """The signer's native balance, for the gas-balance alerts and the low-balance notice
        (a failed read is skipped)."""
        address = self.service.sender.address
        try:
            wei = int(self.service.w3.eth.get_balance(address))
        except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
            if classify(exc).kind is RpcErrorKind.NOT_RPC:
                raise
            logger.debug("balance read failed: %s", type(exc).__name__)
            return
        if self.metrics is not None:
            self.metrics.observe_balance(wei)
        if self.notifier is not None and wei < self.min_gas_balance_wei:
            self.notifier.gas_balance_low(address, wei, self.min_gas_balance_wei)

    def _on_error(self, event: JobExecutionEvent) -> None:
        exc = event.exception
        logger.critical(
            "tick raised %s: a bug; stopping with exit code %d",
            type(exc).__name__,
            EXIT_BUG,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        self._stop_with(EXIT_BUG)

    def _lease_lost(self, why: str) -> None:
        with self._lost_lock:  # the renewal thread and a refused write may both report it
            if self._watch.exit == EXIT_LEASE_LOST:
                return
            self._watch.exit = EXIT_LEASE_LOST
        logger.error("not the leader any more (%s): stopping the keeper loop", why)
        if self.notifier is not None:
            now = self.lease.current() if self.lease is not None else None
            self.notifier.lease_lost(now.holder if now is not None and now.live else None)
        if self.metrics is not None:
            self.metrics.observe_lease(False, None)
        self._stop_with(EXIT_LEASE_LOST)

    # ------------------------------------------------------------------ control
    def _stop_with(self, code: int) -> None:
        self._watch.exit = code
        self.stop(wait=False)

    def stop(self, wait: bool = True) -> None:
        """Stop the loop, from any thread; before the scheduler has started it stops as soon as
        it does (a signal between the handler's installation and the start is not lost)."""
        self._stop_requested = True
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)

    def _on_started(self, _event: object) -> None:
        if self._stop_requested or (self.stopping is not None and self.stopping.is_set()):
            self.scheduler.shutdown(wait=False)

    def run(self) -> int:
        """Block until stopped; the exit code (0 after a signal or `stop()`)."""
        relay: SignalRelay | None = None
        if threading.current_thread() is threading.main_thread():

            def on_signal(signum: int) -> None:
                self.signalled = signum
                logger.info("signal %d: finishing the tick in flight, then stopping", signum)
                # Off the main thread (SignalRelay: interrupted mid-submit, it held the thread
                # pool's lock the shutdown takes, and the keeper never exited), and without
                # waiting: shutdown(wait=True) holds the job-store lock until every job ends,
                # which a head poll needs to move the tick job. The tick in flight is waited
                # for below.
                self.stop(wait=False)

            relay = SignalRelay(on_signal)
            signal.signal(signal.SIGINT, relay.handler)
            signal.signal(signal.SIGTERM, relay.handler)
        logger.info(
            "keeper running: %d vaults, every %.1fs%s",
            len(self.service.vaults),
            self.interval_s,
            f" and on every new head (polled every {self.head_poll_s:g}s)"
            if self.head_poll_s > 0
            else "",
        )
        if self.lease is not None:
            self.lease.start_renewing(self._lease_lost)
        try:
            self.scheduler.start()
        finally:
            # A tick still running (the scheduler was stopped from a job) ends first: its
            # journal writes are refused once the lease is gone, so it can send nothing new.
            self.service.wait_idle(self.service.tick_deadline_s + 5)
            if self.lease is not None:
                self.lease.stop(release=self._watch.exit != EXIT_LEASE_LOST)
            if relay is not None:
                relay.close()
        self.service.journal.close()
        if self._watch.exit == 0:
            logger.info("keeper stopped cleanly")
        return self._watch.exit


def run_scheduler(service: KeeperService, interval_s: float, **options: Any) -> int:
    """Run the keeper until stopped (see the module docstring); its exit code. `options` are
    :class:`KeeperLoop`'s."""
    return KeeperLoop(service, interval_s, **options).run()


__all__ = [
    "EXIT_BUG",
    "EXIT_FAILING",
    "EXIT_LEASE_LOST",
    "HEAD_POLL_S",
    "HEAD_STALL_S",
    "MAX_CONSECUTIVE_FAILURES",
    "KeeperLoop",
    "run_scheduler",
]
