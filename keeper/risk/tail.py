"""Tail risk: VaR and CVaR (expected shortfall) from a fitted Student-t and from history, and
the stress scenario's health factors.

Crypto returns are fat-tailed, so the parametric model is Student-t (location, scale, degrees of
freedom by maximum likelihood), never the Gaussian. Losses are reported as positive fractions of
value over one period of the returns given (VaR 0.05 = lose 5 % at the stated level).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.optimize import minimize
from scipy.special import digamma, gammaln

from keeper.errors import RiskInputError
from keeper.risk.types import SECONDS_PER_YEAR, VaultState
from keeper.risk.validation import FloatArray, as_float_array, in_range

logger = logging.getLogger(__name__)

#: The issue's confidence level for one-period VaR/CVaR.
TAIL_LEVEL: float = 0.99
#: Fewer returns than this leave a t-fit's degrees of freedom unidentified.
MIN_TAIL_RETURNS: int = 30
#: ν is kept in [MIN_T_DOF, MAX_T_DOF]: above ~200 the t is a Gaussian in all but name; below
#: 2 it has no variance (a steady trend with tiny noise drove an unbounded fit to ν ≈ 1).
MAX_T_DOF: float = 200.0
MIN_T_DOF: float = 2.5
#: The scale is kept within [MIN_T_SCALE, MAX_T_SCALE] (units of the returns given): a flat
#: stretch of history has no scale, and an unbounded fit divided by zero on one (a simulated
#: gap after a day of flat prices stopped the keeper with ZeroDivisionError).
MIN_T_SCALE: float = 1e-8
MAX_T_SCALE: float = 10.0


@dataclass(frozen=True, slots=True)
class StudentT:
    """A location-scale Student-t: x = loc + scale × T_ν."""

    df: float
    loc: float
    scale: float


@dataclass(frozen=True, slots=True)
class TailRisk:
    """One-period VaR and CVaR (positive loss fractions) at ``level`` by two methods."""

    level: float
    var_t: float
    cvar_t: float
    var_hist: float
    cvar_hist: float
    fit: StudentT


def _t_nll(theta: FloatArray, x: FloatArray) -> tuple[float, FloatArray]:
    mu, log_s, c = theta
    s = math.exp(log_s)
    nu = 1.0 + math.exp(c)
    y = (x - mu) / s
    y2 = y * y
    q = nu + y2
    n = x.size
    ll = n * (gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * math.log(nu * math.pi) - log_s)
    ll -= (nu + 1) / 2 * float(np.sum(np.log1p(y2 / nu)))
    d_mu = (nu + 1) / s * float(np.sum(y / q))
    d_log_s = float(np.sum((nu + 1) * y2 / q)) - n
    d_nu = n * 0.5 * (digamma((nu + 1) / 2) - digamma(nu / 2) - 1.0 / nu)
    d_nu += float(np.sum(-0.5 * np.log1p(y2 / nu) + (nu + 1) * y2 / (2 * nu * q)))
    d_c = d_nu * (nu - 1.0)
    return -ll, -np.array([d_mu, d_log_s, d_c])


def fit_student_t(returns: object) -> StudentT:
    """Maximum-likelihood Student-t (df in [MIN_T_DOF, MAX_T_DOF], scale in [MIN_T_SCALE,
    MAX_T_SCALE], loc) for one-period returns: a box-constrained fit, so it always returns a
    usable t."""
    x = as_float_array("returns", returns)
    if x.ndim != 1 or x.size < MIN_TAIL_RETURNS:
        raise RiskInputError(f"returns: need a 1-D series of >= {MIN_TAIL_RETURNS}, got {x.shape}")
    mad = float(np.median(np.abs(x - np.median(x))))
    if mad == 0.0:
        mad = float(np.std(x))
    if mad == 0.0:
        raise RiskInputError("returns: constant series, no scale to fit")
    log_s0 = min(math.log(MAX_T_SCALE), max(math.log(MIN_T_SCALE), math.log(mad * 1.4826)))
    start = np.array([float(np.median(x)), log_s0, math.log(4.0 - 1.0)])
    bounds = [
        (None, None),
        (math.log(MIN_T_SCALE), math.log(MAX_T_SCALE)),
        (math.log(MIN_T_DOF - 1.0), math.log(MAX_T_DOF - 1.0)),
    ]
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        res = minimize(_t_nll, start, args=(x,), jac=True, method="L-BFGS-B", bounds=bounds)
    mu, log_s, c = (float(v) for v in res.x)
    return StudentT(1.0 + math.exp(c), mu, math.exp(log_s))


def student_t_var_cvar(fit: StudentT, level: float = TAIL_LEVEL) -> tuple[float, float]:
    """VaR and CVaR of a location-scale t at ``level`` (closed form), positive loss fractions.

    With q = t_ν⁻¹(1 − level) < 0: VaR = −(loc + scale·q);
    CVaR = −loc + scale · f_ν(q) / (1 − level) · (ν + q²) / (ν − 1)  (finite for ν > 1).
    """
    in_range("level", level, 0.5, 1.0 - 1e-12)
    if fit.df <= 1.0:
        raise RiskInputError(f"fit.df: CVaR needs df > 1, got {fit.df}")
    tail = 1.0 - level
    q = float(stats.t.ppf(tail, fit.df))
    var = -(fit.loc + fit.scale * q)
    es_std = float(stats.t.pdf(q, fit.df)) / tail * (fit.df + q * q) / (fit.df - 1.0)
    return var, -fit.loc + fit.scale * es_std


def historical_var_cvar(returns: object, level: float = TAIL_LEVEL) -> tuple[float, float]:
    """Historical-simulation VaR and CVaR, positive loss fractions.

    With losses L = −returns sorted worst first and k = ceil(n · (1 − level)) tail observations:
    VaR is the k-th worst loss, CVaR the mean of the k worst.
    """
    in_range("level", level, 0.5, 1.0 - 1e-12)
    x = as_float_array("returns", returns)
    if x.ndim != 1 or x.size == 0:
        raise RiskInputError(f"returns: need a non-empty 1-D series, got shape {x.shape}")
    k = max(1, math.ceil(round(x.size * (1.0 - level), 9)))
    worst = np.sort(-x)[::-1][:k]
    return float(worst[-1]), float(np.mean(worst))


def tail_risk(returns: object, level: float = TAIL_LEVEL) -> TailRisk:
    """Student-t and historical VaR/CVaR of one-period ``returns`` at ``level``."""
    fit = fit_student_t(returns)
    var_t, cvar_t = student_t_var_cvar(fit, level)
    var_h, cvar_h = historical_var_cvar(returns, level)
    return TailRisk(level, var_t, cvar_t, var_h, cvar_h, fit)


def gaussian_t_cvar(
    vol_annual: float, horizon_s: float, df: float = 4.0, level: float = TAIL_LEVEL
) -> float:
    """CVaR of a zero-mean t with ``df`` scaled to have the given annualised vol over a horizon.

    The fallback shock when a history is too short to fit: fat tails kept, scale from implied vol.
    """
    if df <= 2.0:
        raise RiskInputError(f"df: need > 2 for a finite variance, got {df}")
    sd = vol_annual * math.sqrt(horizon_s / SECONDS_PER_YEAR)
    scale = sd * math.sqrt((df - 2.0) / df)
    return student_t_var_cvar(StudentT(df, 0.0, scale), level)[1]


@dataclass(frozen=True, slots=True)
class StressedHealth:
    """Health factors after the stress scenario."""

    lending: float
    perp: float

    @property
    def binding(self) -> float:
        """The worst venue."""
        return min(self.lending, self.perp)


def stress_health(state: VaultState, shocks: float | Mapping[str, float]) -> StressedHealth:
    """Health factors after every underlying falls together (correlations pushed to one).

    ``shocks`` is a fractional fall in [0, 1), one for all or per underlying (missing = 0):
    price → price × (1 − shock). Lending: collateral values fall, debt does not. Perps: unrealised
    pnl moves by size × price × (−shock) and maintenance by the new price. Options are not in
    either venue's margin and are ignored. Invariant: shock 0 reproduces the current health.
    """

    def shock_of(symbol: str) -> float:
        raw = shocks if isinstance(shocks, int | float) else shocks.get(symbol, 0.0)
        return in_range(f"shocks[{symbol}]", float(raw), 0.0, 1.0 - 1e-12)

    fall = {a.symbol: shock_of(a.symbol) for a in state.assets}
    weighted = sum(
        a.collateral * a.price_usd * (1.0 - fall[a.symbol]) * a.liquidation_threshold
        for a in state.assets
    )
    lending = math.inf if state.debt_usdc == 0.0 else weighted / state.debt_usdc
    equity = state.perp_margin_usd
    maintenance = 0.0
    for p in state.perps:
        price = state.asset(p.underlying).price_usd
        equity += p.unrealized_pnl_usd - p.size * price * fall[p.underlying]
        maintenance += abs(p.size) * price * (1.0 - fall[p.underlying]) * p.maintenance_fraction
    perp = math.inf if maintenance == 0.0 else equity / maintenance
    return StressedHealth(lending, perp)
