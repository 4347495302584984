"""The local anvil keeps the old states it persists in a directory of its own, removed when it
stops: left to anvil's default (~/.foundry/anvil/tmp) they were never removed, and a day of
simulations filled a 252 GB disk (one `bleed60` path wrote 4.8 GB)."""

from __future__ import annotations

from pathlib import Path

import pytest

from keeper.devnet.anvil import Anvil, anvil_path

pytestmark = pytest.mark.skipif(anvil_path() is None, reason="needs anvil (make install)")


def test_anvil_persists_old_states_in_its_own_directory_and_removes_it() -> None:
    home_cache = Path.home() / ".foundry" / "anvil" / "tmp"
    before = set(home_cache.iterdir()) if home_cache.exists() else set()
    node = Anvil()
    w3 = node.start()
    try:
        cache = node.cache_dir
        assert cache is not None and cache.is_dir()
        sender, receiver = w3.eth.accounts[:2]
        for _ in range(1_500):  # enough blocks for anvil to move states out of memory
            w3.eth.send_transaction({"from": sender, "to": receiver, "value": 1})
        assert any(cache.iterdir()), "anvil persisted no state to its --cache-path"
    finally:
        node.stop()
    assert not cache.exists()
    after = set(home_cache.iterdir()) if home_cache.exists() else set()
    assert after - before == set()


def test_an_anvil_that_exits_at_start_leaves_no_cache_directory() -> None:
    from keeper.errors import ChainReadError

    node = Anvil("--no-such-flag")
    with pytest.raises(ChainReadError, match="anvil exited at start"):
        node.start()
    assert node.cache_dir is None
