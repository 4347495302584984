"""Seeded market paths for the simulator: spot, implied vol and base fee, one step per hour.

A path gives, for ETH and BTC, the spot level *relative to the start* (``spot[u][0] == 1``) and
the annualised implied vol (``iv[u][0]`` is the start IV given), plus the base fee in gwei. Every
scenario ends with a flat tail (spot constant, IV decaying back to its start level, calm gas),
48 h at default. The same ``(seed, path, name, kwargs)`` gives the same arrays in any process
(`path_seed`). Pure numpy; nothing here touches the chain. The shared models (leverage-effect IV,
AR(1) gas rising with the size of the move, bridged noise on move shapes) are in
`keeper.sim.shapes`; each scenario's one-line description states its own numbers.

Move-shaped scenarios open with a 24 h lead-in and add 30 % (ETH) / 24 % (BTC) annualised noise
unless stated; the gaps are exact and identical on every path. ``time_scale`` multiplies every
phase (lead-in, moves, calm parts, the default tail), rounded, at least one step each; a gap stays
one step. The sizes of the moves do not change.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType

import numpy as np

from keeper.errors import ConfigError, KeeperError
from keeper.sim.shapes import (
    BTC_BETA,
    GAS_CALM_GWEI,
    IV_HALF_LIFE_H,
    IV_LEVERAGE,
    IV_UP_RESPONSE,
    SHAPE_NOISE_VOL,
    Body,
    FloatArray,
    Leg,
    diffusion,
    gas_path,
    iv_path,
    move_response,
    shaped,
    steps,
)

UNDERLYINGS = ("ETH", "BTC")
#: Near-dated at-the-money implied vols of a calm market (annualised).
DEFAULT_START_IV: Mapping[str, float] = MappingProxyType({"ETH": 0.60, "BTC": 0.50})
#: One simulated step is one hour of market time.
STEP_S = 3600
#: Calm time before a move, so positions and hedges are in steady state when it hits.
LEAD_IN_HOURS = 24
#: Default flat tail: long enough for every deferred action and oracle lag to play out.
TAIL_HOURS = 48


class UnknownScenario(KeeperError):
    """A scenario name that is not in `SCENARIOS`; the message lists the known ones."""


@dataclass(frozen=True, slots=True)
class ScenarioPath:
    """One generated path. Arrays have shape (n_steps + 1,) and are read-only."""

    name: str
    seed: int  # the per-path seed actually used (`path_seed`)
    step_s: int
    spot: Mapping[str, FloatArray]  # level relative to the start, spot[u][0] == 1.0
    iv: Mapping[str, FloatArray]  # annualised implied vol, iv[u][0] == the start IV
    base_fee_gwei: FloatArray  # > 0 everywhere
    oracle_lag_steps: int  # the on-chain oracle shows the spot of this many steps earlier
    tail_start: int  # index of the first step of the final flat tail
    #: The first step of the scenario's move (after its lead-in); None for gbm/regime/jumps.
    shock_step: int | None = None

    @property
    def n_steps(self) -> int:
        return len(self.base_fee_gwei) - 1


_Builder = Callable[[np.random.Generator, float, FloatArray], Body]


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named family of paths; `generate` draws one of them."""

    name: str
    description: str
    hours: int  # total steps at time_scale=1, tail included
    tail_hours: int  # default flat tail
    correlation: float  # ETH/BTC correlation of the stochastic part of hourly log returns
    stochastic: bool  # False when every path is identical
    #: Draws the part before the tail: (rng, time_scale, start IV (ETH, BTC)) -> Body.
    build: _Builder = field(repr=False, compare=False)
    oracle_lag_steps: int = 0

    def generate(
        self,
        seed: int,
        path: int,
        *,
        start_iv: Mapping[str, float] = DEFAULT_START_IV,
        time_scale: float = 1.0,
        tail_hours: int | None = None,
    ) -> ScenarioPath:
        """Path number `path` of run `seed`; see the module docstring for `time_scale`."""
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise ConfigError(f"time_scale must be finite and > 0, got {time_scale!r}")
        if tail_hours is not None and tail_hours < 1:
            raise ConfigError(f"tail_hours must be >= 1, got {tail_hours!r}")
        start = np.array([_start_iv(start_iv, u) for u in UNDERLYINGS])
        used_seed = path_seed(seed, path, self.name)
        rng = np.random.default_rng(used_seed)
        body = self.build(rng, time_scale, start)
        tail = steps(self.tail_hours, time_scale) if tail_hours is None else tail_hours
        m = len(body.log_ret)
        log_ret = np.vstack([body.log_ret, np.zeros((tail, 2))])
        spot = np.exp(np.vstack([np.zeros((1, 2)), np.cumsum(log_ret, axis=0)]))
        spot[m:] = spot[m]  # the tail is flat by construction; make it bit-exact
        flat = np.tile(np.log(start), (tail, 1))
        iv = iv_path(start, np.vstack([body.iv_target, flat]),
                     np.vstack([body.iv_response, np.zeros((tail, 2))]), body.iv_half_life_h)
        gas = gas_path(rng if self.stochastic else None, np.abs(log_ret[:, 0]), body.calm_gas_gwei,
                       np.concatenate([body.gas_override, np.full(tail, np.nan)]))
        return ScenarioPath(
            name=self.name, seed=used_seed, step_s=STEP_S,
            spot=_frozen({u: spot[:, i] for i, u in enumerate(UNDERLYINGS)}),
            iv=_frozen({u: iv[:, i] for i, u in enumerate(UNDERLYINGS)}),
            base_fee_gwei=_readonly(gas), oracle_lag_steps=self.oracle_lag_steps, tail_start=m,
            shock_step=None if body.lead_in_steps is None else body.lead_in_steps + 1)


def path_seed(seed: int, path: int, name: str) -> int:
    """The seed of one path: SeedSequence([seed, path, crc32(name)]), its first 64-bit word.

    crc32 rather than `hash()`, which is salted per process.
    """
    if seed < 0 or path < 0:
        raise ConfigError(f"seed and path must be >= 0, got seed={seed!r} path={path!r}")
    entropy = [seed, path, zlib.crc32(name.encode("utf-8"))]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def get_scenario(name: str) -> Scenario:
    """The scenario called `name`; raises `UnknownScenario` naming the known ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise UnknownScenario(
            f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})") from None


# ---------------------------------------------------------------------------------------------
# helpers


def _start_iv(start_iv: Mapping[str, float], u: str) -> float:
    value = start_iv.get(u)
    if value is None or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"start_iv[{u!r}] must be a finite vol > 0, got {value!r}")
    return float(value)


def _readonly(a: FloatArray) -> FloatArray:
    out = np.array(a, dtype=np.float64)  # a fresh, contiguous copy nobody else holds
    out.setflags(write=False)
    return out


def _frozen(arrays: dict[str, FloatArray]) -> Mapping[str, FloatArray]:
    return MappingProxyType({u: _readonly(a) for u, a in arrays.items()})


def _beta(hours: float, eth: float, **kw: bool) -> Leg:
    """A leg where BTC moves BTC_BETA × ETH's log move."""
    return Leg(hours, eth, eth**BTC_BETA, **kw)


_LEAD_IN = Leg(LEAD_IN_HOURS, 1.0, 1.0)


def _gap(eth: float) -> tuple[Leg, ...]:
    return (_LEAD_IN, _beta(1, eth, instant=True), _beta(24, eth))


# ---------------------------------------------------------------------------------------------
# stochastic scenarios

#: gbm: annualised vols (ETH, BTC), as DEFAULT_START_IV: IV priced fairly on average.
GBM_VOL = np.array([0.60, 0.50])
#: regime: annualised vols of the calm and stressed states.
REGIME_CALM_VOL, REGIME_STRESSED_VOL = np.array([0.40, 0.35]), np.array([1.20, 1.00])
#: regime: hourly switching probabilities (mean calm spell 100 h, mean stress spell 25 h).
REGIME_P_STRESS, REGIME_P_CALM = 0.01, 0.04
#: jumps: diffusion vols, jumps per day, log jump mean and sd (ETH), BTC jump = beta × ETH's.
JUMP_DIFFUSION_VOL, JUMP_PER_DAY, JUMP_MEAN, JUMP_SD = np.array([0.50, 0.40]), 0.5, -0.02, 0.06


def _gbm(rng: np.random.Generator, time_scale: float, start: FloatArray) -> Body:
    m = steps(168, time_scale)
    r = diffusion(rng, np.tile(GBM_VOL, (m, 1)), 0.8)
    return Body(r, np.tile(np.log(start), (m, 1)), -IV_LEVERAGE * r, np.full(m + 1, np.nan))


def _regime(rng: np.random.Generator, time_scale: float, start: FloatArray) -> Body:
    m = steps(336, time_scale)
    u = rng.random(m)
    stressed = np.zeros(m, dtype=bool)
    state = False  # starts calm
    for t in range(m):
        state = u[t] >= REGIME_P_CALM if state else u[t] < REGIME_P_STRESS
        stressed[t] = state
    vol = np.where(stressed[:, None], REGIME_STRESSED_VOL, REGIME_CALM_VOL)
    r = diffusion(rng, vol, 0.8)
    target = np.log(start * vol / GBM_VOL)  # the regime's vol at the default start IV
    return Body(r, target, -IV_LEVERAGE * r, np.full(m + 1, np.nan), iv_half_life_h=12.0)


def _jumps(rng: np.random.Generator, time_scale: float, start: FloatArray) -> Body:
    m = steps(168, time_scale)
    r = diffusion(rng, np.tile(JUMP_DIFFUSION_VOL, (m, 1)), 0.8)
    lam = JUMP_PER_DAY / 24.0
    hit = rng.random(m) < -math.expm1(-lam)
    size = np.where(hit, rng.normal(JUMP_MEAN, JUMP_SD, m), 0.0)
    jump = np.column_stack([size, BTC_BETA * size])
    b = np.array([1.0, BTC_BETA])  # compensator: spot stays a martingale
    drift = -lam * np.expm1(b * JUMP_MEAN + 0.5 * (b * JUMP_SD) ** 2)
    return Body(r + jump + drift, np.tile(np.log(start), (m, 1)),
                -IV_LEVERAGE * r + move_response(jump), np.full(m + 1, np.nan))


# ---------------------------------------------------------------------------------------------
# stylised replays: levels relative to the day's open, rounded from published accounts. There
# was no base fee before London (August 2021): the 2020 and May 2021 figures are gas prices, used
# here as the base fee. Profiles are hourly, so minute-long spikes average out.

#: 12 March 2020. ETH "dropped 43%" and gas "from 80 to 200 Gwei" (currencies.ru, 2020-03-19,
#: reporting Glassnode); first leg "$194.97 at 1am to $136 (-30%) in the next 12h", "most of the
#: day ... 200 Gwei", and Maker's oracle price fed "after a 1h delay" (DeFi Saver,
#: blog.defisaver.com/black-thursday-at-defi-saver). BTC ~-38 % is a rounded daily figure; the
#: split of the second leg (4 h pause, 8 h fall) is stylised.
BLACK_THURSDAY = (_LEAD_IN, Leg(12, 0.70, 0.76), Leg(4, 0.69, 0.75), Leg(8, 0.57, 0.62))
BLACK_THURSDAY_GAS = ((0, 80.0), (4, 140.0), (9, 200.0), (18, 200.0), (24, 150.0))
#: 19 May 2021. ETH "from about $3,400 to under $1,900", gas "from under 100 GWEI to over 2,000
#: GWEI in less than two hours" at ~11:00 UTC, "about 300 GWEI a few hours later" (Coin Metrics
#: via crowdfundinsider.com, 2021-07); "average transaction cost ... increased to 700 gwei" and a
#: rebound to $2,500-2,900 (worldstockmarket.net; mtwwr.com); BTC "as low as $30,201.90 ...
#: 31.22%" below its 24 h high (ikablog.com). The 344 gwei day mean is this project's target, not
#: a quoted statistic; the hours of the profile between the quoted points are stylised.
MAY_2021 = (_LEAD_IN, Leg(10, 0.88, 0.92), Leg(4, 0.60, 0.70), Leg(6, 0.76, 0.86),
            Leg(4, 0.74, 0.84))
MAY_2021_GAS = ((0, 140.0), (9, 200.0), (11, 700.0), (14, 560.0), (18, 400.0), (24, 300.0))
#: 5 August 2024. ETH -22 % to ~$2,100, "Max Ethereum gas fee reached ... 710 gwei" from a
#: post-Dencun calm of a few gwei (cryptonewsland.com, 2024-08-05). ETH ~-26 % and BTC ~-20 %
#: from the 4 August level are rounded figures, not exact; the profile's shape is stylised.
AUG_2024 = (_LEAD_IN, Leg(16, 0.90, 0.93), Leg(6, 0.74, 0.80), Leg(10, 0.82, 0.86))
AUG_2024_GAS = ((0, 6.0), (14, 40.0), (19, 250.0), (22, 710.0), (25, 300.0), (32, 20.0))

_T = f"tail {TAIL_HOURS} h"
_GAS = f"gas AR(1) ~{GAS_CALM_GWEI:.0f} gwei calm, rising with |move|"
_NOISE = f"noise {SHAPE_NOISE_VOL:.0%}/{SHAPE_NOISE_VOL * BTC_BETA:.0%}"


def _scenario(name: str, description: str, hours: float, build: _Builder, *, rho: float = 0.8,
              stochastic: bool = True, lag: int = 0) -> Scenario:
    return Scenario(name, description, round(hours) + TAIL_HOURS, TAIL_HOURS, rho, stochastic,
                    build, lag)


def _move(name: str, description: str, legs: tuple[Leg, ...], *, rho: float = 0.8,
          lag: int = 0, noise_vol: tuple[float, float] = (SHAPE_NOISE_VOL,) * 2,
          event_gas: tuple[tuple[float, float], ...] = (), calm_gas_gwei: float = GAS_CALM_GWEI,
          iv_half_life_h: float = IV_HALF_LIFE_H) -> Scenario:
    build: _Builder = partial(shaped, legs, rho, noise_vol=noise_vol, event_gas=event_gas,
                              calm_gas_gwei=calm_gas_gwei, iv_half_life_h=iv_half_life_h)
    return _scenario(name, description, sum(leg.hours for leg in legs), build, rho=rho,
                     stochastic=noise_vol[0] > 0, lag=lag)


def _gap_scenario(pct: int) -> Scenario:
    return _move(
        f"gap{pct}", f"24 h flat, then ONE 1 h step: ETH -{pct} % (x{1 - pct / 100:.2f}), BTC "
        f"{BTC_BETA} x ETH's log move; IV jumps {IV_LEVERAGE} x the log fall (ETH 0.60 -> "
        f"{0.6 * (1 - pct / 100) ** -IV_LEVERAGE:.2f}); 24 h flat; no noise (corr 1); gas "
        f"deterministic from {GAS_CALM_GWEI:.0f} gwei; lag 0; {_T}",
        _gap(1 - pct / 100), rho=1.0, noise_vol=(0.0, 0.0))


def _squeeze_scenario(pct: int) -> Scenario:
    """A one-block gap up: what the short perp hedges cannot outrun (the design rise)."""
    up = 1 + pct / 100
    return _move(
        f"squeeze{pct}", f"24 h flat, then ONE 1 h step: ETH +{pct} % (x{up:.2f}), BTC "
        f"{BTC_BETA} x ETH's log move; IV falls {IV_UP_RESPONSE} x the log rise (ETH 0.60 -> "
        f"{0.6 * up ** -IV_UP_RESPONSE:.2f}); 24 h flat; no noise (corr 1); gas deterministic "
        f"from {GAS_CALM_GWEI:.0f} gwei; lag 0; {_T}",
        _gap(up), rho=1.0, noise_vol=(0.0, 0.0))


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    _scenario("gbm", f"7 d GBM, zero drift, vol ETH 60 % / BTC 50 %, corr 0.8; IV start + "
              f"leverage response ({IV_LEVERAGE} x log return, half-life 24 h); {_GAS}; lag 0; "
              f"{_T}", 168, _gbm),
    _scenario("regime", "14 d Markov regimes: calm 40 %/35 %, stressed 120 %/100 %, "
              f"P(calm->stress) {REGIME_P_STRESS}/h, P(stress->calm) {REGIME_P_CALM}/h, corr 0.8; "
              f"IV -> regime vol (half-life 12 h); {_GAS}; lag 0; {_T}", 336, _regime),
    _scenario("jumps", f"7 d Merton: diffusion 50 %/40 %, corr 0.8, {JUMP_PER_DAY} jumps/day, log "
              f"jump N({JUMP_MEAN}, {JUMP_SD}), BTC jump {BTC_BETA} x ETH's, compensated; IV up "
              f"{IV_LEVERAGE} x down-jumps; {_GAS}; lag 0; {_T}", 168, _jumps),
    _gap_scenario(35),
    _gap_scenario(45),
    _gap_scenario(50),
    _squeeze_scenario(15),
    _move("crash50", f"24 h lead-in, ETH -50 % over 48 h (smooth in log), BTC beta {BTC_BETA}, "
          f"{_NOISE}, corr 0.8; IV spikes; {_GAS}; lag 0; {_T}",
          (_LEAD_IN, _beta(48, 0.5, smooth=True))),
    _move("bleed60", "24 h lead-in, ETH -60 % over 60 d (linear in log), BTC beta "
          f"{BTC_BETA}; vol and IV target rise 50 % -> 110 % (BTC x{BTC_BETA}), corr 0.8; {_GAS}; "
          f"lag 0; {_T}", (_LEAD_IN, _beta(1440, 0.4)), noise_vol=(0.50, 1.10)),
    _move("flash", f"24 h lead-in, ETH -30 % in 2 h, back to 1.0 in 4 h, BTC beta {BTC_BETA}, "
          f"{_NOISE}, corr 0.8; IV spikes (half-life 4 h); {_GAS}; lag 0; {_T}",
          (_LEAD_IN, _beta(2, 0.7), Leg(4, 1.0, 1.0)), iv_half_life_h=4.0),
    _move("rally", f"24 h lead-in, ETH +40 % over 48 h (smooth), BTC beta {BTC_BETA}, {_NOISE}, "
          f"corr 0.8; IV a little lower; {_GAS}; lag 0; {_T}",
          (_LEAD_IN, _beta(48, 1.4, smooth=True))),
    _move("black-thursday", f"12 Mar 2020: ETH -30 % in 12 h, then to -43 % by 24 h; BTC -38 %; "
          f"{_NOISE}, corr 0.9; gas 80-200 gwei over the day (calm 15); oracle lag 1 h; {_T}",
          BLACK_THURSDAY, rho=0.9, lag=1, event_gas=BLACK_THURSDAY_GAS, calm_gas_gwei=15.0),
    _move("may-2021", f"19 May 2021: ETH -12 % in 10 h, to -40 % in 4 h, rebound to -24 %; BTC "
          f"-30 % then -14 %; {_NOISE}, corr 0.9; gas ~344 gwei day mean, peak 700 (calm 60); "
          f"lag 0; {_T}", MAY_2021, rho=0.9, event_gas=MAY_2021_GAS, calm_gas_gwei=60.0),
    _move("aug-2024", f"5 Aug 2024: ETH -26 %, BTC -20 % over 22 h, rebound to -18 %/-14 %; "
          f"{_NOISE}, corr 0.9; gas 6 -> peak 710 gwei (calm 6); lag 0; {_T}",
          AUG_2024, rho=0.9, event_gas=AUG_2024_GAS, calm_gas_gwei=6.0),
)}
