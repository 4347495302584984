"""Simulation metrics on hand-built records (values worked out by hand in the comments)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from keeper.sim.metrics import (
    breach_spans,
    build_metrics,
    combine,
    cppi_cap,
    max_drawdown,
    recovery_hours,
    sharpe,
    vault_metrics,
)
from keeper.sim.records import (
    PHASE_END,
    PHASE_ORACLE,
    ActionRecord,
    Bands,
    LiquidationRecord,
    MarketStep,
    Observation,
    PathRun,
    VaultRun,
)

BANDS = Bands(min_health=1.3, max_leverage=2.5, hedge_target=0.3, hedge_band=0.05)


def obs(step: int, phase: str, block: int, nav: float, health: float, lev: float = 1.0,
        delta: float | None = None) -> Observation:
    d = 0.3 * nav if delta is None else delta
    return Observation(step, phase, block, 1000 + block, nav, health, health, math.inf, lev, d,
                       0.0, 0.0)


def test_max_drawdown_by_hand() -> None:
    # The running peak is 120: 90 is 25 % under it, the later 80 is 40/120 = 33.3 % under it.
    assert max_drawdown([100, 120, 90, 110, 80]) == pytest.approx(40 / 120)
    assert max_drawdown([1, 2, 3]) == 0.0


def test_sharpe_by_hand() -> None:
    nav = [100.0, 101.0, 100.5, 102.0]
    r = [math.log(101 / 100), math.log(100.5 / 101), math.log(102 / 100.5)]
    mean = sum(r) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in r) / 2)
    assert sharpe(nav, 3600) == pytest.approx(mean / sd * math.sqrt(365 * 24))
    assert sharpe([5.0, 5.0, 5.0, 5.0], 3600) == 0.0


def test_breach_spans() -> None:
    # Breach at block 10, safe again at 13 (3 blocks); breach at 20 still open at 25 (5).
    blocks = [5, 10, 12, 13, 20, 25]
    health = [1.5, 1.1, 1.2, 1.4, 1.0, 1.1]
    assert breach_spans(blocks, health, 1.3) == [3, 5]
    assert breach_spans([1, 2], [2.0, 2.0], 1.3) == []


def test_vault_metrics_by_hand() -> None:
    run = VaultRun("V", "0x1", BANDS)
    run.observations += [
        obs(0, PHASE_END, 1, 1000.0, 1.6),
        obs(1, PHASE_ORACLE, 10, 900.0, 1.1),          # breach seen here
        obs(1, PHASE_END, 14, 880.0, 1.35, lev=2.6),   # restored 4 blocks later; leverage out
        obs(2, PHASE_ORACLE, 20, 890.0, 1.4),
        obs(2, PHASE_END, 22, 890.0, 1.2, delta=0.0),  # below min at the end; delta out of band
    ]
    run.actions += [
        ActionRecord(1, 12, "deleverage", "mined", 400_000, 30 * 10**9, 36.0, 5.0),
        ActionRecord(2, 21, "hedge", "simulation_reverted"),
        ActionRecord(2, 21, "hedge", "reverted", 100_000, 30 * 10**9, 9.0, 0.0),
    ]
    run.liquidations.append(LiquidationRecord(1, 11, "lending", 1000.0, 50.0))
    m = vault_metrics(run, 3600)
    assert m["liquidations"] == 1 and m["liquidation_loss_usd"] == 50.0
    assert m["min_health"] == 1.1
    assert m["hours_below_min_health"] == 1.0      # only step 2's end
    assert m["hours_outside_mandate"] == 2.0       # step 1 (leverage), step 2 (delta)
    # Spans: 10 -> 14 is 4 blocks; the breach at block 22 is still open at the end (0 blocks).
    assert m["time_to_safe_blocks"] == 4
    assert m["breaches"] == 2
    assert m["txs"] == 2 and m["gas_used"] == 500_000 and m["gas_usd"] == 45.0
    assert m["slippage_usd"] == 5.0 and m["reverted_simulations"] == 1
    assert m["final_nav_usd"] == 890.0
    assert m["max_drawdown"] == pytest.approx(120 / 1000)


def test_combine_and_build() -> None:
    a = {"liquidations": 1, "liquidation_loss_usd": 10.0, "min_health": 1.2,
         "hours_below_min_health": 1.0, "max_drawdown": 0.1, "final_nav_usd": 100.0,
         "sharpe": 1.0, "txs": 2, "gas_used": 10, "gas_usd": 1.0, "slippage_usd": 0.5,
         "reverted_simulations": 0, "hours_outside_mandate": 0.0, "time_to_safe_blocks": None,
         "breaches": 0}
    b = {**a, "min_health": 0.9, "max_drawdown": 0.3, "sharpe": 3.0, "time_to_safe_blocks": 4,
         "breaches": 1}
    c = combine([a, b])
    assert c["liquidations"] == 2 and c["final_nav_usd"] == 200.0
    assert c["min_health"] == 0.9 and c["max_drawdown"] == 0.3
    assert c["sharpe"] == 2.0 and c["time_to_safe_blocks"] == 4 and c["breaches"] == 1
    run = PathRun("gap50", 0, 7, "hold", "keeper-first", 3600, 5.0)
    v = VaultRun("V", "0x1", BANDS)
    v.observations += [obs(0, PHASE_END, 1, 100.0, 2.0), obs(1, PHASE_END, 2, 90.0, 2.0)]
    run.vaults.append(v)
    out = build_metrics([run], {"seed": 7})
    slot = out["results"]["gap50"]["keeper-first"]["hold"]
    assert out["seed"] == 7 and out["version"] == 1
    assert slot["total"]["final_nav_usd"] == 90.0
    assert slot["vaults"]["V"]["max_drawdown"] == pytest.approx(0.1)
    assert slot["paths"][0]["seed"] == 7


def _market(ivs: list[float]) -> list[MarketStep]:
    """Steps 1..n with ETH implied vol `ivs[k-1]` (BTC at 0.5 throughout)."""
    return [MarketStep(k, 1000 + k, {"ETH": 1.0}, {"ETH": iv, "BTC": 0.5}, 10.0)
            for k, iv in enumerate(ivs, start=1)]


def test_recovery_hours_by_hand() -> None:
    # Lead-in ends at step 2 (IV 0.60, leverage 1.5 → band max(0.10, 0.15) = 0.15); the move is
    # step 3. IV: 0.9, 0.7, then 0.62 at step 6 — within 5 % of 0.60 (≤ 0.63): back at step 6.
    # Leverage after the move: 0.5 until step 8, 1.36 at step 9 (|1.36 − 1.5| ≤ 0.15): 3 h.
    market = _market([0.6, 0.6, 0.9, 0.8, 0.7, 0.62, 0.6, 0.6, 0.6, 0.6])
    levs = [1.5, 1.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 1.36, 1.5]
    end = [obs(k, PHASE_END, k, 100.0, 2.0, lev) for k, lev in enumerate(levs, start=1)]
    assert recovery_hours(end, market, 3, 3600) == 3.0
    # Already inside the band when IV is back: 0; never back inside: inf.
    assert recovery_hours([*end[:5], *[obs(k, PHASE_END, k, 100.0, 2.0, 1.4)
                                        for k in range(6, 11)]], market, 3, 3600) == 0.0
    stuck = [obs(k, PHASE_END, k, 100.0, 2.0, 1.5 if k < 3 else 0.5) for k in range(1, 11)]
    assert recovery_hours(stuck, market, 3, 3600) == math.inf
    # 0.64 > 0.63 is not back: IV never comes back, so there is nothing to judge.
    assert recovery_hours(end, _market([0.6, 0.6, 0.9, 0.8, 0.7, 0.64, 0.64]), 3, 3600) is None
    # No single move (gbm): None; half-hour steps halve the hours.
    assert recovery_hours(end, market, None, 3600) is None
    assert recovery_hours(end, market, 3, 1800) == 1.5


def test_recovery_target_is_capped_by_the_mandates_cppi() -> None:
    # CPPI floor 80 % of the high-water mark, multiplier 5. The move takes NAV from 100 to 88
    # with the HWM at 100: cushion 88 − 80 = 8, cap 5 × 8 / 88 = 0.4545 — below the lead-in's
    # 1.5, so the target is 0.4545 with band max(0.10, 0.045) = 0.10: leverage 0.5 is inside
    # (|0.5 − 0.4545| = 0.045) from the step IV is back (step 6): 0 h. Without the mandate's
    # bands (no CPPI) the same path never gets back to 1.5 ± 0.15.
    market = _market([0.6, 0.6, 0.9, 0.8, 0.7, 0.62, 0.6, 0.6, 0.6, 0.6])
    cppi = Bands(1.3, 2.5, 0.3, 0.05, cppi_floor=0.8, cppi_multiplier=5.0)
    end = [replace(obs(k, PHASE_END, k, 100.0 if k < 3 else 88.0, 2.0, 1.5 if k < 3 else 0.5),
                   nav_high_water_usd=100.0) for k in range(1, 11)]
    assert cppi_cap(end[5], cppi) == pytest.approx(5 * 8 / 88)
    assert recovery_hours(end, market, 3, 3600, cppi) == 0.0
    assert recovery_hours(end, market, 3, 3600) == math.inf
    # A NAV of 84: cap 5 × 4 / 84 = 0.238, band 0.10: 0.5 is 0.26 away — still out.
    low = [replace(o, nav_usd=84.0) if o.step >= 3 else o for o in end]
    assert recovery_hours(low, market, 3, 3600, cppi) == math.inf


def test_net_delta_outside_its_band_is_counted_on_its_own() -> None:
    # Target 0.30 ± 0.05 of NAV 100: deltas 30 (in), 36 (out), 24 (out), 34 (in); leverage 3.0
    # at the last step is outside the mandate but not a delta miss.
    v = VaultRun("V", "0x1", BANDS)
    for k, (d, lev) in enumerate([(30.0, 1.0), (36.0, 1.0), (24.0, 1.0), (34.0, 3.0)], start=1):
        v.observations.append(obs(k, PHASE_END, k, 100.0, 2.0, lev, delta=d))
    m = vault_metrics(v, 3600)
    assert m["hours_delta_outside_band"] == 2.0
    assert m["hours_outside_mandate"] == 3.0
    assert m["recovery_hours"] is None  # no market, no move
    both = combine([m, {**m, "recovery_hours": 5.0}, {**m, "recovery_hours": math.inf}])
    assert both["hours_delta_outside_band"] == 6.0 and both["recovery_hours"] == math.inf
