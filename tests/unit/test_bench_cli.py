"""Pure helpers of `scripts/bench.py cycle` and the fleet deployer (no chain)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import rlp
from eth_utils import keccak, to_checksum_address

from keeper.chain.multicall import MULTICALL3_ADDRESS, MULTICALL3_DEPLOYER
from keeper.devnet.fleet import create_address

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_script", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_script"] = module
    spec.loader.exec_module(module)
    return module


def test_parse_sizes_sorts_and_dedupes(bench: ModuleType) -> None:
    assert bench.parse_sizes("500, 1,10,10,100") == (1, 10, 100, 500)


@pytest.mark.parametrize("text", ["", "0", "1,-5", "ten", "1,,x"])
def test_parse_sizes_refuses_bad_input(bench: ModuleType, text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        bench.parse_sizes(text)


def test_times_formats_ratios(bench: ModuleType) -> None:
    assert bench.times(300, 6) == "50.0x"
    assert bench.times(2.957, 0.0353) == "83.8x"
    assert bench.times(3.46, 0.0233) == "148x"
    assert bench.times(1, 3) == "0.3x"
    assert bench.times(5, 0) == "n/a"


def test_cycle_cli_defaults(bench: ModuleType) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    bench._add_cycle(sub)
    args = parser.parse_args(["cycle"])
    assert args.sizes == (1, 100, 1_000) and not args.quick and args.hedge_max is None
    args = parser.parse_args(["cycle", "--quick", "--sizes", "3,2"])
    assert args.quick and args.sizes == (2, 3)


def test_create_address_matches_multicall3_deployment() -> None:
    # Multicall3's canonical address is its keyless deployer's first contract (nonce 0).
    assert create_address(MULTICALL3_DEPLOYER, 0) == MULTICALL3_ADDRESS


def test_create_address_published_value() -> None:
    # The example usually quoted for CREATE addresses (nonce 0 of this sender).
    sender = "0x6ac7ea33f8831ea9dcc53393aaa88b25a785dbf0"
    assert create_address(sender, 0).lower() == "0xcd234a471b72ba2f1ccf0a70fcaba648a5eecd8d"


@pytest.mark.parametrize("nonce", [1, 0x7F, 0x80, 0xFF, 0x100, 12_345, 2**32])
def test_create_address_matches_rlp(nonce: int) -> None:
    sender = "0x6ac7ea33f8831ea9dcc53393aaa88b25a785dbf0"
    expected = to_checksum_address(keccak(rlp.encode([bytes.fromhex(sender[2:]), nonce]))[12:])
    assert create_address(sender, nonce) == expected
