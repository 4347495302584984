"""Going on with sends across ticks and restarts: every journaled intent still in flight is
resumed (or, sent by an earlier process, adopted and settled), and included actions are
checked again for reorgs."""

from __future__ import annotations

from dataclasses import replace

from hexbytes import HexBytes

from keeper.chain.rpc_errors import RpcErrorKind, RpcFault, read_failure
from keeper.journal import IntentRecord
from keeper.risk.actions import Urgency
from keeper.tx.confirm import Confirming
from keeper.tx.core import DOUBTFUL, REORG_DEPTH, Flight, Outcome, Pending, logger
from keeper.tx.fees import Fees
from keeper.tx.private import goes_private


class Reconciling(Confirming):
    """Resume, reconcile and reorg checks (see :meth:`resume`)."""

    def resume(self, until: float | None = None) -> list[Outcome]:
        """Go on with every journaled intent still in flight: those this process sent (their
        replacement schedule goes on where it stopped) and, the first time, those an earlier
        process left (settled as in :meth:`reconcile`). Polls until each ends or `until`
        (None: until each ends or runs out of replacements). Returns the outcomes of those that
        ended or timed out now; one still in flight is not reported. Never sends a new action."""
        flights: list[Flight] = []
        outcomes, self._unreported = self._unreported, []
        for intent in self.journal.unfinished_intents():
            known = self._flights.get(intent.id)
            if known is not None:
                flights.append(known)
                continue
            found = self._adopt(intent)
            if isinstance(found, Outcome):
                outcomes.append(found)
            elif found is not None:
                flights.append(found)
        ended = self._await(flights, until)
        outcomes.extend(o for o in ended.values() if o.status != "pending")
        return outcomes

    def reconcile(self, until: float | None = None) -> list[Outcome]:
        """Before sending anything new after a (re)start: settle every journaled intent that was
        sent but not finished. Mined → recorded; still pending → rebroadcast and awaited (with
        replacement) until it ends or `until`; its nonce consumed by something else → recorded
        as dropped. Never sends a new action."""
        return self.resume(until)

    def check_reorgs(self, head: int, depth: int = REORG_DEPTH) -> list[str]:
        """Look again at every intent recorded as included within `depth` blocks of `head`
        (or above it: a head that went back). One whose receipt the node no longer has was
        reorged out: if a node still holds its transaction it is reopened and awaited (the
        same signed bytes, nothing new signed); if none does, it ends 'dropped' and its nonce
        is free again — the vault is decided afresh from the new chain, never blindly re-sent,
        and the fresh action takes that very nonce, so the old one and the new can never both
        be mined. Returns the vaults affected."""
        affected: list[str] = []
        for intent in self.journal.included_since(max(0, head - depth)):
            included = [t for t in intent.transactions if t.status in ("mined", "reverted")]
            hashes = [t.tx_hash for t in included]
            if not hashes or self._any_receipt(hashes) is not None:
                continue
            nonce = intent.nonce
            why = f"block {included[0].block} of {intent.kind} {hashes[0]} reorged away"
            if self._find_own(hashes):
                self.journal.reopen_intent(intent.id, why)
                self._flights.pop(intent.id, None)  # adopted afresh by the next `resume`
                logger.warning(
                    "vault %s: %s; still known to the node: awaiting it again", intent.vault, why
                )
            else:
                for t in intent.transactions:
                    self.journal.mark_transaction(t.tx_hash, "dropped")
                self.journal.finish_intent(intent.id, "dropped", {"error": why})
                if self.nonces is not None and nonce is not None:
                    self.nonces.reopen(nonce)
                logger.warning(
                    "vault %s: %s and unknown to the node: dropped; nonce %s free "
                    "again, the vault is decided afresh",
                    intent.vault,
                    why,
                    nonce,
                )
            affected.append(intent.vault)
        return affected

    @property
    def in_flight(self) -> dict[int, str]:
        """Intent id → vault of every transaction this process is awaiting."""
        return {i: f.p.vault for i, f in self._flights.items()}

    def _adopt(self, intent: IntentRecord) -> Flight | Outcome | None:
        """An unfinished intent this process did not send (an earlier process did): its
        outcome if it can be settled at once, else a flight to await (rebroadcast first)."""
        if not intent.transactions or intent.nonce is None:
            self.journal.finish_intent(intent.id, "failed", {"error": "never broadcast"})
            return None
        hashes = [t.tx_hash for t in intent.transactions]
        latest = intent.transactions[-1]
        pending = Pending(
            intent.id,
            intent.vault,
            intent.kind,
            self._unsigned(
                intent.to_address, HexBytes(intent.calldata), latest.gas_limit, intent.nonce
            ),
            Urgency.HIGH,
        )
        fees = Fees(latest.max_fee_per_gas, latest.max_priority_fee_per_gas)
        flight = Flight(pending, fees, hashes, self.clock.now() + self.policy.tx_timeout_s)
        receipt = self._any_receipt(hashes)
        if receipt is not None:
            return self._record_receipt(pending, receipt, 0, None)
        try:
            count = int(self.w3.eth.get_transaction_count(self.address, "latest"))
        except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
            raise read_failure(exc, f"transaction count of {self.address}") from None
        if count > intent.nonce:
            used = RpcFault(RpcErrorKind.NONCE_TOO_LOW, f"chain count {count} is past it")
            dropped = self._settle_used_nonce(pending, hashes, fees, 0, used)
            if dropped is not None:
                return dropped
            return self._register(flight)
        logger.warning(
            "intent %d (vault %s %s) still pending from an earlier run: rebroadcasting %s",
            intent.id,
            intent.vault,
            intent.kind,
            latest.tx_hash,
        )
        urgency, head = self._route_of(intent, hashes)
        route = replace(pending, urgency=urgency)  # the flight itself is awaited as HIGH
        fault, private = self._send_first(route, HexBytes(latest.raw_tx), head)
        if private:
            flight.private_from = head  # its drop window starts again
        if fault is not None and fault.kind is RpcErrorKind.NONCE_TOO_LOW:
            dropped = self._settle_used_nonce(pending, hashes, fees, 0, fault)
            if dropped is not None:
                return dropped
        elif fault is not None and fault.kind is RpcErrorKind.DEFINITE_REFUSAL:
            # Others may still hold it (it was acknowledged before the restart): wait for
            # it, and replace it with higher fees at the deadline (the usual refusal here
            # is a base fee that rose above its max fee).
            logger.warning("rebroadcast of %s refused: %s", latest.tx_hash, fault.reason)
        flight.doubtful = fault is not None and fault.kind in DOUBTFUL
        return self._register(flight)

    def _route_of(self, intent: IntentRecord, hashes: list[str]) -> tuple[Urgency, int]:
        """How a rebroadcast after a restart is routed (the urgency the route is chosen by)
        and the head. The journal does not say where a transaction went, but the route follows
        from its decision's urgency: one decided non-urgent, never replaced (replacements are
        public) and unknown to the public node went to the relay, and goes back there."""
        if self.private is None or intent.decision_id is None or len(intent.transactions) != 1:
            return Urgency.HIGH, self.seen_block
        urgency = Urgency[self.journal.decision(intent.decision_id).urgency]
        if not goes_private(urgency):
            return Urgency.HIGH, self.seen_block
        try:
            head = max(int(self.w3.eth.block_number), self.seen_block)
            known = self._publicly_known(hashes)
        except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
            raise read_failure(exc, f"route of intent {intent.id}") from None
        return (Urgency.HIGH if known else urgency), head
