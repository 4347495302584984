"""Target leverage rules and risk-parity weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeper.errors import RiskInputError
from keeper.risk.allocation import (
    borrow_leverage_cap,
    cppi_leverage,
    health_leverage_cap,
    kelly_leverage,
    most_conservative,
    risk_parity_weights,
    vol_target_leverage,
)


def test_vol_target_by_hand() -> None:
    np.testing.assert_allclose(vol_target_leverage(0.40, [0.80, 0.20, 0.0]), [0.5, 2.0, math.inf])


def test_cppi_by_hand() -> None:
    # NAV 1.0M, HWM 1.2M, floor 80 % → 0.96M; cushion 40k × 3 = 120k exposure → 0.12.
    assert float(cppi_leverage(1_000_000.0, 1_200_000.0, 0.80, 3.0)) == pytest.approx(0.12)
    # HWM below NAV: the NAV is the high-water mark.
    assert float(cppi_leverage(1_000_000.0, 0.0, 0.80, 3.0)) == pytest.approx(0.6)


@given(nav=st.floats(1.0, 1e9), hwm_mult=st.floats(1.0, 3.0), floor=st.floats(0.0, 1.0),
       mult=st.floats(0.0, 10.0))
def test_cppi_exposure_is_zero_at_or_below_the_floor(nav: float, hwm_mult: float, floor: float,
                                                     mult: float) -> None:
    hwm = nav * hwm_mult
    lev = float(cppi_leverage(nav, hwm, floor, mult))
    if nav <= floor * hwm:
        assert lev == 0.0
    else:
        assert lev == pytest.approx(mult * (nav - floor * hwm) / nav, rel=1e-9, abs=1e-12)
    # exactly at the floor
    assert float(cppi_leverage(floor * hwm, hwm, floor, mult)) == 0.0


def test_kelly_by_hand() -> None:
    # half-Kelly, excess 10 %, variance 0.25 → 0.5 × 0.4 = 0.2; negative edge → 0; no view → inf.
    np.testing.assert_allclose(kelly_leverage([0.10, -0.05, math.nan], 0.25, 0.5),
                               [0.2, 0.0, math.inf])


def test_health_cap_gives_exactly_the_floor_health() -> None:
    nav, k, lt, h = 1_000_000.0, 800_000.0, 0.80, 1.35
    cap = float(health_leverage_cap(nav, k, lt, h))
    value = cap * nav
    debt = value - k  # buying with borrowed USDC keeps value − debt = K
    assert value * lt / debt == pytest.approx(h, rel=1e-12)
    assert float(health_leverage_cap(nav, -1.0, lt, h)) == 0.0
    assert float(health_leverage_cap(nav, k, 1.2, 1.1)) == math.inf


def test_borrow_cap_uses_the_ltv() -> None:
    cap = float(borrow_leverage_cap(1_000_000.0, 800_000.0, 0.75))
    value = cap * 1_000_000.0
    assert value - 800_000.0 == pytest.approx(value * 0.75)  # debt == LTV × value


def test_most_conservative_floors_at_zero() -> None:
    out = most_conservative(np.array([2.0, 1.0]), np.array([1.5, -0.2]), np.array([np.inf, 3.0]))
    np.testing.assert_array_equal(out, [1.5, 0.0])


def test_risk_parity_inverse_vol_when_uncorrelated() -> None:
    sd = np.array([0.8, 0.5, 0.4])
    w = risk_parity_weights(np.diag(sd**2))
    inv = 1 / sd
    np.testing.assert_allclose(w, inv / inv.sum(), atol=1e-10)


def test_risk_parity_two_assets_any_correlation() -> None:
    # With two assets, equal risk contributions ⇔ w1 σ1 = w2 σ2 whatever the correlation.
    sd = np.array([0.9, 0.3])
    cov = np.outer(sd, sd) * np.array([[1.0, 0.7], [0.7, 1.0]])
    w = risk_parity_weights(cov)
    assert w[0] * sd[0] == pytest.approx(w[1] * sd[1], rel=1e-9)


def test_risk_parity_equalises_contributions_with_correlation() -> None:
    sd = np.array([0.8, 0.5, 0.9])
    corr = np.array([[1.0, 0.6, 0.3], [0.6, 1.0, 0.5], [0.3, 0.5, 1.0]])
    cov = np.outer(sd, sd) * corr
    w = risk_parity_weights(cov)
    rc = w * (cov @ w)
    np.testing.assert_allclose(rc / rc.sum(), [1 / 3] * 3, atol=1e-9)


@st.composite
def spd(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(2, 5))
    a = np.array(draw(st.lists(st.floats(-1.0, 1.0), min_size=n * n, max_size=n * n)))
    a = a.reshape(n, n)
    sd = np.array(draw(st.lists(st.floats(0.1, 2.0), min_size=n, max_size=n)))
    corr = a @ a.T + np.eye(n) * 0.1
    d = np.sqrt(np.diag(corr))
    return np.asarray(corr / np.outer(d, d) * np.outer(sd, sd))


@settings(max_examples=60, deadline=None)
@given(cov=spd(), cap_extra=st.floats(0.0, 1.0))
def test_weights_sum_to_one_within_caps(cov: np.ndarray, cap_extra: float) -> None:
    n = cov.shape[0]
    cap = 1.0 / n + cap_extra * (1.0 - 1.0 / n)
    w = risk_parity_weights(cov, cap)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-9)
    assert np.all(w >= 0.0)
    assert np.all(w <= cap + 1e-9)


def test_risk_parity_rejects_infeasible_cap_and_bad_matrix() -> None:
    with pytest.raises(RiskInputError, match="max_weight"):
        risk_parity_weights(np.eye(3), 0.3)
    with pytest.raises(RiskInputError, match="square"):
        risk_parity_weights(np.ones((2, 3)))
    with pytest.raises(RiskInputError, match="symmetric"):
        risk_parity_weights(np.array([[1.0, 0.5], [0.0, 1.0]]))
