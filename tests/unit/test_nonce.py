"""The one nonce owner: local allocation, release and gaps, resync only forward, threads."""

from __future__ import annotations

import threading

import pytest

from keeper.devnet.tester import in_process_web3
from keeper.errors import ChainReadError
from keeper.tx.nonce import NonceError, NonceManager, is_nonce_too_low

ADDRESS = "0x000000000000000000000000000000000000dEaD"


class FakeChain:
    """A transaction count that tests move by hand; counts the reads."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return self.count


def synced(count: int = 10) -> tuple[NonceManager, FakeChain]:
    chain = FakeChain(count)
    manager = NonceManager(ADDRESS, chain)
    assert manager.sync() == count
    return manager, chain


def test_sequential_allocation_reads_the_chain_once() -> None:
    manager, chain = synced(10)
    assert [manager.allocate() for _ in range(5)] == [10, 11, 12, 13, 14]
    assert chain.reads == 1
    assert manager.next_nonce == 15
    assert manager.in_flight == {10, 11, 12, 13, 14}


def test_allocate_before_sync_fails() -> None:
    with pytest.raises(NonceError, match="before sync"):
        NonceManager(ADDRESS, FakeChain(0)).allocate()


def test_release_of_the_latest_gives_it_back() -> None:
    manager, _ = synced(10)
    assert manager.allocate() == 10
    assert manager.release(10)
    assert manager.allocate() == 10
    assert manager.next_nonce == 11


def test_release_below_the_top_is_a_gap_refilled_first() -> None:
    manager, _ = synced(10)
    assert [manager.allocate() for _ in range(3)] == [10, 11, 12]
    assert manager.release(11)
    assert manager.gaps == {11}
    assert manager.next_nonce == 13
    assert manager.allocate() == 11  # the hole is filled before anything new
    assert manager.allocate() == 13


def test_releasing_the_top_collapses_gaps_below_it() -> None:
    manager, _ = synced(10)
    assert [manager.allocate() for _ in range(4)] == [10, 11, 12, 13]
    manager.release(11)
    manager.release(12)
    assert manager.gaps == {11, 12}
    manager.release(13)  # 11..13 are now all free at the top
    assert manager.gaps == frozenset()
    assert manager.next_nonce == 11
    assert manager.allocate() == 11


def test_release_of_a_nonce_not_in_flight_fails() -> None:
    manager, _ = synced(10)
    with pytest.raises(NonceError):
        manager.release(10)
    manager.allocate()
    manager.release(10)
    with pytest.raises(NonceError):
        manager.release(10)


def test_lagging_node_never_moves_the_nonce_backwards() -> None:
    manager, chain = synced(10)
    for _ in range(3):
        manager.allocate()  # 10, 11, 12 broadcast
    chain.count = 10  # a load-balanced RPC answers from a node that has not seen them
    assert manager.resync_on_evidence("receipt timeout") == 13
    assert manager.allocate() == 13
    chain.count = 3  # even an absurdly stale answer
    assert manager.sync() == 14  # a second sync is a resync, never a rewind
    assert chain.reads == 3


def test_nonce_too_low_jumps_forward_to_the_chain() -> None:
    manager, chain = synced(10)
    assert [manager.allocate() for _ in range(3)] == [10, 11, 12]
    manager.release(11)  # gap at 11
    chain.count = 20  # another sender used this key up to 19
    assert manager.resync_on_evidence("nonce too low: next nonce 20, tx nonce 13") == 20
    assert manager.gaps == frozenset()  # 11 is used on chain: not reusable
    assert manager.allocate() == 20
    assert not manager.release(12)  # consumed on chain: cannot be handed out again
    assert manager.allocate() == 21


def test_confirm_moves_forward_on_a_mined_nonce() -> None:
    manager, chain = synced(10)
    assert manager.allocate() == 10
    manager.confirm(10)
    assert manager.in_flight == frozenset()
    manager.confirm(30)  # mined by a transaction of an earlier run
    assert manager.allocate() == 31
    assert chain.reads == 1


def test_fetch_errors_propagate_and_leave_state() -> None:
    manager, chain = synced(10)
    manager.allocate()

    def broken() -> int:
        raise ChainReadError("rpc down")

    manager._fetch = broken  # type: ignore[method-assign]  # the injected seam
    with pytest.raises(ChainReadError):
        manager.resync_on_evidence("dropped")
    assert manager.allocate() == 11


def test_bad_fetch_value_is_a_chain_read_error() -> None:
    with pytest.raises(ChainReadError):
        NonceManager(ADDRESS, lambda: -1).sync()


def test_threads_allocate_unique_contiguous_nonces() -> None:
    manager, chain = synced(100)
    per_thread, threads = 250, 16
    results: list[list[int]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads)

    def work(slot: int) -> None:
        barrier.wait()
        for _ in range(per_thread):
            results[slot].append(manager.allocate())

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    every = [n for r in results for n in r]
    assert sorted(every) == list(range(100, 100 + per_thread * threads))
    assert all(r == sorted(r) for r in results)  # each thread sees increasing nonces
    assert chain.reads == 1


@pytest.mark.parametrize(
    "message, expected",
    [
        ("nonce too low: next nonce 5, tx nonce 4", True),  # geth / anvil
        ("Transaction nonce is too low. Try incrementing the nonce.", True),
        ("OldNonce, Current nonce: 5, nonce of rejected tx: 4", True),  # nethermind
        ("NONCE_TOO_LOW", True),  # besu
        ("replacement transaction underpriced", False),
        ("insufficient funds for gas * price + value", False),
    ],
)
def test_is_nonce_too_low(message: str, expected: bool) -> None:
    assert is_nonce_too_low(message) is expected


def test_for_account_on_the_in_process_chain() -> None:
    w3 = in_process_web3()
    sender, receiver = w3.eth.accounts[:2]
    manager = NonceManager.for_account(w3, sender)
    assert manager.sync() == 0
    w3.eth.send_transaction({"from": sender, "to": receiver, "value": 1, "nonce": 0})
    w3.eth.send_transaction({"from": sender, "to": receiver, "value": 1, "nonce": 1})
    assert manager.allocate() == 0  # no re-read: the evidence has not arrived yet
    assert manager.resync_on_evidence("nonce too low") == 2
    assert manager.allocate() == 2


def test_a_reorged_top_nonce_is_handed_out_again() -> None:
    manager, _ = synced(10)
    for _ in range(3):
        manager.allocate()  # 10, 11, 12
    for n in (10, 11, 12):
        manager.confirm(n)  # mined ...
    manager.reopen(11)  # ... then 11 and 12 reorged away, in any order
    manager.reopen(12)
    assert manager.next_nonce == 11 and manager.gaps == frozenset()
    assert manager.allocate() == 11


def test_a_reorged_nonce_below_one_in_flight_is_a_gap_filled_first() -> None:
    manager, _ = synced(10)
    assert [manager.allocate() for _ in range(3)] == [10, 11, 12]
    manager.confirm(10)
    manager.confirm(11)
    manager.reopen(11)  # 12 is still out there, waiting for 11
    assert manager.gaps == frozenset({11}) and manager.next_nonce == 13
    assert manager.allocate() == 11
    assert manager.allocate() == 13
