"""Hedge sizes and the Whalley–Wilmott no-trade band."""

from __future__ import annotations

import numpy as np
import pytest

from keeper.risk.hedging import (
    hedge_perp_change,
    no_trade_band_usd,
    target_delta_units,
    whalley_wilmott_half_width,
)


def test_hedge_change_brings_net_delta_to_target() -> None:
    net = np.array([250.0, -3.0])
    target = target_delta_units(0.0, 1_000_000.0, [0.5, 0.5], [2_000.0, 60_000.0])
    change = hedge_perp_change(net, target)
    np.testing.assert_allclose(net + change, target)
    np.testing.assert_allclose(change, [-250.0, 3.0])
    # half long: 0.5 × 1M split 50/50 → 250k in each: 125 ETH, 4.1667 BTC.
    np.testing.assert_allclose(target_delta_units(0.5, 1e6, [0.5, 0.5], [2_000.0, 60_000.0]),
                               [125.0, 250_000 / 60_000])


def test_whalley_wilmott_by_hand() -> None:
    # λ = 5 bps, S = 2000, Γ = −0.02 units²/USD, γ = 4 / 1M:
    # H³ = 1.5 × 0.0005 × 2000 × 0.0004 / 4e-6 = 150 → H = 150^(1/3) ≈ 5.3133 ETH.
    h = float(whalley_wilmott_half_width(-0.02, 2_000.0, 0.0005, 4e-6))
    assert h == pytest.approx(150 ** (1 / 3), rel=1e-12)
    assert float(whalley_wilmott_half_width(0.0, 2_000.0, 0.0005, 4e-6)) == 0.0
    # scaling laws: cost × 8 → width × 2; gamma × 8 → width × 4.
    assert float(whalley_wilmott_half_width(-0.02, 2_000.0, 0.004, 4e-6)) == pytest.approx(2 * h)
    assert float(whalley_wilmott_half_width(-0.16, 2_000.0, 0.0005, 4e-6)) == pytest.approx(4 * h)


def test_band_is_never_narrower_than_the_mandate() -> None:
    # mandate 2 % of 1M = 20k; WW 5.3 ETH × 2000 = 10.6k → 20k. WW 20 ETH → 40k.
    np.testing.assert_allclose(no_trade_band_usd(0.02, 1e6, [5.3133, 20.0], 2_000.0),
                               [20_000.0, 40_000.0])
