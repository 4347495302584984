"""Student-t and historical VaR/CVaR; the correlated stress scenario's health."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from keeper.errors import RiskInputError
from keeper.risk.tail import (
    StudentT,
    fit_student_t,
    historical_var_cvar,
    stress_health,
    student_t_var_cvar,
    tail_risk,
)
from keeper.risk.types import PerpPosition

from .conftest import eth, vault


@pytest.mark.parametrize("df,loc,scale", [(3.0, 0.0, 0.02), (4.0, 0.001, 0.03), (10.0, -0.002,
                                                                                  0.01)])
def test_student_t_cvar_matches_numerical_integration(df: float, loc: float,
                                                      scale: float) -> None:
    var, cvar = student_t_var_cvar(StudentT(df, loc, scale), 0.99)
    q = stats.t.ppf(0.01, df, loc, scale)
    assert var == pytest.approx(-q, rel=1e-10)
    # ES = −E[X | X <= q] = −(1/0.01) ∫_{−∞}^{q} x f(x) dx, integrated numerically.
    tail_mean, _ = integrate.quad(lambda x: x * stats.t.pdf(x, df, loc, scale), -np.inf, q)
    assert cvar == pytest.approx(-tail_mean / 0.01, rel=1e-7)
    assert cvar > var


def test_t_fit_recovers_fat_tails() -> None:
    x = stats.t.rvs(4.0, loc=0.0, scale=0.02, size=20_000, random_state=np.random.default_rng(2))
    fit = fit_student_t(x)
    assert fit.df == pytest.approx(4.0, abs=0.5)
    assert fit.scale == pytest.approx(0.02, rel=0.05)
    assert fit.loc == pytest.approx(0.0, abs=0.001)


def test_fat_tails_beat_the_gaussian_at_99() -> None:
    x = stats.t.rvs(3.0, scale=0.02, size=20_000, random_state=np.random.default_rng(8))
    tr = tail_risk(x)
    gauss_cvar = float(np.std(x)) * stats.norm.pdf(stats.norm.ppf(0.99)) / 0.01
    # On t(3) data a Gaussian understates the 99 % CVaR; the t-fit and history agree.
    assert tr.cvar_t > gauss_cvar
    assert tr.cvar_t == pytest.approx(tr.cvar_hist, rel=0.15)


def test_historical_var_cvar_by_hand() -> None:
    # Losses 1 %…100 % in steps of 1 % (as returns −0.01…−1.00), 100 points.
    r = -np.arange(1, 101) / 100.0
    assert historical_var_cvar(r, 0.99) == pytest.approx((1.00, 1.00))
    # 95 %: k = 5 worst: 1.00, 0.99, 0.98, 0.97, 0.96 → VaR 0.96, CVaR 0.98.
    assert historical_var_cvar(r, 0.95) == pytest.approx((0.96, 0.98))


def test_tail_inputs_validated() -> None:
    with pytest.raises(RiskInputError, match="returns: need"):
        fit_student_t(np.zeros(10))
    with pytest.raises(RiskInputError, match="level"):
        historical_var_cvar(np.zeros(10), 1.5)
    with pytest.raises(RiskInputError, match="df"):
        student_t_var_cvar(StudentT(1.0, 0.0, 1.0))


def test_stress_health_by_hand() -> None:
    v = vault(debt_usdc=1_000_000.0, perp_margin_usd=60_000.0,
              perps=(PerpPosition("ETH", -500.0, 2_000.0, 0.0, 0.05),))
    base = stress_health(v, 0.0)
    assert base.lending == pytest.approx(1.2)  # 1.5M × 0.8 / 1.0M
    assert base.perp == pytest.approx(60_000 / 50_000)
    s = stress_health(v, 0.20)
    # lending: 1.2 × 0.8 = 0.96. perp: short gains 500 × 2000 × 0.2 = 200k; maintenance at
    # 1600: 500 × 1600 × 0.05 = 40k → (60k + 200k) / 40k = 6.5.
    assert s.lending == pytest.approx(0.96)
    assert s.perp == pytest.approx(6.5)
    assert s.binding == pytest.approx(0.96)
    assert stress_health(v, {"ETH": 0.5}).lending == pytest.approx(0.6)
    assert stress_health(vault(debt_usdc=0.0), 0.5).lending == math.inf
    with pytest.raises(RiskInputError, match="shocks"):
        stress_health(v, 1.5)
    assert stress_health(vault(assets=(eth(0.0),), debt_usdc=1.0), 0.1).lending == 0.0
