#!/usr/bin/env python3
"""Measure the gas of the vault's keeper actions and of `snapshot()` as an eth_call.

    scripts/gas.py [--rpc-url URL]      # default: the in-process chain

Rows: rebalance (two spot legs and a perp leg), hedge (one perp leg), deleverage (one sell leg
and a perp reduction), snapshot() (estimateGas of the view). Reference: DeFi Saver budgets
1.0–1.33 M gas for its repay/boost recipes; the target here is well under half of that.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keeper.chain.abi import load_artifact  # noqa: E402
from keeper.chain.connect import connect  # noqa: E402
from keeper.devnet.deploy import FEED_DECIMALS, deploy_everything  # noqa: E402
from keeper.devnet.tester import in_process_web3  # noqa: E402
from keeper.report import table  # noqa: E402

WAD = 10**18
USDC = 10**6
#: DeFi Saver's budget for a repay/boost recipe (lower end), the reference point.
REFERENCE_GAS = 1_000_000


def measure(rpc_url: str | None) -> list[tuple[str, int]]:
    w3 = connect(rpc_url) if rpc_url else in_process_web3()
    dep = deploy_everything(w3)
    keeper = dep.accounts["keeper"]
    vault = w3.eth.contract(address=dep.vaults[0], abi=load_artifact("RiskVault").abi)
    venue = w3.eth.contract(address=dep.contracts["SwapVenue"], abi=load_artifact("SwapVenue").abi)
    feed_abi = load_artifact("PriceFeed").abi
    usdc, weth, wbtc = dep.contracts["USDC"], dep.contracts["WETH"], dep.contracts["WBTC"]
    eth_price = (
        w3.eth.contract(address=dep.contracts["ETH_USD"], abi=feed_abi)
        .functions.latestAnswer()
        .call()
    )
    eth_wad = eth_price * 10 ** (18 - FEED_DECIMALS)

    def deadline() -> int:
        return int(w3.eth.get_block("latest")["timestamp"]) + 600

    def min_out(token_in: str, token_out: str, amount: int) -> int:
        out, _impact = venue.functions.quote(token_in, token_out, amount).call()
        return out * 999 // 1000

    def gas_of(fn: object) -> int:
        tx = fn.transact({"from": keeper})  # type: ignore[attr-defined]
        receipt = w3.eth.wait_for_transaction_receipt(tx)
        if receipt["status"] != 1:
            raise SystemExit("gas: a measured action reverted")
        return int(receipt["gasUsed"])

    rows = []
    swaps = [
        (weth, True, 20_000 * USDC, min_out(usdc, weth, 20_000 * USDC)),
        (wbtc, True, 20_000 * USDC, min_out(usdc, wbtc, 20_000 * USDC)),
    ]
    perp = [(weth, -5 * WAD, eth_wad * 995 // 1000)]
    rows.append(
        (
            "rebalance (2 spot legs + 1 perp)",
            gas_of(vault.functions.rebalance(swaps, perp, 0, deadline())),
        )
    )
    rows.append(
        (
            "hedge (1 perp leg)",
            gas_of(
                vault.functions.hedge([(weth, 10 * WAD, eth_wad * 1005 // 1000)], 0, deadline())
            ),
        )
    )
    sells = [(weth, False, 5 * WAD, min_out(weth, usdc, 5 * WAD))]
    reduce = [(weth, 20 * WAD, eth_wad * 1005 // 1000)]
    rows.append(
        (
            "deleverage (1 sell + 1 perp reduce)",
            gas_of(vault.functions.deleverage(sells, reduce, 0, deadline())),
        )
    )
    data = vault.encode_abi("snapshot", [])
    rows.append(
        ("snapshot() as eth_call", int(w3.eth.estimate_gas({"to": vault.address, "data": data})))
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rpc-url", help="JSON-RPC endpoint (default: an in-process chain)")
    args = parser.parse_args()
    rows = measure(args.rpc_url)
    print(
        table(
            ["operation", "gas", "vs 1.0M reference"],
            [[name, f"{gas:,}", f"{gas / REFERENCE_GAS:.0%}"] for name, gas in rows],
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
