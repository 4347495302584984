"""Black–Scholes price and greeks, vectorised with numpy broadcasting.

Conventions: spot and strike in USD per unit of underlying, time in years (ACT/365), rate and
volatility annualised (continuously compounded, fractions). Greeks are per one unit of
underlying, long one option:

- ``delta`` dV/dS (dimensionless), ``gamma`` d²V/dS² (1/USD);
- ``vega`` dV/dσ per 1.00 of volatility (divide by 100 for "per vol point");
- ``theta`` dV/dt per year of calendar time (= -dV/dT; divide by 365 for per day).

Degenerate cases are exact limits, never NaN: expired options (``t_years <= 0``) are worth
intrinsic value with a step delta (0.5 exactly at the money, the limit of N(d1)); zero
volatility prices the deterministic forward payoff ``max(S - K e^{-rT}, 0)`` with step delta, zero
gamma and theta from discounting only (vega keeps its limit S·φ(0)·√T at the forward money).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from keeper.errors import RiskInputError
from keeper.risk.validation import FloatArray, as_float_array

logger = logging.getLogger(__name__)

#: 1/sqrt(2π), for the standard normal density.
INV_SQRT_2PI: float = 1.0 / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True, slots=True)
class Greeks:
    """Black–Scholes value and sensitivities of one long option per unit of underlying."""

    price: FloatArray
    delta: FloatArray
    gamma: FloatArray
    vega: FloatArray
    theta: FloatArray


def black_scholes(
    spot: object,
    strike: object,
    t_years: object,
    rate: object,
    vol: object,
    is_call: object,
) -> Greeks:
    """Black–Scholes(-Merton, no dividends) price and greeks of European options.

    Every argument is a scalar or array; they broadcast together. ``spot`` and ``strike`` must be
    > 0, ``vol`` >= 0, all finite; ``is_call`` is boolean (True = call). Invariants: put–call
    parity ``C - P = S - K e^{-rT}`` for T > 0; gammas and vegas >= 0; call delta in [0, 1],
    put delta in [-1, 0]. Raises `RiskInputError` on bad input or shapes that do not broadcast.
    """
    s = as_float_array("spot", spot)
    k = as_float_array("strike", strike)
    t = as_float_array("t_years", t_years)
    r = as_float_array("rate", rate)
    v = as_float_array("vol", vol)
    call = np.asarray(is_call, dtype=bool)
    if np.any(s <= 0.0):
        raise RiskInputError("spot: must be > 0")
    if np.any(k <= 0.0):
        raise RiskInputError("strike: must be > 0")
    if np.any(v < 0.0):
        raise RiskInputError("vol: must be >= 0")
    try:
        s, k, t, r, v, call = np.broadcast_arrays(s, k, t, r, v, call)
    except ValueError as exc:
        raise RiskInputError(f"spot/strike/t_years/rate/vol/is_call: {exc}") from exc

    live = t > 0.0
    diffusive = live & (v > 0.0)
    all_diffusive = bool(diffusive.all())
    t_live = t if all_diffusive else np.where(live, t, 0.0)
    disc_k = k * np.exp(-r * t_live)  # K at expiry (t<=0) is undiscounted: intrinsic value
    sqrt_t = np.sqrt(t if all_diffusive else np.where(diffusive, t, 1.0))
    sig = v if all_diffusive else np.where(diffusive, v, 1.0)
    sig_sqrt_t = sig * sqrt_t
    d1 = (np.log(s / disc_k) + 0.5 * sig_sqrt_t * sig_sqrt_t) / sig_sqrt_t
    d2 = d1 - sig_sqrt_t
    pdf1 = INV_SQRT_2PI * np.exp(-0.5 * d1 * d1)
    n_d1 = ndtr(d1)
    n_d2 = ndtr(d2)
    call_px = s * n_d1 - disc_k * n_d2
    price_bs = np.where(call, call_px, call_px - s + disc_k)  # put by parity
    delta_bs = np.where(call, n_d1, n_d1 - 1.0)
    gamma_bs = pdf1 / (s * sig_sqrt_t)
    vega_bs = s * pdf1 * sqrt_t
    decay = -0.5 * vega_bs * sig / t_live if all_diffusive else -s * pdf1 * sig / (2.0 * sqrt_t)
    r_disc_k = r * disc_k
    theta_bs = np.where(call, decay - r_disc_k * n_d2, decay + r_disc_k * (1.0 - n_d2))
    if all_diffusive:
        return Greeks(price_bs, delta_bs, gamma_bs, vega_bs, theta_bs)

    # Deterministic branch (expired, or zero volatility): payoff on the (discounted) strike.
    sign = np.where(call, 1.0, -1.0)
    moneyness = sign * (s - disc_k)
    itm = moneyness > 0.0
    atm = moneyness == 0.0
    price_det = np.maximum(moneyness, 0.0)
    # Call delta steps 0 → ½ → 1 across the (discounted) strike; put delta is that minus 1.
    step = np.where(s > disc_k, 1.0, np.where(atm, 0.5, 0.0))
    delta_det = np.where(call, step, step - 1.0)
    # Zero-vol theta: only discounting of an in-the-money strike moves the value with time.
    theta_det = np.where(live & itm, -sign * r_disc_k, 0.0)
    theta_det = np.where(live & atm, np.where(call, -0.5, 0.5) * r_disc_k, theta_det)
    # Vega keeps its non-zero limit S·φ(0)·√T exactly at the (forward) money; gamma is a Dirac
    # spike there and is reported as 0 (no finite hedge ratio change exists).
    vega_det = np.where(live & atm, s * INV_SQRT_2PI * np.sqrt(t_live), 0.0)

    return Greeks(
        price=np.where(diffusive, price_bs, price_det),
        delta=np.where(diffusive, delta_bs, delta_det),
        gamma=np.where(diffusive, gamma_bs, 0.0),
        vega=np.where(diffusive, vega_bs, vega_det),
        theta=np.where(diffusive, theta_bs, theta_det),
    )
