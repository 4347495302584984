"""The one nonce owner for a signing account: sync once, allocate locally, resync on evidence.

Re-reading ``eth_getTransactionCount`` before every send is the classic keeper bug: behind a
load-balanced RPC, consecutive reads can hit different nodes, and a node that lags (or has not
seen our last broadcast in its mempool) reports a *lower* count. Trusting it reuses a nonce —
the new transaction silently replaces or collides with one in flight. So the count is read once
at start, nonces are handed out from memory, and the chain is consulted again only when
something proves the local view wrong (web3-ethereum-defi's ``HotWallet`` does the same; its
incident notes are where the lagging-node warning comes from).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from web3 import Web3

from keeper.chain.rpc_errors import NONCE_TOO_LOW_PHRASES, is_nonce_too_low, read_failure
from keeper.errors import ChainReadError, TransactionError

logger = logging.getLogger(__name__)

# `is_nonce_too_low` and its phrases live with every other error phrase, in
# keeper.chain.rpc_errors; they are re-exported here for the callers that know them here.


class NonceError(TransactionError):
    """The nonce manager was misused (allocation before sync, releasing a foreign nonce)."""


class NonceManager:
    """Hands out the nonces of one account; thread-safe.

    State: ``next`` (the nonce :meth:`allocate` gives when there is no gap to fill), the set
    of nonces allocated and not yet released or confirmed (*in flight*, presumed broadcast),
    the *gaps* (released below the top, handed out again first), and the highest transaction
    count any node has reported — a lower bound of the true count, since a node may lag but
    never counts transactions that do not exist.
    """

    def __init__(
        self, address: str, fetch: Callable[[], int], floor: Callable[[], int] | None = None
    ) -> None:
        """`fetch` reads the node's count; `floor`, when given, a count the local view never
        goes below (the journal's :meth:`~keeper.journal.Journal.nonce_floor`: transactions
        journaled before their broadcast, which a node may never have seen)."""
        self.address = address
        self._fetch = fetch
        self._floor = floor
        self._lock = threading.Lock()
        self._next: int | None = None
        self._chain_count = 0
        self._in_flight: set[int] = set()
        self._gaps: set[int] = set()

    @classmethod
    def for_account(
        cls, w3: Web3, address: str, floor: Callable[[], int] | None = None
    ) -> NonceManager:
        """A manager whose chain view is ``eth_getTransactionCount(address, "pending")``,
        never below `floor()`."""
        checksum = Web3.to_checksum_address(address)

        def fetch() -> int:
            try:
                return int(w3.eth.get_transaction_count(checksum, "pending"))
            except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
                raise read_failure(exc, f"transaction count of {checksum}") from None

        return cls(checksum, fetch, floor)

    # --- views ---------------------------------------------------------------------------------

    @property
    def next_nonce(self) -> int | None:
        """The nonce the next allocation would take past the gaps; None before :meth:`sync`."""
        with self._lock:
            return self._next

    @property
    def in_flight(self) -> frozenset[int]:
        """Nonces allocated and neither released nor confirmed."""
        with self._lock:
            return frozenset(self._in_flight)

    @property
    def gaps(self) -> frozenset[int]:
        """Released nonces below the top, handed out again (lowest first) by :meth:`allocate`.

        While a gap is open, every broadcast transaction above it is stuck in the mempool: the
        next allocation fills it; if nothing is sent, the caller may fill it with a no-op.
        """
        with self._lock:
            return frozenset(self._gaps)

    # --- operations ----------------------------------------------------------------------------

    def sync(self) -> int:
        """Read the chain's count once, at start; returns the next nonce. Calling it again is a
        :meth:`resync_on_evidence` (it never moves the nonce backwards)."""
        with self._lock:
            if self._next is not None:
                return self._resync(self._next, "sync() called again")
            count = self._read()
            self._next = count
            self._chain_count = count
            logger.info("nonce of %s synced: next %d", self.address, count)
            return count

    def allocate(self) -> int:
        """The next nonce, from memory (no RPC): the lowest open gap, else the top."""
        with self._lock:
            if self._next is None:
                raise NonceError(f"nonce of {self.address}: allocate() before sync()")
            self._gaps = {n for n in self._gaps if n >= self._chain_count}
            if self._gaps:
                nonce = min(self._gaps)
                self._gaps.remove(nonce)
                logger.info("nonce of %s: refilling gap %d", self.address, nonce)
            else:
                nonce = self._next
                self._next += 1
            self._in_flight.add(nonce)
            return nonce

    def release(self, nonce: int) -> bool:
        """Give back `nonce`, allocated but never broadcast (signing or journaling failed, the
        node refused it). Returns True if it will be handed out again.

        The latest allocation simply rolls ``next`` back. A lower one cannot: later nonces are
        already out, so it becomes a *gap*, refilled by the next :meth:`allocate` (until then
        the transactions above it cannot be mined). A nonce the chain has already counted is
        not reusable (False). Never release a nonce that reached a node: it may still be mined.
        """
        with self._lock:
            if self._next is None or nonce not in self._in_flight:
                raise NonceError(f"nonce of {self.address}: {nonce} is not in flight")
            self._in_flight.remove(nonce)
            if nonce < self._chain_count:
                logger.info(
                    "nonce of %s: %d already used on chain; not reused", self.address, nonce
                )
                return False
            if nonce == self._next - 1:
                self._next = nonce
                while self._next - 1 in self._gaps:  # the gaps below are at the top now
                    self._next -= 1
                    self._gaps.remove(self._next)
            else:
                self._gaps.add(nonce)
                logger.warning(
                    "nonce of %s: %d released below the top (%d): gap, reused next",
                    self.address,
                    nonce,
                    self._next,
                )
            return True

    def confirm(self, nonce: int) -> None:
        """`nonce` is mined (by any of our transactions, this run's or an earlier one's)."""
        with self._lock:
            self._in_flight.discard(nonce)
            self._gaps.discard(nonce)
            self._chain_count = max(self._chain_count, nonce + 1)
            if self._next is not None and self._next <= nonce:
                self._next = nonce + 1

    def reopen(self, nonce: int) -> None:
        """`nonce` is free again: the block that counted our transaction at it was reorged
        away and no node knows the transaction any more. At the top it rolls ``next`` back;
        below a nonce still in flight it becomes a gap (the next :meth:`allocate` takes it)."""
        with self._lock:
            if self._next is None:
                raise NonceError(f"nonce of {self.address}: reopen before sync()")
            self._chain_count = min(self._chain_count, nonce)
            self._in_flight.discard(nonce)
            if nonce >= self._next:
                return
            if not any(n > nonce for n in self._in_flight) and not any(
                n > nonce for n in self._gaps
            ):
                # Nothing of ours above it is in flight: every nonce from it up is free.
                self._gaps = {n for n in self._gaps if n < nonce}
                self._next = nonce
            else:
                self._gaps.add(nonce)
            logger.warning(
                "nonce of %s: %d reopened after a reorg (next %d, gaps %s)",
                self.address,
                nonce,
                self._next,
                sorted(self._gaps),
            )

    def resync_on_evidence(self, reason: str) -> int:
        """Re-read the chain's count after evidence that the local view is wrong (a "nonce too
        low" refusal, a restart reconciliation, a dropped transaction); returns the next nonce.

        The local nonce only moves *forward*. A count above ours proves the nonces below it are
        used (typically the evidence is a "nonce too low": another sender shares the key, or a
        transaction of ours we lost track of was mined), so we jump to it. A count below ours
        is ignored: behind a load-balanced RPC the node that answers may lag the one we
        broadcast to, and moving back would reuse a nonce of a transaction in flight. Nonces we
        handed out but never broadcast are returned by :meth:`release`, not by a resync.
        """
        with self._lock:
            if self._next is None:
                raise NonceError(f"nonce of {self.address}: resync before sync()")
            return self._resync(self._next, reason)

    # --- internals (lock held) -------------------------------------------------------------------

    def _read(self) -> int:
        count = self._fetch()
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ChainReadError(f"transaction count of {self.address}: bad value {count!r}")
        if self._floor is not None:
            floor = self._floor()
            if floor > count:
                logger.warning(
                    "nonce of %s: node counts %d, the journal holds transactions up to %d: "
                    "starting at %d",
                    self.address,
                    count,
                    floor - 1,
                    floor,
                )
                count = floor
        return count

    def _resync(self, current: int, reason: str) -> int:
        count = self._read()
        self._chain_count = max(self._chain_count, count)
        self._gaps = {n for n in self._gaps if n >= self._chain_count}
        too_low = is_nonce_too_low(reason)
        if count > current:
            logger.warning(
                "nonce of %s: chain count %d is ahead of local %d (%s): jumping forward",
                self.address,
                count,
                current,
                reason,
            )
            current = count
        elif count < current:
            unseen = sorted(n for n in self._in_flight if n >= count)
            log = logger.warning if too_low else logger.info
            log(
                "nonce of %s: node reports %d, local next is %d (%s); keeping %d: the node lags"
                " or has not seen nonces %s",
                self.address,
                count,
                current,
                reason,
                current,
                unseen,
            )
        self._next = current
        return current


__all__ = ["NONCE_TOO_LOW_PHRASES", "NonceError", "NonceManager", "is_nonce_too_low"]
