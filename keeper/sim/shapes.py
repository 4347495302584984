"""The mechanics `keeper.sim.scenarios` builds paths with: shocks, IV, gas and move shapes.

Units: hourly steps; log returns; vols annualised over 8 760 h; IV annualised; gas in gwei.

* ETH and BTC shocks are Gaussian with a given correlation.
* Log IV mean-reverts to a target with a half-life (24 h unless a scenario says otherwise) and
  takes impulses: -1.5 × the hourly log return of the noise (both ways: the leverage effect); a
  scenario's own moves and jumps lift it by 1.5 × a fall and lower it by 0.4 × a rise. IV stays
  within [5 %, 300 %].
* Gas: log(base fee / calm) is an AR(1) (φ 0.8 per hour, shock sd 0.15) pushed up by 4 × the
  absolute ETH hourly log return, so crashes are expensive (a 35 % gap hour ≈ 140 gwei from a
  calm 25). Stylised days replace it during the event by a profile (× lognormal noise of sd
  0.10, kept within the profile's range); afterwards the AR resumes from the profile's level.
* Move shapes join anchor levels linearly (or with cosine easing) in log price; their noise is a
  Brownian bridge pinned at every anchor, so the stated levels are hit exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: Annualisation of hourly steps (365 days).
HOURS_PER_YEAR = 8760.0
#: BTC moves by this fraction of ETH's log move in the shaped scenarios (BTC is less volatile).
BTC_BETA = 0.8
#: Annualised noise on the shapes of the move scenarios (ETH; BTC's is BTC_BETA × it).
SHAPE_NOISE_VOL = 0.30
#: Log-IV change per unit hourly log return of the noise, both ways (leverage effect); also the
#: lift per unit log fall of a move: a 35 % gap takes ETH IV from 0.60 to about 1.14.
IV_LEVERAGE = 1.5
#: Log-IV fall per unit log rise of a scenario's move: rallies cheapen vol only a little.
IV_UP_RESPONSE = 0.4
#: Half-life of IV's mean reversion toward its target, hours.
IV_HALF_LIFE_H = 24.0
#: Bounds that keep IV meaningful for option pricing on chain (annualised).
IV_FLOOR, IV_CAP = 0.05, 3.0
#: Median base fee of a quiet market, gwei (the models' calm level unless a scenario says).
GAS_CALM_GWEI = 25.0
#: Hourly persistence of log base fee (a spike halves in about three hours).
GAS_AR_PHI = 0.8
#: Hourly shock sd of log base fee.
GAS_NOISE = 0.15
#: Log base fee added per unit |ETH hourly log return|: panics congest the chain.
GAS_MOVE_SENSITIVITY = 4.0
#: Hourly lognormal noise on the stylised event-day gas profiles.
GAS_EVENT_NOISE = 0.10
#: Lower bound so a base fee is always positive, far below anything the models produce.
GAS_FLOOR_GWEI = 0.1


@dataclass(frozen=True, slots=True)
class Body:
    """A scenario before its tail: (m, 2) per-step arrays (ETH, BTC) and (m + 1,) gas."""

    log_ret: FloatArray
    iv_target: FloatArray  # log IV target at each step
    iv_response: FloatArray  # log IV impulse at each step
    gas_override: FloatArray  # gwei where a stylised profile applies, NaN elsewhere
    calm_gas_gwei: float = GAS_CALM_GWEI
    iv_half_life_h: float = IV_HALF_LIFE_H
    #: Steps of calm before the scenario's move (its lead-in); None when there is no one move.
    lead_in_steps: int | None = None


@dataclass(frozen=True, slots=True)
class Leg:
    """A phase that ends at the given levels (relative to the start) after `hours`."""

    hours: float
    eth: float
    btc: float
    smooth: bool = False  # cosine easing instead of linear in log price
    instant: bool = False  # one step whatever the time_scale (a gap)


def steps(hours: float, time_scale: float) -> int:
    """Steps of a phase of `hours` under `time_scale`: rounded, at least one."""
    return max(1, round(hours * time_scale))


def shocks(rng: np.random.Generator, m: int, rho: float) -> FloatArray:
    """(m, 2) standard normals with correlation `rho` between the columns."""
    z = rng.standard_normal((m, 2))
    return np.column_stack([z[:, 0], rho * z[:, 0] + math.sqrt(1.0 - rho * rho) * z[:, 1]])


def diffusion(rng: np.random.Generator, vol: FloatArray, rho: float) -> FloatArray:
    """(m, 2) hourly log returns for annualised vols `vol` (m, 2), zero drift in price."""
    sd = vol / math.sqrt(HOURS_PER_YEAR)
    return shocks(rng, len(vol), rho) * sd - 0.5 * sd * sd


def move_response(move: FloatArray) -> FloatArray:
    """Log-IV impulse of a scenario's own move: falls lift IV more than rises lower it."""
    return np.where(move < 0.0, -IV_LEVERAGE * move, -IV_UP_RESPONSE * move)


def iv_path(start: FloatArray, target: FloatArray, response: FloatArray,
            half_life_h: float) -> FloatArray:
    """(n + 1, 2) annualised IV from `start` (2,): log IV reverts to `target` (n, 2) and takes
    the `response` (n, 2) impulses; row 0 is exactly `start`."""
    keep = 0.5 ** (1.0 / half_life_h)
    log_iv = np.empty((len(target) + 1, 2))
    log_iv[0] = np.log(start)
    for t in range(len(target)):
        log_iv[t + 1] = target[t] + keep * (log_iv[t] - target[t]) + response[t]
    iv = np.clip(np.exp(log_iv), IV_FLOOR, IV_CAP)
    iv[0] = start  # the start IV given, not exp(log(start))
    return iv


def gas_path(rng: np.random.Generator | None, abs_move: FloatArray, calm_gwei: float,
             override: FloatArray) -> FloatArray:
    """(n + 1,) base fee, gwei, > 0: the AR(1) above driven by `abs_move` (n,) (|ETH log
    return| per step); `override` (n + 1,) where finite. No noise when `rng` is None."""
    n = len(abs_move)
    eps = rng.standard_normal(n) * GAS_NOISE if rng is not None else np.zeros(n)
    gas = np.empty(n + 1)
    x = 0.0
    for t in range(n + 1):
        if t > 0:
            x = GAS_AR_PHI * x + GAS_MOVE_SENSITIVITY * float(abs_move[t - 1]) + float(eps[t - 1])
        if math.isnan(override[t]):
            gas[t] = max(calm_gwei * math.exp(x), GAS_FLOOR_GWEI)
        else:  # the profile's value exactly; the AR resumes from it
            gas[t] = override[t]
            x = math.log(override[t] / calm_gwei)
    return gas


def shaped(legs: tuple[Leg, ...], rho: float, rng: np.random.Generator, time_scale: float,
           start: FloatArray, *, noise_vol: tuple[float, float] = (SHAPE_NOISE_VOL,) * 2,
           event_gas: tuple[tuple[float, float], ...] = (), calm_gas_gwei: float = GAS_CALM_GWEI,
           iv_half_life_h: float = IV_HALF_LIFE_H) -> Body:
    """Body of a move-shaped scenario.

    `noise_vol`: ETH's annualised noise vol at the start and at the end (linear in between;
    BTC's is BTC_BETA × it); IV's target scales with it. (0, 0) means no noise and no draws.
    `event_gas`: (hours after the first leg, gwei) points, linear in between.
    """
    lens = [1 if leg.instant else steps(leg.hours, time_scale) for leg in legs]
    m = sum(lens)
    moves, level = [], np.zeros(2)
    for leg, k in zip(legs, lens, strict=True):
        u = np.linspace(0.0, 1.0, k + 1)
        profile = (1.0 - np.cos(np.pi * u)) / 2.0 if leg.smooth else u
        new = np.log([leg.eth, leg.btc])
        moves.append(np.outer(np.diff(profile), new - level))
        level = new
    move = np.vstack(moves)
    noise = np.zeros((m, 2))
    ratio = np.ones((m, 2))
    if noise_vol[0] > 0:
        vol = np.linspace(noise_vol[0], noise_vol[1], m)[:, None] * np.array([1.0, BTC_BETA])
        ratio = vol / vol[0]
        sd = vol / math.sqrt(HOURS_PER_YEAR)
        raw = shocks(rng, m, rho) * sd
        ends = np.cumsum(lens)
        for lo, hi in zip(ends - lens, ends, strict=True):
            var = sd[lo:hi] ** 2  # bridge: take out the leg's sum in proportion to its variance
            noise[lo:hi] = raw[lo:hi] - var / var.sum(axis=0) * raw[lo:hi].sum(axis=0)
    override = np.full(m + 1, np.nan)
    if event_gas:
        hours = (np.arange(m + 1) - lens[0]) / time_scale
        key_h = np.array([h for h, _ in event_gas], dtype=np.float64)
        key_g = np.array([g for _, g in event_gas], dtype=np.float64)
        on = (hours >= 0.0) & (hours <= key_h[-1])
        z = rng.standard_normal(int(on.sum())) * GAS_EVENT_NOISE
        z[np.isin(hours[on], key_h)] = 0.0  # the profile's own points are exact
        override[on] = np.clip(np.interp(hours[on], key_h, key_g) * np.exp(z),
                               key_g.min(), key_g.max())
    return Body(move + noise, np.log(start * ratio), move_response(move) - IV_LEVERAGE * noise,
                override, calm_gas_gwei, iv_half_life_h, lead_in_steps=lens[0])
