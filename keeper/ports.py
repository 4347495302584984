"""What the cycle needs from its collaborators, as small Protocols: the service is typed
against these, so a test, a simulator or another store (issue: PostgreSQL) can stand in for
the Multicall3 reader, the feed-round history or the SQLite journal without subclassing them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from eth_typing import ChecksumAddress

from keeper.chain.snapshot import VaultSnapshot
from keeper.journal_schema import IntentRecord


class CallCounter(Protocol):
    eth_calls: int


class SnapshotSource(Protocol):
    """Reads vault snapshots and batched calls at a given block (`SnapshotReader`)."""

    @property
    def counter(self) -> CallCounter: ...

    def read(
        self, vaults: Sequence[ChecksumAddress], block: int
    ) -> dict[ChecksumAddress, VaultSnapshot]: ...

    def aggregate(
        self, calls: Sequence[tuple[str, bytes]], block: int
    ) -> list[tuple[bool, bytes]]: ...

    def call_each(
        self,
        target_fn: Callable[[str], tuple[str, bytes]],
        keys: Sequence[str],
        types: list[str],
        block: int,
    ) -> dict[str, tuple[Any, ...] | None]: ...

    def verify_vaults(self, vaults: Sequence[ChecksumAddress], setting: str = ...) -> None: ...

    def previous_rounds(
        self, snaps: Iterable[VaultSnapshot], block: int
    ) -> dict[ChecksumAddress, tuple[int, int]]: ...


class PriceHistorySource(Protocol):
    """Each feed's rounds so far, extended per tick (`PriceHistoryBook`)."""

    def update(self, latest: dict[ChecksumAddress, tuple[int, int]], block: int) -> None: ...

    def series(self, feed: ChecksumAddress) -> tuple[list[float], list[float]]: ...


class JournalPort(Protocol):
    """The journal writes and reads of the cycle (`Journal`)."""

    def start_tick(self, block: int, chain_id: int) -> int: ...

    def finish_tick(self, tick_id: int, status: str, error: str | None = None) -> None: ...

    def record_decision(
        self,
        tick_id: int,
        vault: str,
        kind: str,
        urgency: str,
        expected_benefit_usd: float,
        expected_cost_usd: float,
        reason: str,
        inputs: Mapping[str, object],
    ) -> int: ...

    def record_vault_fault(
        self, vault: str, consecutive_failures: int, halted: bool, last_error: str | None
    ) -> None: ...

    def clear_halts(self) -> None: ...

    def unfinished_intents(self) -> list[IntentRecord]: ...

    def close(self) -> None: ...


__all__ = ["CallCounter", "JournalPort", "PriceHistorySource", "SnapshotSource"]
