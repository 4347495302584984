"""Awaiting a send: the flight's poll loop — receipts, rebroadcasts while in doubt, fee-bumped
replacements at each timeout up to the cap, drop checks of private ones — bounded by a deadline,
several flights at once."""

from __future__ import annotations

from hexbytes import HexBytes

from keeper.chain.rpc_errors import RpcErrorKind
from keeper.errors import ChainReadError, TransactionTimeout
from keeper.tx.core import (
    DOUBTFUL,
    RECEIPT_POLL_MAX_S,
    RECEIPT_POLL_MIN_S,
    Flight,
    Outcome,
    Pending,
    Submitted,
    logger,
)
from keeper.tx.fees import Fees, bump_fees, fetch_fee_inputs
from keeper.tx.private import PrivateRouting


class Confirming(PrivateRouting):
    """Confirmation of what was submitted (see :meth:`confirm_all`)."""

    def confirm(self, submitted: Submitted, until: float | None = None) -> Outcome:
        """Wait for a submitted transaction; replace it with bumped fees when stuck. With
        `until` (a clock time), return a 'pending' Outcome at that time: the transaction stays
        journaled and in flight, and a later `resume` goes on with its schedule."""
        return self.confirm_all([submitted], until)[0]

    def confirm_all(self, submitted: list[Submitted], until: float | None = None) -> list[Outcome]:
        """Await several submitted transactions together (one poll loop, not one after the
        other: a stuck one never holds back another's receipt), in the order given."""
        flights = [self._flight_of(s) for s in submitted]
        by_intent = self._await(flights, until)
        return [by_intent[f.p.intent_id] for f in flights]

    def _await(self, flights: list[Flight], until: float | None) -> dict[int, Outcome]:
        """Poll `flights` together until each ends, runs out of replacements, or `until`.
        Ended ones leave `_flights`; timed-out ones stay (polled again by `resume`)."""
        outcomes: dict[int, Outcome] = {}
        live = list(flights)
        #: Out of replacements already: polled once here (a receipt, a due rebroadcast).
        once = {f.p.intent_id for f in flights if f.exhausted is not None}
        poll = RECEIPT_POLL_MIN_S
        live.extend(self._spawned)  # started since the last poll (a no-op, in a submit)
        born = {f.p.intent_id for f in self._spawned}
        self._spawned = []
        while live:
            for f in list(live):
                ended = self._confirm_step(f)
                if ended is None:
                    if f.p.intent_id in once:
                        live.remove(f)
                    continue
                live.remove(f)
                outcomes[f.p.intent_id] = ended
                if ended.status != "timeout":
                    self._flights.pop(f.p.intent_id, None)
            spawned, self._spawned = self._spawned, []
            born.update(f.p.intent_id for f in spawned)  # a no-op burning a dropped nonce
            live.extend(spawned)
            now = self.clock.now()
            if not live or (until is not None and now >= until):
                break
            nap = poll if until is None else min(poll, until - now)
            self.clock.sleep(nap)
            poll = min(2 * poll, RECEIPT_POLL_MAX_S)
        for intent_id in born:  # reported by the next `resume`, once ended
            ended = outcomes.pop(intent_id, None)
            if ended is not None:
                self._unreported.append(ended)
        for f in flights:
            if f.p.intent_id in outcomes:
                continue
            outcomes[f.p.intent_id] = Outcome(
                "pending",
                f.p.vault,
                f.p.function,
                f.hashes[-1],
                fees=f.fees,
                replacements=f.replacements,
                details={
                    "nonce": int(f.p.tx["nonce"]),
                    "replace_at": f.replace_at,
                    "private_from": f.private_from,
                },
            )
        return outcomes

    def _confirm_step(self, f: Flight) -> Outcome | None:
        """One poll of `f`, without waiting: its Outcome if it ended (or just ran out of
        replacements: 'timeout', reported once), else None.

        Looks for a receipt of any of its hashes; while `doubtful`, rebroadcasts the latest
        until a node acknowledges it; past its replacement time, replaces it with bumped fees
        (same nonce), at most ``max_replacements`` times, never above the cap.

        `never_acknowledged`: no node ever took this nonce's transaction (we broadcast it in
        this process, and every answer so far was a doubt). Only then does a definite refusal
        of a rebroadcast end the send and free the nonce.

        A private one (only the relay has it) is never rebroadcast or replaced: it is checked
        for a drop once its window has passed (:meth:`PrivateRouting._private_step`)."""
        p = f.p
        receipt = self._any_receipt(f.hashes, tolerate=True)
        if receipt is not None:
            return self._record_receipt(p, receipt, f.replacements, f.fees)
        if f.private_from is not None:
            ended = self._private_step(f)
            if ended is not None or f.private_from is not None:
                return ended
        if f.doubtful:
            f.doubtful, ended = self._rebroadcast(p, f.hashes, f.fees, f.never_acknowledged)
            f.never_acknowledged = f.never_acknowledged and f.doubtful
            if ended is not None:
                return ended
        if self.clock.now() < f.replace_at:
            return None
        f.replace_at = self.clock.now() + self.policy.tx_timeout_s
        if f.exhausted is not None:
            f.doubtful = True  # only rebroadcast it, once per timeout: a node may have lost it
            return None
        if f.rounds >= self.fee_policy.max_replacements:
            return self._timed_out(f, "replacement limit reached")
        f.rounds += 1
        try:
            inputs = fetch_fee_inputs(self.w3)
        except ChainReadError as exc:
            if not exc.retryable:
                raise
            # No replacement this round; the one out there may still be mined.
            logger.warning(
                "vault %s: %s stuck; cannot price a replacement: %s", p.vault, f.hashes[-1], exc
            )
            f.doubtful = True  # rebroadcast it meanwhile: the node may have lost it
            return None
        bumped = bump_fees(f.fees, inputs, p.urgency, self.fee_policy)
        if bumped is None:
            return self._timed_out(f, "fee cap reached")
        f.replacements += 1
        logger.warning(
            "vault %s: %s stuck; replacing nonce %d: max_fee %.3f → %.3f gwei, "
            "tip %.3f → %.3f gwei",
            p.vault,
            f.hashes[-1],
            p.tx["nonce"],
            f.fees.max_fee_per_gas / 1e9,
            bumped.max_fee_per_gas / 1e9,
            f.fees.max_priority_fee_per_gas / 1e9,
            bumped.max_priority_fee_per_gas / 1e9,
        )
        f.fees = bumped
        f.never_acknowledged = False  # a replacement: an earlier one may be out there
        _, tx_hash, raw = self._sign_and_record(p, f.fees)
        fault = self._broadcast(raw)
        if fault is None or fault.kind in DOUBTFUL:
            f.hashes.append(tx_hash)
            f.doubtful = fault is not None
            if fault is not None:
                self._log_doubt(p, tx_hash, fault)
        elif fault.kind is RpcErrorKind.NONCE_TOO_LOW:
            # Most often the previous one was mined meanwhile: look for ours by hash.
            self.journal.mark_transaction(tx_hash, "dropped")
            return self._settle_used_nonce(p, f.hashes, f.fees, f.replacements, fault)
        else:
            # The previous transaction stays out there, at its fees: keep waiting for it.
            self.journal.mark_transaction(tx_hash, "dropped")
            logger.warning("replacement %s not accepted: %s", tx_hash, fault.reason)
        return None

    def _rebroadcast(
        self, p: Pending, hashes: list[str], fees: Fees, never_acknowledged: bool
    ) -> tuple[bool, Outcome | None]:
        """Send the latest signed bytes again while no node has acknowledged them. Returns
        whether the doubt remains, and the outcome if the send ended here."""
        fault = self._broadcast(HexBytes(self.journal.transaction(hashes[-1]).raw_tx))
        if fault is None:
            return False, None
        if fault.kind in DOUBTFUL:
            logger.info("rebroadcast of %s: %s; trying again", hashes[-1], fault.reason)
            return True, None
        if fault.kind is RpcErrorKind.NONCE_TOO_LOW:
            return False, self._settle_used_nonce(p, hashes, fees, len(hashes) - 1, fault)
        if never_acknowledged and not self._find_own(hashes):
            # No node ever took it, none knows it, and now one refuses it: it was never sent.
            return False, self._refused(p, hashes[-1], fault)
        logger.warning("rebroadcast of %s refused: %s; waiting for it", hashes[-1], fault.reason)
        return False, None

    def _timed_out(self, f: Flight, why: str) -> Outcome:
        """No more replacements for `f`: reported once; it stays journaled and in flight (a
        later `resume` polls it and rebroadcasts it once per timeout)."""
        f.exhausted = why
        err = TransactionTimeout(
            f"vault {f.p.vault}: {f.p.function} {f.hashes[-1]} not mined after "
            f"{f.replacements} replacements ({why}); left pending, polled every tick"
        )
        logger.error("%s", err)
        return Outcome(
            "timeout",
            f.p.vault,
            f.p.function,
            f.hashes[-1],
            fees=f.fees,
            replacements=f.replacements,
            error=str(err),
        )
