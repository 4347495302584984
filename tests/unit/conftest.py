"""Builders for risk-core and policy tests: plain values, hand-checkable numbers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from keeper.risk.types import (
    SECONDS_PER_YEAR,
    AssetState,
    Costs,
    Mandate,
    MarketView,
    PriceHistory,
    VaultState,
)

NOW = 1_700_000_000


def eth(collateral: float = 750.0, price: float = 2_000.0, **kw: Any) -> AssetState:
    """ETH at 2 000 USD, LT 0.80, LTV 0.75, implied vol 0.50, feeds one minute old."""
    base: dict[str, Any] = dict(symbol="ETH", collateral=collateral, idle=0.0, price_usd=price,
                price_updated_at=NOW - 60, liquidation_threshold=0.80, ltv=0.75,
                implied_vol=0.50, implied_vol_updated_at=NOW - 60)
    base.update(kw)
    return AssetState(**base)


def vault(**kw: Any) -> VaultState:
    """Default: 750 ETH collateral (1.5M), 0.5M debt → NAV 1.0M, leverage 1.5, health 2.4."""
    base: dict[str, Any] = dict(address="0xV", block=100, timestamp=NOW, nav_usd=1_000_000.0,
                                idle_usdc=0.0, debt_usdc=500_000.0, perp_margin_usd=0.0,
                                assets=(eth(),))
    base.update(kw)
    return VaultState(**base)


def mandate(**kw: Any) -> Mandate:
    """Default mandate whose target leverage is exactly 1.5 for the default vault."""
    base: dict[str, Any] = dict(target_vol=0.75, max_leverage=3.0, min_health=1.25,
                                hedge_target=1.5, hedge_band=0.02, cppi_floor=0.5,
                                cppi_multiplier=4.0, kelly_fraction=0.5, max_slippage_bps=50)
    base.update(kw)
    return Mandate(**base)


def market(**kw: Any) -> MarketView:
    """No price history (implied vol is used), staleness limit one hour."""
    base: dict[str, Any] = dict(now=NOW, risk_free_rate=0.0, histories=(),
                                max_staleness_s=3_600)
    base.update(kw)
    return MarketView(**base)


def costs(**kw: Any) -> Costs:
    """Gas 1e-6 USD/gas (0.70 USD a rebalance), swap 30 + 10 bps, perp 5 bps."""
    base: dict[str, Any] = dict(gas_price_usd_per_gas=1e-6, swap_fee_bps=30.0,
                                swap_slippage_bps=10.0, perp_fee_bps=5.0)
    base.update(kw)
    return Costs(**base)


def gbm_history(name: str, n: int, vol: float, seed: int, s0: float = 100.0,
                irregular: bool = True) -> PriceHistory:
    """Geometric Brownian motion sampled at (optionally irregular) hourly-ish times ending now."""
    rng = np.random.default_rng(seed)
    steps = rng.uniform(1_800.0, 5_400.0, n - 1) if irregular else np.full(n - 1, 3_600.0)
    ts = NOW - 60.0 - np.concatenate(([0.0], np.cumsum(steps)))[::-1]
    r = rng.standard_normal(n - 1) * vol * np.sqrt(steps / SECONDS_PER_YEAR)
    return PriceHistory(name, ts, s0 * np.exp(np.concatenate(([0.0], np.cumsum(r)))))


@pytest.fixture
def make_vault() -> Callable[..., VaultState]:
    return vault


@pytest.fixture
def make_mandate() -> Callable[..., Mandate]:
    return mandate


@pytest.fixture
def make_market() -> Callable[..., MarketView]:
    return market


@pytest.fixture
def make_costs() -> Callable[..., Costs]:
    return costs


__all__ = ["NOW", "costs", "eth", "gbm_history", "mandate", "market", "replace", "vault"]
