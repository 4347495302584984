"""Helpers for local chains: time travel, mining, snapshots. One small class per backend,
because eth-tester and anvil name (and mean) these operations differently."""

from __future__ import annotations

from typing import Any, Protocol, cast

from web3 import Web3

from keeper.chain.tester import RevertingTesterProvider


class LocalChain(Protocol):
    w3: Web3

    def increase_time(self, seconds: int) -> None:
        """Move the chain clock forward and mine one block at the new time."""

    def mine(self, blocks: int = 1) -> None: ...

    def snapshot(self) -> object: ...

    def revert(self, snapshot_id: object) -> None: ...


class TesterChain:
    """The in-process chain: `w3.testing` drives py-evm directly."""

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3
        # `w3.testing` is attached at run time for the tester provider; web3's stubs omit it.
        self._testing: Any = cast(Any, w3).testing

    def increase_time(self, seconds: int) -> None:
        now = int(self.w3.eth.get_block("latest")["timestamp"])
        self._testing.timeTravel(now + seconds)
        self._testing.mine(1)

    def mine(self, blocks: int = 1) -> None:
        self._testing.mine(blocks)

    def snapshot(self) -> object:
        return self._testing.snapshot()

    def revert(self, snapshot_id: object) -> None:
        self._testing.revert(snapshot_id)


class AnvilChain:
    """anvil: `evm_*`/`anvil_*` RPCs (`w3.testing.mine(n)` means a timestamp there)."""

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3

    def increase_time(self, seconds: int) -> None:
        self.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        self.mine(1)

    def mine(self, blocks: int = 1) -> None:
        self.w3.provider.make_request("anvil_mine", [hex(blocks)])  # type: ignore[arg-type]

    def snapshot(self) -> object:
        return self.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]

    def revert(self, snapshot_id: object) -> None:
        self.w3.provider.make_request("evm_revert", [snapshot_id])  # type: ignore[arg-type]


def local_chain(w3: Web3) -> LocalChain:
    """The helper that fits `w3`'s backend."""
    if isinstance(w3.provider, RevertingTesterProvider):
        return TesterChain(w3)
    return AnvilChain(w3)
