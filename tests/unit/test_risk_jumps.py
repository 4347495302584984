"""Volatility and stress on what feeds really do: a gap, a flat stretch, a steady trend.

Each case is one the keeper got wrong before (issue 8): a −35 % hour read as a one-day fall of
~88 % (the stress at its 95 % cap) and as weeks of 130–340 % EWMA vol; a Student-t fit on a
steady trend degenerated to ν ≈ 1; a flat stretch with one gap stopped the fit with
ZeroDivisionError. Reference values are worked by hand beside each assertion.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from keeper.risk.forecast import FALLBACK_CVAR_PER_SD, build_forecast, diffusion_shock
from keeper.risk.params import DESIGN_GAP, PolicyParams
from keeper.risk.tail import MAX_T_DOF, MIN_T_DOF, MIN_T_SCALE, fit_student_t
from keeper.risk.types import SECONDS_PER_YEAR, MarketView, PriceHistory
from keeper.risk.volatility import (
    JUMP_THRESHOLD_SD,
    covariance,
    forecast_vol,
    truncate_jumps,
)

HOUR = 3_600.0
DT = HOUR / SECONDS_PER_YEAR
T0 = 2_000_000_000.0


def _history(log_returns: np.ndarray, name: str = "ETH") -> PriceHistory:
    ts = T0 + HOUR * np.arange(log_returns.size + 1)
    px = 2_000.0 * np.exp(np.concatenate(([0.0], np.cumsum(log_returns))))
    return PriceHistory(name, ts, px)


def _noise(n: int, vol: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, vol * math.sqrt(DT), n)


def _gap_path(gap: float = 0.35, after: int = 48) -> np.ndarray:
    """The library's gap scenarios: noisy warm-up (60 % vol), a flat day, one hour of
    log(1 − gap), then flat."""
    return np.concatenate((_noise(400, 0.60, 1), np.zeros(24), [math.log(1 - gap)],
                           np.zeros(after)))


def _market(*histories: PriceHistory) -> MarketView:
    now = int(max(h.timestamps[-1] for h in histories))
    return MarketView(now=now, risk_free_rate=0.0, histories=histories, max_staleness_s=3_600)


def test_a_flat_stretch_and_one_gap_fits_without_dividing_by_zero() -> None:
    fc = build_forecast(_market(_history(_gap_path())), PolicyParams())
    assert math.isfinite(fc.vols["ETH"].vol)
    assert fc.shocks["ETH"] == pytest.approx(DESIGN_GAP)


@pytest.mark.parametrize("noisy,gap", [(0, -1.0), (20, -2.1)])
def test_t_fit_on_a_flat_series_with_one_gap_is_bounded(noisy: int, gap: float) -> None:
    # Before: these exact inputs raised ZeroDivisionError (the scale underflowed to 0 inside
    # the optimiser), which stopped the keeper in the simulator's gap scenarios.
    x = np.zeros(500)
    x[:noisy] = np.random.default_rng(0).normal(0.0, 0.03, noisy)
    x[300] = gap
    fit = fit_student_t(x)
    assert fit.scale >= MIN_T_SCALE
    assert MIN_T_DOF <= fit.df <= MAX_T_DOF


def test_a_gap_is_a_jump_not_weeks_of_volatility() -> None:
    path = _gap_path()
    truncated = truncate_jumps(path, np.full(path.size, DT))
    # The −35 % hour (log −0.431, ~70 robust sd of the 60 %-vol warm-up's hourly moves) is
    # taken out (zero) and nothing else changes.
    gap_at = 424
    assert truncated[gap_at] == 0.0
    assert np.allclose(np.delete(truncated, gap_at), np.delete(path, gap_at), rtol=1e-12, atol=0)
    vol = forecast_vol("ETH", _history(path), math.nan, 7 * 86_400.0)
    # Left in, the one hour alone carries 0.431² / (473 h / 8 760 h) ≈ 3.4 of annual variance
    # (~190 % vol); taken out, the forecast stays near the warm-up's 60 %.
    assert vol.vol < 0.80


def test_a_flash_crash_leaves_the_vol_where_the_path_without_it_has_it() -> None:
    # 400 h of 30 %-vol noise, the flash (−16 %, −16 %, then +9 % for 4 h) and two flat days.
    # Before, each flash hour was clipped to 5 robust sd and kept, so the forecast stayed above
    # the calm one for weeks (and with it the vol-target cut, after implied vol was back).
    noise = _noise(400, 0.30, 7)
    flash = np.array([-0.16, -0.16, 0.09, 0.09, 0.09, 0.09])
    with_flash = forecast_vol("ETH", _history(np.concatenate((noise, flash, np.zeros(48)))),
                              math.nan, 7 * 86_400.0)
    without = forecast_vol("ETH", _history(np.concatenate((noise, np.zeros(54)))), math.nan,
                           7 * 86_400.0)
    assert with_flash.vol == pytest.approx(without.vol, rel=1e-12)


def test_flat_rounds_do_not_make_noise_a_jump() -> None:
    # 300 h of 30 %-vol noise then 600 flat hours (heartbeats repeating the price). Counted,
    # the zeros made the median absolute deviation 0, the robust sd its 5 % floor and the
    # threshold 0.25 — under the noise's own 0.30 sd, so most noise hours became "jumps".
    path = np.concatenate((_noise(300, 0.30, 8), np.zeros(600)))
    assert np.allclose(truncate_jumps(path, np.full(path.size, DT)), path, rtol=1e-12, atol=0)


def test_a_co_jump_does_not_enter_the_correlation() -> None:
    # Two feeds with 0.7-correlated 50 %-vol hourly noise, then one hour where both fall 30 %
    # (the design gap's case: every underlying at once). The correlation is the noise's own
    # realised one, Σ ra·rb / √(Σ ra² · Σ rb²) (no demeaning); left in, the hour took it to ~0.98.
    rng = np.random.default_rng(9)
    a = rng.normal(0.0, 1.0, 500)
    b = 0.7 * a + math.sqrt(1 - 0.49) * rng.normal(0.0, 1.0, 500)
    ra, rb = a * 0.5 * math.sqrt(DT), b * 0.5 * math.sqrt(DT)
    gap = math.log(0.7)
    cv = covariance([_history(np.append(ra, gap), "ETH"), _history(np.append(rb, gap), "BTC")])
    by_hand = float(np.sum(ra * rb) / math.sqrt(np.sum(ra * ra) * np.sum(rb * rb)))
    assert cv.corr[0, 1] == pytest.approx(by_hand, abs=1e-9)


def test_a_flash_crash_is_not_a_fat_tail() -> None:
    # The same 400 h of noise with the flash: the one-day 99 % CVaR is the Gaussian noise's,
    # 2.665 sd × 0.30 × √(1 d / 1 y) = 4.1 % — the flash hours are the design gap's risk.
    path = np.concatenate((_noise(400, 0.30, 7), [-0.16, -0.16, 0.09, 0.09, 0.09, 0.09]))
    no_floor = PolicyParams(design_gap=0.0, stress_min_shock=0.0, grid_range=1e-6)
    per_sd = stats.norm.pdf(stats.norm.ppf(0.99)) / 0.01
    by_hand = -math.expm1(-per_sd * 0.30 * math.sqrt(86_400.0 / SECONDS_PER_YEAR))
    assert diffusion_shock(path, np.full(path.size, DT), no_floor) == pytest.approx(by_hand,
                                                                                    rel=0.15)


def test_the_stress_after_a_gap_is_the_design_gap_not_the_cap() -> None:
    # Before: the hour scaled by √24 read as a one-day log fall of 2.1 (−88 %): shock 0.95.
    shock = diffusion_shock(_gap_path(), np.full(473, DT), PolicyParams())
    assert shock == pytest.approx(DESIGN_GAP)


def test_a_steady_trend_is_not_a_fat_tail() -> None:
    # A calm rally: +0.7 % an hour (17 % a day) with 10 %-vol Gaussian noise. The stress is the
    # noise's one-day 99 % CVaR — 2.665 sd × 0.10 × √(1 d / 1 y) = 1.39 % — whatever the trend.
    trend = 0.007 + _noise(500, 0.10, 3)
    no_floor = PolicyParams(design_gap=0.0, stress_min_shock=0.0, grid_range=1e-6)
    per_sd = stats.norm.pdf(stats.norm.ppf(0.99)) / 0.01
    by_hand = -math.expm1(-per_sd * 0.10 * math.sqrt(86_400.0 / SECONDS_PER_YEAR))
    assert diffusion_shock(trend, np.full(500, DT), no_floor) == pytest.approx(by_hand, rel=0.1)
    assert diffusion_shock(trend, np.full(500, DT), PolicyParams()) == pytest.approx(DESIGN_GAP)


def test_a_high_diffusive_vol_stresses_beyond_the_design_gap() -> None:
    # 250 % vol, Gaussian, no jumps: the fit finds a thin tail, so the one-day 99 % CVaR is the
    # Gaussian's φ(z₀.₉₉)/0.01 = 2.665 sd; sd = 2.5 × √(1 d / 1 y) = 0.131: log fall 0.349,
    # a 29.5 % fall — above a 20 % design gap.
    noisy = _noise(1_500, 2.50, 4)
    shock = diffusion_shock(noisy, np.full(1_500, DT), PolicyParams(design_gap=0.20))
    per_sd = stats.norm.pdf(stats.norm.ppf(0.99)) / 0.01
    by_hand = -math.expm1(-per_sd * 2.5 * math.sqrt(86_400.0 / SECONDS_PER_YEAR))
    assert shock == pytest.approx(by_hand, rel=0.05)
    assert shock < -math.expm1(-FALLBACK_CVAR_PER_SD * 0.131)  # thinner than the ν = 4 fallback


def test_jump_threshold_is_stated_in_robust_sd() -> None:
    z_sd = 0.5  # annualised
    noise = _noise(1_000, z_sd, 5)
    dt = np.full(noise.size + 1, DT)
    # 10 robust sd is a jump (taken out); 4 is not (kept as it is).
    assert JUMP_THRESHOLD_SD == 5.0
    assert truncate_jumps(np.append(noise, 10 * z_sd * math.sqrt(DT)), dt)[-1] == 0.0
    four = 4 * z_sd * math.sqrt(DT)
    assert truncate_jumps(np.append(noise, four), dt)[-1] == pytest.approx(four)
