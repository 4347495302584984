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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import TransactionNotFound
from web3.types import TxParams, TxReceipt

from keeper.chain.abi import load_artifact
from keeper.chain.errors import describe_revert
from keeper.clock import Clock
from keeper.errors import NotRetryable, TransactionTimeout
from keeper.journal import IntentStatus, Journal
from keeper.risk.actions import Urgency
from keeper.tx.builder import CallPlan
from keeper.tx.fees import (
    FeeCapTooLow,
    FeePolicy,
    Fees,
    bump_fees,
    fetch_fee_inputs,
    should_wait,
    suggest_fees,
)
from keeper.tx.nonce import NonceManager, is_nonce_too_low

logger = logging.getLogger(__name__)

#: Receipt polling: first poll after this many seconds, doubling up to RECEIPT_POLL_MAX_S, so a
#: fast chain (anvil, an L2) is not held to a one-second poll (measured ~1.1 s per action).
RECEIPT_POLL_MIN_S = 0.05
RECEIPT_POLL_MAX_S = 1.0
#: Substrings meaning the node already has this exact transaction: not an error.
ALREADY_KNOWN = ("already known", "known transaction", "already imported")


@dataclass(frozen=True, slots=True)
class SendPolicy:
    gas_limit_margin: float = 1.25
    tx_timeout_s: float = 60.0
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one action ended: 'mined', 'reverted', 'simulation_reverted', 'deferred', 'dry_run',
    'timeout' or 'failed'; with the last transaction's hash and the numbers that matter."""

    status: str
    vault: str
    function: str
    tx_hash: str | None = None
    gas_used: int | None = None
    fees: Fees | None = None
    replacements: int = 0
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Pending:
    """A signed-and-sent nonce being awaited: what is needed to re-sign it with new fees."""

    intent_id: int
    vault: str
    function: str
    tx: dict[str, Any]  # unsigned fields without fees
    urgency: Urgency


@dataclass(slots=True)
class Submitted:
    """A broadcast transaction not yet confirmed; `TxSender.confirm` awaits it."""

    pending: _Pending
    fees: Fees
    hashes: list[str]


class TxSender:
    """Sends vault calls for one signer; owns nothing it is not given (the root wires it)."""

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount | None,
        sender_address: ChecksumAddress,
        nonces: NonceManager | None,
        journal: Journal,
        fee_policy: FeePolicy,
        policy: SendPolicy,
        clock: Clock,
    ) -> None:
        self.w3 = w3
        self.account = account
        self.address = sender_address
        self.nonces = nonces
        self.journal = journal
        self.fee_policy = fee_policy
        self.policy = policy
        self.clock = clock
        self._vault_abi = load_artifact("RiskVault").abi
        self._chain_id = int(w3.eth.chain_id)

    # ------------------------------------------------------------------ public
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
            reason = describe_revert(exc)
            logger.warning(
                "vault %s: %s simulation reverted: %s; nothing sent",
                plan.vault,
                plan.function,
                reason,
            )
            self._record_intent(plan, data, decision_id, "failed")
            return Outcome("simulation_reverted", plan.vault, plan.function, error=reason)
        gas_limit = int(gas * self.policy.gas_limit_margin)
        inputs = fetch_fee_inputs(self.w3)
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
        pending = _Pending(
            intent_id,
            plan.vault,
            plan.function,
            self._unsigned(plan.vault, data, gas_limit, nonce),
            urgency,
        )
        try:
            tx_hash = self._sign_record_send(pending, fees)
        except NotRetryable as exc:
            self.nonces.release(nonce)
            self.journal.finish_intent(intent_id, "failed", {"error": str(exc)})
            return Outcome("failed", plan.vault, plan.function, error=str(exc))
        return Submitted(pending, fees, [tx_hash])

    def confirm(self, submitted: Submitted) -> Outcome:
        """Wait for a submitted transaction; replace it with bumped fees when stuck."""
        return self._confirm(submitted.pending, submitted.fees, submitted.hashes)

    def reconcile(self) -> list[Outcome]:
        """Before sending anything new after a (re)start: settle every journaled intent that was
        sent but not finished. Mined → recorded; still pending → rebroadcast and awaited (with
        replacement); its nonce consumed by something else → recorded as dropped. Never sends a
        new action."""
        outcomes = []
        for intent in self.journal.unfinished_intents():
            if not intent.transactions or intent.nonce is None:
                self.journal.finish_intent(intent.id, "failed", {"error": "never broadcast"})
                continue
            hashes = [t.tx_hash for t in intent.transactions]
            receipt = self._any_receipt(hashes)
            if receipt is not None:
                outcomes.append(
                    self._record_receipt(intent.id, intent.vault, intent.kind, receipt, 0, None)
                )
                continue
            latest = intent.transactions[-1]
            if int(self.w3.eth.get_transaction_count(self.address, "latest")) > intent.nonce:
                self.journal.mark_transaction(latest.tx_hash, "dropped")
                self.journal.finish_intent(
                    intent.id, "dropped", {"error": "nonce used by another transaction"}
                )
                outcomes.append(
                    Outcome("failed", intent.vault, intent.kind, latest.tx_hash, error="dropped")
                )
                continue
            logger.warning(
                "intent %d (vault %s %s) still pending at restart: rebroadcasting %s",
                intent.id,
                intent.vault,
                intent.kind,
                latest.tx_hash,
            )
            self._broadcast(HexBytes(latest.raw_tx))
            pending = _Pending(
                intent.id,
                intent.vault,
                intent.kind,
                self._unsigned(
                    intent.to_address, HexBytes(intent.calldata), latest.gas_limit, intent.nonce
                ),
                Urgency.HIGH,
            )
            fees = Fees(latest.max_fee_per_gas, latest.max_priority_fee_per_gas)
            outcomes.append(self._confirm(pending, fees, hashes))
        return outcomes

    # ------------------------------------------------------------------ internals
    def _record_intent(
        self, plan: CallPlan, data: HexBytes, decision_id: int | None, status: IntentStatus
    ) -> int:
        return self.journal.record_intent(
            plan.vault,
            plan.function,
            plan.vault,
            bytes(data),
            decision_id=decision_id,
            status=status,
        )

    def _unsigned(self, to: str, data: HexBytes, gas_limit: int, nonce: int) -> dict[str, Any]:
        return {
            "from": self.address,
            "to": Web3.to_checksum_address(to),
            "data": data,
            "value": 0,
            "gas": gas_limit,
            "nonce": nonce,
            "chainId": self._chain_id,
            "type": 2,
        }

    def _sign_record_send(self, pending: _Pending, fees: Fees) -> str:
        if self.account is None:
            raise NotRetryable("no signing key")
        signed = self.account.sign_transaction({**pending.tx, **fees.as_tx_params()})
        tx_hash = "0x" + bytes(signed.hash).hex()
        self.journal.record_transaction(
            pending.intent_id,
            tx_hash,
            pending.tx["nonce"],
            fees.max_fee_per_gas,
            fees.max_priority_fee_per_gas,
            pending.tx["gas"],
            bytes(signed.raw_transaction),
        )
        self._broadcast(HexBytes(signed.raw_transaction))
        return tx_hash

    def _broadcast(self, raw: HexBytes) -> None:
        try:
            self.w3.eth.send_raw_transaction(raw)
        except Exception as exc:  # the node's refusal, classified below; never swallowed
            text = str(exc).lower()
            if any(s in text for s in ALREADY_KNOWN):
                return
            if is_nonce_too_low(text) and self.nonces is not None:
                self.nonces.resync_on_evidence(f"broadcast refused: {exc}")
            raise NotRetryable(f"broadcast refused: {exc}") from None

    def _confirm(self, p: _Pending, fees: Fees, hashes: list[str]) -> Outcome:
        replacements = 0
        deadline = self.clock.now() + self.policy.tx_timeout_s
        poll = RECEIPT_POLL_MIN_S
        while True:
            receipt = self._any_receipt(hashes)
            if receipt is not None:
                return self._record_receipt(
                    p.intent_id, p.vault, p.function, receipt, replacements, fees
                )
            if self.clock.now() < deadline:
                self.clock.sleep(poll)
                poll = min(2 * poll, RECEIPT_POLL_MAX_S)
                continue
            bumped = bump_fees(fees, fetch_fee_inputs(self.w3), p.urgency, self.fee_policy)
            if bumped is None or replacements >= self.fee_policy.max_replacements:
                why = "fee cap reached" if bumped is None else "replacement limit reached"
                err = TransactionTimeout(
                    f"vault {p.vault}: {p.function} {hashes[-1]} not mined after {replacements} "
                    f"replacements ({why}); left pending for reconciliation"
                )
                logger.error("%s", err)
                return Outcome(
                    "timeout",
                    p.vault,
                    p.function,
                    hashes[-1],
                    fees=fees,
                    replacements=replacements,
                    error=str(err),
                )
            replacements += 1
            logger.warning(
                "vault %s: %s stuck; replacing nonce %d: max_fee %.3f → %.3f gwei, "
                "tip %.3f → %.3f gwei",
                p.vault,
                hashes[-1],
                p.tx["nonce"],
                fees.max_fee_per_gas / 1e9,
                bumped.max_fee_per_gas / 1e9,
                fees.max_priority_fee_per_gas / 1e9,
                bumped.max_priority_fee_per_gas / 1e9,
            )
            fees = bumped
            try:
                hashes.append(self._sign_record_send(p, fees))
            except NotRetryable as exc:
                # Most often the previous one was mined meanwhile: the next loop finds its receipt.
                logger.warning("replacement not accepted: %s", exc)
            deadline = self.clock.now() + self.policy.tx_timeout_s
            poll = RECEIPT_POLL_MIN_S

    def _any_receipt(self, hashes: list[str]) -> TxReceipt | None:
        for h in reversed(hashes):
            try:
                return self.w3.eth.get_transaction_receipt(HexBytes(h))
            except TransactionNotFound:
                continue
        return None

    def _record_receipt(
        self,
        intent_id: int,
        vault: str,
        function: str,
        receipt: TxReceipt,
        replacements: int,
        fees: Fees | None,
    ) -> Outcome:
        tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
        block, gas_used = int(receipt["blockNumber"]), int(receipt["gasUsed"])
        price = int(receipt.get("effectiveGasPrice", 0))
        error = None
        if receipt["status"] == 1:
            self.journal.mark_transaction(tx_hash, "mined", block, gas_used, price)
            self.journal.finish_intent(
                intent_id, "mined", {"tx_hash": tx_hash, "block": block, "gas_used": gas_used}
            )
            logger.info("vault %s: %s mined in block %d, gas %d", vault, function, block, gas_used)
            status = "mined"
        else:
            error = self._revert_reason(receipt)
            self.journal.mark_transaction(tx_hash, "reverted", block, gas_used, price)
            self.journal.finish_intent(
                intent_id, "reverted", {"tx_hash": tx_hash, "block": block, "error": error}
            )
            logger.error("vault %s: %s %s reverted on chain: %s", vault, function, tx_hash, error)
            status = "reverted"
        if self.nonces is not None:
            self.nonces.confirm(
                int(self.w3.eth.get_transaction(receipt["transactionHash"])["nonce"])
            )
        return Outcome(status, vault, function, tx_hash, gas_used, fees, replacements, error)

    def _revert_reason(self, receipt: TxReceipt) -> str:
        tx = self.w3.eth.get_transaction(receipt["transactionHash"])
        replay: TxParams = {"from": tx["from"], "to": tx["to"], "data": tx["input"]}
        try:
            self.w3.eth.call(replay, int(receipt["blockNumber"]) - 1)
        except Exception as exc:  # the replayed revert carries the decoded reason
            return describe_revert(exc)
        return "reverted (reason not reproducible)"
