"""The threshold policy's rule: amounts checked by recomputing health independently."""

from __future__ import annotations

import pytest

from keeper.risk.actions import ActionKind
from keeper.risk.types import AssetState, Mandate, PerpPosition, VaultState
from keeper.sim.threshold import boost_amount, repay_fraction, threshold_actions

MANDATE = Mandate(0.8, 2.5, 1.30, 0.30, 0.05, 0.6, 3.5, 0.5, 50)
FEE_BPS = 10.0
FILL = (FEE_BPS + 50) / 10_000


def state(eth_price: float, debt: float, perp_size: float = 0.0, margin: float = 0.0,
          pnl: float = 0.0) -> VaultState:
    assets = (
        AssetState("WETH", 200.0, 0.0, eth_price, 0, 0.85, 0.80, 0.6, 0),
        AssetState("WBTC", 10.0, 0.0, 60_000.0, 0, 0.80, 0.75, 0.5, 0),
    )
    perps = (PerpPosition("WETH", perp_size, eth_price, pnl, 0.05),) if perp_size else ()
    c = 200 * eth_price + 600_000
    return VaultState("0xv", 1, 0, max(c - debt + margin + pnl, 0.0), 0.0, debt, margin, assets,
                      perps)


def lending_health_after_sale(s: VaultState, f: float) -> float:
    c_lt = sum(a.collateral * a.price_usd * a.liquidation_threshold for a in s.assets)
    c = sum(a.collateral * a.price_usd for a in s.assets)
    return (1 - f) * c_lt / (s.debt_usdc - f * c * (1 - FILL))


def test_repay_fraction_reaches_the_target() -> None:
    s = state(3_000.0, 900_000.0)  # C = 1.2M, C_lt = 510k + 480k = 990k: health 1.10
    c = 1_200_000.0
    f = repay_fraction(c, 990_000.0, s.debt_usdc, 1.60, FILL)
    assert 0 < f < 1
    assert lending_health_after_sale(s, f) == pytest.approx(1.60, rel=1e-12)
    # A target no sale can reach: sell everything.
    assert repay_fraction(c, 990_000.0, 1_190_000.0, 5.0, 0.5) == 1.0


def test_boost_amount_reaches_the_target() -> None:
    c_lt, debt, w_lt = 990_000.0, 400_000.0, 990_000.0 / 1_200_000.0
    b = boost_amount(c_lt, debt, w_lt, 1.70, FILL)
    assert (c_lt + b * (1 - FILL) * w_lt) / (debt + b) == pytest.approx(1.70, rel=1e-12)
    assert boost_amount(c_lt, 700_000.0, w_lt, 1.70, FILL) == 0.0  # already below the target


def test_repay_when_under_the_trigger() -> None:
    (action,) = threshold_actions(state(3_000.0, 900_000.0), MANDATE, FEE_BPS)
    assert action.kind is ActionKind.DELEVERAGE
    f = action.inputs["sell_fraction"]
    assert action.spot_legs["WETH"] == pytest.approx(-200 * f)
    assert action.spot_legs["WBTC"] == pytest.approx(-10 * f)
    assert lending_health_after_sale(state(3_000.0, 900_000.0), float(f)) == pytest.approx(1.60)


def test_nothing_inside_the_bands() -> None:
    # Health 990k / 620k = 1.597: above the repay trigger 1.35, below the boost trigger 2.20.
    assert threshold_actions(state(3_000.0, 620_000.0), MANDATE, FEE_BPS) == []


def test_boost_above_the_trigger_respects_leverage_cap() -> None:
    (action,) = threshold_actions(state(3_000.0, 300_000.0), MANDATE, FEE_BPS)
    assert action.kind is ActionKind.REBALANCE
    b = float(action.inputs["boost_usd"])
    # Bought in value weights (600k each): half the dollars to each asset.
    assert action.spot_legs["WETH"] * 3_000 == pytest.approx(b / 2)
    assert action.spot_legs["WBTC"] * 60_000 == pytest.approx(b / 2)
    nav, c = 900_000.0, 1_200_000.0
    assert (c + b * (1 - FILL)) / (nav - b * FILL) <= 0.95 * 2.5 + 1e-9
    c_lt = 990_000.0
    health_after = (c_lt + b * (1 - FILL) * c_lt / c) / (300_000 + b)
    assert health_after >= 1.70 - 1e-9


def test_perp_cut_when_margin_health_is_low() -> None:
    # Requirement 100 × 3000 × 5 % = 15k; margin 18k: health 1.2 < 1.35 → keep 1.2 / 1.6.
    s = state(3_000.0, 500_000.0, perp_size=-100.0, margin=18_000.0)
    (action,) = threshold_actions(s, MANDATE, FEE_BPS)
    assert action.kind is ActionKind.DELEVERAGE
    assert action.perp_legs["WETH"] == pytest.approx(100 * (1 - 1.2 / 1.6))
