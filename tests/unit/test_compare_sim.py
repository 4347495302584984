"""`scripts/compare_sim.py`: the before → after table a decision-rule change is judged by."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compare_sim.py"


@pytest.fixture(scope="module")
def cmp() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compare_sim_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_sim_script"] = module
    spec.loader.exec_module(module)
    return module


def _run(paths: list[dict[str, float]]) -> dict[str, Any]:
    return {"results": {"rally": {"keeper-first": {"keeper": {"paths": [
        {"vaults": {"Balanced": m}} for m in paths
    ]}}}}}


def _metrics(txs: int, nav: float, dd: float, safe: int | None,
             relever: float | None = None, to_target: float | None = None) -> dict[str, Any]:
    return {"liquidations": 0, "liquidation_loss_usd": 0.0, "txs": txs, "gas_used": txs * 500_000,
            "reverted_simulations": 0, "hours_outside_mandate": 2.0, "time_to_safe_blocks": safe,
            "hours_delta_outside_band": 1.0, "recovery_hours": relever,
            "recovery_hours_to_target": to_target, "max_drawdown": dd, "final_nav_usd": nav}


def test_paths_are_summed_nav_and_drawdown_averaged_time_to_safe_the_worst(
    cmp: ModuleType,
) -> None:
    before = _run([_metrics(30, 1_000_000.0, 0.02, 3, 60.0, 4.0),
                   _metrics(20, 1_100_000.0, 0.04, 7, float("inf"), 9.0)])
    after = _run([_metrics(5, 1_010_000.0, 0.02, 3, 12.0, 2.0),
                  _metrics(5, 1_110_000.0, 0.04, None, 30.0, None)])
    row = cmp.compare(before, after, "keeper").splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["rally", "keeper-first", "Balanced"]
    # liq, bonus, txs 50 → 10, gas 25 M → 5 M, reverted, h outside 4, to safe max(3, 7) → 3,
    # h delta out 2, re-lever the worst: max(60, inf) → max(12, 30), to own target max(4, 9) →
    # max(2, none) = 2, drawdown mean 3 %, NAV mean 1,050k → 1,060k.
    assert cells[3:] == ["0", "0", "50 → 10", "25.0 → 5.0", "0", "4", "7 → 3", "2",
                         "inf → 30", "9 → 2", "3.0", "1,050.0 → 1,060.0"]


def test_a_run_from_before_the_target_was_recorded_shows_a_dash(cmp: ModuleType) -> None:
    # An old metrics.json has no recovery_hours_to_target: "—", and every other cell as before.
    old = _metrics(3, 1_000_000.0, 0.02, 3, 7.0)
    del old["recovery_hours_to_target"]
    row = cmp.compare(_run([old]), _run([_metrics(3, 1_000_000.0, 0.02, 3, 7.0, 0.0)]),
                      "keeper").splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3:] == ["0", "0", "3", "1.5", "0", "2", "3", "1", "7", "— → 0", "2.0",
                         "1,000.0"]


def test_a_file_that_is_not_a_metrics_file_is_one_line_and_exit_2(
    cmp: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_run([_metrics(1, 1.0, 0.0, None)])))
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert cmp.main([str(bad), str(good)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"compare_sim: {bad}: not a `keeper simulate` metrics.json (no results)"
    ]
    assert cmp.main([str(tmp_path / "missing.json"), str(good)]) == 2
    assert "missing.json" in capsys.readouterr().err
