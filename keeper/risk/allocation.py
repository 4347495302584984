"""Target allocation from the mandate: leverage caps and risk-parity weights.

Leverage is balance-sheet leverage L = spot collateral value / NAV. Each rule gives a cap; the
target is the most conservative (the minimum), never below 0. The functions accept scalars or
numpy arrays (one entry per vault) and broadcast, so the many-vault path uses the same code.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy.optimize import minimize

from keeper.errors import RiskInputError
from keeper.risk.validation import FloatArray, as_float_array

logger = logging.getLogger(__name__)

#: Newton stops when every y_i · ∂f/∂y_i (risk contribution − budget) is below this.
RISK_PARITY_TOL: float = 1e-12
#: Newton on a strictly convex objective converges in a handful of steps; this is a backstop.
RISK_PARITY_MAX_NEWTON: int = 100
#: Weights are feasible when they sum to 1 within this.
WEIGHT_SUM_TOL: float = 1e-9


def _arr(x: object) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


def vol_target_leverage(target_vol: object, forecast_vol: object) -> FloatArray:
    """Volatility-targeted leverage: target_vol / forecast_vol (both annualised fractions).

    Unbounded (+inf) when the forecast is 0; other caps then bind. Invariant: halving the
    forecast doubles the leverage.
    """
    tv, fv = _arr(target_vol), _arr(forecast_vol)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(fv > 0.0, tv / np.where(fv > 0.0, fv, 1.0), np.inf)


def cppi_leverage(
    nav_usd: object, high_water_usd: object, floor_fraction: object, multiplier: object
) -> FloatArray:
    """CPPI leverage: multiplier × max(NAV − floor, 0) / NAV, floor = floor_fraction × HWM.

    The high-water mark used is max(HWM, NAV). Invariant: 0 at or below the floor; linear in the
    cushion above it. NAV of 0 gives 0.
    """
    nav = _arr(nav_usd)
    floor = _arr(floor_fraction) * np.maximum(_arr(high_water_usd), nav)
    cushion = np.maximum(nav - floor, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(nav > 0.0, _arr(multiplier) * cushion / np.where(nav > 0, nav, 1.0), 0.0)


def kelly_leverage(excess_return: object, variance: object, fraction: object) -> FloatArray:
    """Fractional Kelly leverage: fraction × (μ − r) / σ² (annualised), floored at 0.

    ``excess_return`` NaN means "no drift view": no cap (+inf).
    """
    mu, var, f = _arr(excess_return), _arr(variance), _arr(fraction)
    with np.errstate(divide="ignore", invalid="ignore"):
        full = np.where(var > 0.0, np.maximum(mu, 0.0) / np.where(var > 0, var, 1.0), np.inf)
    return np.where(np.isnan(mu), np.inf, f * full)


def health_leverage_cap(
    nav_usd: object, lending_equity_usd: object, weighted_threshold: object, health_floor: object
) -> FloatArray:
    """Largest leverage whose lending health stays >= ``health_floor``.

    Buying collateral with borrowed USDC keeps K = collateral value − debt fixed, so at leverage
    L: health = L·NAV·lt / (L·NAV − K), with lt the weight-averaged (possibly stressed)
    liquidation threshold. Solving health >= h gives L <= h·K / (NAV·(h − lt)); unbounded when
    lt >= h, 0 when K <= 0.
    """
    nav, k = _arr(nav_usd), _arr(lending_equity_usd)
    lt, h = _arr(weighted_threshold), _arr(health_floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        cap = h * k / (np.where(nav > 0, nav, 1.0) * (h - lt))
    out = np.where(lt >= h, np.inf, np.where(k > 0.0, cap, 0.0))
    return np.where(nav > 0.0, out, 0.0)


def borrow_leverage_cap(
    nav_usd: object, lending_equity_usd: object, weighted_ltv: object
) -> FloatArray:
    """Largest leverage the pool lets us borrow for: debt <= Σ value × LTV ⇒ L <= K/(NAV(1−ltv))."""
    nav, k, ltv = _arr(nav_usd), _arr(lending_equity_usd), _arr(weighted_ltv)
    with np.errstate(divide="ignore", invalid="ignore"):
        cap = k / (np.where(nav > 0, nav, 1.0) * (1.0 - ltv))
    out = np.where(ltv >= 1.0, np.inf, np.maximum(cap, 0.0))
    return np.where(nav > 0.0, out, 0.0)


def _project_capped_simplex(x: FloatArray, cap: float) -> FloatArray:
    """Euclidean projection onto {w : Σw = 1, 0 <= w_i <= cap} (bisection on the shift)."""
    lo, hi = float(x.min()) - cap - 1.0, float(x.max()) + 1.0
    for _ in range(100):
        tau = 0.5 * (lo + hi)
        if float(np.clip(x - tau, 0.0, cap).sum()) > 1.0:
            lo = tau
        else:
            hi = tau
    out: FloatArray = np.clip(x - 0.5 * (lo + hi), 0.0, cap)
    return out


def _erc_newton(cov: FloatArray) -> FloatArray:
    """Uncapped equal-risk-contribution weights (Spinu 2013): the unique minimiser of
    ½ yᵀΣy − (1/n) Σ log y_i over y > 0, normalised; damped Newton steps keep y > 0."""
    n = cov.shape[0]
    b = np.full(n, 1.0 / n)
    y = 1.0 / np.sqrt(np.diag(cov))
    y *= math.sqrt(1.0 / float(y @ cov @ y))
    for _ in range(RISK_PARITY_MAX_NEWTON):
        grad = cov @ y - b / y
        if float(np.max(np.abs(grad * y))) < RISK_PARITY_TOL:
            break
        step = np.linalg.solve(cov + np.diag(b / (y * y)), grad)
        t = 1.0
        while np.any(y - t * step <= 0.0):
            t *= 0.5
        y = y - t * step
    out: FloatArray = y / y.sum()
    return out


def risk_parity_weights(cov: object, max_weight: float = 1.0) -> FloatArray:
    """Long-only weights with equal risk contributions w_i (Σw)_i, each <= ``max_weight``.

    ``cov`` is a symmetric positive semi-definite n×n covariance. Without binding caps the
    answer is exact (Spinu's convex formulation, Newton). When a cap binds, SLSQP minimises the
    squared deviations of relative risk contributions from 1/n subject to Σw = 1 and
    0 <= w_i <= max_weight. Invariants: Σw = 1 and 0 <= w_i <= max_weight; with a diagonal or
    two-asset covariance and no binding cap, w_i ∝ 1/σ_i.
    """
    c = as_float_array("cov", cov)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] == 0:
        raise RiskInputError(f"cov: must be a non-empty square matrix, got shape {c.shape}")
    if not np.allclose(c, c.T, rtol=1e-9, atol=1e-12):
        raise RiskInputError("cov: must be symmetric")
    n = c.shape[0]
    if max_weight * n < 1.0 - WEIGHT_SUM_TOL:
        raise RiskInputError(f"max_weight: {max_weight} × {n} assets cannot sum to 1")
    if n == 1:
        return np.ones(1)
    sd = np.sqrt(np.clip(np.diag(c), 0.0, None))
    if np.any(sd == 0.0):
        raise RiskInputError("cov: an asset with zero variance has no risk to balance")
    corr = c / np.outer(sd, sd)  # scale-free: weights depend on σ only through the ratio
    scaled = corr * np.outer(sd / sd.max(), sd / sd.max())
    w = _erc_newton(scaled)
    if np.all(w <= max_weight + WEIGHT_SUM_TOL):
        return _project_capped_simplex(w, max_weight)

    def objective(x: FloatArray) -> float:
        rc = x * (scaled @ x)
        return float(np.sum((rc / max(float(rc.sum()), 1e-300) - 1.0 / n) ** 2))

    res = minimize(
        objective,
        _project_capped_simplex(w, max_weight),
        method="SLSQP",
        bounds=[(0.0, max_weight)] * n,
        constraints=[{"type": "eq", "fun": lambda x: float(np.sum(x)) - 1.0}],
        options={"ftol": 1e-14, "maxiter": 500},
    )
    if not res.success:
        logger.info(
            "capped risk parity: SLSQP stopped early (%s); using its last iterate", res.message
        )
    return _project_capped_simplex(np.asarray(res.x, dtype=np.float64), max_weight)


def effective_cap(max_weight: float, n_assets: int) -> float:
    """The per-asset cap actually used: never below 1/n (else no weights could sum to 1)."""
    return max(max_weight, 1.0 / n_assets) if n_assets > 0 else 1.0


def most_conservative(*caps: FloatArray) -> FloatArray:
    """Elementwise minimum of leverage caps, floored at 0 (NaN-free inputs required)."""
    out = caps[0]
    for c in caps[1:]:
        out = np.minimum(out, c)
    if np.any(np.isnan(out)):
        raise RiskInputError("caps: NaN leverage cap")
    return np.maximum(out, 0.0)


def annual_to_horizon(vol: float, horizon_s: float, seconds_per_year: float) -> float:
    """Scale an annualised vol to a horizon by sqrt-time (i.i.d. returns)."""
    return vol * math.sqrt(horizon_s / seconds_per_year)
