"""Replicas: one leader per chain, chosen by a lease row in the PostgreSQL journal.

The leader holds the lease ``leader`` of its chain's journal schema: it lasts `lease_s` (10 s)
by the *database's* clock and the leader renews it every `renew_s` (1 s), on a connection of
its own, so a long tick never delays a renewal (Chainlink's node uses the same 10 s / 1 s). A
standby tries to take it every `renew_s` and succeeds once it has lapsed: a new term, with the
epoch one higher.

Why a paused ex-leader cannot send a second, different transaction (fencing by nonce):

1. every journal write of the leader's keeper is *fenced* (:meth:`keeper.journal.Journal.fence`):
   in the same database transaction, it locks the lease row and checks that the lease is still
   this replica's and unexpired, or writes nothing and raises :class:`LeaseLost`;
2. a transaction is signed, journaled (raw bytes, nonce) and only then broadcast;
3. so whatever an ex-leader broadcasts after waking up was journaled while it led — the new
   leader, which reads the journal only after taking the lease (the row lock orders the two),
   reconciles exactly those bytes: the same transaction, or a replacement of the same intent at
   the same nonce;
4. a new action needs a new journaled nonce, which the ex-leader can no longer write; the
   journal also refuses two live intents on one nonce, and the new leader's nonces start above
   every journaled transaction (:meth:`~keeper.journal.Journal.nonce_floor`).

At worst, then, an ex-leader re-sends a transaction of a nonce the new leader also owns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from keeper.journal import Journal, JournalError, LeaseLost, LeaseRecord

logger = logging.getLogger(__name__)

#: The lease of a chain's journal that makes its holder the leader.
LEASE_NAME = "leader"
#: Chainlink's node: a 10 s lease renewed every second.
LEASE_S = 10.0
RENEW_S = 1.0


class LeaderLease:
    """The leader lease of one chain's journal, on a connection of its own. `wait()` stands by
    until the lease is ours; `start_renewing()` keeps it and calls `on_lost` once when it is
    gone (taken by another replica, or not renewed in time: database unreachable)."""

    def __init__(
        self,
        target: str,
        chain_id: int,
        holder: str,
        lease_s: float = LEASE_S,
        renew_s: float = RENEW_S,
        name: str = LEASE_NAME,
    ) -> None:
        self.holder, self.name = holder, name
        self.lease_s, self.renew_s = lease_s, renew_s
        self.journal = Journal(target, chain_id=chain_id)
        self.record: LeaseRecord | None = None
        self.lost_reason: str | None = None
        #: Whether the last attempt reached the database (a standby that cannot is not alive).
        self.reachable = True
        self._warned_same_name = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def fence(self) -> tuple[str, str, int | None]:
        """What the leader's journal is fenced with: this lease, this holder, this term."""
        return (self.name, self.holder, self.record.epoch if self.record else None)

    @property
    def held(self) -> bool:
        return self.record is not None and self.lost_reason is None

    def current(self) -> LeaseRecord | None:
        """The lease as the database has it now (whoever holds it); None on a read error."""
        try:
            return self.journal.lease(self.name)
        except JournalError as exc:
            logger.warning("lease %s: cannot read it: %s", self.name, exc)
            return None

    def try_acquire(self) -> bool:
        """One attempt: True if the lease is ours now (a new term, or ours already)."""
        try:
            record = self.journal.acquire_lease(
                self.name, self.holder, self.lease_s, extend=self.record is not None
            )
        except JournalError as exc:
            if self.reachable:  # once per outage, not once a second
                logger.warning("lease %s: cannot reach the journal: %s", self.name, exc)
            self.reachable = False
            return False
        if not self.reachable:
            logger.info("lease %s: the journal answers again", self.name)
        self.reachable = True
        if record.holder != self.holder:
            return False
        if not record.taken:
            # Live under our name, and not taken now: another process with our replica id
            # (or our own previous run, until its lease lapses). Never share a term with it.
            if not self._warned_same_name:
                logger.warning(
                    "lease %s is held under this replica's own name %s by another process "
                    "(a duplicated KEEPER_REPLICA_ID, or this replica's previous run): waiting "
                    "for it to lapse",
                    self.name,
                    self.holder,
                )
                self._warned_same_name = True
            return False
        self.record, self.lost_reason = record, None
        return True

    def wait(
        self,
        stop: threading.Event,
        on_attempt: Callable[[LeaseRecord | None], None] | None = None,
    ) -> bool:
        """Stand by until the lease is ours (True) or `stop` is set (False); `on_attempt` is
        called with the lease as it stands after each attempt that failed."""
        announced: str | None = None
        while not stop.is_set():
            if self.try_acquire():
                assert self.record is not None
                logger.warning(
                    "lease %s taken by %s: leader, term %d", self.name, self.holder,
                    self.record.epoch,
                )
                return True
            other = self.current()
            if on_attempt is not None and self.reachable:
                on_attempt(other)
            if other is not None and other.holder != announced:
                announced = other.holder
                logger.info(
                    "standby: lease %s held by %s (expires in %.1fs)",
                    self.name,
                    other.holder,
                    other.expires_at - other.db_now,
                )
            stop.wait(self.renew_s)
        return False

    def start_renewing(self, on_lost: Callable[[str], None]) -> None:
        """Renew every `renew_s` on a thread of its own until :meth:`stop`; `on_lost(why)` once."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._renew_loop, args=(on_lost,), name="lease-renewal", daemon=True
        )
        self._thread.start()

    def _renew_loop(self, on_lost: Callable[[str], None]) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.renew_s):
            try:
                record = self.journal.renew_lease(self.name, self.holder, self.lease_s)
            except JournalError as exc:
                # Not renewed: by the database's clock it lapses lease_s after the last renewal.
                # Give up one renewal interval before that, from our own (monotonic) clock.
                if time.monotonic() - last_ok < self.lease_s - self.renew_s:
                    logger.warning("lease %s: renewal failed, retrying: %s", self.name, exc)
                    continue
                self._lose(f"not renewed for {time.monotonic() - last_ok:.1f}s: {exc}", on_lost)
                return
            if record is None:
                other = self.current()
                by = f"held by {other.holder}, term {other.epoch}" if other else "unknown"
                self._lose(f"lapsed or taken over ({by})", on_lost)
                return
            self.record, last_ok = record, time.monotonic()

    def _lose(self, why: str, on_lost: Callable[[str], None]) -> None:
        self.lost_reason = why
        logger.error("lease %s lost by %s: %s; standing down", self.name, self.holder, why)
        on_lost(why)

    def stop(self, release: bool) -> None:
        """Stop renewing; with `release`, give the lease up at once (a clean stop)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.renew_s + 5)
        self._thread = None
        if release and self.lost_reason is None and self.record is not None:
            try:
                if self.journal.release_lease(self.name, self.holder):
                    logger.info("lease %s released by %s", self.name, self.holder)
            except JournalError as exc:
                logger.warning("lease %s: not released (it lapses by itself): %s", self.name, exc)
        self.record = None

    def close(self) -> None:
        self.journal.close()


__all__ = ["LEASE_NAME", "LEASE_S", "RENEW_S", "LeaderLease", "LeaseLost"]
