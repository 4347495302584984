"""The liquidator bot: acts on every liquidatable lending and perp position of the vaults, as
real liquidators do.

Lending: while the pool's health factor of a vault is below 1.0, repay the close factor of its
debt (the pool's `CLOSE_FACTOR`) against the collateral with the best liquidation bonus it still
holds (the pool scales the repayment down when that collateral runs out), and again, until the
vault is healthy or has nothing left to seize. Perps: `liquidate` the account when its margin
health is below 1.0 (the market closes every position at the oracle and pays the caller its
reward out of the remaining margin).

Losses are read from the venues' own `Liquidated` events: the lending loss is the seized
collateral at the oracle price less the debt repaid (the bonus), the perp loss the reward.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from eth_typing import ChecksumAddress
from web3 import Web3
from web3.logs import DISCARD

from keeper.chain.abi import load_artifact
from keeper.chain.snapshot import VaultSnapshot
from keeper.devnet.deploy import FEED_DECIMALS, USDC_DECIMALS, Deployment
from keeper.sim.driver import GAS_SMALL, TxPump
from keeper.sim.records import LiquidationRecord

logger = logging.getLogger(__name__)

WAD = 10**18
USDC_UNIT = 10**USDC_DECIMALS
#: The liquidator's working capital (USDC units): enough to repay any vault's debt many times.
LIQUIDATOR_USDC = 10**12 * USDC_UNIT
#: Gas limits (about twice the measured use).
GAS_LIQUIDATE = 900_000
GAS_PERP_LIQUIDATE = 1_500_000
#: A liquidation loop that has not restored health after this many calls has stopped making
#: progress (each call repays half the remaining debt).
MAX_CALLS_PER_VAULT = 40


@dataclass(frozen=True, slots=True)
class CollateralInfo:
    token: ChecksumAddress
    decimals: int
    feed: ChecksumAddress
    bonus: int  # WAD


class Liquidator:
    """Liquidates the deployment's vaults from the `liquidator` account."""

    def __init__(self, w3: Web3, dep: Deployment, pump: TxPump) -> None:
        self.w3, self.dep, self.pump = w3, dep, pump
        self.account = dep.accounts["liquidator"]
        self.pool = w3.eth.contract(address=dep.contracts["LendingPool"],
                                    abi=load_artifact("LendingPool").abi)
        self.perps = w3.eth.contract(address=dep.contracts["PerpMarket"],
                                     abi=load_artifact("PerpMarket").abi)
        self._feed = w3.eth.contract(abi=load_artifact("PriceFeed").abi)
        self.close_factor = int(self.pool.functions.CLOSE_FACTOR().call())
        self.collateral: list[CollateralInfo] = []
        n = int(self.pool.functions.collateralAssetsLength().call())
        for i in range(n):
            token = Web3.to_checksum_address(self.pool.functions.collateralAssets(i).call())
            cfg = self.pool.functions.collateralConfig(token).call()
            feed, _feed_dec, token_dec, _ltv, _lt, bonus, enabled = cfg
            if enabled:
                self.collateral.append(CollateralInfo(token, int(token_dec),
                                                      Web3.to_checksum_address(feed), int(bonus)))
        # Best bonus first: that is the collateral a profit-seeking liquidator takes.
        self.collateral.sort(key=lambda c: -c.bonus)

    def fund(self) -> None:
        """Mint the liquidator's USDC (the admin owns the test tokens) and approve the pool."""
        usdc = self.w3.eth.contract(address=self.dep.contracts["USDC"],
                                    abi=load_artifact("TestToken").abi)
        self.pump.send(self.dep.accounts["admin"], usdc.address,
                       usdc.encode_abi("mint", [self.account, LIQUIDATOR_USDC]), GAS_SMALL,
                       "mint liquidator USDC")
        self.pump.send(self.account, usdc.address,
                       usdc.encode_abi("approve", [self.pool.address, 2**256 - 1]), GAS_SMALL,
                       "liquidator approve")

    def act(self, step: int, snaps: dict[ChecksumAddress, VaultSnapshot]
            ) -> dict[ChecksumAddress, list[LiquidationRecord]]:
        """Liquidate every vault in `snaps` that is liquidatable now."""
        out: dict[ChecksumAddress, list[LiquidationRecord]] = {}
        for vault, snap in snaps.items():
            records: list[LiquidationRecord] = []
            if lending_liquidatable(snap):
                records += self._lending(step, vault)
            if perp_liquidatable(snap):
                records += self._perp(step, vault, snap)
            if records:
                out[vault] = records
        return out

    # ------------------------------------------------------------------ lending
    def _lending(self, step: int, vault: ChecksumAddress) -> list[LiquidationRecord]:
        records = []
        for _ in range(MAX_CALLS_PER_VAULT):
            if int(self.pool.functions.healthFactor(vault).call()) >= WAD:
                break
            debt = int(self.pool.functions.debtOf(vault).call())
            target = next((c for c in self.collateral
                           if int(self.pool.functions.collateralOf(vault, c.token).call()) > 0),
                          None)
            repay = debt * self.close_factor // WAD
            if target is None or repay == 0:
                break
            data = self.pool.encode_abi("liquidate", [vault, target.token, repay])
            tx = self.pump.send(self.account, self.pool.address, data, GAS_LIQUIDATE,
                                f"liquidate {vault}")
            records.append(self._lending_record(step, tx, target))
        return records

    def _lending_record(self, step: int, tx: bytes, c: CollateralInfo) -> LiquidationRecord:
        receipt = self.w3.eth.get_transaction_receipt(tx)  # type: ignore[arg-type]
        (event,) = self.pool.events.Liquidated().process_receipt(receipt, errors=DISCARD)
        args = event["args"]
        price = int(self.w3.eth.contract(address=c.feed, abi=self._feed.abi)
                    .functions.latestAnswer().call(block_identifier=receipt["blockNumber"]))
        seized_usd = int(args["seized"]) / 10**c.decimals * price / 10**FEED_DECIMALS
        repaid_usd = int(args["repaid"]) / USDC_UNIT
        return LiquidationRecord(step, int(receipt["blockNumber"]), "lending", repaid_usd,
                                 seized_usd - repaid_usd)

    # ------------------------------------------------------------------ perps
    def _perp(self, step: int, vault: ChecksumAddress, snap: VaultSnapshot
              ) -> list[LiquidationRecord]:
        if int(self.perps.functions.marginHealth(vault).call()) >= WAD:
            return []
        notional = sum(abs(a.perp_size) * a.price // WAD for a in snap.assets) / WAD
        data = self.perps.encode_abi("liquidate", [vault])
        tx = self.pump.send(self.account, self.perps.address, data, GAS_PERP_LIQUIDATE,
                            f"liquidate perps of {vault}")
        receipt = self.w3.eth.get_transaction_receipt(tx)
        (event,) = self.perps.events.Liquidated().process_receipt(receipt, errors=DISCARD)
        reward = int(event["args"]["reward"]) / USDC_UNIT
        return [LiquidationRecord(step, int(receipt["blockNumber"]), "perp", notional, reward)]


def lending_liquidatable(snap: VaultSnapshot) -> bool:
    """The pool would accept a liquidation of this vault (debt at health below 1.0)."""
    return snap.debt > 0 and snap.lending_health < WAD


def perp_liquidatable(snap: VaultSnapshot) -> bool:
    """The perp market would accept a liquidation (open positions at margin health below 1.0)."""
    return snap.perp_health < WAD and any(a.perp_size != 0 for a in snap.assets)


def liquidatable(snap: VaultSnapshot) -> bool:
    return lending_liquidatable(snap) or perp_liquidatable(snap)


__all__ = ["Liquidator", "lending_liquidatable", "liquidatable", "perp_liquidatable"]
