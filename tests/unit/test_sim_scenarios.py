"""Scenario paths: determinism, shapes, the stated sizes of every move, tails, statistics, gas."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from keeper.errors import ConfigError, KeeperError
from keeper.sim.scenarios import (
    DEFAULT_START_IV,
    LEAD_IN_HOURS,
    SCENARIOS,
    UNDERLYINGS,
    ScenarioPath,
    UnknownScenario,
    get_scenario,
    path_seed,
)
from keeper.sim.shapes import FloatArray

L = LEAD_IN_HOURS
ORDER = ["gbm", "regime", "jumps", "gap35", "gap45", "gap50", "squeeze15", "crash50", "bleed60",
         "flash", "rally", "black-thursday", "may-2021", "aug-2024"]
GAPS = {"gap35": 0.65, "gap45": 0.55, "gap50": 0.50}
#: One-step gaps either way: the paths are deterministic.
ONE_STEP = {**GAPS, "squeeze15": 1.15}
CRASHES = ["gap35", "gap45", "gap50", "crash50", "bleed60", "flash", "black-thursday",
           "may-2021", "aug-2024"]


def gen(name: str, seed: int = 11, path: int = 0, *,
        start_iv: Mapping[str, float] = DEFAULT_START_IV, time_scale: float = 1.0,
        tail_hours: int | None = None) -> ScenarioPath:
    return get_scenario(name).generate(seed, path, start_iv=start_iv, time_scale=time_scale,
                                       tail_hours=tail_hours)


def arrays(p: ScenarioPath) -> list[FloatArray]:
    return [p.spot[u] for u in UNDERLYINGS] + [p.iv[u] for u in UNDERLYINGS] + [p.base_fee_gwei]


def hourly(p: ScenarioPath, u: str) -> FloatArray:
    """Log returns of the part before the tail."""
    return np.diff(np.log(p.spot[u][: p.tail_start + 1]))


# --- registry, determinism ------------------------------------------------------------------


def test_registry_order_and_lookup() -> None:
    assert list(SCENARIOS) == ORDER
    assert all(get_scenario(n).name == n for n in ORDER)
    assert [n for n in ORDER if not SCENARIOS[n].stochastic] == list(ONE_STEP)


def test_unknown_name_raises_naming_the_known_ones() -> None:
    with pytest.raises(UnknownScenario) as info:
        get_scenario("gap99")
    message = str(info.value)
    assert message.startswith("unknown scenario 'gap99' (known: gbm, regime, jumps, gap35")
    assert all(n in message for n in ORDER)
    assert isinstance(info.value, KeeperError)


@pytest.mark.parametrize("name", ORDER)
def test_same_seed_gives_identical_arrays(name: str) -> None:
    a, b = gen(name, seed=5, path=2), gen(name, seed=5, path=2)
    assert a.seed == b.seed == path_seed(5, 2, name)
    for x, y in zip(arrays(a), arrays(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", ORDER)
def test_other_path_differs_unless_deterministic(name: str) -> None:
    a, b = gen(name, path=0), gen(name, path=1)
    same = [np.array_equal(x, y) for x, y in zip(arrays(a), arrays(b), strict=True)]
    if name in ONE_STEP:
        assert all(same)
    else:
        assert not any(same)
        assert not np.array_equal(a.spot["ETH"], gen(name, seed=12, path=0).spot["ETH"])


def test_path_seed_is_stable_and_separates_its_inputs() -> None:
    # SeedSequence([7, 3, zlib.crc32(b"gbm") == 3591442551]).generate_state(1, np.uint64)[0]
    assert path_seed(7, 3, "gbm") == 8081606475960578373
    seeds = {path_seed(7, 3, "gbm"), path_seed(7, 4, "gbm"), path_seed(8, 3, "gbm"),
             path_seed(7, 3, "regime")}
    assert len(seeds) == 4


def test_paths_are_identical_in_another_process() -> None:
    code = ("from keeper.sim.scenarios import get_scenario as g; p = g('jumps').generate(3, 1); "
            "print(p.seed, repr(float(p.spot['BTC'].sum())), repr(float(p.base_fee_gwei.sum())))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[2]).stdout.split()
    p = gen("jumps", seed=3, path=1)
    assert out == [str(p.seed), repr(float(p.spot["BTC"].sum())),
                   repr(float(p.base_fee_gwei.sum()))]


# --- shapes, starts, tails ------------------------------------------------------------------


@pytest.mark.parametrize("name", ORDER)
def test_shapes_start_values_and_flat_tail(name: str) -> None:
    sc = get_scenario(name)
    p = gen(name)
    n = p.n_steps
    assert n == sc.hours and p.step_s == 3600 and sc.tail_hours >= 48
    for a in arrays(p):
        assert a.shape == (n + 1,) and np.all(np.isfinite(a)) and not a.flags.writeable
    for u in UNDERLYINGS:
        assert p.spot[u][0] == 1.0 and p.iv[u][0] == DEFAULT_START_IV[u]
        tail = p.spot[u][p.tail_start:]
        assert len(tail) - 1 >= 48 and np.all(tail == tail[0])
        dev = np.abs(np.log(p.iv[u][p.tail_start:] / DEFAULT_START_IV[u]))
        assert np.all(np.diff(dev) <= 1e-12) and dev[-1] < 0.5 * dev[0] + 1e-9
    calm = p.base_fee_gwei[0]  # the AR's calm level (no event profile starts at index 0)
    assert 0.5 * calm < np.median(p.base_fee_gwei[-24:]) < 2.0 * calm


def test_start_iv_is_honoured() -> None:
    p = gen("crash50", start_iv={"ETH": 0.8, "BTC": 0.7})
    assert p.iv["ETH"][0] == 0.8 and p.iv["BTC"][0] == 0.7
    assert p.iv["ETH"].max() > 1.2


def test_tail_hours_and_time_scale_are_honoured() -> None:
    p = gen("crash50", time_scale=0.1, tail_hours=3)
    assert p.n_steps == round(2.4) + round(4.8) + 3 and p.n_steps - p.tail_start == 3
    assert p.spot["ETH"][p.tail_start] == pytest.approx(0.5, rel=1e-9)
    short = gen("crash50", time_scale=0.5)  # the default tail scales too
    assert short.n_steps == 12 + 24 + 24 and short.n_steps - short.tail_start == 24
    assert gen("gbm", tail_hours=5).n_steps == 168 + 5
    assert gen("bleed60", time_scale=0.01).n_steps == 1 + 14 + 1
    long = gen("gap35", time_scale=2.0)  # a gap stays one step
    e = long.spot["ETH"]
    assert np.all(e[:49] == 1.0) and e[49] == pytest.approx(0.65, abs=1e-12)


def test_bad_arguments_raise() -> None:
    sc = get_scenario("gbm")
    for kw in ({"time_scale": 0.0}, {"time_scale": math.nan}, {"tail_hours": 0},
               {"start_iv": {"ETH": 0.6}}, {"start_iv": {"ETH": 0.6, "BTC": -0.1}}):
        with pytest.raises(ConfigError):
            sc.generate(1, 0, **kw)
    with pytest.raises(ConfigError):
        path_seed(-1, 0, "gbm")


@pytest.mark.parametrize("name", ORDER)
def test_descriptions_state_their_parameters(name: str) -> None:
    sc = get_scenario(name)
    d = sc.description
    assert "\n" not in d and len(d) < 240
    for word in ("corr", "gwei", "lag", "tail 48 h"):
        assert word in d
    assert f"corr {sc.correlation:g}" in d


# --- the deterministic and stylised moves ---------------------------------------------------


@pytest.mark.parametrize(("name", "ratio"), GAPS.items())
def test_gap_is_exact_one_step(name: str, ratio: float) -> None:
    p = gen(name)
    e, b = p.spot["ETH"], p.spot["BTC"]
    assert np.all(e[: L + 1] == 1.0) and np.all(b[: L + 1] == 1.0)
    assert e[L + 1] / e[L] == pytest.approx(ratio, abs=1e-12)
    assert math.log(b[L + 1]) == pytest.approx(0.8 * math.log(ratio), abs=1e-12)
    assert np.all(e[L + 1:] == e[L + 1]) and np.all(b[L + 1:] == b[L + 1])
    assert p.n_steps - (L + 1) >= 48
    iv = p.iv["ETH"]
    np.testing.assert_allclose(iv[: L + 1], 0.60, rtol=1e-12)
    assert iv[L + 1] == pytest.approx(0.60 * ratio**-1.5, rel=1e-12)
    assert 1.1 < iv[L + 1] < 1.8 and iv[L + 1] == iv.max()
    fee = p.base_fee_gwei
    assert np.all(fee[: L + 1] == 25.0) and fee[L + 1] == fee.max() > 100.0


def test_squeeze_is_one_step_up_with_iv_a_little_lower() -> None:
    p = gen("squeeze15")
    e, b, iv = p.spot["ETH"], p.spot["BTC"], p.iv["ETH"]
    assert np.all(e[: L + 1] == 1.0) and e[L + 1] == pytest.approx(1.15, abs=1e-12)
    assert math.log(b[L + 1]) == pytest.approx(0.8 * math.log(1.15), abs=1e-12)
    assert np.all(e[L + 1:] == e[L + 1])
    # A rise lowers IV by 0.4 x its log move: 0.60 x 1.15^-0.4 = 0.567.
    assert iv[L + 1] == pytest.approx(0.60 * 1.15**-0.4, rel=1e-12)
    assert iv[L + 1] == pytest.approx(0.5673, abs=1e-4) and iv[L + 1] == iv.min()
    # Gas rises with |move| both ways: 25 x 1.15^4 at the step (log fee + 4 x |log move|).
    assert p.base_fee_gwei[L + 1] == pytest.approx(25 * 1.15**4.0, rel=1e-9)


def test_bigger_gaps_cost_more_gas() -> None:
    peaks = [gen(n).base_fee_gwei.max() for n in GAPS]
    assert peaks == sorted(peaks) and peaks[0] == pytest.approx(25 * 0.65 ** -4.0, rel=1e-9)


def test_crash50_halves_over_48h() -> None:
    for path in range(5):
        p = gen("crash50", path=path)
        assert p.tail_start == L + 48
        assert p.spot["ETH"][p.tail_start] == pytest.approx(0.50, rel=1e-9)
        assert p.spot["BTC"][p.tail_start] == pytest.approx(0.5**0.8, rel=1e-9)
        assert p.spot["ETH"][L + 24] == pytest.approx(math.sqrt(0.5), rel=0.05)  # smooth


def test_rally_gains_40pc_and_cheapens_vol_a_little() -> None:
    p = gen("rally")
    assert p.spot["ETH"][p.tail_start] == pytest.approx(1.40, rel=1e-9)
    assert 0.85 * 0.60 < p.iv["ETH"][p.tail_start] < 0.60


def test_flash_falls_30pc_in_2h_and_recovers_in_4h() -> None:
    for path in range(5):
        p = gen("flash", path=path)
        e = p.spot["ETH"]
        assert e[L + 2] == pytest.approx(0.70, rel=1e-9)
        assert e[L: L + 3].min() == pytest.approx(0.70, rel=0.02)
        assert e[L + 6] == pytest.approx(1.0, rel=1e-9) and p.tail_start == L + 6
        iv = p.iv["ETH"]
        assert iv[L + 2] > 1.4 * 0.60 and iv[L + 6] < iv[L + 2] and iv[-1] < 0.61


def test_bleed60_loses_60pc_with_rising_vol_and_iv() -> None:
    p = gen("bleed60")
    assert p.tail_start == L + 1440
    assert p.spot["ETH"][p.tail_start] == pytest.approx(0.40, rel=1e-9)
    r = hourly(p, "ETH")
    early = r[L: L + 240].std() * math.sqrt(8760)
    late = r[-240:].std() * math.sqrt(8760)
    # noise vol runs 0.50 -> 1.10 linearly: about 0.56 over the first 10 days, 1.05 the last
    assert early == pytest.approx(0.56, abs=0.12) and late == pytest.approx(1.05, abs=0.2)
    assert late > 1.5 * early
    assert p.iv["ETH"][p.tail_start] > 1.8 * 0.60


@pytest.mark.parametrize("name", CRASHES)
def test_iv_spikes_in_crashes(name: str) -> None:
    for u in UNDERLYINGS:
        assert gen(name).iv[u].max() > 1.2 * DEFAULT_START_IV[u]


def test_black_thursday_gas_range_and_oracle_lag() -> None:
    sc = get_scenario("black-thursday")
    assert sc.oracle_lag_steps == 1
    assert all(get_scenario(n).oracle_lag_steps == 0 for n in ORDER if n != "black-thursday")
    for path in range(10):
        p = sc.generate(11, path)
        assert p.oracle_lag_steps == 1
        day = p.base_fee_gwei[L: L + 25]
        assert day.min() >= 80.0 and day.max() <= 200.0
        assert p.spot["ETH"][L + 24] == pytest.approx(0.57, rel=1e-9)
        assert p.spot["BTC"][L + 24] == pytest.approx(0.62, rel=1e-9)
        assert p.spot["ETH"][L + 12] == pytest.approx(0.70, rel=1e-9)


def test_may_2021_gas_mean_and_peak() -> None:
    for path in range(10):
        p = gen("may-2021", path=path)
        assert p.base_fee_gwei[L: L + 24].mean() == pytest.approx(344.0, rel=0.10)
        assert p.base_fee_gwei.max() == pytest.approx(700.0, abs=1.0)
        assert p.spot["ETH"].min() == pytest.approx(0.60, rel=0.02)
        assert p.spot["ETH"][p.tail_start] > 0.70  # partial rebound


def test_aug_2024_gas_peak_and_drops() -> None:
    for path in range(5):
        p = gen("aug-2024", path=path)
        assert p.base_fee_gwei.max() == pytest.approx(710.0, abs=1.0)
        assert p.spot["ETH"][L + 22] == pytest.approx(0.74, rel=1e-9)
        assert p.spot["BTC"][L + 22] == pytest.approx(0.80, rel=1e-9)


@pytest.mark.parametrize("name", ORDER)
def test_base_fee_always_positive(name: str) -> None:
    for path in range(3):
        assert np.all(gen(name, path=path, seed=99).base_fee_gwei > 0.0)


# --- statistics of the stochastic scenarios -------------------------------------------------


def pooled(name: str, paths: int) -> tuple[FloatArray, FloatArray]:
    ps = [gen(name, seed=2024, path=k) for k in range(paths)]
    return (np.concatenate([hourly(p, "ETH") for p in ps]),
            np.concatenate([hourly(p, "BTC") for p in ps]))


def test_gbm_correlation_and_vols() -> None:
    eth, btc = pooled("gbm", 60)
    n = len(eth)  # 10 080 hourly returns
    rho = float(np.corrcoef(eth, btc)[0, 1])
    assert abs(rho - 0.8) < 4 * (1 - 0.8**2) / math.sqrt(n)  # SE of a sample correlation
    for r, vol in ((eth, 0.60), (btc, 0.50)):
        assert abs(r.std() * math.sqrt(8760) - vol) < 4 * vol / math.sqrt(2 * n)


def test_gbm_iv_responds_against_returns() -> None:
    p = gen("gbm")
    r = hourly(p, "ETH")
    div = np.diff(np.log(p.iv["ETH"][: p.tail_start + 1]))
    assert float(np.corrcoef(r, div)[0, 1]) < -0.9
    assert 0.45 < p.iv["ETH"].min() and p.iv["ETH"].max() < 0.80


def test_regime_switches_vol() -> None:
    eth, _ = pooled("regime", 30)
    kurtosis = float(np.mean((eth - eth.mean()) ** 4) / eth.var() ** 2)
    assert kurtosis > 4.0  # a Gaussian has 3: the mixture of 40 % and 120 % vol is fat-tailed
    ivs = np.concatenate([gen("regime", seed=2024, path=k).iv["ETH"] for k in range(30)])
    assert ivs.min() < 0.50 and ivs.max() > 0.90


def test_jumps_lift_iv_after_down_jumps() -> None:
    worst = []
    for path in range(20):
        p = gen("jumps", path=path)
        r = hourly(p, "ETH")
        t = int(np.argmin(r))
        if r[t] < -0.05:  # surely a jump (diffusion sd is 0.5 % an hour)
            worst.append(p.iv["ETH"][t + 1] / p.iv["ETH"][t])
    assert len(worst) >= 5 and min(worst) > 1.05


def test_scenarios_never_import_web3() -> None:
    code = ("import sys, keeper.sim.scenarios; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('web3', 'eth_abi')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[2]).stdout.strip()
    assert out == "[]"
