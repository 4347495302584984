"""The sender's core: the types of a send (policy, outcome, the pending nonce, a flight) and
the steps every part of it shares — journal, sign, broadcast, read receipts, settle a used nonce.

:mod:`keeper.tx.sender` is the public face (simulate, price and submit); the parts build on
each other in one direction: core → :mod:`keeper.tx.confirm` (await, replace, time out) →
:mod:`keeper.tx.reconcile` (resume across ticks and restarts, reorgs) → sender.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

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
from keeper.errors import ChainReadError
from keeper.journal import IntentStatus, Journal, JournalError
from keeper.risk.actions import Urgency
from keeper.tx.builder import CallPlan
from keeper.tx.fees import FeePolicy, Fees
from keeper.tx.nonce import NonceManager

if TYPE_CHECKING:
    from keeper.tx.private import PrivateRelay

logger = logging.getLogger("keeper.tx.sender")

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
DOUBTFUL = (RpcErrorKind.MAYBE_SENT, RpcErrorKind.UNKNOWN)


def send_raw(w3: Web3, raw: HexBytes) -> RpcFault | None:
    """Send signed bytes through `w3`. None when the node took them or already had them;
    otherwise the classified fault. A bug (not an RPC error) is re-raised."""
    try:
        w3.eth.send_raw_transaction(raw)
    except Exception as exc:  # sorted once, by the classifier; never swallowed
        fault = classify(exc, broadcast=True)
        if fault.kind is RpcErrorKind.NOT_RPC:
            raise
        return None if fault.kind is RpcErrorKind.ALREADY_KNOWN else fault
    return None


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
class Pending:
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

    pending: Pending
    fees: Fees
    hashes: list[str]
    doubtful: bool = False
    #: The head when it was sent to the private relay; None: sent publicly.
    private_from: int | None = None


@dataclass(slots=True)
class Flight:
    """One nonce being awaited and its replacement schedule. It outlives a tick: a wave that
    reaches the tick deadline leaves it here, and the next tick's `resume` goes on from where
    it stopped (the same hashes, fees, rounds and replacement time), never from scratch."""

    p: Pending
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
    #: The head when it was sent to the private relay, while only the relay has it: it is then
    #: neither rebroadcast nor replaced, only checked for a drop (:mod:`keeper.tx.private`).
    private_from: int | None = None


class SenderCore:
    """What every part of a send shares: its collaborators and the low-level steps."""

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
        private: PrivateRelay | None = None,
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
        self._flights: dict[int, Flight] = {}
        #: KEEPER_PRIVATE_RPC_URL's relay, for non-urgent actions; None: everything is public.
        self.private = private
        #: Flights started while others were polled (a no-op burning a dropped nonce): the
        #: poll loop awaits them too.
        self._spawned: list[Flight] = []
        #: Outcomes of sends that ended outside the flights a caller awaited (such a no-op, a
        #: private one burned before an urgent send): the next `resume` reports them.
        self._unreported: list[Outcome] = []

    def _register(self, flight: Flight) -> Flight:
        self._flights[flight.p.intent_id] = flight
        return flight

    def _flight_of(self, submitted: Submitted) -> Flight:
        known = self._flights.get(submitted.pending.intent_id)
        if known is not None:
            return known
        doubt = submitted.doubtful  # this process broadcast it; no node acknowledged it yet
        return self._register(
            Flight(
                submitted.pending,
                submitted.fees,
                submitted.hashes,
                self.clock.now() + self.policy.tx_timeout_s,
                doubtful=doubt,
                never_acknowledged=doubt,
                private_from=submitted.private_from,
            )
        )

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
        self, pending: Pending, fees: Fees, first: bool = False
    ) -> tuple[Pending, str, HexBytes]:
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
        """Send signed bytes to the node (see :func:`send_raw`)."""
        return send_raw(self.w3, raw)

    def _sign_first(
        self, pending: Pending, fees: Fees, intent_id: int, nonce: int
    ) -> tuple[Pending, str, HexBytes]:
        """Sign and journal the first transaction of a new intent. If the journal refuses it,
        nothing was broadcast: the nonce is given back and the intent recorded failed (or, on
        the same disk trouble, settled at the next start) before the error goes on."""
        try:
            return self._sign_and_record(pending, fees, first=True)
        except JournalError as exc:  # not journaled, so not broadcast: the nonce is unused
            if self.nonces is not None:
                self.nonces.release(nonce)
            try:
                self.journal.finish_intent(intent_id, "failed", {"error": str(exc)})
            except JournalError as again:  # the same disk trouble: settled at the next start
                logger.error("intent %d: its failure could not be recorded: %s", intent_id, again)
            raise

    def _log_doubt(self, p: Pending, tx_hash: str, fault: RpcFault) -> None:
        log = logger.error if fault.kind is RpcErrorKind.UNKNOWN else logger.warning
        log(
            "vault %s: %s %s maybe sent (%s): nonce %d kept; confirming and rebroadcasting",
            p.vault,
            p.function,
            tx_hash,
            fault.reason,
            p.tx["nonce"],
        )

    def _refused(self, p: Pending, tx_hash: str, fault: RpcFault) -> Outcome:
        """A first broadcast definitely refused: the node never took it, its nonce is free."""
        error = f"broadcast refused: {fault.reason}"
        logger.error("vault %s: %s %s %s", p.vault, p.function, tx_hash, error)
        if self.nonces is not None and p.tx["nonce"] in self.nonces.in_flight:
            self.nonces.release(p.tx["nonce"])
        self.journal.mark_transaction(tx_hash, "dropped")
        self.journal.finish_intent(p.intent_id, "failed", {"error": error, "tx_hash": tx_hash})
        return Outcome("failed", p.vault, p.function, tx_hash, error=error)

    def _settle_used_nonce(
        self, p: Pending, hashes: list[str], fees: Fees, replacements: int, fault: RpcFault
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
        self, p: Pending, receipt: TxReceipt, replacements: int, fees: Fees | None
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
