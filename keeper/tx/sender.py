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

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import TransactionNotFound
from web3.types import TxParams, TxReceipt

from keeper.chain.abi import load_artifact
from keeper.chain.errors import describe_revert
from keeper.chain.rpc_errors import RpcErrorKind, RpcFault, classify, read_failure
from keeper.clock import Clock
from keeper.errors import ChainReadError, TransactionTimeout
from keeper.journal import IntentStatus, Journal, JournalError
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
from keeper.tx.nonce import NonceManager

logger = logging.getLogger(__name__)

#: Receipt polling: first poll after this many seconds, doubling up to RECEIPT_POLL_MAX_S, so a
#: fast chain (anvil, an L2) is not held to a one-second poll (measured ~1.1 s per action).
RECEIPT_POLL_MIN_S = 0.05
RECEIPT_POLL_MAX_S = 1.0
#: Identical first signatures tried with a gas limit one higher, at most (see _sign_and_record).
MAX_GAS_NUDGES = 256
#: Broadcast answers after which the transaction may be out there: keep the nonce, confirm.
_DOUBTFUL = (RpcErrorKind.MAYBE_SENT, RpcErrorKind.UNKNOWN)


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
    """A broadcast transaction not yet confirmed; `TxSender.confirm` awaits it. `doubtful`
    when no node has acknowledged the last broadcast (maybe sent): confirmation rebroadcasts."""

    pending: _Pending
    fees: Fees
    hashes: list[str]
    doubtful: bool = False


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
        pending = _Pending(
            intent_id,
            plan.vault,
            plan.function,
            self._unsigned(plan.vault, data, gas_limit, nonce),
            urgency,
        )
        try:
            pending, tx_hash, raw = self._sign_and_record(pending, fees, first=True)
        except JournalError as exc:  # not journaled, so not broadcast: the nonce is unused
            self.nonces.release(nonce)
            try:
                self.journal.finish_intent(intent_id, "failed", {"error": str(exc)})
            except JournalError as again:  # the same disk trouble: settled at the next start
                logger.error("intent %d: its failure could not be recorded: %s", intent_id, again)
            raise
        fault = self._broadcast(raw)
        if fault is None:
            return Submitted(pending, fees, [tx_hash])
        if fault.kind in _DOUBTFUL:
            self._log_doubt(pending, tx_hash, fault)
            return Submitted(pending, fees, [tx_hash], doubtful=True)
        if fault.kind is RpcErrorKind.NONCE_TOO_LOW:
            used = self._settle_used_nonce(pending, [tx_hash], fees, 0, fault)
            return used if used is not None else Submitted(pending, fees, [tx_hash])
        return self._refused(pending, tx_hash, fault)

    def confirm(self, submitted: Submitted) -> Outcome:
        """Wait for a submitted transaction; replace it with bumped fees when stuck."""
        doubt = submitted.doubtful  # this process broadcast it; no node acknowledged it yet
        return self._confirm(submitted.pending, submitted.fees, submitted.hashes, doubt, doubt)

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
            latest = intent.transactions[-1]
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
            receipt = self._any_receipt(hashes)
            if receipt is not None:
                outcomes.append(self._record_receipt(pending, receipt, 0, None))
                continue
            try:
                count = int(self.w3.eth.get_transaction_count(self.address, "latest"))
            except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
                raise read_failure(exc, f"transaction count of {self.address}") from None
            if count > intent.nonce:
                used = RpcFault(RpcErrorKind.NONCE_TOO_LOW, f"chain count {count} is past it")
                dropped = self._settle_used_nonce(pending, hashes, fees, 0, used)
                if dropped is not None:
                    outcomes.append(dropped)
                    continue
                outcomes.append(self._confirm(pending, fees, hashes))
                continue
            logger.warning(
                "intent %d (vault %s %s) still pending at restart: rebroadcasting %s",
                intent.id,
                intent.vault,
                intent.kind,
                latest.tx_hash,
            )
            fault = self._broadcast(HexBytes(latest.raw_tx))
            if fault is not None and fault.kind is RpcErrorKind.NONCE_TOO_LOW:
                dropped = self._settle_used_nonce(pending, hashes, fees, 0, fault)
                if dropped is not None:
                    outcomes.append(dropped)
                    continue
            elif fault is not None and fault.kind is RpcErrorKind.DEFINITE_REFUSAL:
                # Others may still hold it (it was acknowledged before the restart): wait for
                # it, and replace it with higher fees at the deadline (the usual refusal here
                # is a base fee that rose above its max fee).
                logger.warning("rebroadcast of %s refused: %s", latest.tx_hash, fault.reason)
            doubtful = fault is not None and fault.kind in _DOUBTFUL
            outcomes.append(self._confirm(pending, fees, hashes, doubtful))
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

    def _sign_and_record(
        self, pending: _Pending, fees: Fees, first: bool = False
    ) -> tuple[_Pending, str, HexBytes]:
        """Sign `pending` with `fees` and journal it (durable) before anything is broadcast.

        A `first` signature identical to one journaled before — an earlier intent with the
        same call, nonce and fees, definitely refused, its nonce handed out again — would have
        the same hash: its gas limit is raised by one unit until it is new (unused gas is not
        charged). Returns the pending transaction as signed."""
        if self.account is None:
            raise TypeError("no signing key: a dry run never signs")
        signed = self.account.sign_transaction({**pending.tx, **fees.as_tx_params()})
        for _ in range(MAX_GAS_NUDGES):
            if not (first and self.journal.has_transaction(bytes(signed.hash))):
                break
            pending = replace(pending, tx={**pending.tx, "gas": pending.tx["gas"] + 1})
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
        return pending, tx_hash, HexBytes(signed.raw_transaction)

    def _broadcast(self, raw: HexBytes) -> RpcFault | None:
        """Send signed bytes. None when a node took them or already had them; otherwise the
        classified fault. A bug (not an RPC error) is re-raised."""
        try:
            self.w3.eth.send_raw_transaction(raw)
        except Exception as exc:  # sorted once, by the classifier; never swallowed
            fault = classify(exc, broadcast=True)
            if fault.kind is RpcErrorKind.NOT_RPC:
                raise
            return None if fault.kind is RpcErrorKind.ALREADY_KNOWN else fault
        return None

    def _log_doubt(self, p: _Pending, tx_hash: str, fault: RpcFault) -> None:
        log = logger.error if fault.kind is RpcErrorKind.UNKNOWN else logger.warning
        log(
            "vault %s: %s %s maybe sent (%s): nonce %d kept; confirming and rebroadcasting",
            p.vault,
            p.function,
            tx_hash,
            fault.reason,
            p.tx["nonce"],
        )

    def _refused(self, p: _Pending, tx_hash: str, fault: RpcFault) -> Outcome:
        """A first broadcast definitely refused: the node never took it, its nonce is free."""
        error = f"broadcast refused: {fault.reason}"
        logger.error("vault %s: %s %s %s", p.vault, p.function, tx_hash, error)
        if self.nonces is not None and p.tx["nonce"] in self.nonces.in_flight:
            self.nonces.release(p.tx["nonce"])
        self.journal.mark_transaction(tx_hash, "dropped")
        self.journal.finish_intent(p.intent_id, "failed", {"error": error, "tx_hash": tx_hash})
        return Outcome("failed", p.vault, p.function, tx_hash, error=error)

    def _settle_used_nonce(
        self, p: _Pending, hashes: list[str], fees: Fees, replacements: int, fault: RpcFault
    ) -> Outcome | None:
        """The nonce is used on chain. None if one of our transactions is known (the caller
        keeps confirming: its receipt will come); else the intent is dropped — its nonce went
        to another transaction — and the nonce manager moves past it."""
        if self._find_own(hashes):
            logger.info(
                "vault %s: nonce %d used (%s) by our own %s; confirming",
                p.vault,
                p.tx["nonce"],
                fault.reason,
                p.function,
            )
            return None
        nonce = int(p.tx["nonce"])
        error = f"nonce {nonce} used by another transaction ({fault.reason})"
        logger.error("vault %s: %s %s dropped: %s", p.vault, p.function, hashes[-1], error)
        for tx_hash in hashes:
            self.journal.mark_transaction(tx_hash, "dropped")
        self.journal.finish_intent(p.intent_id, "dropped", {"error": error})
        if self.nonces is not None:
            self.nonces.confirm(nonce)  # consumed, if not by us
            try:
                self.nonces.resync_on_evidence(f"nonce too low: {error}")
            except ChainReadError as exc:  # the next refusal brings the evidence again
                logger.warning("nonce resync after a used nonce failed: %s", exc)
        return Outcome(
            "failed",
            p.vault,
            p.function,
            hashes[-1],
            fees=fees,
            replacements=replacements,
            error=error,
        )

    def _confirm(
        self,
        p: _Pending,
        fees: Fees,
        hashes: list[str],
        doubtful: bool = False,
        never_acknowledged: bool = False,
    ) -> Outcome:
        """Wait for a receipt of any of `hashes`; while `doubtful`, rebroadcast the latest at
        every poll until a node acknowledges it; when stuck past the timeout, replace it with
        bumped fees (same nonce), at most ``max_replacements`` times, never above the cap.

        `never_acknowledged`: no node ever took this nonce's transaction (we broadcast it in
        this process, and every answer so far was a doubt). Only then does a definite refusal
        of a rebroadcast end the send and free the nonce."""
        replacements = rounds = 0
        deadline = self.clock.now() + self.policy.tx_timeout_s
        poll = RECEIPT_POLL_MIN_S
        while True:
            receipt = self._any_receipt(hashes, tolerate=True)
            if receipt is not None:
                return self._record_receipt(p, receipt, replacements, fees)
            if doubtful:
                doubtful, ended = self._rebroadcast(p, hashes, fees, never_acknowledged)
                never_acknowledged = never_acknowledged and doubtful
                if ended is not None:
                    return ended
            if self.clock.now() < deadline:
                self.clock.sleep(poll)
                poll = min(2 * poll, RECEIPT_POLL_MAX_S)
                continue
            if rounds >= self.fee_policy.max_replacements:
                return self._timed_out(p, fees, hashes, replacements, "replacement limit reached")
            rounds += 1
            deadline = self.clock.now() + self.policy.tx_timeout_s
            poll = RECEIPT_POLL_MIN_S
            try:
                inputs = fetch_fee_inputs(self.w3)
            except ChainReadError as exc:
                if not exc.retryable:
                    raise
                # No replacement this round; the one out there may still be mined.
                logger.warning(
                    "vault %s: %s stuck; cannot price a replacement: %s", p.vault, hashes[-1], exc
                )
                doubtful = True  # rebroadcast it meanwhile: the node may have lost it
                continue
            bumped = bump_fees(fees, inputs, p.urgency, self.fee_policy)
            if bumped is None:
                return self._timed_out(p, fees, hashes, replacements, "fee cap reached")
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
            never_acknowledged = False  # a replacement: an earlier one may be out there
            _, tx_hash, raw = self._sign_and_record(p, fees)
            fault = self._broadcast(raw)
            if fault is None or fault.kind in _DOUBTFUL:
                hashes.append(tx_hash)
                doubtful = fault is not None
                if fault is not None:
                    self._log_doubt(p, tx_hash, fault)
            elif fault.kind is RpcErrorKind.NONCE_TOO_LOW:
                # Most often the previous one was mined meanwhile: look for ours by hash.
                self.journal.mark_transaction(tx_hash, "dropped")
                dropped = self._settle_used_nonce(p, hashes, fees, replacements, fault)
                if dropped is not None:
                    return dropped
            else:
                # The previous transaction stays out there, at its fees: keep waiting for it.
                self.journal.mark_transaction(tx_hash, "dropped")
                logger.warning("replacement %s not accepted: %s", tx_hash, fault.reason)

    def _rebroadcast(
        self, p: _Pending, hashes: list[str], fees: Fees, never_acknowledged: bool
    ) -> tuple[bool, Outcome | None]:
        """Send the latest signed bytes again while no node has acknowledged them. Returns
        whether the doubt remains, and the outcome if the send ended here."""
        fault = self._broadcast(HexBytes(self.journal.transaction(hashes[-1]).raw_tx))
        if fault is None:
            return False, None
        if fault.kind in _DOUBTFUL:
            logger.info("rebroadcast of %s: %s; trying again", hashes[-1], fault.reason)
            return True, None
        if fault.kind is RpcErrorKind.NONCE_TOO_LOW:
            return False, self._settle_used_nonce(p, hashes, fees, len(hashes) - 1, fault)
        if never_acknowledged and not self._find_own(hashes):
            # No node ever took it, none knows it, and now one refuses it: it was never sent.
            return False, self._refused(p, hashes[-1], fault)
        logger.warning("rebroadcast of %s refused: %s; waiting for it", hashes[-1], fault.reason)
        return False, None

    def _timed_out(
        self, p: _Pending, fees: Fees, hashes: list[str], replacements: int, why: str
    ) -> Outcome:
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

    def _any_receipt(self, hashes: list[str], tolerate: bool = False) -> TxReceipt | None:
        """The receipt of any of `hashes` (newest first), or None. With `tolerate`, a
        retryable read failure counts as "not yet" (the caller polls again before its
        deadline); otherwise, and for a failure that is not retryable, it raises."""
        for h in reversed(hashes):
            try:
                return self.w3.eth.get_transaction_receipt(HexBytes(h))
            except TransactionNotFound:
                continue
            except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
                failure = read_failure(exc, f"receipt of {h}")
                if not (tolerate and failure.retryable):
                    raise failure from None
                logger.info("%s; polling again", failure)
                return None
        return None

    def _find_own(self, hashes: list[str]) -> bool:
        """True when any of our `hashes` is known to the node (mined or pending), or when that
        cannot be read now (doubt is not failure: the caller keeps confirming)."""
        for h in hashes:
            for lookup in (self.w3.eth.get_transaction_receipt, self.w3.eth.get_transaction):
                try:
                    lookup(HexBytes(h))
                    return True
                except TransactionNotFound:
                    continue
                except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
                    logger.warning(
                        "%s; assuming it may be ours", read_failure(exc, f"lookup of {h}")
                    )
                    return True
        return False

    def _record_receipt(
        self, p: _Pending, receipt: TxReceipt, replacements: int, fees: Fees | None
    ) -> Outcome:
        tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
        block, gas_used = int(receipt["blockNumber"]), int(receipt["gasUsed"])
        price = int(receipt.get("effectiveGasPrice", 0))
        error = None
        if receipt["status"] == 1:
            self.journal.mark_transaction(tx_hash, "mined", block, gas_used, price)
            self.journal.finish_intent(
                p.intent_id, "mined", {"tx_hash": tx_hash, "block": block, "gas_used": gas_used}
            )
            logger.info(
                "vault %s: %s mined in block %d, gas %d", p.vault, p.function, block, gas_used
            )
            status = "mined"
        else:
            error = self._revert_reason(receipt)
            self.journal.mark_transaction(tx_hash, "reverted", block, gas_used, price)
            self.journal.finish_intent(
                p.intent_id, "reverted", {"tx_hash": tx_hash, "block": block, "error": error}
            )
            logger.error(
                "vault %s: %s %s reverted on chain: %s", p.vault, p.function, tx_hash, error
            )
            status = "reverted"
        if self.nonces is not None:
            # Every transaction of an intent shares its nonce: no read needed to know it.
            self.nonces.confirm(int(p.tx["nonce"]))
        return Outcome(status, p.vault, p.function, tx_hash, gas_used, fees, replacements, error)

    def _revert_reason(self, receipt: TxReceipt) -> str:
        try:
            tx = self.w3.eth.get_transaction(receipt["transactionHash"])
        except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
            return f"reverted (reason unavailable: {read_failure(exc, 'transaction')})"
        replay: TxParams = {"from": tx["from"], "to": tx["to"], "data": tx["input"]}
        try:
            self.w3.eth.call(replay, int(receipt["blockNumber"]) - 1)
        except Exception as exc:  # the replayed revert carries the decoded reason
            fault = classify(exc)
            if fault.kind is RpcErrorKind.NOT_RPC:
                raise
            if fault.kind is RpcErrorKind.REVERTED:
                return describe_revert(exc)
            return f"reverted (reason unavailable: {fault.reason})"
        return "reverted (reason not reproducible)"
