"""Simulation metrics on hand-built records (values worked out by hand in the comments)."""

from __future__ import annotations

import math

import pytest

from keeper.sim.metrics import (
    breach_spans,
    build_metrics,
    combine,
    max_drawdown,
    sharpe,
    vault_metrics,
)
from keeper.sim.records import (
    PHASE_END,
    PHASE_ORACLE,
    ActionRecord,
    Bands,
    LiquidationRecord,
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
