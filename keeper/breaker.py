"""Circuit breaker: a suspect price holds back every risk-increasing action of a vault.

A vault's breaker opens when a spot feed it holds an asset on

- **jumps**: moves more than `BreakerBounds.max_jump_bps` (relative to the earlier price)
  between two rounds read one after the other;
- **answers <= 0** (the snapshot carries price 0 for it); or
- **disagrees with the swap venue**: the price the vault's venue would pay for one whole token
  (`AssetSnapshot.venue_price`, its fee and impact backed out) is more than
  `max_venue_gap_bps` away from the feed's. On the bundled market the venue prices off the very
  same feed, so this only has teeth where the venue is listed on another feed (the reason then
  names both feeds).

While it is open, `keeper.policy.risk_reducing_only` decides what still goes: deleverage,
repay, settle, sell-only rebalances and hedges that shrink |net delta| (`BreakerBook.gate`).
It closes at the first read `cooldown_s` of chain time (block timestamps, so a simulation or a
test is deterministic) after its last reason: for a jump, the time the new round was published
(so a process that starts, or a `keeper status` run, long after a jump does not open on it);
for a condition that persists (a venue gap, an answer <= 0), the last read that saw it — seen
again on every read, it keeps the breaker open while it lasts.

Jumps are measured between the rounds this book has seen. A snapshot carries only a feed's
latest round (id and price), not the previous round's price, so the book remembers each feed's
last seen (round, price): when the keeper reads every round (it ticks faster than the feed
updates) that is the previous round; when a read skips rounds (the keeper was down, or ticks
slower than the feed) the bound applies across the rounds in between. A feed's first sighting
has nothing to compare with; `seed` primes it with its previous round
(`keeper.chain.reader.SnapshotReader.previous_rounds`), for a process that just started.

Pure bookkeeping: no chain or file I/O (it logs its transitions). It reads snapshots only by
attribute, so importing it loads no chain library.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from keeper.errors import ConfigError
from keeper.policy import risk_reducing_only
from keeper.risk.actions import Action

if TYPE_CHECKING:
    from keeper.chain.snapshot import VaultSnapshot

logger = logging.getLogger(__name__)

#: Vault address keys (ChecksumAddress, a str), kept as the caller typed them.
_V = TypeVar("_V", bound=str)

BPS = 10_000
WAD = 10**18
#: 25 % per round. The scenario library's largest one-step moves (200 paths each) are 21.1 %
#: (`jumps`, ETH) and 16.9 % (`flash`); every gap scenario is beyond it (`gap35`: ETH 35 %,
#: BTC 29.2 %; `gap45`, `gap50`). Real ETH/BTC feeds update on a 0.5 % deviation or hourly: a
#: 25 % round-to-round move is either a crash or a broken feed, and either way no risk is
#: added on it; a deleverage still goes, so a low bound costs little.
MAX_JUMP_BPS = 2_500
#: 2 %: four times the 0.5 % deviation at which Chainlink's ETH/USD and BTC/USD feeds update (a
#: venue tracking the market may sit that far from the last round), and twice the vault's 1 %
#: `maxSlippageBps` ceiling (beyond it every venue leg the vault checks would revert anyway).
MAX_VENUE_GAP_BPS = 200
#: 1 h: the heartbeat of Chainlink's ETH/USD and BTC/USD feeds (at least one more round comes in
#: it) and one step of the simulator, so a gap holds back risk for the tick that sees it.
COOLDOWN_S = 3_600


@dataclass(frozen=True, slots=True)
class BreakerBounds:
    """When a breaker opens and how long it stays open (see the module docstring)."""

    #: Largest accepted |new − previous| / previous between consecutive rounds seen, bps.
    max_jump_bps: int = MAX_JUMP_BPS
    #: Largest accepted |venue − feed| / feed, bps.
    max_venue_gap_bps: int = MAX_VENUE_GAP_BPS
    #: Chain seconds after the last read that saw a reason before the breaker closes.
    cooldown_s: int = COOLDOWN_S

    def __post_init__(self) -> None:
        for name in ("max_jump_bps", "max_venue_gap_bps", "cooldown_s"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"breaker bound {name} must be a positive integer, got {value!r}")


@dataclass(frozen=True, slots=True)
class Trip:
    """One reason a breaker is open. `seen_at` (chain timestamp) is when a jump's round was
    published, or the last read that saw a lasting condition; `block`, the read's block."""

    key: tuple[str, str]
    reason: str
    block: int
    seen_at: int


class BreakerBook:
    """Per-feed and per-vault breaker state across reads. `update` once per read of the vaults
    (every tick), `gate` each vault's actions; `reasons`/`describe` for status and logs."""

    def __init__(self, bounds: BreakerBounds | None = None) -> None:
        self.bounds = bounds or BreakerBounds()
        #: feed → (round id, price WAD) last seen with a positive answer.
        self._last: dict[str, tuple[int, int]] = {}
        #: Trips of a feed (a jump, an answer <= 0), by key: they open every vault holding an
        #: asset on it. A jump's key carries its round, so a second jump is a new reason.
        self._feed_trips: dict[str, dict[tuple[str, str], Trip]] = {}
        #: Trips of one vault (its venue disagrees with a feed), by key.
        self._vault_trips: dict[str, dict[tuple[str, str], Trip]] = {}
        self._feeds_of: dict[str, tuple[str, ...]] = {}
        self._seen: dict[str, tuple[int, int]] = {}  # vault → (block, timestamp) of its last read
        self._open: dict[str, frozenset[tuple[str, str]]] = {}

    # ------------------------------------------------------------------ inputs
    def seed(self, previous: Mapping[Any, tuple[int, int]]) -> None:
        """Prime feeds not seen yet with an earlier round: feed → (round id, price WAD)."""
        for feed, (round_id, price) in previous.items():
            if feed not in self._last and price > 0:
                self._last[feed] = (round_id, price)

    def update(
        self,
        snapshots: Mapping[_V, VaultSnapshot],
        symbols: Mapping[Any, str] | None = None,
    ) -> dict[_V, list[str]]:
        """Take one read of the vaults; the reasons each vault's breaker is open ([] = closed),
        for every vault in `snapshots`. `symbols` (token → symbol) names the assets."""
        names = symbols or {}
        seen: dict[str, tuple[int, int, str, int, int, int]] = {}
        for snap in snapshots.values():
            for a in snap.assets:
                seen.setdefault(
                    a.price_feed,
                    (
                        a.price_round,
                        a.price,
                        a.token,
                        snap.block_number,
                        snap.timestamp,
                        min(a.price_updated_at, snap.timestamp),
                    ),
                )
        for feed, (round_id, price, token, block, ts, published) in seen.items():
            asset = names.get(token, token)
            self._observe_feed(feed, round_id, price, asset, block, ts, published)
        for vault, snap in snapshots.items():
            self._observe_venue(vault, snap, names)
            self._feeds_of[vault] = tuple(a.price_feed for a in snap.assets)
            self._seen[vault] = (snap.block_number, snap.timestamp)
        self._expire()
        out = {vault: self.reasons(vault) for vault in snapshots}
        for vault in snapshots:
            self._log_transition(vault)
        return out

    def _observe_feed(
        self, feed: str, round_id: int, price: int, asset: str, block: int, ts: int, published: int
    ) -> None:
        trips = self._feed_trips.setdefault(feed, {})
        if price <= 0:
            key = ("nonpositive", feed)
            trips[key] = Trip(
                key, f"{asset} feed {feed} answered ≤ 0 in round {round_id}", block, ts
            )
            return  # nothing to measure a jump from or to; the last positive price is kept
        last = self._last.get(feed)
        self._last[feed] = (round_id, price)
        if last is None or last == (round_id, price):
            return
        prev_round, prev = last
        if abs(price - prev) * BPS > self.bounds.max_jump_bps * prev:
            key = ("jump", f"{feed}:{round_id}")
            trips[key] = Trip(
                key,
                f"{asset} feed {feed} moved {_pct(price - prev, prev)} from round {prev_round} "
                f"to {round_id} (${_usd(prev)} → ${_usd(price)}), beyond the "
                f"±{self.bounds.max_jump_bps / 100:g} % per-round bound",
                block,
                published,
            )

    def _observe_venue(self, vault: str, snap: VaultSnapshot, names: Mapping[Any, str]) -> None:
        trips = self._vault_trips.setdefault(vault, {})
        bound = self.bounds.max_venue_gap_bps
        for a in snap.assets:
            if a.venue_price <= 0 or a.price <= 0:
                continue  # not quoted (or the feed is <= 0: that trip is the feed's)
            if abs(a.venue_price - a.price) * BPS <= bound * a.price:
                continue
            asset = names.get(a.token, a.token)
            listed = (
                ""
                if a.venue_feed is None
                else " (same feed)"
                if a.venue_feed == a.price_feed
                else f" (the venue lists it on feed {a.venue_feed})"
            )
            key = ("venue", a.token)
            trips[key] = Trip(
                key,
                f"{asset}: the swap venue pays ${_usd(a.venue_price)}{listed}, "
                f"{_pct(a.venue_price - a.price, a.price)} from feed {a.price_feed} "
                f"(${_usd(a.price)}), beyond the ±{bound / 100:g} % bound",
                snap.block_number,
                snap.timestamp,
            )

    def _expire(self) -> None:
        if not self._seen:
            return
        now = max(ts for _, ts in self._seen.values())
        for trips in (*self._feed_trips.values(), *self._vault_trips.values()):
            for name in [n for n, t in trips.items() if now - t.seen_at >= self.bounds.cooldown_s]:
                del trips[name]

    # ------------------------------------------------------------------ outputs
    def _trips(self, vault: str) -> list[Trip]:
        """The vault's trips still inside their cool-down at its last read."""
        if vault not in self._seen:
            return []
        now = self._seen[vault][1]
        trips = [
            t
            for feed in self._feeds_of.get(vault, ())
            for t in self._feed_trips.get(feed, {}).values()
        ]
        trips += self._vault_trips.get(vault, {}).values()
        return [t for t in trips if now - t.seen_at < self.bounds.cooldown_s]

    def reasons(self, vault: str) -> list[str]:
        """Why the vault's breaker is open at its last read ([] = closed)."""
        return [t.reason for t in self._trips(vault)]

    def is_open(self, vault: str) -> bool:
        return bool(self._trips(vault))

    def open_until(self, vault: str) -> int | None:
        """The chain timestamp from which the breaker closes if no reason is seen again."""
        trips = self._trips(vault)
        return max(t.seen_at for t in trips) + self.bounds.cooldown_s if trips else None

    def describe(self, vault: str) -> str:
        """One line for `keeper status`."""
        until = self.open_until(vault)
        if until is None:
            return "breaker closed"
        return (
            f"breaker OPEN (risk-increasing actions held back) until t={until} unless seen "
            "again: " + "; ".join(self.reasons(vault))
        )

    def gate(self, vault: str, actions: Sequence[Action]) -> list[Action]:
        """`actions` if the vault's breaker is closed; else only the risk-reducing ones
        (`keeper.policy.risk_reducing_only`), each held-back action logged."""
        if not self.is_open(vault):
            return list(actions)
        kept, held = risk_reducing_only(actions)
        block = self._seen[vault][0]
        for a in held:
            logger.warning(
                "vault %s block %d: breaker open, %s (%s) held back — %s",
                vault,
                block,
                a.kind.value,
                a.urgency.name,
                a.reason,
            )
        return kept

    def _log_transition(self, vault: str) -> None:
        trips = self._trips(vault)
        keys = frozenset(t.key for t in trips)
        before = self._open.get(vault, frozenset())
        block = self._seen[vault][0]
        if keys - before:
            logger.warning(
                "vault %s block %d: breaker OPEN until t=%d: %s",
                vault,
                block,
                max(t.seen_at for t in trips) + self.bounds.cooldown_s,
                "; ".join(t.reason for t in trips if t.key not in before),
            )
        elif before and not keys:
            logger.info(
                "vault %s block %d: breaker closed (no reason in the last %ds)",
                vault,
                block,
                self.bounds.cooldown_s,
            )
        self._open[vault] = keys


def _usd(wad: int) -> str:
    return f"{wad / WAD:,.2f}"


def _pct(change: int, base: int) -> str:
    return f"{change / base:+.1%}"


__all__ = ["BreakerBook", "BreakerBounds", "Trip"]
