"""Helpers for local chains: time travel, mining, snapshots, base-fee control. One small class per
backend, because eth-tester and anvil name (and mean) these operations differently."""

from __future__ import annotations

from typing import Any, Protocol, cast

from web3 import Web3

from keeper.devnet.tester import RevertingTesterProvider, set_next_base_fee


class LocalChain(Protocol):
    w3: Web3
    #: Whether transactions can wait, unmined, for an explicit `mine` (eth-tester checks each
    #: nonce against the mined state, so one sender cannot queue two).
    queues_transactions: bool

    def increase_time(self, seconds: int) -> None:
        """Move the chain clock forward and mine one block at the new time."""

    def mine_at(self, timestamp: int) -> None:
        """Mine one block with exactly `timestamp` (later than the head's), holding whatever
        transactions are waiting (none where they cannot wait)."""

    def set_next_base_fee(self, wei: int) -> None:
        """The next block's base fee (later blocks follow EIP-1559 from it)."""

    def set_automine(self, on: bool) -> None:
        """Mine each transaction on arrival (on) or only when asked (off)."""

    def mine(self, blocks: int = 1) -> None: ...

    def snapshot(self) -> object: ...

    def revert(self, snapshot_id: object) -> None: ...


class TesterChain:
    """The in-process chain: `w3.testing` drives py-evm directly. Blocks after a time travel are
    stamped parent + 1 s while the chain is ahead of the wall clock (see `in_process_web3`)."""

    queues_transactions = False

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3
        # `w3.testing` is attached at run time for the tester provider; web3's stubs omit it.
        self._testing: Any = cast(Any, w3).testing

    def increase_time(self, seconds: int) -> None:
        now = int(self.w3.eth.get_block("latest")["timestamp"])
        self._testing.timeTravel(now + seconds)
        self._testing.mine(1)

    def mine_at(self, timestamp: int) -> None:
        self._testing.timeTravel(timestamp)
        self._testing.mine(1)

    def set_next_base_fee(self, wei: int) -> None:
        set_next_base_fee(self.w3, wei)

    def set_automine(self, on: bool) -> None:
        tester: Any = cast(Any, self.w3.provider).ethereum_tester
        if on:
            tester.enable_auto_mine_transactions()
        else:
            tester.disable_auto_mine_transactions()

    def mine(self, blocks: int = 1) -> None:
        self._testing.mine(blocks)

    def snapshot(self) -> object:
        return self._testing.snapshot()

    def revert(self, snapshot_id: object) -> None:
        self._testing.revert(snapshot_id)


class AnvilChain:
    """anvil: `evm_*`/`anvil_*` RPCs (`w3.testing.mine(n)` means a timestamp there)."""

    queues_transactions = True

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3

    def _rpc(self, method: str, *params: object) -> Any:
        return self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]

    def increase_time(self, seconds: int) -> None:
        self._rpc("evm_increaseTime", seconds)
        self.mine(1)

    def mine_at(self, timestamp: int) -> None:
        self._rpc("evm_mine", timestamp)  # anvil: one request for "at this time, mine"

    def set_next_base_fee(self, wei: int) -> None:
        self._rpc("anvil_setNextBlockBaseFeePerGas", hex(wei))

    def set_automine(self, on: bool) -> None:
        self._rpc("evm_setAutomine", on)

    def mine(self, blocks: int = 1) -> None:
        self._rpc("anvil_mine", hex(blocks))

    def snapshot(self) -> object:
        return self._rpc("evm_snapshot")["result"]

    def revert(self, snapshot_id: object) -> None:
        self._rpc("evm_revert", snapshot_id)


def local_chain(w3: Web3) -> LocalChain:
    """The helper that fits `w3`'s backend."""
    if isinstance(w3.provider, RevertingTesterProvider):
        return TesterChain(w3)
    return AnvilChain(w3)
