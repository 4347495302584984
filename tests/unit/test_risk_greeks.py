"""Black–Scholes price and greeks against published values, parity, finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeper.errors import RiskInputError
from keeper.risk.greeks import black_scholes


def test_hull_example_call_and_put() -> None:
    # Hull, "Options, Futures, and Other Derivatives" (8th ed.), Example 15.6:
    # S=42, K=40, r=10 %, σ=20 %, T=0.5 → call 4.76, put 0.81.
    g = black_scholes(42.0, 40.0, 0.5, 0.10, 0.20, np.array([True, False]))
    assert g.price[0] == pytest.approx(4.76, abs=0.005)
    assert g.price[1] == pytest.approx(0.81, abs=0.005)


def test_hull_greek_letters_example() -> None:
    # Hull (8th ed.), chapter 19 ("The Greek Letters"), the running example: a call with
    # S=49, K=50, r=5 %, σ=20 %, T=20 weeks=0.3846 is worth 2.40; delta 0.522 (Ex. 19.1),
    # gamma 0.066 (Ex. 19.4), vega 12.1 per 1.00 of vol (Ex. 19.6), theta −4.31 a year (Ex. 19.2).
    g = black_scholes(49.0, 50.0, 0.3846, 0.05, 0.20, True)
    assert float(g.price) == pytest.approx(2.40, abs=0.005)
    assert float(g.delta) == pytest.approx(0.522, abs=0.0005)
    assert float(g.gamma) == pytest.approx(0.066, abs=0.0005)
    assert float(g.vega) == pytest.approx(12.1, abs=0.05)
    assert float(g.theta) == pytest.approx(-4.31, abs=0.005)


def test_haug_generalised_black_scholes_example() -> None:
    # Haug, "The Complete Guide to Option Pricing Formulas" (2nd ed.), §1.1.1:
    # S=60, K=65, T=0.25, r=8 %, σ=30 % → call 2.1334.
    assert float(black_scholes(60.0, 65.0, 0.25, 0.08, 0.30, True).price) == pytest.approx(
        2.1334, abs=5e-5)


@settings(max_examples=200, deadline=None)
@given(
    s=st.floats(1.0, 1e5), k_ratio=st.floats(0.3, 3.0), t=st.floats(1e-3, 5.0),
    r=st.floats(-0.02, 0.2), vol=st.floats(0.01, 3.0),
)
def test_put_call_parity(s: float, k_ratio: float, t: float, r: float, vol: float) -> None:
    k = s * k_ratio
    g = black_scholes(s, k, t, r, vol, np.array([True, False]))
    assert g.price[0] - g.price[1] == pytest.approx(s - k * math.exp(-r * t), rel=1e-9,
                                                    abs=1e-9 * s)
    assert g.delta[0] - g.delta[1] == pytest.approx(1.0, abs=1e-12)
    assert g.gamma[0] == pytest.approx(g.gamma[1], rel=1e-12)


@pytest.mark.parametrize("is_call", [True, False])
@pytest.mark.parametrize("s,k,t,r,vol", [(100, 100, 0.5, 0.03, 0.4), (3000, 3500, 0.08, 0.05,
                                                                         0.8), (50, 40, 2.0, 0.0,
                                                                                0.2)])
def test_greeks_match_finite_differences(is_call: bool, s: float, k: float, t: float, r: float,
                                         vol: float) -> None:
    def px(s_: float = s, t_: float = t, v_: float = vol) -> float:
        return float(black_scholes(s_, k, t_, r, v_, is_call).price)

    g = black_scholes(s, k, t, r, vol, is_call)
    hs, ht, hv = s * 1e-4, t * 1e-5, 1e-5
    assert float(g.delta) == pytest.approx((px(s + hs) - px(s - hs)) / (2 * hs), rel=1e-6,
                                           abs=1e-9)
    assert float(g.gamma) == pytest.approx((px(s + hs) - 2 * px() + px(s - hs)) / hs**2,
                                           rel=1e-4)
    assert float(g.vega) == pytest.approx((px(v_=vol + hv) - px(v_=vol - hv)) / (2 * hv),
                                          rel=1e-6)
    # theta is −∂V/∂T (value change as calendar time passes and T shrinks), per year.
    assert float(g.theta) == pytest.approx(-(px(t_=t + ht) - px(t_=t - ht)) / (2 * ht),
                                           rel=1e-5)


@settings(max_examples=100, deadline=None)
@given(s=st.floats(10.0, 1e4), k_ratio=st.floats(0.5, 2.0), lam=st.floats(0.01, 100.0),
       is_call=st.booleans())
def test_homogeneous_in_spot_and_strike(s: float, k_ratio: float, lam: float,
                                        is_call: bool) -> None:
    k = s * k_ratio
    a = black_scholes(s, k, 0.7, 0.03, 0.6, is_call)
    b = black_scholes(lam * s, lam * k, 0.7, 0.03, 0.6, is_call)
    assert float(b.price) == pytest.approx(lam * float(a.price), rel=1e-8, abs=1e-12 * lam * s)
    assert float(b.delta) == pytest.approx(float(a.delta), rel=1e-8, abs=1e-12)
    assert float(b.gamma) == pytest.approx(float(a.gamma) / lam, rel=1e-8, abs=1e-300)
    assert float(b.vega) == pytest.approx(lam * float(a.vega), rel=1e-8, abs=1e-12 * lam * s)
    assert float(b.theta) == pytest.approx(lam * float(a.theta), rel=1e-8, abs=1e-12 * lam * s)


def test_expired_options_are_intrinsic_with_step_delta() -> None:
    s = np.array([90.0, 100.0, 110.0])
    call = black_scholes(s, 100.0, 0.0, 0.05, 0.5, True)
    put = black_scholes(s, 100.0, -0.1, 0.05, 0.5, False)
    np.testing.assert_array_equal(call.price, [0.0, 0.0, 10.0])
    np.testing.assert_array_equal(call.delta, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(put.price, [10.0, 0.0, 0.0])
    np.testing.assert_array_equal(put.delta, [-1.0, -0.5, 0.0])
    for g in (call, put):
        np.testing.assert_array_equal(g.gamma, 0.0)
        np.testing.assert_array_equal(g.vega, 0.0)
        np.testing.assert_array_equal(g.theta, 0.0)


def test_zero_vol_is_the_discounted_forward_payoff() -> None:
    r, t, k = 0.05, 1.0, 100.0
    disc_k = k * math.exp(-r * t)
    g = black_scholes(np.array([90.0, 110.0]), k, t, r, 0.0, True)
    assert g.price[0] == 0.0 and g.delta[0] == 0.0 and g.theta[0] == 0.0
    assert g.price[1] == pytest.approx(110.0 - disc_k, rel=1e-15)
    assert g.delta[1] == 1.0
    assert g.theta[1] == pytest.approx(-r * disc_k, rel=1e-15)  # value of K e^{-rT} decays
    p = black_scholes(90.0, k, t, r, 0.0, False)
    assert float(p.price) == pytest.approx(disc_k - 90.0, rel=1e-15)
    assert float(p.delta) == -1.0
    assert float(p.theta) == pytest.approx(r * disc_k, rel=1e-15)
    # The limit σ → 0 from the diffusive formula agrees.
    tiny = black_scholes(110.0, k, t, r, 1e-6, True)
    assert float(tiny.price) == pytest.approx(float(g.price[1]), rel=1e-9)
    assert float(tiny.theta) == pytest.approx(float(g.theta[1]), rel=1e-6)


def test_no_nan_anywhere_on_degenerate_grid() -> None:
    s, t, v = np.meshgrid([50.0, 100.0, 150.0], [-1.0, 0.0, 1e-9, 1.0], [0.0, 1e-12, 0.3])
    g = black_scholes(s, 100.0, t, 0.03, v, s > 90.0)
    for arr in (g.price, g.delta, g.gamma, g.vega, g.theta):
        assert np.all(np.isfinite(arr))


def test_broadcasting_shapes() -> None:
    g = black_scholes(np.array([[90.0], [100.0], [110.0]]), np.array([[95.0, 100.0, 105.0,
                                                                       110.0]]), 0.5, 0.01,
                      0.3, True)
    assert g.price.shape == (3, 4)
    assert float(g.price[1, 1]) == pytest.approx(float(black_scholes(100, 100, 0.5, 0.01, 0.3,
                                                                     True).price))


@pytest.mark.parametrize("kwargs,match", [
    (dict(spot=-1.0), "spot"),
    (dict(strike=0.0), "strike"),
    (dict(vol=-0.1), "vol"),
    (dict(vol=math.nan), "vol"),
    (dict(t_years=math.inf), "t_years"),
    (dict(spot=[1.0, 2.0, 3.0], strike=[1.0, 2.0]), "broadcast|shape"),
])
def test_bad_input_raises(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = dict(spot=100.0, strike=100.0, t_years=1.0, rate=0.0, vol=0.2,
                                   is_call=True)
    args.update(kwargs)
    with pytest.raises(RiskInputError, match=match):
        black_scholes(**args)
