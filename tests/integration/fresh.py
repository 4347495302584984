"""A fresh, empty RiskVault on the seeded market's venues, for tests that need a vault with no
deposits yet (donation attacks), a vault on another asset token (reentrancy), or one whose only
positions are the test's own (hand-worked loss budgets)."""

from __future__ import annotations

from typing import Any

from web3 import Web3
from web3.contract import Contract

from keeper.chain.abi import load_artifact
from keeper.devnet.deploy import MAX_PRICE_AGE_S, VAULT_SPECS, Deployment
from tests.integration.conftest import send


def deploy_contract(w3: Web3, artifact: str, args: tuple[Any, ...], sender: str) -> Contract:
    art = load_artifact(artifact)
    factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    tx = factory.constructor(*args).transact({"from": sender})
    receipt = w3.eth.wait_for_transaction_receipt(tx)
    assert receipt["status"] == 1
    address = receipt["contractAddress"]
    assert address is not None
    return w3.eth.contract(address=address, abi=art.abi, decode_tuples=True)


def fresh_vault(
    w3: Web3,
    deployment: Deployment,
    asset: str,
    *,
    mandate: tuple[int, ...] | None = None,
    assets: bool = False,
    keeper: str | None = None,
) -> Contract:
    """An empty RiskVault on `asset` (USDC or a test token), the seeded venues and the first
    seeded vault's mandate. `assets`: list WETH and WBTC with their feeds; `keeper`: grant it."""
    c, admin = deployment.contracts, deployment.accounts["admin"]
    vault = deploy_contract(
        w3,
        "RiskVault",
        (
            asset,
            "RiskVault Fresh",
            "rvNEW",
            c["LendingPool"],
            c["SwapVenue"],
            c["PerpMarket"],
            c["OptionMarket"],
            mandate or VAULT_SPECS[0].mandate,
            MAX_PRICE_AGE_S,
            admin,
        ),
        admin,
    )
    if assets:
        for token, u in (("WETH", "ETH"), ("WBTC", "BTC")):
            send(vault.functions.addAsset(c[token], c[f"{u}_USD"], c[f"{u}_IV"]), admin)
    if keeper is not None:
        send(vault.functions.grantRole(vault.functions.KEEPER_ROLE().call(), keeper), admin)
    return vault
