"""Step 5 of the cycle: a built call → simulated, priced, journaled, signed, sent, confirmed.

Order matters and is the point of this module:
1. simulate with `eth_call` (a revert is decoded by ABI and nothing is sent);
2. price EIP-1559 fees for the action's urgency under its cap (non-urgent actions wait while the
   base fee is above the acceptable level);
3. write the intent to the journal, allocate the nonce, sign, write the transaction (with its
   raw bytes) to the journal — all durable *before* broadcasting;
4. wait for the receipt with a timeout; when stuck, re-sign the same nonce with fees bumped by
   at least the policy's percentage (never above the cap) and broadcast again;
5. record the outcome. Nothing is fire-and-forget: every send ends mined, reverted, or reported
   (a transaction still pending at the last replacement stays journaled and is reconciled).

Doubt is not failure. Every broadcast error is sorted by :mod:`keeper.chain.rpc_errors`, and only
a definite refusal ends a send (its nonce is released, the intent fails). "Already known" is
sent. "Maybe sent" (a timeout, a dropped connection, a 5xx after the request left) and an
unknown error keep the nonce and go to confirmation, which rebroadcasts the same signed bytes
until a node acknowledges them. "Nonce too low" looks for our own transactions by hash first:
only when none of them is known does the intent end as dropped (its nonce used by another).
"""

from __future__ import annotations

from hexbytes import HexBytes
from web3.types import TxParams

from keeper.chain.errors import describe_revert
from keeper.chain.rpc_errors import RpcErrorKind, classify
from keeper.errors import ChainReadError
from keeper.risk.actions import Urgency
from keeper.tx.builder import CallPlan
from keeper.tx.core import (
    GAP_FILL_KIND,
    MAX_GAS_NUDGES,
    NO_OP_GAS,
    RECEIPT_POLL_MAX_S,
    RECEIPT_POLL_MIN_S,
    REORG_DEPTH,
    Outcome,
    Pending,
    SendPolicy,
    Submitted,
    logger,
)
from keeper.tx.fees import FeeCapTooLow, fetch_fee_inputs, should_wait, suggest_fees
from keeper.tx.reconcile import Reconciling


class TxSender(Reconciling):
    """Sends vault calls for one signer; owns nothing it is not given (the root wires it).
    Submitting is here; awaiting is :class:`keeper.tx.confirm.Confirming`; resuming,
    reconciling and reorg checks are :class:`keeper.tx.reconcile.Reconciling`."""

    def execute(self, plan: CallPlan, urgency: Urgency, decision_id: int | None = None) -> Outcome:
        """Submit `plan` and wait for it (see `submit` and `confirm`)."""
        submitted = self.submit(plan, urgency, decision_id)
        return submitted if isinstance(submitted, Outcome) else self.confirm(submitted)

    def submit(
        self, plan: CallPlan, urgency: Urgency, decision_id: int | None = None
    ) -> Submitted | Outcome:
        """Simulate, price, journal, sign and broadcast `plan`, without waiting: the caller
        confirms every Submitted (several may be in flight, nonces in order). Expected failures
        (revert, wait, fee cap, refusal) come back as an Outcome, journaled; nothing is raised."""
        vault = self.w3.eth.contract(address=plan.vault, abi=self._vault_abi)
        data = HexBytes(vault.encode_abi(plan.function, list(plan.args)))
        call: TxParams = {"from": self.address, "to": plan.vault, "data": data}
        try:
            self.w3.eth.call(call, "latest")
            gas = self.w3.eth.estimate_gas(call, "latest")
        except Exception as exc:  # a revert (decoded) or a node error: nothing is sent either way
            failure = classify(exc)
            if failure.kind is RpcErrorKind.NOT_RPC:
                raise
            if failure.kind is RpcErrorKind.REVERTED:
                reason = describe_revert(exc)
                logger.warning(
                    "vault %s: %s simulation reverted: %s; nothing sent",
                    plan.vault,
                    plan.function,
                    reason,
                )
                self._record_intent(plan, data, decision_id, "failed")
                return Outcome("simulation_reverted", plan.vault, plan.function, error=reason)
            why = f"simulation not run: {failure.reason}"
            logger.warning("vault %s: %s %s; nothing sent", plan.vault, plan.function, why)
            self._record_intent(plan, data, decision_id, "failed")
            return Outcome("failed", plan.vault, plan.function, error=why)
        gas_limit = int(gas * self.policy.gas_limit_margin)
        try:
            inputs = fetch_fee_inputs(self.w3)
        except ChainReadError as exc:  # nothing journaled or sent yet: a later tick tries again
            logger.warning("vault %s: %s not sent: %s", plan.vault, plan.function, exc)
            return Outcome("failed", plan.vault, plan.function, error=str(exc))
        if should_wait(inputs, urgency, self.fee_policy):
            logger.info(
                "vault %s: %s (%s) waits: base fee %.2f gwei above acceptable %.2f gwei",
                plan.vault,
                plan.function,
                urgency.name,
                inputs.base_fee / 1e9,
                self.fee_policy.acceptable_base_fee / 1e9,
            )
            return Outcome(
                "deferred", plan.vault, plan.function, details={"base_fee": inputs.base_fee}
            )
        try:
            fees = suggest_fees(inputs, urgency, self.fee_policy)
        except FeeCapTooLow as exc:
            logger.error("vault %s: %s not sent: %s", plan.vault, plan.function, exc)
            return Outcome("failed", plan.vault, plan.function, error=str(exc))
        dry = self.policy.dry_run or self.account is None or self.nonces is None
        logger.info(
            "vault %s: %s %s gas_limit=%d max_fee=%.3f gwei tip=%.3f gwei base_fee=%.3f gwei "
            "(block %d)",
            plan.vault,
            "would send" if dry else "sending",
            plan.summary,
            gas_limit,
            fees.max_fee_per_gas / 1e9,
            fees.max_priority_fee_per_gas / 1e9,
            inputs.base_fee / 1e9,
            inputs.block,
        )
        if dry or self.nonces is None:
            self._record_intent(plan, data, decision_id, "dry_run")
            return Outcome(
                "dry_run", plan.vault, plan.function, fees=fees, details={"gas_limit": gas_limit}
            )

        intent_id = self._record_intent(plan, data, decision_id, "pending")
        nonce = self.nonces.allocate()
        self.journal.attach_nonce(intent_id, nonce)
        pending = Pending(
            intent_id,
            plan.vault,
            plan.function,
            self._unsigned(plan.vault, data, gas_limit, nonce),
            urgency,
        )
        pending, tx_hash, raw = self._sign_first(pending, fees, intent_id, nonce)
        # Non-urgent ones go to the private relay when one is configured (keeper.tx.private).
        fault, private = self._send_first(pending, raw, inputs.block)
        return self._first_sent(pending, fees, tx_hash, fault, inputs.block if private else None)

    def fill_gap(self, nonce_hint: int | None = None) -> Submitted | Outcome | None:
        """Fill the lowest open nonce gap with a no-op: a zero-value transfer to ourselves,
        journaled like any action (intent kind ``fill_nonce_gap``) and priced HIGH, so the
        transactions above the gap can be mined. None when there is no gap (or no key)."""
        if self.nonces is None or self.account is None or not self.nonces.gaps:
            return None
        fees = self._no_op_fees()
        if fees is None:
            logger.warning("nonce gap %s not filled this tick", sorted(self.nonces.gaps))
            return None
        return self._send_no_op(fees, "a gap below transactions in flight")


__all__ = [
    "GAP_FILL_KIND",
    "MAX_GAS_NUDGES",
    "NO_OP_GAS",
    "RECEIPT_POLL_MAX_S",
    "RECEIPT_POLL_MIN_S",
    "REORG_DEPTH",
    "Outcome",
    "SendPolicy",
    "Submitted",
    "TxSender",
]
