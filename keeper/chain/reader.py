"""Step 2 of the cycle: one consistent read of every watched vault at one block.

All vaults' `snapshot()` calls go through Multicall3 `aggregate3` pinned to one block number,
chunked so that no single `eth_call` exceeds a node's gas cap: 100 vaults take 2 calls.
Feed histories (for the volatility models) are bootstrapped from the feeds' own rounds, in
one multicall per chunk of rounds, and then extended by the new rounds each tick.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_abi.exceptions import DecodingError
from eth_typing import BlockNumber, ChecksumAddress
from hexbytes import HexBytes
from web3 import Web3

from keeper.chain.abi import load_artifact, output_types
from keeper.chain.errors import decode_revert
from keeper.chain.multicall import MULTICALL3_ADDRESS
from keeper.chain.rpc_errors import read_failure
from keeper.chain.snapshot import VaultSnapshot, decode_snapshot
from keeper.errors import ChainReadError, ConfigError

logger = logging.getLogger(__name__)

#: Multicall3 `aggregate3`: (target, allowFailure, callData)[] in, (success, returnData)[] out.
AGGREGATE3_CALLS = "(address,bool,bytes)[]"
AGGREGATE3_RESULTS = "(bool,bytes)[]"
#: Vault snapshots per eth_call: ~330k gas each keeps a chunk (~17M) under the usual 30M+ caps.
SNAPSHOTS_PER_CALL = 50
#: Feed rounds per eth_call when bootstrapping history (~10k gas each).
ROUNDS_PER_CALL = 1_000
#: Rounds read per feed at start: enough for GARCH (needs a few hundred returns).
BOOTSTRAP_ROUNDS = 500


@dataclass
class RpcCounter:
    """Counts eth_call requests made by a reader (for logs and the cycle benchmark)."""

    eth_calls: int = 0


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class SnapshotReader:
    """Reads vault snapshots at a pinned block through Multicall3."""

    def __init__(self, w3: Web3, chunk_size: int = SNAPSHOTS_PER_CALL) -> None:
        if chunk_size <= 0:
            raise ConfigError(f"snapshot chunk size must be > 0, got {chunk_size}")
        self.w3 = w3
        self.chunk_size = chunk_size
        self.counter = RpcCounter()
        self._vault_abi = load_artifact("RiskVault").abi
        self._snapshot_types = output_types(load_artifact("RiskVault"), "snapshot")
        self._selector = Web3.keccak(text="snapshot()")[:4]
        self._aggregate3 = Web3.keccak(text=f"aggregate3({AGGREGATE3_CALLS})")[:4]

    def aggregate(self, calls: Sequence[tuple[str, bytes]], block: int) -> list[tuple[bool, bytes]]:
        """One `aggregate3` eth_call at `block` with allowFailure on every call.

        Encoded and decoded with eth-abi directly: web3's contract-call path normalises every
        nested result (measured: about half a 2-vault read's time in the simulator)."""
        self.counter.eth_calls += 1
        data = self._aggregate3 + self.w3.codec.encode(
            [AGGREGATE3_CALLS], [[(target, True, payload) for target, payload in calls]]
        )
        try:
            raw = self.w3.eth.call(
                {"to": MULTICALL3_ADDRESS, "data": HexBytes(data)},
                block_identifier=BlockNumber(block),
            )
        except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
            raise read_failure(exc, f"multicall at block {block}") from None
        try:
            (result,) = self.w3.codec.decode([AGGREGATE3_RESULTS], raw)
        except DecodingError as exc:  # no Multicall3 there, or a node answering nonsense
            raise ChainReadError(
                f"multicall at block {block}: undecodable answer ({type(exc).__name__}: {exc})",
                retryable=False,
            ) from None
        return [(bool(ok), bytes(data)) for ok, data in result]

    def read(
        self, vaults: Sequence[ChecksumAddress], block: int
    ) -> dict[ChecksumAddress, VaultSnapshot]:
        """Every vault's snapshot at `block`. A vault whose snapshot reverts is left out and
        logged (the others are still read); a transport failure raises ChainReadError."""
        out: dict[ChecksumAddress, VaultSnapshot] = {}
        for chunk in _chunks(vaults, self.chunk_size):
            results = self.aggregate([(v, self._selector) for v in chunk], block)
            for vault, (ok, data) in zip(chunk, results, strict=True):
                if not ok:
                    logger.error(
                        "vault %s: snapshot() reverted at block %d: %s",
                        vault,
                        block,
                        decode_revert(data),
                    )
                    continue
                out[vault] = decode_snapshot(
                    vault, self.w3.codec.decode(self._snapshot_types, data)[0]
                )
        return out

    def read_naive(
        self, vaults: Sequence[ChecksumAddress], block: int
    ) -> dict[ChecksumAddress, VaultSnapshot]:
        """The same read with one eth_call per vault: the baseline the benchmark compares to."""
        out: dict[ChecksumAddress, VaultSnapshot] = {}
        for vault in vaults:
            self.counter.eth_calls += 1
            contract = self.w3.eth.contract(address=vault, abi=self._vault_abi)
            try:
                raw = contract.functions.snapshot().call(block_identifier=BlockNumber(block))
            except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
                raise read_failure(exc, f"snapshot of {vault} at block {block}") from None
            out[vault] = decode_snapshot(vault, raw)
        return out

    def verify_vaults(
        self, vaults: Sequence[ChecksumAddress], setting: str = "KEEPER_VAULTS"
    ) -> None:
        """Refuse to start on an address that is not a RiskVault: no code, or no snapshot()."""
        if len(self._code(MULTICALL3_ADDRESS)) == 0:
            raise ChainReadError(
                f"no Multicall3 at {MULTICALL3_ADDRESS} on this chain", retryable=False
            )
        try:
            block = int(self.w3.eth.block_number)
        except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
            raise read_failure(exc, "block number") from None
        for vault in vaults:
            if len(self._code(vault)) == 0:
                raise ConfigError(f"{setting}: {vault} has no contract code on this chain")
        for chunk in _chunks(vaults, self.chunk_size):
            results = self.aggregate([(v, self._selector) for v in chunk], block)
            for vault, (ok, data) in zip(chunk, results, strict=True):
                try:
                    if not ok:
                        raise ValueError("snapshot() reverted")
                    decode_snapshot(vault, self.w3.codec.decode(self._snapshot_types, data)[0])
                except Exception:  # any decode failure means the same: not our vault ABI
                    raise ConfigError(
                        f"{setting}: {vault} is not a RiskVault (snapshot() failed)"
                    ) from None

    def _code(self, address: ChecksumAddress) -> bytes:
        try:
            return bytes(self.w3.eth.get_code(address))
        except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
            raise read_failure(exc, f"code of {address}") from None

    def call_each(
        self,
        target_fn: Callable[[str], tuple[str, bytes]],
        keys: Sequence[str],
        types: list[str],
        block: int,
    ) -> dict[str, tuple[Any, ...] | None]:
        """Helper: one multicall of a call per key; decoded outputs (None where it reverted)."""
        out: dict[str, tuple[Any, ...] | None] = {}
        for chunk in _chunks(keys, ROUNDS_PER_CALL):
            results = self.aggregate([target_fn(k) for k in chunk], block)
            for key, (ok, data) in zip(chunk, results, strict=True):
                out[key] = tuple(self.w3.codec.decode(types, data)) if ok else None
        return out


@dataclass
class FeedHistory:
    """Rounds of one feed seen so far: strictly increasing timestamps (duplicates dropped)."""

    feed: ChecksumAddress
    decimals: int
    last_round: int = 0
    timestamps: list[float] = field(default_factory=list)
    prices: list[float] = field(default_factory=list)

    def add(self, updated_at: int, answer: int) -> None:
        if answer <= 0:
            return
        if self.timestamps and updated_at <= self.timestamps[-1]:
            # Several rounds in one second (or a replayed round): keep the latest answer.
            if updated_at == self.timestamps[-1]:
                self.prices[-1] = answer / 10**self.decimals
            return
        self.timestamps.append(float(updated_at))
        self.prices.append(answer / 10**self.decimals)


class PriceHistoryBook:
    """Rolling price history per feed, bootstrapped from the feed's rounds, extended per tick."""

    def __init__(
        self,
        reader: SnapshotReader,
        bootstrap_rounds: int = BOOTSTRAP_ROUNDS,
        max_points: int = 5_000,
    ) -> None:
        self.reader = reader
        self.bootstrap_rounds = bootstrap_rounds
        self.max_points = max_points
        self.feeds: dict[ChecksumAddress, FeedHistory] = {}
        self._round_types = output_types(load_artifact("PriceFeed"), "getRoundData")
        self._get_round = bytes(Web3.keccak(text="getRoundData(uint80)")[:4])

    def update(self, latest: dict[ChecksumAddress, tuple[int, int]], block: int) -> None:
        """Bring every feed up to its latest round. `latest` maps feed → (latest round id,
        decimals), as the snapshots report them. Reads only rounds not seen yet, in one
        multicall (per ROUNDS_PER_CALL rounds) for all feeds together."""
        wanted: list[tuple[ChecksumAddress, int]] = []
        for feed, (round_id, decimals) in latest.items():
            hist = self.feeds.setdefault(feed, FeedHistory(feed, decimals))
            first = max(hist.last_round + 1, round_id - self.bootstrap_rounds + 1, 1)
            wanted.extend((feed, r) for r in range(first, round_id + 1))
        if not wanted:
            return
        keys = [f"{feed}:{r}" for feed, r in wanted]
        # getRoundData(uint80): the selector and one word, encoded here (web3's per-call
        # encoder costs more than the multicall itself at a few rounds per tick).
        encoded = {
            k: (feed, self._get_round + r.to_bytes(32, "big"))
            for k, (feed, r) in zip(keys, wanted, strict=True)
        }
        rounds = self.reader.call_each(
            lambda k: encoded[k],
            keys,
            self._round_types,
            block,
        )
        for (feed, r), key in zip(wanted, keys, strict=True):
            hist = self.feeds[feed]
            data = rounds[key]
            if data is not None:
                _rid, answer, _started, updated_at, _answered = data
                hist.add(int(updated_at), int(answer))
            hist.last_round = max(hist.last_round, r)
            if len(hist.timestamps) > self.max_points:
                del hist.timestamps[: -self.max_points]
                del hist.prices[: -self.max_points]

    def series(self, feed: ChecksumAddress) -> tuple[list[float], list[float]]:
        hist = self.feeds.get(feed)
        return (list(hist.timestamps), list(hist.prices)) if hist else ([], [])
