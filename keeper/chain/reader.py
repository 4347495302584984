"""Step 2 of the cycle: one consistent read of every watched vault at one block.

All vaults' `snapshot()` calls go through Multicall3 `aggregate3` pinned to one block number,
chunked so that no single `eth_call` exceeds a node's gas cap: 100 vaults take 2 calls, and
all the chunks of a read go out as one JSON-RPC batch (:mod:`keeper.chain.batch`): one HTTP
round trip where the node takes batches, one per chunk where it does not.
Feed histories (for the volatility models) are bootstrapped from the feeds' own rounds, in
one multicall per chunk of rounds, and then extended by the new rounds each tick.

The same multicall quotes each vault's swap venue for every token the vault holds (`quote` of
one whole token for USDC, and the venue's `listings` feed), once per (venue, token) per chunk,
so that the circuit breaker can compare the vault's feed with the price the venue would pay
(`AssetSnapshot.venue_price`). What a quote needs and never changes (the vault's venue and USDC,
the venue's USDC decimals) is learnt by `verify_vaults` at start, or else from the reads
themselves, one hop per read, so that no read costs an extra eth_call: an unverified vault's
first read learns its venue, its second carries quotes. The venue calls are a `listings` (~8k
gas) and a `quote` (~15k) per (venue, token) of a chunk, not per vault: 50 vaults on one venue
holding 2 tokens add ~50k gas to a ~17M chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from eth_abi.exceptions import DecodingError
from eth_typing import BlockNumber, ChecksumAddress
from hexbytes import HexBytes
from web3 import Web3

from keeper.chain.abi import load_artifact, output_types
from keeper.chain.batch import Answer, post
from keeper.chain.errors import decode_revert
from keeper.chain.multicall import MULTICALL3_ADDRESS
from keeper.chain.rpc_errors import read_failure
from keeper.chain.snapshot import VaultSnapshot, decode_snapshot, venue_mid_wad
from keeper.errors import ChainReadError, ConfigError
from keeper.ports import SnapshotSource

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
        self._swap_venue = bytes(Web3.keccak(text="swapVenue()")[:4])
        self._asset = bytes(Web3.keccak(text="asset()")[:4])
        self._usdc_decimals_sel = bytes(Web3.keccak(text="usdcDecimals()")[:4])
        self._listings = bytes(Web3.keccak(text="listings(address)")[:4])
        self._quote = bytes(Web3.keccak(text="quote(address,address,uint256)")[:4])
        self._listing_types = output_types(load_artifact("SwapVenue"), "listings")
        self._decimals = bytes(Web3.keccak(text="decimals()")[:4])
        self._get_round = bytes(Web3.keccak(text="getRoundData(uint80)")[:4])
        self._round_types = output_types(load_artifact("PriceFeed"), "getRoundData")
        #: Learnt from the reads (immutable on-chain): vault → (venue, USDC), or None when the
        #: vault does not answer `swapVenue()`/`asset()`; venue → its USDC decimals; vault → the
        #: (token, decimals) its last snapshot held (what the next read quotes).
        self._venue_of: dict[ChecksumAddress, tuple[ChecksumAddress, ChecksumAddress] | None] = {}
        self._usdc_decimals: dict[ChecksumAddress, int] = {}
        self._tokens_of: dict[ChecksumAddress, tuple[tuple[ChecksumAddress, int], ...]] = {}

    def aggregate(self, calls: Sequence[tuple[str, bytes]], block: int) -> list[tuple[bool, bytes]]:
        """One `aggregate3` eth_call at `block` with allowFailure on every call.

        Encoded and decoded with eth-abi directly: web3's contract-call path normalises every
        nested result (measured: about half a 2-vault read's time in the simulator)."""
        return self.aggregate_many([calls], block)[0]

    def aggregate_many(
        self, batches: Sequence[Sequence[tuple[str, bytes]]], block: int
    ) -> list[list[tuple[bool, bytes]]]:
        """One `aggregate3` eth_call per entry of `batches`, all at `block`, sent as one
        JSON-RPC batch (:mod:`keeper.chain.batch`: one HTTP round trip where the node takes
        batches). A call the batch did not answer is sent alone, the ordinary way (retries,
        failover, classification), in order: it fails exactly as it did before batching."""
        self.counter.eth_calls += len(batches)
        data = [
            self._aggregate3
            + self.w3.codec.encode(
                [AGGREGATE3_CALLS], [[(target, True, payload) for target, payload in calls]]
            )
            for calls in batches
        ]
        call = {"to": MULTICALL3_ADDRESS}  # the params web3 itself sends for this eth_call
        answers = post(
            self.w3, [("eth_call", [{**call, "data": "0x" + d.hex()}, hex(block)]) for d in data]
        )
        out: list[list[tuple[bool, bytes]]] = []
        for payload, answer in zip(data, answers, strict=True):
            raw = _hex_bytes(answer)
            if raw is None:
                raw = self._call(payload, block)
            out.append(self._decode_aggregate(raw, block))
        return out

    def _call(self, data: bytes, block: int) -> bytes:
        try:
            return bytes(
                self.w3.eth.call(
                    {"to": MULTICALL3_ADDRESS, "data": HexBytes(data)},
                    block_identifier=BlockNumber(block),
                )
            )
        except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
            raise read_failure(exc, f"multicall at block {block}") from None

    def _decode_aggregate(self, raw: bytes, block: int) -> list[tuple[bool, bytes]]:
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
        """Every vault's snapshot at `block`, with its venue's quotes (see the module docstring)
        from the same multicall. A vault whose snapshot reverts is left out and logged (the
        others are still read); a transport failure raises ChainReadError."""
        chunks = list(_chunks(vaults, self.chunk_size))
        # Every chunk planned before any is sent (all go in one batch): a venue whose USDC
        # decimals one chunk asks for is not asked again by a later one — as when each chunk
        # was sent after the one before had taught the reader those decimals.
        asked: set[ChecksumAddress] = set()
        plans: list[_VenuePlan] = []
        for chunk in chunks:
            plans.append(self._venue_plan(chunk, asked=asked))
            asked.update(plans[-1].decimals)
        calls = [
            [(v, self._selector) for v in chunk] + plan.calls
            for chunk, plan in zip(chunks, plans, strict=True)
        ]
        every = self.aggregate_many(calls, block)
        out: dict[ChecksumAddress, VaultSnapshot] = {}
        for chunk, plan, results in zip(chunks, plans, every, strict=True):
            snaps: dict[ChecksumAddress, VaultSnapshot] = {}
            for vault, (ok, data) in zip(chunk, results[: len(chunk)], strict=True):
                if not ok:
                    logger.error(
                        "vault %s: snapshot() reverted at block %d: %s",
                        vault,
                        block,
                        decode_revert(data),
                    )
                    continue
                snaps[vault] = decode_snapshot(
                    vault, self.w3.codec.decode(self._snapshot_types, data)[0]
                )
            quotes = self._take_venue_results(plan, results[len(chunk) :])
            for vault, snap in snaps.items():
                out[vault] = self._with_quotes(snap, quotes)
                self._tokens_of[vault] = tuple((a.token, a.decimals) for a in snap.assets)
        return out

    # ------------------------------------------------------------------ venue quotes
    def _venue_plan(
        self,
        chunk: Sequence[ChecksumAddress],
        quote: bool = True,
        asked: set[ChecksumAddress] | None = None,
    ) -> _VenuePlan:
        """The venue calls to add to a chunk's multicall: learn what is not known yet, quote
        what is (unless `quote` is False). Venues in `asked` have their USDC decimals asked
        by an earlier chunk of the same read already."""
        plan = _VenuePlan()
        for vault in chunk:
            if vault not in self._venue_of:
                plan.learn.append(vault)
                plan.calls += [(vault, self._swap_venue), (vault, self._asset)]
        pairs: dict[tuple[ChecksumAddress, ChecksumAddress], tuple[ChecksumAddress, int]] = {}
        for vault in chunk:
            known = self._venue_of.get(vault)
            if known is None:
                continue
            venue, usdc = known
            if (
                venue not in self._usdc_decimals
                and venue not in plan.decimals
                and venue not in (asked or ())
            ):
                plan.decimals.append(venue)
                plan.calls.append((venue, self._usdc_decimals_sel))
            for token, decimals in self._tokens_of.get(vault, ()) if quote else ():
                pairs.setdefault((venue, token), (usdc, decimals))
        for (venue, token), (usdc, decimals) in pairs.items():
            plan.pairs.append((venue, token))
            plan.calls += [
                (venue, self._listings + _word(token)),
                (venue, self._quote + _word(token) + _word(usdc) + _word(10**decimals)),
            ]
        return plan

    def _take_venue_results(
        self, plan: _VenuePlan, results: Sequence[tuple[bool, bytes]]
    ) -> dict[tuple[ChecksumAddress, ChecksumAddress], _Quote]:
        """Learn from the plan's results; the quotes by (venue, token)."""
        it = iter(results)
        for vault in plan.learn:
            venue, usdc = self._address(next(it)), self._address(next(it))
            self._venue_of[vault] = (venue, usdc) if venue and usdc else None
        for venue in plan.decimals:
            ok, data = next(it)
            decoded = self._decode(["uint8"], ok, data)
            if decoded is not None:
                self._usdc_decimals[venue] = int(decoded[0])
        quotes: dict[tuple[ChecksumAddress, ChecksumAddress], _Quote] = {}
        for venue, token in plan.pairs:
            (l_ok, l_data), (q_ok, q_data) = next(it), next(it)
            listing = self._decode(self._listing_types, l_ok, l_data)
            quote = self._decode(["uint256", "uint256"], q_ok, q_data)
            decimals = self._usdc_decimals.get(venue)
            quotes[(venue, token)] = _Quote(
                feed=Web3.to_checksum_address(listing[0]) if listing and listing[4] else None,
                amount_out=int(quote[0]) if quote and decimals is not None else None,
                impact_bps=int(quote[1]) if quote else 0,
                usdc_decimals=decimals or 0,
            )
        return quotes

    def _with_quotes(
        self, snap: VaultSnapshot, quotes: dict[tuple[ChecksumAddress, ChecksumAddress], _Quote]
    ) -> VaultSnapshot:
        known = self._venue_of.get(snap.vault)
        if known is None:
            return snap
        assets = []
        for a in snap.assets:
            q = quotes.get((known[0], a.token))
            if q is None:
                assets.append(a)
                continue
            price = (
                0
                if q.amount_out is None
                else venue_mid_wad(q.amount_out, q.usdc_decimals, snap.swap_fee_bps, q.impact_bps)
            )
            assets.append(replace(a, venue_price=price, venue_feed=q.feed))
        return replace(snap, assets=tuple(assets))

    def _decode(self, types: list[str], ok: bool, data: bytes) -> tuple[Any, ...] | None:
        if not ok:
            return None
        try:
            return tuple(self.w3.codec.decode(types, data))
        except DecodingError:  # not the contract this reader expects there
            return None

    def _address(self, result: tuple[bool, bytes]) -> ChecksumAddress | None:
        decoded = self._decode(["address"], *result)
        if decoded is None or int(decoded[0], 16) == 0:
            return None
        return Web3.to_checksum_address(decoded[0])

    def previous_rounds(
        self, snaps: Iterable[VaultSnapshot], block: int
    ) -> dict[ChecksumAddress, tuple[int, int]]:
        """Each spot feed's round before the latest one `snaps` carry, as (round id, price USD
        WAD; 0 for an answer <= 0), in one multicall at `block` — to seed a
        `keeper.breaker.BreakerBook` that has not seen the feeds yet (`keeper status`). Feeds
        on their first round, or whose previous round does not answer, are left out."""
        latest: dict[ChecksumAddress, int] = {}
        for snap in snaps:
            for a in snap.assets:
                if a.price_round > 1:
                    latest.setdefault(a.price_feed, a.price_round)
        if not latest:
            return {}
        feeds = sorted(latest)
        calls: list[tuple[str, bytes]] = []
        for feed in feeds:
            calls += [(feed, self._decimals), (feed, self._get_round + _word(latest[feed] - 1))]
        results = self.aggregate(calls, block)
        out: dict[ChecksumAddress, tuple[int, int]] = {}
        for i, feed in enumerate(feeds):
            dec = self._decode(["uint8"], *results[2 * i])
            rnd = self._decode(self._round_types, *results[2 * i + 1])
            if dec is None or rnd is None:
                continue
            answer, d = int(rnd[1]), int(dec[0])
            price = (
                0
                if answer <= 0
                else (answer * 10 ** (18 - d) if d <= 18 else answer // 10 ** (d - 18))
            )
            out[feed] = (latest[feed] - 1, price)
        return out

    def read_naive(
        self, vaults: Sequence[ChecksumAddress], block: int
    ) -> dict[ChecksumAddress, VaultSnapshot]:
        """The same read with one eth_call per vault: the baseline the benchmark compares to
        (snapshots only: no venue quotes, which snapshot equality ignores)."""
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
            plan = self._venue_plan(chunk, quote=False)
            results = self.aggregate([(v, self._selector) for v in chunk] + plan.calls, block)
            for vault, (ok, data) in zip(chunk, results[: len(chunk)], strict=True):
                try:
                    if not ok:
                        raise ValueError("snapshot() reverted")
                    snap = decode_snapshot(
                        vault, self.w3.codec.decode(self._snapshot_types, data)[0]
                    )
                except Exception:  # any decode failure means the same: not our vault ABI
                    raise ConfigError(
                        f"{setting}: {vault} is not a RiskVault (snapshot() failed)"
                    ) from None
                self._tokens_of[vault] = tuple((a.token, a.decimals) for a in snap.assets)
            self._take_venue_results(plan, results[len(chunk) :])
            # The venues' USDC decimals, now that the venues are known: the first read quotes.
            plan = self._venue_plan(chunk, quote=False)
            if plan.calls:
                self._take_venue_results(plan, self.aggregate(plan.calls, block))

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
        chunks = list(_chunks(keys, ROUNDS_PER_CALL))
        every = self.aggregate_many([[target_fn(k) for k in chunk] for chunk in chunks], block)
        for chunk, results in zip(chunks, every, strict=True):
            for key, (ok, data) in zip(chunk, results, strict=True):
                out[key] = tuple(self.w3.codec.decode(types, data)) if ok else None
        return out


def _hex_bytes(answer: Answer | None) -> bytes | None:
    """An eth_call's answer (``"0x…"``) as bytes, as web3 would return them; None when there is
    none or it is not hex data (then the call is sent alone, the ordinary way)."""
    if answer is None or not isinstance(answer.result, str):
        return None
    text = answer.result
    if not text.startswith(("0x", "0X")):
        return None
    try:
        return bytes.fromhex(text[2:])
    except ValueError:
        return None


def _word(value: int | str) -> bytes:
    """One ABI word: an address or a uint, left-padded to 32 bytes."""
    return (int(value, 16) if isinstance(value, str) else value).to_bytes(32, "big")


@dataclass
class _VenuePlan:
    """The venue calls appended to one chunk's multicall, in this order: per vault to learn,
    `swapVenue()` and `asset()`; per venue without known USDC decimals, `usdcDecimals()`; per
    (venue, token), `listings(token)` and `quote(token, usdc, 10**decimals)`."""

    calls: list[tuple[str, bytes]] = field(default_factory=list)
    learn: list[ChecksumAddress] = field(default_factory=list)
    decimals: list[ChecksumAddress] = field(default_factory=list)
    pairs: list[tuple[ChecksumAddress, ChecksumAddress]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Quote:
    """One venue's answer for one token: its listing feed (None: not listed / not read), the
    USDC out for one whole token (None: refused, e.g. a stale feed) and the impact it charged."""

    feed: ChecksumAddress | None
    amount_out: int | None
    impact_bps: int
    usdc_decimals: int


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
        reader: SnapshotSource,
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
