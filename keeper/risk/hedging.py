"""Delta hedging with perps: target sizes and a cost- and gamma-aware no-trade band.

The band follows Whalley & Wilmott (1997, "An asymptotic analysis of an optimal hedging model
for option pricing with transaction costs", Math. Finance 7(3)): with proportional cost λ,
exponential-utility risk aversion γ (1/USD) and portfolio gamma Γ (units²/USD) the optimal
no-trade half-width in underlying units is

    H = (3 λ S Γ² / (2 γ))^(1/3)            (the e^{-r(T-t)} factor ≈ 1 is dropped).

We set γ = κ / NAV (relative risk aversion κ). The band never falls below the mandate's
``hedge_band × NAV`` (a gamma-free book has H = 0). All functions broadcast over numpy arrays.
"""

from __future__ import annotations

import logging

import numpy as np

from keeper.risk.validation import FloatArray

logger = logging.getLogger(__name__)


def _arr(x: object) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


def target_delta_units(
    hedge_target: object, nav_usd: object, exposure_weights: object, price_usd: object
) -> FloatArray:
    """Target net delta in units: hedge_target × NAV × weight / price (signed).

    ``exposure_weights`` split the vault-level target across underlyings (they sum to 1 per
    vault), so Σ target delta in USD = hedge_target × NAV.
    """
    return _arr(hedge_target) * _arr(nav_usd) * _arr(exposure_weights) / _arr(price_usd)


def hedge_perp_change(net_delta_units: object, target_units: object) -> FloatArray:
    """Perp size change (units) that brings net delta to its target: target − net."""
    return _arr(target_units) - _arr(net_delta_units)


def whalley_wilmott_half_width(
    gamma: object, spot: object, cost_fraction: object, risk_aversion_per_usd: object
) -> FloatArray:
    """Whalley–Wilmott no-trade half-width in underlying units, (3λSΓ²/(2γ))^(1/3).

    ``gamma`` portfolio gamma (units²/USD, signed; only Γ² matters), ``spot`` USD/unit,
    ``cost_fraction`` λ (0.0005 = 5 bps), ``risk_aversion_per_usd`` γ > 0. Invariants: 0 when
    Γ = 0 or λ = 0; grows like λ^(1/3) and |Γ|^(2/3).
    """
    g = _arr(gamma)
    return np.cbrt(1.5 * _arr(cost_fraction) * _arr(spot) * g * g / _arr(risk_aversion_per_usd))


def no_trade_band_usd(
    hedge_band: object, nav_usd: object, ww_half_width_units: object, spot: object
) -> FloatArray:
    """Half-width of the no-trade band in USD: max(hedge_band × NAV, H × spot)."""
    return np.maximum(_arr(hedge_band) * _arr(nav_usd), _arr(ww_half_width_units) * _arr(spot))
