"""Private submission: non-urgent actions go to a private relay (a Flashbots-Protect- or
MEV-Blocker-style endpoint, ``KEEPER_PRIVATE_RPC_URL``) instead of the public mempool, so a
rebalance's swaps cannot be sandwiched; urgent ones (HIGH, CRITICAL) always go public.

A relay takes ``eth_sendRawTransaction`` and never shows the transaction to the public mempool
— and may drop it silently. A dropped one leaves its nonce unused, and every later transaction
of ours waits behind it. The relay's status API is optional and not relied on; the check is the
robust one: **not mined, and unknown to the public node (``eth_getTransactionByHash`` is null),
``KEEPER_PRIVATE_DROP_BLOCKS`` blocks after it was sent** means dropped. Then:

- the action is still wanted (its call still simulates): the same signed bytes are broadcast
  publicly — never public before, so nothing leaks beyond what the relay saw — and awaited like
  any public transaction (replaced with bumped fees when stuck);
- it is not (the call now reverts: its deadline passed, the vault moved on): the intent ends
  'dropped' and its nonce is burned by the journaled no-op (:data:`GAP_FILL_KIND`), so no other
  action ever takes a nonce the relay may still hold, and nothing above it stays stuck.

A public transaction must never wait behind one only the relay has: before any public
broadcast, every private transaction of ours below its nonce is broadcast publicly too (an
urgent deleverage never waits the drop window), and an action whose nonce lies below a public
transaction in flight (a refilled gap) is not sent privately. After a drop the relay is not used
for :data:`RELAY_DISTRUST_WINDOWS` drop windows.
"""

from __future__ import annotations

from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import TransactionNotFound
from web3.types import TxParams

from keeper.chain.connect import RPC_TIMEOUT_S
from keeper.chain.errors import describe_revert
from keeper.chain.rpc_errors import RpcErrorKind, RpcFault, classify, read_failure
from keeper.errors import ChainReadError
from keeper.masking import mask_rpc_url, register_secret_url
from keeper.risk.actions import Urgency
from keeper.tx.core import (
    DOUBTFUL,
    GAP_FILL_KIND,
    NO_OP_GAS,
    Flight,
    Outcome,
    Pending,
    SenderCore,
    Submitted,
    logger,
    send_raw,
)
from keeper.tx.fees import FeeCapTooLow, Fees, fetch_fee_inputs, suggest_fees

#: Blocks a private transaction may stay unmined and unknown to the public node before it is
#: taken for dropped. Flashbots Protect retries a transaction for 25 blocks and then gives up:
#: waiting its whole window means the relay has stopped trying before anything else is sent at
#: that nonce (a no-op there cannot race the relay's copy), and a non-urgent action can wait
#: ~5 min on mainnet. Urgent actions never wait it (they go public and take the ones below).
DEFAULT_PRIVATE_DROP_BLOCKS = 25
#: After a drop, non-urgent actions go public for this many drop windows (250 blocks, ~50 min
#: on mainnet by default): a relay that swallowed one transaction likely swallows the next.
RELAY_DISTRUST_WINDOWS = 10
#: The urgencies that may go private; HIGH and CRITICAL never do.
PRIVATE_URGENCIES = frozenset({Urgency.LOW, Urgency.NORMAL})


def goes_private(urgency: Urgency) -> bool:
    """Whether an action of `urgency` is sent to the relay (when one is configured)."""
    return urgency in PRIVATE_URGENCIES


def drop_due(sent_block: int, head: int, drop_blocks: int) -> bool:
    """Whether a private transaction sent at head `sent_block` has had its `drop_blocks`
    blocks at `head` (so, not mined and not visible, it counts as dropped)."""
    return head - sent_block >= drop_blocks


class PrivateRelay:
    """The private endpoint: ``eth_sendRawTransaction`` only (nothing is read from it)."""

    def __init__(
        self,
        url: str,
        drop_blocks: int = DEFAULT_PRIVATE_DROP_BLOCKS,
        timeout_s: float = RPC_TIMEOUT_S,
    ) -> None:
        if drop_blocks < 1:
            raise ValueError(f"drop_blocks must be >= 1, got {drop_blocks}")
        register_secret_url(url)  # before any request: its key is masked in every log
        self.shown = mask_rpc_url(url)
        self.drop_blocks = drop_blocks
        self._w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout_s}))
        #: Head below which the relay is not used (after a drop); -1: trusted.
        self.distrusted_until = -1

    def send_raw(self, raw: HexBytes) -> RpcFault | None:
        """Hand `raw` to the relay: None when it took it (or had it), else the fault."""
        return send_raw(self._w3, raw)

    def trusted(self, head: int) -> bool:
        return head >= self.distrusted_until

    def distrust(self, head: int) -> None:
        self.distrusted_until = head + RELAY_DISTRUST_WINDOWS * self.drop_blocks


class PrivateRouting(SenderCore):
    """Where a first broadcast goes, and what becomes of a private one (see the module)."""

    # --- first broadcasts --------------------------------------------------------------------

    def _send_first(self, p: Pending, raw: HexBytes, head: int) -> tuple[RpcFault | None, bool]:
        """Broadcast the first signature of `p` (journaled already): privately when allowed,
        else publicly. Returns the fault (None: taken) and whether it went private."""
        nonce = int(p.tx["nonce"])
        relay = self.private
        if relay is not None and goes_private(p.urgency):
            why = self._why_public(nonce, head, relay)
            if why is None:
                fault = relay.send_raw(raw)
                if fault is None:
                    logger.info(
                        "vault %s: %s nonce %d sent privately to %s at block %d (sent publicly "
                        "if neither mined nor seen by block %d)",
                        p.vault,
                        p.function,
                        nonce,
                        relay.shown,
                        head,
                        head + relay.drop_blocks,
                    )
                    return None, True
                why = f"the relay did not take it ({fault.reason})"
            logger.warning(
                "vault %s: %s nonce %d sent publicly: %s", p.vault, p.function, nonce, why
            )
        self._publish_below(nonce)
        return self._broadcast(raw), False

    def _why_public(self, nonce: int, head: int, relay: PrivateRelay) -> str | None:
        if not relay.trusted(head):
            return (
                f"the relay dropped a transaction; not used before block {relay.distrusted_until}"
            )
        private = {
            int(f.p.tx["nonce"]) for f in self._flights.values() if f.private_from is not None
        }
        ours = {int(f.p.tx["nonce"]) for f in self._flights.values()}  # adopted ones too
        ours |= self.nonces.in_flight if self.nonces is not None else frozenset()
        above = {n for n in ours if n > nonce} - private
        if above:
            return f"public transactions in flight above it (nonces {sorted(above)}) wait for it"
        return None

    def _first_sent(
        self, p: Pending, fees: Fees, tx_hash: str, fault: RpcFault | None, private_head: int | None
    ) -> Submitted | Outcome:
        """What a first broadcast's answer means. A Submitted is registered as a flight at once,
        so a later public send of this tick sees a private one below it."""
        if fault is None:
            sub = Submitted(p, fees, [tx_hash], private_from=private_head)
        elif fault.kind in DOUBTFUL:
            self._log_doubt(p, tx_hash, fault)
            sub = Submitted(p, fees, [tx_hash], doubtful=True)
        elif fault.kind is RpcErrorKind.NONCE_TOO_LOW:
            used = self._settle_used_nonce(p, [tx_hash], fees, 0, fault)
            if used is not None:
                return used
            sub = Submitted(p, fees, [tx_hash])
        else:
            return self._refused(p, tx_hash, fault)
        self._flight_of(sub)
        return sub

    def _publish_below(self, nonce: int) -> None:
        """Before a public broadcast at `nonce`: every private transaction of ours below it is
        broadcast publicly, else the public one would wait for what the mempool never saw."""
        below = [
            f
            for f in self._flights.values()
            if f.private_from is not None and int(f.p.tx["nonce"]) < nonce
        ]
        for f in sorted(below, key=lambda f: int(f.p.tx["nonce"])):
            why = f"nonce {nonce} is sent publicly above it"
            try:
                reason = self._no_longer_wanted(f.p)
            except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
                failure = read_failure(exc, f"simulation of {f.hashes[-1]}")
                logger.warning("%s; sending it publicly as it is", failure)
                reason = None
            if reason is None:
                self._go_public(f, why)
                continue
            # A relay does not land a transaction that reverts (Flashbots Protect and MEV
            # Blocker both refuse to): its nonce can be burned without racing the relay.
            burned = self._burn(f, f"{why}, and it is no longer wanted: {reason}")
            if burned is not None:
                self._flights.pop(f.p.intent_id, None)
                self._unreported.append(burned)
            else:  # the no-op could not be priced: publish it rather than block the nonce
                self._go_public(f, why)

    def _go_public(self, f: Flight, why: str) -> None:
        """Broadcast `f`'s signed bytes publicly; from now on it is a public flight."""
        p = f.p
        logger.warning(
            "vault %s: %s %s (nonce %d) was private; broadcasting it publicly: %s",
            p.vault,
            p.function,
            f.hashes[-1],
            p.tx["nonce"],
            why,
        )
        f.private_from = None
        f.replace_at = self.clock.now() + self.policy.tx_timeout_s
        fault = self._broadcast(HexBytes(self.journal.transaction(f.hashes[-1]).raw_tx))
        if fault is None:
            return
        if fault.kind in DOUBTFUL:
            self._log_doubt(p, f.hashes[-1], fault)
            f.doubtful = True
            return
        # Nonce used (mined meanwhile?) or refused (its max fee now below the base fee?): the
        # next poll looks for its receipt, then replaces it, which settles either case.
        logger.warning("public broadcast of %s: %s; replacing it", f.hashes[-1], fault.reason)
        f.replace_at = self.clock.now()

    # --- a private flight's poll -----------------------------------------------------------------

    def _private_step(self, f: Flight) -> Outcome | None:
        """One poll of a private flight with no receipt: nothing until its drop window has
        passed; then, if the public node knows it, a public flight; if not, dropped (see the
        module): re-sent publicly, or its nonce burned by a no-op. None unless it ended."""
        relay, p, sent = self.private, f.p, f.private_from
        if relay is None or sent is None:
            return None
        nonce = int(p.tx["nonce"])
        try:
            head = max(int(self.w3.eth.block_number), self.seen_block)
            if not drop_due(sent, head, relay.drop_blocks):
                return None
            if self._publicly_known(f.hashes):
                logger.info(
                    "vault %s: private %s is known to the public node; awaited as public",
                    p.vault,
                    f.hashes[-1],
                )
                f.private_from = None
                f.replace_at = self.clock.now() + self.policy.tx_timeout_s
                return None
            count = int(self.w3.eth.get_transaction_count(self.address, "latest"))
            reason = None if count > nonce else self._no_longer_wanted(p)
        except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
            failure = read_failure(exc, f"check of private {f.hashes[-1]}")
            if not failure.retryable:
                raise failure from None
            logger.info("vault %s: private %s not checked now: %s", p.vault, f.hashes[-1], failure)
            return None
        waited = head - sent
        if relay.trusted(head):
            relay.distrust(head)
        dropped = (
            f"dropped by the private relay: neither mined nor known to the public node "
            f"{waited} blocks after it was sent (limit {relay.drop_blocks})"
        )
        if count > nonce:
            used = RpcFault(RpcErrorKind.NONCE_TOO_LOW, f"chain count {count} is past it")
            return self._settle_used_nonce(p, f.hashes, f.fees, f.replacements, used)
        if reason is None:
            self._go_public(f, f"{dropped}; still wanted: the same signed bytes")
            return None
        return self._burn(f, f"{dropped}; no longer wanted: {reason}")

    def _publicly_known(self, hashes: list[str]) -> bool:
        """Whether the public node has any of `hashes` (pending or mined). Raises a read
        failure when that cannot be told now."""
        for h in hashes:
            try:
                self.w3.eth.get_transaction(HexBytes(h))
                return True
            except TransactionNotFound:
                continue
        return False

    def _no_longer_wanted(self, p: Pending) -> str | None:
        """Why `p`'s call no longer simulates at the head (its revert, decoded), or None when
        it still does: then it is still wanted."""
        call: TxParams = {
            "from": self.address,
            "to": p.tx["to"],
            "data": p.tx["data"],
            "gas": p.tx["gas"],
        }
        try:
            self.w3.eth.call(call, "latest")
        except Exception as exc:  # a revert is the answer; anything else, the caller sorts
            if classify(exc).kind is RpcErrorKind.REVERTED:
                return describe_revert(exc)
            raise
        return None

    def _burn(self, f: Flight, error: str) -> Outcome | None:
        """`f` was dropped and is no longer wanted: it ends 'dropped' (journaled first), and
        its nonce is filled by the journaled no-op, awaited with the flights being polled."""
        p, nonce = f.p, int(f.p.tx["nonce"])
        fees = self._no_op_fees()
        if fees is None or self.nonces is None:
            return None  # tried again at the next poll; the nonce stays ours meanwhile
        logger.error("vault %s: %s %s %s", p.vault, p.function, f.hashes[-1], error)
        for tx_hash in f.hashes:
            self.journal.mark_transaction(tx_hash, "dropped")
        self.journal.finish_intent(
            p.intent_id, "dropped", {"error": error, "tx_hash": f.hashes[-1]}
        )
        if nonce in self.nonces.in_flight:
            self.nonces.release(nonce)
        else:  # adopted after a restart: never allocated in this process
            self.nonces.reopen(nonce)
        filled: Submitted | Outcome | None = None
        for _ in range(len(self.nonces.gaps) + 1):  # lower gaps are filled on the way to it
            filled = self._send_no_op(fees, f"{p.function} {f.hashes[-1]} dropped from it")
            if not isinstance(filled, Submitted):
                break
            self._spawned.append(self._flight_of(filled))
            if int(filled.pending.tx["nonce"]) >= nonce:
                break
        no_op = filled.hashes[-1] if isinstance(filled, Submitted) else None
        return Outcome(
            "failed",
            p.vault,
            p.function,
            f.hashes[-1],
            fees=f.fees,
            replacements=f.replacements,
            error=error,
            details={"nonce": nonce, "dropped": True, "no_op": no_op},
        )

    # --- the no-op ---------------------------------------------------------------------------

    def _no_op_fees(self) -> Fees | None:
        try:
            return suggest_fees(fetch_fee_inputs(self.w3), Urgency.HIGH, self.fee_policy)
        except (ChainReadError, FeeCapTooLow) as exc:
            logger.warning("no-op not priced now: %s", exc)
            return None

    def _send_no_op(self, fees: Fees, why: str) -> Submitted | Outcome:
        """A zero-value transfer to ourselves at the next nonce the manager hands out (the
        lowest gap), journaled like any action (intent kind ``fill_nonce_gap``), priced HIGH:
        it burns a nonce nothing else may take, so the transactions above it can be mined."""
        if self.nonces is None or self.account is None:
            raise TypeError("no signing key: a dry run never fills a nonce")
        intent_id = self.journal.record_intent(
            self.address, GAP_FILL_KIND, self.address, b"", status="pending"
        )
        nonce = self.nonces.allocate()
        self.journal.attach_nonce(intent_id, nonce)
        pending = Pending(
            intent_id,
            self.address,
            GAP_FILL_KIND,
            self._unsigned(self.address, HexBytes(b""), NO_OP_GAS, nonce),
            Urgency.HIGH,
        )
        pending, tx_hash, raw = self._sign_first(pending, fees, intent_id, nonce)
        logger.warning("nonce %d: %s; filling it with a no-op %s", nonce, why, tx_hash)
        fault, _ = self._send_first(pending, raw, self.seen_block)
        return self._first_sent(pending, fees, tx_hash, fault, None)


__all__ = [
    "DEFAULT_PRIVATE_DROP_BLOCKS",
    "PRIVATE_URGENCIES",
    "RELAY_DISTRUST_WINDOWS",
    "PrivateRelay",
    "PrivateRouting",
    "drop_due",
    "goes_private",
]
