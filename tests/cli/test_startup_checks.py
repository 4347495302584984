"""The start-up checks (keeper/startup.py) in process, on a live anvil: what the command-line
tables cannot see — the role constant is the vault's own, the role read is one batched call,
the balance check's exact boundary — and `keeper run`'s logging masking every configured RPC
URL from its first record."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.types import RPCEndpoint

from keeper.chain.abi import load_artifact
from keeper.chain.reader import SnapshotReader
from keeper.cli import _configure_keeper_logging
from keeper.config import load_settings
from keeper.errors import ConfigError
from keeper.masking import mask_text
from keeper.startup import KEEPER_ROLE, check_gas_balance, check_keeper_role
from tests.cli.conftest import HALF_KEEPER_KEY, STRANGER_KEY, Node, address_of

pytestmark = pytest.mark.anvil


def sources(node: Node) -> dict[ChecksumAddress, str]:
    return {vault: "KEEPER_VAULTS" for vault in node.vaults}


def test_keeper_role_is_the_vaults_own_constant(node: Node) -> None:
    abi = load_artifact("RiskVault").abi
    for address in node.vaults:
        vault = node.w3.eth.contract(address=address, abi=abi)
        assert vault.functions.KEEPER_ROLE().call() == KEEPER_ROLE


def test_role_check_reads_every_vault_in_one_call(node: Node) -> None:
    reader = SnapshotReader(node.w3)
    block = node.w3.eth.block_number
    keeper = node.deployment.accounts["keeper"]
    found = check_keeper_role(reader, keeper, sources(node), block, key_source="KEEPER_PRIVATE_KEY")
    assert found.found == f"{keeper} holds KEEPER_ROLE on all 2"
    assert reader.counter.eth_calls == 1  # both vaults, one multicall


@pytest.mark.parametrize(
    ("key", "named"),
    [(STRANGER_KEY, (0, 1)), (HALF_KEEPER_KEY, (1,))],
    ids=["no-role", "role-on-the-first-vault-only"],
)
def test_role_check_names_exactly_the_vaults_without_the_role(
    node: Node, key: str, named: tuple[int, ...]
) -> None:
    reader = SnapshotReader(node.w3)
    with pytest.raises(ConfigError) as info:
        check_keeper_role(reader, address_of(key), sources(node), node.w3.eth.block_number,
                          key_source="KEEPER_PRIVATE_KEY")
    line = str(info.value)
    assert line.startswith(f"KEEPER_PRIVATE_KEY: signer {address_of(key)} lacks the keeper role")
    for index, vault in enumerate(node.vaults):
        assert (f"{vault} (KEEPER_VAULTS)" in line) == (index in named), line
    assert reader.counter.eth_calls == 1


def set_balance(w3: Web3, address: str, wei: int) -> int:
    """Give `address` exactly `wei` and mine a block; returns that block's number."""
    w3.provider.make_request(RPCEndpoint("anvil_setBalance"), [address, hex(wei)])
    w3.provider.make_request(RPCEndpoint("evm_mine"), [])
    return int(w3.eth.block_number)


def test_gas_balance_boundary_is_exact_in_wei(node: Node) -> None:
    signer = Web3.to_checksum_address("0x" + "ab" * 20)
    block = set_balance(node.w3, signer, 1_234)
    at_minimum = check_gas_balance(node.w3, signer, 1_234, block, key_source="KEEPER_PRIVATE_KEY")
    assert at_minimum.found == "0.000000000000001234 ETH (minimum 0.000000000000001234 ETH)"
    with pytest.raises(ConfigError) as info:
        check_gas_balance(node.w3, signer, 1_235, block, key_source="KEEPER_PRIVATE_KEY")
    assert str(info.value) == (
        f"KEEPER_MIN_GAS_BALANCE_ETH: signer {signer} (KEEPER_PRIVATE_KEY) holds "
        "0.000000000000001234 ETH, less than the 0.000000000000001235 ETH it needs for gas; "
        "fund it (or lower KEEPER_MIN_GAS_BALANCE_ETH)"
    )


def test_gas_balance_is_read_at_the_given_block(node: Node) -> None:
    """The checks read one block: the balance of that block, not of a later one."""
    signer = Web3.to_checksum_address("0x" + "cd" * 20)
    funded = set_balance(node.w3, signer, 10**18)
    node.w3.provider.make_request(RPCEndpoint("evm_mine"), [])  # anvil edits the latest state
    set_balance(node.w3, signer, 0)
    assert node.w3.eth.get_balance(signer) == 0
    found = check_gas_balance(node.w3, signer, 10**18, funded, key_source="KEEPER_PRIVATE_KEY")
    assert found.found.startswith("1 ETH")


def test_a_zero_minimum_turns_the_balance_check_off(node: Node) -> None:
    signer = Web3.to_checksum_address("0x" + "ef" * 20)
    block = set_balance(node.w3, signer, 0)
    found = check_gas_balance(node.w3, signer, 0, block, key_source="KEEPER_PRIVATE_KEY")
    assert found.found == "0 ETH (no minimum (KEEPER_MIN_GAS_BALANCE_ETH=0))"


# ---------------------------------------------------------------- run's logging


@pytest.fixture()
def root_logging() -> Iterator[None]:
    """configure_logging replaces the root logger's handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_run_logging_masks_every_configured_rpc_url_from_the_first_record(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # Path secrets of 8-15 characters: the generic URL rule keeps them (they look like path
    # words); only registering the configured URLs hides them. Unique per run: no other test
    # can have registered them already.
    primary_secret, fallback_secret = (f"p{uuid.uuid4().hex[:10]}", f"f{uuid.uuid4().hex[:10]}")
    primary = f"http://node.example:8545/rpc/{primary_secret}"
    fallback = f"https://backup.example/rpc/{fallback_secret}"
    assert primary_secret in mask_text(primary) and fallback_secret in mask_text(fallback)
    settings = load_settings(
        {
            "KEEPER_RPC_URL": primary,
            "KEEPER_RPC_FALLBACK_URLS": fallback,
            "KEEPER_DRY_RUN": "true",
            "KEEPER_VAULTS": "0x84eA74d481Ee0A5332c457a4d796187F6Ba67fEB",
        },
        env_file=None,
    )
    _configure_keeper_logging(settings, json_lines=False)
    capsys.readouterr()
    logging.getLogger("keeper.test").warning("endpoints %s and %s", primary, fallback)
    err = capsys.readouterr().err
    assert "endpoints http://node.example:8545" in err and " and https://backup.example" in err
    assert primary_secret not in err and fallback_secret not in err
