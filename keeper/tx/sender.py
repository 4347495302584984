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
from keeper.journal import IntentRecord, IntentStatus, Journal, JournalError
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
#: Blocks within which an included action is checked again for a reorg every tick (Ethereum
#: mainnet finalizes after two epochs, 64 slots).
REORG_DEPTH = 64
#: The journal's kind for a no-op that fills a nonce gap, and its gas (a plain transfer).
GAP_FILL_KIND = "fill_nonce_gap"
NO_OP_GAS = 21_000
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
    'timeout' (out of replacements, still in flight), 'pending' (still in flight at the tick
    deadline; a later tick resumes it) or 'failed'; with the last transaction's hash and the
    numbers that matter."""

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


@dataclass(slots=True)
class _Flight:
    """One nonce being awaited and its replacement schedule. It outlives a tick: a wave that
    reaches the tick deadline leaves it here, and the next tick's `resume` goes on from where
    it stopped (the same hashes, fees, rounds and replacement time), never from scratch."""

    p: _Pending
    fees: Fees
    hashes: list[str]
    replace_at: float
    #: No node has acknowledged the latest broadcast: rebroadcast it at every poll.
    doubtful: bool = False
    #: No node ever took any transaction of this nonce (see `_confirm_step`).
    never_acknowledged: bool = False
    rounds: int = 0
    replacements: int = 0
    #: Why no more replacements are made ("fee cap reached", ...), once that is so: it is then
    #: only polled, and rebroadcast once per timeout in case a node lost it.
    exhausted: str | None = None


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
        #: The newest block holding a receipt this process recorded: the chain is at least
        #: there, whatever head a lagging node answers.
        self.seen_block = 0
        #: Intent id → the flight this process awaits (see `resume`).
        self._flights: dict[int, _Flight] = {}

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

    def resume(self, until: float | None = None) -> list[Outcome]:
        """Go on with every journaled intent still in flight: those this process sent (their
        replacement schedule goes on where it stopped) and, the first time, those an earlier
        process left (settled as in :meth:`reconcile`). Polls until each ends or `until`
        (None: until each ends or runs out of replacements). Returns the outcomes of those that
        ended or timed out now; one still in flight is not reported. Never sends a new action."""
        flights: list[_Flight] = []
        outcomes: list[Outcome] = []
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

    def fill_gap(self, nonce_hint: int | None = None) -> Submitted | Outcome | None:
        """Fill the lowest open nonce gap with a no-op: a zero-value transfer to ourselves,
        journaled like any action (intent kind ``fill_nonce_gap``) and priced HIGH, so the
        transactions above the gap can be mined. None when there is no gap (or no key)."""
        if self.nonces is None or self.account is None or not self.nonces.gaps:
            return None
        try:
            inputs = fetch_fee_inputs(self.w3)
            fees = suggest_fees(inputs, Urgency.HIGH, self.fee_policy)
        except (ChainReadError, FeeCapTooLow) as exc:
            logger.warning("nonce gap %s not filled this tick: %s", sorted(self.nonces.gaps), exc)
            return None
        intent_id = self.journal.record_intent(
            self.address, GAP_FILL_KIND, self.address, b"", status="pending"
        )
        nonce = self.nonces.allocate()  # the lowest gap
        self.journal.attach_nonce(intent_id, nonce)
        pending = _Pending(
            intent_id,
            self.address,
            GAP_FILL_KIND,
            self._unsigned(self.address, HexBytes(b""), NO_OP_GAS, nonce),
            Urgency.HIGH,
        )
        pending, tx_hash, raw = self._sign_and_record(pending, fees, first=True)
        logger.warning(
            "nonce %d is a gap below transactions in flight: filling it with a no-op %s",
            nonce,
            tx_hash,
        )
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

    @property
    def in_flight(self) -> dict[int, str]:
        """Intent id → vault of every transaction this process is awaiting."""
        return {i: f.p.vault for i, f in self._flights.items()}

    def _adopt(self, intent: IntentRecord) -> _Flight | Outcome | None:
        """An unfinished intent this process did not send (an earlier process did): its
        outcome if it can be settled at once, else a flight to await (rebroadcast first)."""
        if not intent.transactions or intent.nonce is None:
            self.journal.finish_intent(intent.id, "failed", {"error": "never broadcast"})
            return None
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
        flight = _Flight(pending, fees, hashes, self.clock.now() + self.policy.tx_timeout_s)
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
        fault = self._broadcast(HexBytes(latest.raw_tx))
        if fault is not None and fault.kind is RpcErrorKind.NONCE_TOO_LOW:
            dropped = self._settle_used_nonce(pending, hashes, fees, 0, fault)
            if dropped is not None:
                return dropped
        elif fault is not None and fault.kind is RpcErrorKind.DEFINITE_REFUSAL:
            # Others may still hold it (it was acknowledged before the restart): wait for
            # it, and replace it with higher fees at the deadline (the usual refusal here
            # is a base fee that rose above its max fee).
            logger.warning("rebroadcast of %s refused: %s", latest.tx_hash, fault.reason)
        flight.doubtful = fault is not None and fault.kind in _DOUBTFUL
        return self._register(flight)

    def _flight_of(self, submitted: Submitted) -> _Flight:
        known = self._flights.get(submitted.pending.intent_id)
        if known is not None:
            return known
        doubt = submitted.doubtful  # this process broadcast it; no node acknowledged it yet
        return self._register(
            _Flight(
                submitted.pending,
                submitted.fees,
                submitted.hashes,
                self.clock.now() + self.policy.tx_timeout_s,
                doubtful=doubt,
                never_acknowledged=doubt,
            )
        )

    def _register(self, flight: _Flight) -> _Flight:
        self._flights[flight.p.intent_id] = flight
        return flight

    def _await(self, flights: list[_Flight], until: float | None) -> dict[int, Outcome]:
        """Poll `flights` together until each ends, runs out of replacements, or `until`.
        Ended ones leave `_flights`; timed-out ones stay (polled again by `resume`)."""
        outcomes: dict[int, Outcome] = {}
        live = list(flights)
        #: Out of replacements already: polled once here (a receipt, a due rebroadcast).
        once = {f.p.intent_id for f in flights if f.exhausted is not None}
        poll = RECEIPT_POLL_MIN_S
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
            now = self.clock.now()
            if not live or (until is not None and now >= until):
                break
            nap = poll if until is None else min(poll, until - now)
            self.clock.sleep(nap)
            poll = min(2 * poll, RECEIPT_POLL_MAX_S)
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
                details={"nonce": int(f.p.tx["nonce"]), "replace_at": f.replace_at},
            )
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

    def _confirm_step(self, f: _Flight) -> Outcome | None:
        """One poll of `f`, without waiting: its Outcome if it ended (or just ran out of
        replacements: 'timeout', reported once), else None.

        Looks for a receipt of any of its hashes; while `doubtful`, rebroadcasts the latest
        until a node acknowledges it; past its replacement time, replaces it with bumped fees
        (same nonce), at most ``max_replacements`` times, never above the cap.

        `never_acknowledged`: no node ever took this nonce's transaction (we broadcast it in
        this process, and every answer so far was a doubt). Only then does a definite refusal
        of a rebroadcast end the send and free the nonce."""
        p = f.p
        receipt = self._any_receipt(f.hashes, tolerate=True)
        if receipt is not None:
            return self._record_receipt(p, receipt, f.replacements, f.fees)
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
        if fault is None or fault.kind in _DOUBTFUL:
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

    def _timed_out(self, f: _Flight, why: str) -> Outcome:
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
        self.seen_block = max(self.seen_block, block)
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
        return Outcome(
            status,
            p.vault,
            p.function,
            tx_hash,
            gas_used,
            fees,
            replacements,
            error,
            details={"block": block},
        )

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
