"""Drives the local market along a scenario path: time, feed rounds, the base fee, expiries.

Each step, in one block at an exact timestamp (start + step × step length, so every replay of a
path sees the same blocks; interest, funding and expiries accrue to it): the spot rounds (as
the oracle shows them: `oracle_lag_steps` behind the market when the scenario says so), the
implied-vol rounds and every option series' mark (Black–Scholes from the IV path,
intrinsic after expiry), then settle expired series the vaults hold, as any user may, six hours
after expiry.

`anchor_base_fee` makes the *next* block's base fee the path's: it mines one empty block whose
base fee is 8/7 of it, so EIP-1559 brings the block an actor's transaction lands in back to the
path's level (on anvil the base fee otherwise decays to zero on a quiet chain, and the
keeper's cost gating would never be exercised).

Setup transactions go from unlocked node accounts with fixed gas limits and locally counted
nonces (no estimate per round: the driver's sends are most of the chain's work).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import Web3
from web3.providers.rpc import HTTPProvider
from web3.types import Nonce, RPCEndpoint, TxParams, Wei

from keeper.chain.abi import load_artifact
from keeper.devnet.deploy import (
    RISK_FREE_RATE,
    SECONDS_PER_YEAR,
    UNDERLYINGS,
    Deployment,
    feed_answer,
)
from keeper.devnet.local import LocalChain
from keeper.errors import DeploymentError
from keeper.risk.greeks import black_scholes

logger = logging.getLogger(__name__)

WAD = 10**18
GWEI = 10**9
#: Gas limits of the driver's own calls (about twice what each uses; no estimate needed).
GAS_FEED_UPDATE = 150_000
GAS_SETTLE = 600_000
GAS_SMALL = 200_000
#: An outside user settles an expired series this long after expiry (a keeper, when there is
#: one, gets there first; the contract settles at the expiry price either way).
SETTLE_DELAY_S = 6 * 3_600
#: The driver and actors pay whatever the base fee is, with no tip: their gas is not measured.
DRIVER_MAX_FEE_WEI = 50_000 * GWEI
#: Blocks after the last reading whose transaction counts go in the head's batch (a step mines
#: 2-4 when nobody acts).
CHANGE_WINDOW = 6
#: EIP-1559: an empty block lowers the next base fee by 1/8; the anchor block is 8/7 of the target.
ANCHOR_NUM, ANCHOR_DEN = 8, 7


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    series_id: int
    underlying: str  # "ETH" / "BTC"
    is_call: bool
    strike: float  # USD
    expiry: int
    mark_feed: ChecksumAddress


class TxPump:
    """Sends from unlocked accounts with fixed gas and local nonces; checks every receipt."""

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3
        self._nonces: dict[ChecksumAddress, int] = {}
        #: Set while a replay mines by hand (automine off for the whole path, one request fewer
        #: each way per send): mines the block a single send lands in.
        self.mine_each: Callable[[], None] | None = None

    def reset(self) -> None:
        """Forget nonces (after a chain revert)."""
        self._nonces.clear()

    def send(self, sender: ChecksumAddress, to: ChecksumAddress, data: Any, gas: int,
             what: str) -> HexBytes:
        tx_hash = self._submit(sender, to, data, gas)
        if self.mine_each is not None:
            self.mine_each()
        self._check(tx_hash, what)
        return tx_hash

    def send_in_one_block(self, chain: LocalChain,
                          calls: list[tuple[ChecksumAddress, ChecksumAddress, Any, int, str]],
                          timestamp: int | None = None) -> None:
        """Send `calls` (sender, to, data, gas, what) in one JSON-RPC batch with automine off,
        then mine them in one block (at `timestamp` if given): one block per oracle update, as
        a real feed round lands. Where the chain cannot queue them (the in-process chain), a
        block at `timestamp` comes first and each call is mined on arrival."""
        if not chain.queues_transactions:
            if timestamp is not None:
                chain.mine_at(timestamp)
            for s, to, data, gas, what in calls:
                self.send(s, to, data, gas, what)
            return
        by_hand = self.mine_each is not None  # automine is already off
        if not by_hand:
            chain.set_automine(False)
        try:
            hashes = self._submit_batch(calls)
            if timestamp is None:
                chain.mine(1)
            else:
                chain.mine_at(timestamp)
        finally:
            if not by_hand:
                chain.set_automine(True)
        self._check_batch(hashes)

    def _batch_replies(self, requests: list[tuple[str, list[Any]]], what: str
                       ) -> list[dict[str, Any]]:
        """One JSON-RPC batch (one HTTP round trip); every reply, in order, errors included."""
        replies = self.w3.provider.make_batch_request(  # type: ignore[attr-defined]
            [(RPCEndpoint(m), p) for m, p in requests])
        if not isinstance(replies, list):  # the node refused the batch as a whole
            raise DeploymentError(f"simulator: {what}: {replies.get('error')}")
        return list(replies)

    def _batch(self, requests: list[tuple[str, list[Any]]], what: str) -> list[Any]:
        """One JSON-RPC batch (one HTTP round trip); every answer's result, in order."""
        replies = self._batch_replies(requests, what)
        for reply in replies:
            if "error" in reply:
                raise DeploymentError(f"simulator: {what}: {reply['error']}")
        return [reply["result"] for reply in replies]

    def _submit_batch(self, calls: list[tuple[ChecksumAddress, ChecksumAddress, Any, int, str]]
                      ) -> list[tuple[str, str]]:
        """Send `calls` as one batch of `eth_sendTransaction`, nonces counted here (so the
        node's order of processing the batch does not matter: the pool orders by nonce)."""
        requests = []
        for sender, to, data, gas, _what in calls:
            nonce = self._next_nonce(sender)
            requests.append(("eth_sendTransaction", [{
                "from": sender, "to": to, "data": HexBytes(data).to_0x_hex(),
                "gas": hex(gas), "nonce": hex(nonce),
                "maxFeePerGas": hex(DRIVER_MAX_FEE_WEI), "maxPriorityFeePerGas": "0x0",
            }]))
        hashes = self._batch(requests, "sending " + ", ".join(c[4] for c in calls))
        return list(zip(hashes, [c[4] for c in calls], strict=True))

    def _check_batch(self, hashes: list[tuple[str, str]]) -> None:
        receipts = self._batch([("eth_getTransactionReceipt", [h]) for h, _ in hashes],
                               "reading receipts")
        for (tx_hash, what), receipt in zip(hashes, receipts, strict=True):
            if receipt is None:
                raise DeploymentError(f"simulator: {what} was not mined ({tx_hash})")
            if int(receipt["status"], 16) != 1:
                raise DeploymentError(f"simulator: {what} reverted ({tx_hash})")

    def tx_counts(self, blocks: range) -> list[int]:
        """How many transactions each of `blocks` holds (one batch over HTTP)."""
        if not blocks:
            return []
        if not isinstance(self.w3.provider, HTTPProvider):  # in-process: no round trips
            return [int(self.w3.eth.get_block_transaction_count(b)) for b in blocks]
        counts = self._batch([("eth_getBlockTransactionCountByNumber", [hex(b)]) for b in blocks],
                             "counting transactions")
        return [int(c, 16) for c in counts]

    def changes_since(self, seen: int) -> tuple[int, bool]:
        """The head, and whether any block after `seen` up to it holds a transaction — over
        HTTP in one batch for the usual few blocks (the head and the next `CHANGE_WINDOW`
        blocks' counts; a block past the head counts as null), a second one past that."""
        if not isinstance(self.w3.provider, HTTPProvider):
            head = int(self.w3.eth.block_number)
            return head, any(self.tx_counts(range(seen + 1, head + 1)))
        window = range(seen + 1, seen + 1 + CHANGE_WINDOW)
        head_reply, *count_replies = self._batch_replies(
            [("eth_blockNumber", []),
             *(("eth_getBlockTransactionCountByNumber", [hex(b)]) for b in window)],
            "counting transactions")
        if "error" in head_reply:
            raise DeploymentError(f"simulator: reading the head: {head_reply['error']}")
        head = int(head_reply["result"], 16)
        for block, reply in zip(window, count_replies, strict=True):
            if block > head:
                break  # anvil answers an error for a block past the head
            if "error" in reply:
                raise DeploymentError(f"simulator: counting transactions: {reply['error']}")
            if int(reply["result"], 16):
                return head, True
        return head, any(self.tx_counts(range(window.stop, head + 1)))

    def _next_nonce(self, sender: ChecksumAddress) -> int:
        if sender not in self._nonces:
            self._nonces[sender] = int(self.w3.eth.get_transaction_count(sender, "pending"))
        self._nonces[sender] += 1
        return self._nonces[sender] - 1

    def _submit(self, sender: ChecksumAddress, to: ChecksumAddress, data: Any, gas: int
                ) -> HexBytes:
        tx: TxParams = {
            "from": sender,
            "to": to,
            "data": HexBytes(data),
            "gas": gas,
            "nonce": Nonce(self._next_nonce(sender)),
            "maxFeePerGas": Wei(DRIVER_MAX_FEE_WEI),
            "maxPriorityFeePerGas": Wei(0),
        }
        return self.w3.eth.send_transaction(tx)

    def _check(self, tx_hash: HexBytes, what: str) -> None:
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
        if receipt["status"] != 1:
            raise DeploymentError(f"simulator: {what} reverted ({tx_hash.hex()})")


class MarketDriver:
    """Pushes one scenario step at a time onto the chain `dep` was deployed on."""

    def __init__(self, w3: Web3, chain: LocalChain, dep: Deployment, pump: TxPump) -> None:
        self.w3, self.chain, self.dep, self.pump = w3, chain, dep, pump
        self.admin = dep.accounts["admin"]
        feed_abi = load_artifact("PriceFeed").abi
        self._feed = w3.eth.contract(abi=feed_abi)
        self._vault = w3.eth.contract(abi=load_artifact("RiskVault").abi)
        options = w3.eth.contract(address=dep.contracts["OptionMarket"],
                                  abi=load_artifact("OptionMarket").abi)
        by_token = {dep.contracts[sym]: u for u, (sym, *_rest) in UNDERLYINGS.items()}
        self.series: list[SeriesInfo] = []
        for name, sid in sorted(dep.series.items(), key=lambda kv: kv[1]):
            s = options.functions.getSeries(sid).call()
            info = dict(zip([o["name"] for o in _series_outputs(options)], s, strict=True))
            self.series.append(SeriesInfo(
                series_id=sid,
                underlying=by_token[Web3.to_checksum_address(info["underlying"])],
                is_call=bool(info["isCall"]),
                strike=int(info["strike"]) / WAD,
                expiry=int(info["expiry"]),
                mark_feed=dep.contracts[f"{name}_MARK"],
            ))
        self._settled: set[tuple[str, int]] = set()

    def reset(self) -> None:
        self._settled.clear()
        self.pump.reset()

    # ------------------------------------------------------------------ feeds
    def _round(self, feed: ChecksumAddress, value: float, what: str
               ) -> tuple[ChecksumAddress, ChecksumAddress, Any, int, str]:
        data = self._feed.encode_abi("updateAnswer", [feed_answer(value)])
        return (self.admin, feed, data, GAS_FEED_UPDATE, what)

    def push(self, timestamp: int, spot: Mapping[str, float], iv: Mapping[str, float]) -> None:
        """Push spot, IV and every series' mark in one block at `timestamp`."""
        rounds = []
        for u in UNDERLYINGS:
            rounds.append(self._round(self.dep.contracts[f"{u}_USD"], spot[u], f"{u}/USD round"))
            rounds.append(self._round(self.dep.contracts[f"{u}_IV"], iv[u], f"{u} IV round"))
        for s in self.series:
            t_left = max(s.expiry - timestamp, 0) / SECONDS_PER_YEAR
            mark = float(black_scholes(spot[s.underlying], s.strike, t_left, RISK_FREE_RATE,
                                       iv[s.underlying], s.is_call).price)
            rounds.append(self._round(s.mark_feed, max(mark, 0.0), "option mark"))
        self.pump.send_in_one_block(self.chain, rounds, timestamp)

    def settle_expired(self, timestamp: int, holdings: Mapping[ChecksumAddress, Sequence[int]]
                       ) -> list[tuple[ChecksumAddress, int]]:
        """Settle, through each vault's public `settleOption`, every expired series it still
        holds (`holdings`: vault → series ids with a position). Returns what was settled."""
        done = []
        expired = {s.series_id for s in self.series if s.expiry + SETTLE_DELAY_S <= timestamp}
        for vault, ids in holdings.items():
            for sid in ids:
                if sid in expired and (vault, sid) not in self._settled:
                    data = self._vault.encode_abi("settleOption", [sid])
                    self.pump.send(self.dep.accounts["liquidator"], vault, data, GAS_SETTLE,
                                   f"settle series {sid} of {vault}")
                    self._settled.add((vault, sid))
                    done.append((vault, sid))
        return done

    # ------------------------------------------------------------------ gas
    def anchor_base_fee(self, gwei: float) -> None:
        """Make the next block's base fee `gwei` (see the module docstring)."""
        target = max(1, int(gwei * GWEI))
        self.chain.set_next_base_fee(-(-target * ANCHOR_NUM // ANCHOR_DEN))
        self.chain.mine(1)


def _series_outputs(options: Any) -> list[dict[str, Any]]:
    for item in options.abi:
        if item.get("name") == "getSeries":
            return list(item["outputs"][0]["components"])
    raise DeploymentError("OptionMarket ABI has no getSeries")


__all__ = ["MarketDriver", "SeriesInfo", "TxPump"]
