"""Health factors, leverage, NAV and net delta against hand computations."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeper.errors import RiskInputError
from keeper.risk.greeks import black_scholes
from keeper.risk.health import (
    PortfolioGreeks,
    binding_health,
    health_factor,
    lending_health,
    leverage,
    nav_from_positions,
    net_delta,
    perp_health,
    portfolio_greeks,
)
from keeper.risk.types import SECONDS_PER_YEAR, AssetState, OptionPosition, PerpPosition

from .conftest import NOW, eth, vault


def btc(collateral: float = 10.0) -> AssetState:
    return AssetState("BTC", collateral, 0.5, 60_000.0, NOW, 0.75, 0.70, 0.45, NOW)


def test_health_factor_by_hand() -> None:
    # (1.5M × 0.80 + 0.6M × 0.75) / 1.1M = (1.2M + 0.45M) / 1.1M = 1.5
    assert health_factor([1_500_000.0, 600_000.0], [0.80, 0.75], 1_100_000.0) == pytest.approx(1.5)
    assert health_factor([1.0], [0.8], 0.0) == math.inf
    assert health_factor([], [], 0.0) == math.inf


@pytest.mark.parametrize("args,match", [
    (([1.0, 2.0], [0.8], 1.0), "shape"),
    (([-1.0], [0.8], 1.0), "collateral_usd"),
    (([1.0], [1.2], 1.0), "liquidation_thresholds"),
    (([1.0], [0.8], -1.0), "debt_usd"),
    (([math.nan], [0.8], 1.0), "collateral_usd"),
])
def test_health_factor_rejects_bad_input(args: tuple[object, object, float], match: str) -> None:
    with pytest.raises(RiskInputError, match=match):
        health_factor(*args)


@given(
    coll=st.lists(st.floats(0.0, 1e7), min_size=1, max_size=5),
    lt=st.floats(0.01, 1.0), debt=st.floats(1.0, 1e7), bump=st.floats(1.0, 10.0),
    which=st.integers(0, 4),
)
def test_health_is_monotone_in_collateral_price(coll: list[float], lt: float, debt: float,
                                                bump: float, which: int) -> None:
    i = which % len(coll)
    higher = list(coll)
    higher[i] *= bump
    assert health_factor(higher, [lt] * len(coll), debt) >= health_factor(coll, [lt] * len(coll),
                                                                           debt)


def test_vault_health_leverage_and_nav_by_hand() -> None:
    v = vault(
        assets=(eth(750.0, idle=2.0), btc(10.0)),
        debt_usdc=1_000_000.0,
        perp_margin_usd=100_000.0,
        idle_usdc=50_000.0,
        perps=(PerpPosition("ETH", -500.0, 2_100.0, 50_000.0, 0.05),
               PerpPosition("BTC", 4.0, 59_000.0, 4_000.0, 0.04)),
        options=(OptionPosition("ETH", False, 1_800.0, NOW + 86_400 * 30, -100.0, 20.0, 0.5),),
    )
    # lending: (750×2000×0.80 + 10×60000×0.75) / 1.0M = (1.2M + 0.45M) / 1.0M
    assert lending_health(v) == pytest.approx(1.65)
    # perp: (100k + 50k + 4k) / (500×2000×0.05 + 4×60000×0.04) = 154k / (50k + 9.6k)
    assert perp_health(v) == pytest.approx(154_000 / 59_600)
    assert binding_health(v) == pytest.approx(1.65)  # the worse venue
    # leverage: (1.5M + 0.6M) / NAV 1.0M
    assert leverage(v) == pytest.approx(2.1)
    # NAV: 50k + (752×2000 + 10.5×60000) − 1.0M + 100k + 54k + (−100 × 20)
    assert nav_from_positions(v) == pytest.approx(50_000 + 1_504_000 + 630_000 - 1_000_000
                                                  + 154_000 - 2_000)


def test_no_debt_no_perps_is_infinitely_healthy() -> None:
    v = vault(debt_usdc=0.0)
    assert lending_health(v) == math.inf
    assert perp_health(v) == math.inf
    assert leverage(vault(nav_usd=0.0, assets=(eth(0.0),))) == 0.0


def test_net_delta_adds_spot_idle_perp_and_option_deltas() -> None:
    # A 1000-strike call expiring in 1 s on 2000 spot has delta 1 to many digits; a put
    # 5000-strike likewise −1. Hand: 750 + 2 − 500 + 1·(−100) + (−1)·(50) = 102.
    v = vault(
        assets=(eth(750.0, idle=2.0),),
        perps=(PerpPosition("ETH", -500.0, 2_000.0, 0.0, 0.05),),
        options=(OptionPosition("ETH", True, 1_000.0, NOW + 1, -100.0, 1_000.0, 0.5),
                 OptionPosition("ETH", False, 5_000.0, NOW + 1, 50.0, 3_000.0, 0.5)),
    )
    assert net_delta(v, NOW, 0.0)["ETH"] == pytest.approx(102.0, abs=1e-9)


def test_a_written_calls_locked_tokens_are_delta_one_and_in_nav() -> None:
    # 100 written 1 000-strike calls expiring in 1 s on 2 000 spot (model delta 1 each: −100),
    # fully collateralised by 100 ETH locked in the option market; 50 written 5 000-strike puts
    # (model delta −1 each, so +50) locked 250k USDC. Hand: 750 − 100 + 100 + 50 = 800 ETH.
    calls = OptionPosition("ETH", True, 1_000.0, NOW + 1, -100.0, 1_000.0, 0.5,
                           locked_underlying=100.0)
    puts = OptionPosition("ETH", False, 5_000.0, NOW + 1, -50.0, 3_000.0, 0.5,
                          locked_usdc=250_000.0)
    v = vault(assets=(eth(750.0),), options=(calls, puts))
    assert net_delta(v, NOW, 0.0)["ETH"] == pytest.approx(800.0, abs=1e-9)
    # NAV: 750 × 2000 − 0.5M debt + (100 × 2000 − 100 × 1000) + (250k − 50 × 3000)
    assert nav_from_positions(v) == pytest.approx(1_500_000 - 500_000 + 100_000 + 100_000)
    with pytest.raises(RiskInputError, match="locked_underlying"):
        OptionPosition("ETH", True, 1_000.0, NOW + 1, -1.0, 1.0, 0.5, locked_underlying=-1.0)


def test_state_validation_names_the_field() -> None:
    with pytest.raises(RiskInputError, match="ETH.price_usd"):
        eth(price=-1.0)
    with pytest.raises(RiskInputError, match="ETH.ltv"):
        eth(ltv=0.9)  # above the liquidation threshold
    with pytest.raises(RiskInputError, match="not in assets"):
        vault(perps=(PerpPosition("SOL", 1.0, 1.0, 0.0, 0.05),))
    with pytest.raises(RiskInputError, match="debt_usdc"):
        vault(debt_usdc=math.nan)


def test_portfolio_greeks_sign_by_long_and_short() -> None:
    # Long 10 and short 30 of the same call: the book is short 20 calls' worth of every greek.
    call = OptionPosition("ETH", True, 2_200.0, NOW + 86_400 * 60, 10.0, 50.0, 0.6)
    v = vault(assets=(eth(100.0), btc(1.0)),
              perps=(PerpPosition("BTC", -1.5, 60_000.0, 0.0, 0.05),),
              options=(call, OptionPosition("ETH", True, 2_200.0, NOW + 86_400 * 60, -30.0,
                                            50.0, 0.6)))
    one = black_scholes(2_000.0, 2_200.0, 60 * 86_400 / SECONDS_PER_YEAR, 0.03, 0.6, True)
    g = portfolio_greeks(v, NOW, 0.03)
    assert g["ETH"].delta == pytest.approx(100.0 - 20.0 * float(one.delta), rel=1e-12)
    assert g["ETH"].gamma == pytest.approx(-20.0 * float(one.gamma), rel=1e-12)
    assert g["ETH"].vega == pytest.approx(-20.0 * float(one.vega), rel=1e-12)
    assert g["ETH"].theta == pytest.approx(-20.0 * float(one.theta), rel=1e-12)
    # BTC: 1 collateral + 0.5 idle − 1.5 perp = 0, no options.
    assert g["BTC"] == PortfolioGreeks("BTC", 0.0, 0.0, 0.0, 0.0)
