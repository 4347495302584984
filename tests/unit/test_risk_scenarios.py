"""The portfolio-margin scenario grid against hand computations and an independent
Black–Scholes (scipy's normal cdf, the textbook formula)."""

from __future__ import annotations

import math

import pytest
from scipy.stats import norm

from keeper.errors import RiskInputError
from keeper.risk.scenarios import GridSpec, scenario_grid, vol_shift
from keeper.risk.types import SECONDS_PER_YEAR, OptionPosition, PerpPosition

from .conftest import NOW, eth, vault

DAY = 86_400


def bs_call(s: float, k: float, t: float, vol: float) -> float:
    """Textbook Black–Scholes call, zero rate."""
    d1 = (math.log(s / k) + 0.5 * vol * vol * t) / (vol * math.sqrt(t))
    return s * norm.cdf(d1) - k * norm.cdf(d1 - vol * math.sqrt(t))


def scenario(report, move: float, vol: str, extended: bool = False):
    return next(s for s in report.scenarios
                if s.price_move == pytest.approx(move) and s.vol == vol and s.extended == extended)


def test_deribits_grid_is_nine_buckets_over_16_percent_times_three_vols_plus_the_extended_table(
) -> None:
    spec = GridSpec()
    assert spec.price_moves().tolist() == pytest.approx(
        [-0.16, -0.12, -0.08, -0.04, 0.0, 0.04, 0.08, 0.12, 0.16])
    report = scenario_grid(vault(), NOW, 0.0)
    assert len(report.scenarios) == 9 * 3 + 4
    assert sorted(s.price_move for s in report.scenarios if s.extended) == [-0.66, -0.33, 0.5, 1.0]
    assert {s.vol for s in report.scenarios if s.extended} == {"up"}


def test_a_levered_spot_book_loses_its_move_and_its_lending_health_falls_with_it() -> None:
    # 750 ETH at 2 000 (1.5M), LT 0.80, debt 0.5M, no perps or options.
    report = scenario_grid(vault(), NOW, 0.0)
    # Grid's worst: −16 % of 1.5M = −240k; health 1.5M × 0.84 × 0.8 / 0.5M = 2.016.
    assert report.worst.price_move == pytest.approx(-0.16)
    assert report.worst.pnl_usd == pytest.approx(-240_000.0)
    assert report.worst.lending_health == pytest.approx(2.016)
    assert math.isinf(report.worst.perp_health)
    # Extended −66 %: −990k and 1.5M × 0.34 × 0.8 / 0.5M = 0.816 — the weakest scenario.
    assert report.worst_extended is not None
    assert report.worst_extended.pnl_usd == pytest.approx(-990_000.0)
    assert report.weakest.price_move == pytest.approx(-0.66)
    assert report.weakest.binding_health == pytest.approx(0.816)
    # The zero move reproduces today's health: 1.5M × 0.8 / 0.5M.
    assert scenario(report, 0.0, "same").lending_health == pytest.approx(2.4)
    assert scenario(report, 0.0, "same").pnl_usd == pytest.approx(0.0)


def test_a_short_perp_hedge_binds_on_the_up_moves() -> None:
    # 750 ETH spot hedged by 750 ETH short perps; margin 200k, upnl 0, maintenance 5 %.
    perp = PerpPosition("ETH", -750.0, 2_000.0, 0.0, 0.05)
    report = scenario_grid(vault(perps=(perp,), perp_margin_usd=200_000.0), NOW, 0.0)
    # Delta-neutral: every move's P&L is 0.
    assert max(abs(s.pnl_usd) for s in report.scenarios) == pytest.approx(0.0, abs=1e-6)
    # +16 %: equity 200k − 750 × 2000 × 0.16 = −40k → 0 (the venue is empty).
    assert scenario(report, 0.16, "same").perp_health == 0.0
    # +8 %: 200k − 120k = 80k over 750 × 2160 × 0.05 = 81k → 0.98765.
    assert scenario(report, 0.08, "same").perp_health == pytest.approx(80_000 / 81_000)
    # −16 %: 200k + 240k over 750 × 1680 × 0.05 = 63k.
    assert scenario(report, -0.16, "same").perp_health == pytest.approx(440_000 / 63_000)
    assert report.weakest.perp_health == 0.0 and report.weakest.price_move > 0


def test_vol_moves_more_for_short_expiries_and_is_capped() -> None:
    spec = GridSpec()
    t = [30 * DAY / SECONDS_PER_YEAR, 15 * DAY / SECONDS_PER_YEAR, 60.0 / SECONDS_PER_YEAR]
    # 30 days: 45 %; 15 days: 45 % × 2^0.3 = 55.40 %; a minute: scaled to a day, 45 % × 30^0.3 =
    # 124.5 %, capped at 90 %.
    assert vol_shift(spec, t).tolist() == pytest.approx([0.45, 0.45 * 2 ** 0.3, 0.90])


def test_a_written_call_is_repriced_at_the_moved_spot_and_vol_and_its_locked_tokens_move() -> None:
    # One written ATM call, 30 days, IV 0.80, covered by 1 locked ETH; no spot, no debt.
    expiry = NOW + 30 * DAY
    call = OptionPosition("ETH", True, 2_000.0, expiry, -1.0, 0.0, 0.80, locked_underlying=1.0)
    v = vault(assets=(eth(0.0),), debt_usdc=0.0, options=(call,), nav_usd=1_000.0)
    report = scenario_grid(v, NOW, 0.0)
    t = 30 * DAY / SECONDS_PER_YEAR
    c0 = bs_call(2_000.0, 2_000.0, t, 0.80)
    # Flat price, vol up 45 % (0.80 → 1.16): the short call loses C(1.16) − C(0.80) ≈ 81.5.
    up = scenario(report, 0.0, "up").pnl_usd
    assert up == pytest.approx(-(bs_call(2_000.0, 2_000.0, t, 1.16) - c0), rel=1e-9)
    assert up == pytest.approx(-81.53, abs=0.05)
    # +16 %, vol down (0.80 → 0.44): the locked token gains 320, the call costs more.
    down = scenario(report, 0.16, "down").pnl_usd
    assert down == pytest.approx(320.0 - (bs_call(2_320.0, 2_000.0, t, 0.44) - c0), rel=1e-9)
    # −16 % with vol up: the locked token loses 320, less what the cheaper call gives back.
    fall_up = -320.0 - (bs_call(1_680.0, 2_000.0, t, 1.16) - c0)
    assert scenario(report, -0.16, "up").pnl_usd == pytest.approx(fall_up, rel=1e-9)
    assert report.worst.pnl_usd == pytest.approx(
        min(s.pnl_usd for s in report.scenarios if not s.extended))
    assert math.isinf(report.weakest.binding_health)  # nothing owed on either venue


def test_bad_grid_parameters_are_named() -> None:
    with pytest.raises(RiskInputError, match="buckets"):
        GridSpec(buckets=8)
    with pytest.raises(RiskInputError, match="price_range"):
        GridSpec(price_range=1.5)
    with pytest.raises(RiskInputError, match="extended_moves"):
        GridSpec(extended_moves=(-1.0,))
