"""The local-chain helpers these tests stand on (keeper.devnet.local / keeper.devnet.tester):
time travel, snapshots, and reverts that carry decodable custom-error data on every path."""

from __future__ import annotations

import pytest
from web3.exceptions import ContractLogicError

from keeper.chain.errors import decode_revert
from keeper.devnet.local import local_chain
from tests.integration.conftest import revert_data


def test_snapshot_revert_restores_block_and_time(w3, chain, market):
    block, ts = w3.eth.block_number, chain.now()
    sid = chain.snapshot()
    chain.increase_time(10_000)
    market.set_price("ETH_USD", 1)
    assert chain.now() >= ts + 10_000
    chain.revert(sid)
    assert (w3.eth.block_number, chain.now()) == (block, ts)
    assert market.answer("ETH_USD") == 3_000 * 10**8


def test_increase_time_moves_the_clock_exactly(chain):
    ts = chain.now()
    chain.increase_time(1_234)
    assert chain.now() == ts + 1_234


def test_local_chain_increase_time_works_on_web3_8(w3, chain):
    ts = chain.now()
    local_chain(w3).increase_time(10)
    assert chain.now() == ts + 10


def test_chain_runs_ahead_of_the_wall_clock(chain):
    """Otherwise eth-tester would stamp blocks with the wall clock and predictions would drift."""
    import time

    assert chain.now() > time.time() + 600


def test_estimate_gas_reverts_carry_custom_error_data(vault, keeper):
    with pytest.raises(ContractLogicError) as info:
        vault.functions.hedge([], 1, 0).estimate_gas({"from": keeper})
    assert decode_revert(info.value.data).name == "VaultDeadlinePassed"


def test_eth_call_reverts_carry_custom_error_data(vault, keeper):
    with pytest.raises(ContractLogicError) as info:
        vault.functions.hedge([], 1, 0).call({"from": keeper})
    decoded = decode_revert(info.value.data)
    assert decoded is not None and decoded.name == "VaultDeadlinePassed" and decoded.args[0] == 0
    assert decode_revert(revert_data(info.value)) == decoded
