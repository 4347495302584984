"""Per-market forecasts, computed once per tick and shared by every vault on that market.

Volatility (GARCH → EWMA on jump-truncated returns; the implied-vol fallback is per vault, from
its IV feed), the correlation matrix across underlyings, and the one-day stress shock per
underlying: the larger of the design gap (one block the keeper cannot outrun, see
`keeper.risk.params.DESIGN_GAP`) and the diffusive 99 % CVaR over the stress horizon — a
Student-t fitted to the de-trended hourly returns without their jumps, scaled by √(horizon) as
diffusion scales. Jumps are not diffusion (one −35 % hour is not a 24-hour fall of 88 %) and a
trend is not a fat tail; both estimators are bounded.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from scipy import stats

from keeper.errors import RiskInputError
from keeper.risk.params import PolicyParams
from keeper.risk.tail import MIN_TAIL_RETURNS, TAIL_LEVEL, fit_student_t
from keeper.risk.types import SECONDS_PER_YEAR, MarketView, PriceHistory
from keeper.risk.validation import FloatArray
from keeper.risk.volatility import (
    EWMA_MIN_RETURNS,
    MAX_FIT_RETURNS,
    VolForecast,
    VolMethod,
    covariance,
    drop_jumps,
    forecast_vol,
    log_returns,
)

logger = logging.getLogger(__name__)

#: Degrees of freedom of the t used to turn an implied vol into a stress shock (no history to
#: fit): ν = 4 is typical of fitted daily crypto returns.
FALLBACK_T_DOF: float = 4.0
#: Shocks are capped below a total wipe-out so that (1 − shock) stays positive.
MAX_SHOCK: float = 0.95


def _t_cvar_per_sd(df: float, level: float) -> float:
    """CVaR of a unit-variance, zero-mean Student-t with ``df`` at ``level`` (closed form)."""
    scale = math.sqrt((df - 2.0) / df)
    q = float(stats.t.ppf(1.0 - level, df))
    return scale * float(stats.t.pdf(q, df)) / (1.0 - level) * (df + q * q) / (df - 1.0)


#: 99 % CVaR per unit standard deviation of the fallback t (≈ 2.9 vs 2.67 for a Gaussian).
FALLBACK_CVAR_PER_SD: float = _t_cvar_per_sd(FALLBACK_T_DOF, TAIL_LEVEL)


@dataclass(frozen=True, slots=True)
class MarketForecast:
    """What every vault of one tick shares: vols, correlations, stress shocks per underlying."""

    now: int
    risk_free_rate: float
    #: GARCH/EWMA forecasts for underlyings whose history allows one (others: implied, per vault).
    vols: Mapping[str, VolForecast]
    #: Underlyings indexing ``corr``; pairs not covered are treated as perfectly correlated.
    corr_underlyings: tuple[str, ...]
    corr: FloatArray
    #: One-period (stress horizon) fractional fall per underlying from its history.
    shocks: Mapping[str, float]
    expected_returns: Mapping[str, float] = field(default_factory=dict)
    #: Log return over the last ``params.trend_lookback_s`` per underlying (the tape's direction).
    recent_returns: Mapping[str, float] = field(default_factory=dict)

    def correlation(self, a: str, b: str) -> float:
        """Forecast correlation of two underlyings; 1.0 (conservative) when unknown."""
        if a == b:
            return 1.0
        try:
            i, j = self.corr_underlyings.index(a), self.corr_underlyings.index(b)
        except ValueError:
            return 1.0
        return float(self.corr[i, j])

    def vol_or_implied(self, underlying: str, implied_vol: float) -> VolForecast:
        """The shared forecast, or the vault's implied vol when the history is too short."""
        found = self.vols.get(underlying)
        if found is not None:
            return found
        return VolForecast(underlying, implied_vol, VolMethod.IMPLIED, 0)

    def shock_or_implied(self, underlying: str, implied_vol: float, params: PolicyParams) -> float:
        """Stress fall for one underlying: from history, else a t-shock scaled by implied vol."""
        found = self.shocks.get(underlying)
        if found is not None:
            return found
        return float(implied_shock(np.asarray(implied_vol), params))


def _floored(shock: FloatArray | float, params: PolicyParams) -> FloatArray:
    # Never less than the scenario grid's fall either: the leverage it caps is the gate on a
    # re-lever (with the defaults the 35 % design gap is the larger).
    floor = max(params.stress_min_shock, params.design_gap, params.grid_range)
    return np.minimum(MAX_SHOCK, np.maximum(floor, shock))


def implied_shock(implied_vol: FloatArray, params: PolicyParams) -> FloatArray:
    """Stress fall from implied vol: 99 % CVaR of a ν=4 t over the stress horizon, never less
    than the design gap."""
    sd = implied_vol * math.sqrt(params.stress_horizon_s / SECONDS_PER_YEAR)
    return _floored(-np.expm1(-FALLBACK_CVAR_PER_SD * sd), params)


def diffusion_shock(returns: FloatArray, dt_years: FloatArray, params: PolicyParams) -> float:
    """The stress fall from a history: a Student-t fitted to the time-scaled returns
    ``z = r/√Δt`` without their jumps (`drop_jumps`: the design gap covers a jump) less their
    median (the trend), its 99 % CVaR per unit sd times the fitted sd over the stress horizon
    (a log fall, turned into a fraction), never less than the design gap. Raises
    RiskInputError on a history too short or flat to fit."""
    kept, dt = drop_jumps(returns, dt_years)
    if kept.size < MIN_TAIL_RETURNS:
        raise RiskInputError(f"returns: {kept.size} left without jumps, need {MIN_TAIL_RETURNS}")
    z = kept / np.sqrt(dt)
    fit = fit_student_t(z - float(np.median(z)))
    sd = fit.scale * math.sqrt(fit.df / (fit.df - 2.0))
    log_fall = _t_cvar_per_sd(fit.df, TAIL_LEVEL) * sd * math.sqrt(
        params.stress_horizon_s / SECONDS_PER_YEAR
    )
    return float(_floored(-math.expm1(-log_fall), params))


def build_forecast(market: MarketView, params: PolicyParams) -> MarketForecast:
    """Fit everything market-wide once per tick (the expensive part: GARCH and t MLE fits)."""
    vols: dict[str, VolForecast] = {}
    shocks: dict[str, float] = {}
    recent: dict[str, float] = {}
    for h in market.histories:
        recent[h.underlying] = trailing_return(h, params.trend_lookback_s)
        vf = forecast_vol(h.underlying, h, math.nan, params.horizon_s)
        if vf.method is not VolMethod.IMPLIED:
            vols[h.underlying] = vf
        if h.prices.size - 1 >= MIN_TAIL_RETURNS:
            r, dt = log_returns(h.timestamps, h.prices)
            try:
                shocks[h.underlying] = diffusion_shock(
                    r[-MAX_FIT_RETURNS:], dt[-MAX_FIT_RETURNS:], params
                )
            except RiskInputError as exc:
                logger.info("tail fit for %s failed (%s); implied-vol shock", h.underlying, exc)
    usable = [h for h in market.histories if h.prices.size - 1 >= EWMA_MIN_RETURNS]
    names: tuple[str, ...] = ()
    corr = np.ones((0, 0))
    if len(usable) >= 2:
        try:
            cv = covariance(usable)
        except RiskInputError as exc:
            logger.info("correlation estimate failed (%s); assuming correlation 1", exc)
        else:
            names, corr = cv.underlyings, cv.corr
    corr.flags.writeable = False
    logger.debug(
        "forecast at %d: vols=%s shocks=%s",
        market.now,
        {k: (round(v.vol, 4), v.method.value) for k, v in vols.items()},
        shocks,
    )
    return MarketForecast(
        now=market.now,
        risk_free_rate=market.risk_free_rate,
        vols=MappingProxyType(vols),
        corr_underlyings=names,
        corr=corr,
        shocks=MappingProxyType(shocks),
        expected_returns=market.expected_returns,
        recent_returns=MappingProxyType(recent),
    )


def trailing_return(history: PriceHistory, lookback_s: float) -> float:
    """Log return from the last round at or before ``lookback_s`` ago to the latest round (from
    the first round when the history is shorter)."""
    ts, px = history.timestamps, history.prices
    i = max(0, int(np.searchsorted(ts, ts[-1] - lookback_s, side="right")) - 1)
    return float(math.log(px[-1] / px[i]))
