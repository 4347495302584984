"""Volatility from irregularly spaced feed rounds: EWMA, GARCH(1,1), realised, covariance.

Feed rounds arrive at uneven times (deviation thresholds, heartbeats), so everything is
annualised by *elapsed time*, never by count: a log return ``r_i`` over ``Δt_i`` years is turned
into ``z_i = r_i / sqrt(Δt_i)``, whose variance is the annualised variance σ² whatever the
spacing. EWMA decays by elapsed time too (RiskMetrics λ per day). GARCH(1,1) is fitted by
Gaussian maximum likelihood on ``z`` (one GARCH step per feed round; spacing enters only through
the scaling), and forecasts average the conditional variance over the steps of a horizon.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.signal import lfilter
from scipy.special import expit

from keeper.errors import RiskInputError
from keeper.risk.types import SECONDS_PER_YEAR, PriceHistory
from keeper.risk.validation import FloatArray, as_float_array

logger = logging.getLogger(__name__)

#: RiskMetrics (1996) daily decay factor.
EWMA_LAMBDA_PER_DAY: float = 0.94
#: The period λ applies to; irregular steps decay by λ ** (Δt / this).
EWMA_DECAY_PERIOD_S: float = 86_400.0
#: Fewer returns than this cannot identify three GARCH parameters reliably; use EWMA.
GARCH_MIN_RETURNS: int = 200
#: Fewer returns than this make even EWMA mostly its seed; fall back to implied vol.
EWMA_MIN_RETURNS: int = 10
#: Only the most recent returns are fitted: the current regime, and a bounded cost per tick.
MAX_FIT_RETURNS: int = 2_000
#: A scaled return further than this many robust standard deviations from the median is a
#: jump, not diffusion: the vol estimators see it clipped to this size (winsorised), and the
#: stress keeps its full size through the design gap. 5 robust sd: 1 in 3.5 M for a Gaussian.
JUMP_THRESHOLD_SD: float = 5.0
#: Floor of the robust scale (annualised) that sets the jump threshold: a history that is
#: mostly flat has a median absolute deviation of zero, and every move would count as a jump.
MIN_ROBUST_VOL: float = 0.05
#: A fit this close to integrated GARCH has no mean reversion to forecast with; use EWMA.
GARCH_MAX_PERSISTENCE: float = 0.999


class VolMethod(enum.Enum):
    """Which estimator produced a volatility forecast (logged with every decision)."""

    GARCH = "garch"
    EWMA = "ewma"
    IMPLIED = "implied"


@dataclass(frozen=True, slots=True)
class VolForecast:
    """Annualised volatility forecast for one underlying and how it was obtained."""

    underlying: str
    vol: float
    method: VolMethod
    n_returns: int


def log_returns(timestamps: object, prices: object) -> tuple[FloatArray, FloatArray]:
    """Log returns and their elapsed times in years from irregular observations.

    ``timestamps`` unix seconds, strictly increasing; ``prices`` > 0; same length >= 2.
    """
    ts = as_float_array("timestamps", timestamps)
    px = as_float_array("prices", prices)
    if ts.ndim != 1 or ts.shape != px.shape:
        raise RiskInputError(f"timestamps {ts.shape} / prices {px.shape}: need equal 1-D shapes")
    if ts.size < 2:
        raise RiskInputError(f"prices: need at least 2 observations, got {ts.size}")
    if np.any(px <= 0.0):
        raise RiskInputError("prices: must be > 0")
    dt = np.diff(ts) / SECONDS_PER_YEAR
    if np.any(dt <= 0.0):
        raise RiskInputError("timestamps: must be strictly increasing")
    return np.diff(np.log(px)), dt


def _scaled(returns: object, dt_years: object, need: int) -> tuple[FloatArray, FloatArray]:
    r = as_float_array("returns", returns)
    dt = as_float_array("dt_years", dt_years)
    if r.ndim != 1 or r.shape != dt.shape:
        raise RiskInputError(f"returns {r.shape} / dt_years {dt.shape}: need equal 1-D shapes")
    if r.size < need:
        raise RiskInputError(f"returns: need at least {need}, got {r.size}")
    if np.any(dt <= 0.0):
        raise RiskInputError("dt_years: must be > 0")
    return r / np.sqrt(dt), dt


def ewma_variance(
    returns: object,
    dt_years: object,
    lam_per_day: float = EWMA_LAMBDA_PER_DAY,
    decay_period_s: float = EWMA_DECAY_PERIOD_S,
) -> float:
    """RiskMetrics EWMA variance, annualised (σ², fraction²/year), after the last return.

    With ``z_k² = r_k² / Δt_k`` and ``λ_k = λ ** (Δt_k / period)``: σ²₁ = z₁²,
    σ²_k = λ_k σ²_{k-1} + (1 - λ_k) z_k². On a regular daily grid this is textbook RiskMetrics.
    """
    if not 0.0 < lam_per_day < 1.0:
        raise RiskInputError(f"lam_per_day: must be in (0, 1), got {lam_per_day}")
    z, dt = _scaled(returns, dt_years, 1)
    lam = lam_per_day ** (dt * SECONDS_PER_YEAR / decay_period_s)
    z2 = z * z
    # σ²_k - λ_k σ²_{k-1} = (1 - λ_k) z²_k, a first-order recursion with time-varying λ: unrolled
    # as products of decays (stable: every factor is in (0, 1)).
    weights = (1.0 - lam) * np.append(np.cumprod(lam[::-1])[::-1][1:], 1.0)
    seed = float(np.prod(lam[1:]))
    return float(seed * z2[0] + np.dot(weights[1:], z2[1:]))


def realised_vol(timestamps: object, prices: object, window_s: float | None = None) -> float:
    """Realised volatility, annualised: sqrt(Σ r² / Σ Δt) over the last ``window_s`` seconds.

    Uses every return whose end lies within the window (all returns when ``window_s`` is None).
    """
    ts = as_float_array("timestamps", timestamps)
    r, dt = log_returns(ts, prices)
    if window_s is not None:
        if not window_s > 0.0:
            raise RiskInputError(f"window_s: must be > 0, got {window_s}")
        keep = ts[1:] > ts[-1] - window_s
        r, dt = r[keep], dt[keep]
        if r.size == 0:
            raise RiskInputError("window_s: no return ends inside the window")
    return math.sqrt(float(np.dot(r, r)) / float(np.sum(dt)))


@dataclass(frozen=True, slots=True)
class GarchFit:
    """GARCH(1,1) on annualised scaled returns: h_t = ω + α z²_{t-1} + β h_{t-1}."""

    omega: float
    alpha: float
    beta: float
    #: Conditional variance for the step after the last observation (annualised).
    next_variance: float
    #: Mean spacing between observations, years: converts horizons into GARCH steps.
    mean_dt_years: float
    log_likelihood: float
    n_returns: int
    converged: bool

    @property
    def persistence(self) -> float:
        """α + β: how slowly shocks to variance decay per step."""
        return self.alpha + self.beta

    @property
    def long_run_variance(self) -> float:
        """ω / (1 − α − β), annualised."""
        return self.omega / (1.0 - self.persistence)

    def forecast_vol(self, horizon_years: float) -> float:
        """Annualised vol over the next ``horizon_years``: sqrt of the mean expected variance."""
        if not horizon_years > 0.0:
            raise RiskInputError(f"horizon_years: must be > 0, got {horizon_years}")
        k = max(1.0, horizon_years / self.mean_dt_years)
        phi = self.persistence
        v_l = self.long_run_variance
        mean = v_l + (self.next_variance - v_l) * (1.0 - phi**k) / (k * (1.0 - phi))
        return math.sqrt(max(mean, 0.0))


#: Box for the optimiser's reparametrisation (a = log ω/h0, b = logit(α+β), c = logit(α/(α+β))):
#: ω from e^-30 to e^5 times the sample variance, α+β and the α share from ~1e-13 to 1 − 1e-13.
#: Without it L-BFGS-B can step to |θ| > 709, where exp overflows (seen on 250 hourly returns).
THETA_BOUNDS = ((-30.0, 5.0), (-30.0, 30.0), (-30.0, 30.0))


def _garch_variances(params: FloatArray, x: FloatArray, h0: float) -> FloatArray:
    omega, alpha, beta = params
    u = omega + alpha * x[:-1]
    h_rest = lfilter([1.0], [1.0, -beta], u, zi=[beta * h0])[0]
    return np.concatenate(([h0], h_rest))


def _nll_and_grad(theta: FloatArray, x: FloatArray, h0: float) -> tuple[float, FloatArray]:
    """Gaussian negative log-likelihood (constant dropped) and its gradient in ``theta``.

    theta = (a, b, c): ω = h0·e^a, p = σ(b), α = p·σ(c), β = p − α (σ the logistic function),
    so every theta is a valid GARCH. dh/d(ω, α, β) obey the same AR(1) recursion as h.
    """
    a, b, c = theta
    p, q = float(expit(b)), float(expit(c))
    omega, alpha, beta = h0 * math.exp(a), p * q, p * (1.0 - q)
    h = np.empty_like(x)
    h[0] = h0
    h[1:] = lfilter([1.0], [1.0, -beta], omega + alpha * x[:-1], zi=[beta * h0])[0]
    # Sensitivities: dh_t = ∂u_t + β dh_{t-1}, with dh_0 = 0 (h0 is fixed).
    drive = np.stack((np.ones(x.size - 1), x[:-1], h[:-1]))
    dh = lfilter([1.0], [1.0, -beta], drive, axis=1)
    w = 0.5 * (1.0 / h[1:] - x[1:] / (h[1:] * h[1:]))
    g_omega, g_alpha, g_beta = dh @ w
    nll = 0.5 * float(np.sum(np.log(h) + x / h))
    dp = p * (1.0 - p)
    dq = q * (1.0 - q)
    grad = np.array(
        [
            g_omega * omega,
            g_alpha * dp * q + g_beta * dp * (1.0 - q),
            (g_alpha - g_beta) * p * dq,
        ]
    )
    return nll, grad


def fit_garch(returns: object, dt_years: object) -> GarchFit:
    """Fit GARCH(1,1) by Gaussian maximum likelihood (zero mean) on ``r / sqrt(Δt)``.

    Constraints ω > 0, α, β >= 0, α + β < 1 hold by construction (the optimiser works on an
    unconstrained reparametrisation, with an analytic gradient). The recursion starts from the
    sample variance. Needs at least `GARCH_MIN_RETURNS` returns; fits the last `MAX_FIT_RETURNS`.
    """
    z, dt = _scaled(returns, dt_years, GARCH_MIN_RETURNS)
    z, dt = z[-MAX_FIT_RETURNS:], dt[-MAX_FIT_RETURNS:]
    x = z * z
    h0 = float(np.mean(x))
    if h0 == 0.0:
        raise RiskInputError("returns: all zero, no variance to model")

    # Start at α = 0.08, β = 0.90: typical daily crypto/equity GARCH estimates.
    start = np.array([math.log(0.02), math.log(0.98 / 0.02), math.log(0.08 / 0.90)])
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        result = minimize(
            _nll_and_grad, start, args=(x, h0), jac=True, method="L-BFGS-B", bounds=THETA_BOUNDS
        )
    a, b, c = (float(v) for v in result.x)
    p, q = float(expit(b)), float(expit(c))
    omega, alpha, beta = h0 * math.exp(a), p * q, p * (1.0 - q)
    h = _garch_variances(np.array([omega, alpha, beta]), x, h0)
    nxt = omega + alpha * float(x[-1]) + beta * float(h[-1])
    loglik = -float(result.fun) - 0.5 * x.size * math.log(2.0 * math.pi)
    return GarchFit(
        omega,
        alpha,
        beta,
        nxt,
        float(np.mean(dt)),
        loglik,
        int(x.size),
        bool(result.success) and math.isfinite(loglik),
    )


def _jump_bounds(z: FloatArray) -> tuple[float, float]:
    """Time-scaled returns outside (lo, hi) are jumps: ``JUMP_THRESHOLD_SD`` robust standard
    deviations around the median; the robust sd is 1.4826 × the median absolute deviation
    (consistent for a Gaussian), floored at ``MIN_ROBUST_VOL``. Both are taken over the rounds
    that moved: a heartbeat repeating the price says nothing about the scale, and two flat days
    after a move made every hour of 30 %-vol noise before it a "jump"."""
    moved = z[z != 0.0]
    if moved.size == 0:
        moved = z
    centre = float(np.median(moved))
    robust_sd = max(MIN_ROBUST_VOL, 1.4826 * float(np.median(np.abs(moved - centre))))
    half = JUMP_THRESHOLD_SD * robust_sd
    return centre - half, centre + half


def truncate_jumps(returns: object, dt_years: object) -> FloatArray:
    """Log returns with every jump (`_jump_bounds`, on ``z = r / sqrt(Δt)``) set to zero: the
    diffusive part, on the same clock (Mancini's threshold-truncated realised variance). A jump
    is the design gap's risk, not weeks of volatility; clipped to 5 sd instead, the six hours
    of a flash crash kept the EWMA above the recovered implied vol for days, and leverage cut."""
    z, dt = _scaled(returns, dt_years, 1)
    lo, hi = _jump_bounds(z)
    out: FloatArray = np.where((z >= lo) & (z <= hi), z, 0.0) * np.sqrt(dt)
    return out


def drop_jumps(returns: object, dt_years: object) -> tuple[FloatArray, FloatArray]:
    """The returns (and their Δt) that are not jumps (`_jump_bounds`): the diffusive part,
    for the tail fit. A jump is the design gap's risk; clipped instead of dropped, six ±5-sd
    hours of a flash crash held the fitted tail (and the stress cap on leverage) up for the
    whole fit window after price and implied vol had come back (threshold truncation, as in
    Mancini's jump-robust realised variance)."""
    z, dt = _scaled(returns, dt_years, 1)
    lo, hi = _jump_bounds(z)
    keep = (z >= lo) & (z <= hi)
    return z[keep] * np.sqrt(dt[keep]), dt[keep]


def forecast_vol(
    underlying: str,
    history: PriceHistory | None,
    implied_vol: float,
    horizon_s: float,
) -> VolForecast:
    """The policy's vol: GARCH when the history is long enough and the fit is sane, else EWMA,
    else the implied vol. Annualised fraction, tagged with the method used. Both estimators see
    the returns with jumps set to zero (`truncate_jumps`): they measure diffusion."""
    n = 0 if history is None else history.prices.size - 1
    if history is not None and n >= GARCH_MIN_RETURNS:
        r, dt = log_returns(history.timestamps, history.prices)
        r = truncate_jumps(r[-MAX_FIT_RETURNS:], dt[-MAX_FIT_RETURNS:])
        dt = dt[-MAX_FIT_RETURNS:]
        try:
            fit = fit_garch(r, dt)
        except RiskInputError as exc:
            logger.info("garch fit for %s failed (%s); using EWMA", underlying, exc)
        else:
            if fit.converged and fit.persistence < GARCH_MAX_PERSISTENCE:
                return VolForecast(
                    underlying, fit.forecast_vol(horizon_s / SECONDS_PER_YEAR), VolMethod.GARCH, n
                )
            logger.info(
                "garch fit for %s unusable (converged=%s, α+β=%.4f); using EWMA",
                underlying,
                fit.converged,
                fit.persistence,
            )
    if history is not None and n >= EWMA_MIN_RETURNS:
        r, dt = log_returns(history.timestamps, history.prices)
        r = truncate_jumps(r, dt)
        return VolForecast(underlying, math.sqrt(ewma_variance(r, dt)), VolMethod.EWMA, n)
    return VolForecast(underlying, float(implied_vol), VolMethod.IMPLIED, n)


@dataclass(frozen=True, slots=True)
class Covariance:
    """Annualised covariance and correlation of log returns across underlyings."""

    underlyings: tuple[str, ...]
    cov: FloatArray
    corr: FloatArray
    #: Length of the common window the estimate covers, seconds.
    span_s: float


def _clip_series(h: PriceHistory, start: float, end: float) -> tuple[FloatArray, FloatArray]:
    """Observation times and log prices restricted to [start, end] (the last round at or before
    ``start`` stands in at ``start``)."""
    first = int(np.searchsorted(h.timestamps, start, side="right")) - 1
    last = int(np.searchsorted(h.timestamps, end, side="right"))
    ts = np.array(h.timestamps[first:last], dtype=np.float64)
    ts[0] = start
    return ts, np.log(np.asarray(h.prices[first:last], dtype=np.float64))


def hayashi_yoshida(
    ts_a: FloatArray, log_a: FloatArray, ts_b: FloatArray, log_b: FloatArray
) -> float:
    """Hayashi–Yoshida (2005) covariance of two asynchronously observed log-price paths.

    Σ_i Σ_j r_a,i · r_b,j over every pair of return intervals that overlap. Unbiased for
    non-synchronous observation times (no Epps effect from previous-tick interpolation).
    """
    ra, rb = np.diff(log_a), np.diff(log_b)
    a0, a1 = ts_a[:-1], ts_a[1:]
    b0, b1 = ts_b[:-1], ts_b[1:]
    # b-interval j overlaps a-interval i iff b0_j < a1_i and b1_j > a0_i: a contiguous j-range.
    lo = np.searchsorted(b1, a0, side="right")
    hi = np.searchsorted(b0, a1, side="left")
    csum = np.concatenate(([0.0], np.cumsum(rb)))
    return float(np.dot(ra, csum[np.maximum(hi, lo)] - csum[lo]))


def nearest_correlation(corr: FloatArray) -> FloatArray:
    """Clip a symmetric matrix's negative eigenvalues and rescale to a unit diagonal (PSD)."""
    w, v = np.linalg.eigh(0.5 * (corr + corr.T))
    psd = (v * np.clip(w, 0.0, None)) @ v.T
    d = np.sqrt(np.clip(np.diag(psd), 1e-300, None))
    out: FloatArray = np.clip(psd / np.outer(d, d), -1.0, 1.0)
    np.fill_diagonal(out, 1.0)
    return out


def _without_jumps(ts: FloatArray, lp: FloatArray) -> tuple[FloatArray, FloatArray]:
    """A log-price path with its jumps (`truncate_jumps`) taken out: the correlation measures
    diffusion, as the vols do. Co-jumps are the design gap's (every underlying at once); left
    in, one flash crash moved the ETH/BTC estimate from 0.72 to 0.99 for the whole window."""
    dt = np.diff(ts) / SECONDS_PER_YEAR
    if lp.size < 3 or np.any(dt <= 0.0):
        return ts, lp
    r = truncate_jumps(np.diff(lp), dt)
    return ts, np.concatenate(([lp[0]], lp[0] + np.cumsum(r)))


def covariance(histories: Sequence[PriceHistory], window_s: float | None = None) -> Covariance:
    """Covariance/correlation across underlyings whose feeds tick at different, irregular times.

    Over the span every series covers (the last ``window_s`` seconds of it when given), with
    each series' jumps taken out (`_without_jumps`): variances are realised (Σ r² / span) and
    covariances Hayashi–Yoshida (Σ of products of overlapping returns / span), both annualised
    by elapsed time. The correlation is projected onto the nearest positive semi-definite
    matrix with unit diagonal. Needs every series to have at least 2 observations in the span.
    """
    if len(histories) == 0:
        raise RiskInputError("histories: empty")
    for h in histories:
        if h.timestamps.size < 3:
            raise RiskInputError(f"histories[{h.underlying}]: need at least 3 observations")
    start = max(float(h.timestamps[0]) for h in histories)
    end = min(float(h.timestamps[-1]) for h in histories)
    if window_s is not None:
        if not window_s > 0.0:
            raise RiskInputError(f"window_s: must be > 0, got {window_s}")
        start = max(start, end - window_s)
    if not end > start:
        raise RiskInputError("histories: the series share no common time span")
    clipped = [_without_jumps(*_clip_series(h, start, end)) for h in histories]
    for h, (ts, _) in zip(histories, clipped, strict=True):
        if ts.size < 3:
            raise RiskInputError(f"histories[{h.underlying}]: fewer than 3 rounds in the span")
    n = len(histories)
    span_years = (end - start) / SECONDS_PER_YEAR
    cov = np.empty((n, n))
    for i in range(n):
        ts_i, lp_i = clipped[i]
        cov[i, i] = float(np.sum(np.diff(lp_i) ** 2))
        for j in range(i + 1, n):
            ts_j, lp_j = clipped[j]
            cov[i, j] = cov[j, i] = hayashi_yoshida(ts_i, lp_i, ts_j, lp_j)
    cov /= span_years
    sd = np.sqrt(np.diag(cov))
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = cov / np.outer(sd, sd)
    raw = np.where(np.isfinite(raw), raw, 0.0)
    np.fill_diagonal(raw, 1.0)
    return Covariance(
        tuple(h.underlying for h in histories), cov, nearest_correlation(raw), end - start
    )
