"""Same seeds, same metrics: serially, on two worker processes, and on a local Ray cluster with
two workers (each Ray task starts its own chain). A failing path fails alone, and says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from keeper.cli import main
from keeper.devnet.anvil import anvil_path
from keeper.sim import runner
from keeper.sim.parallel import Job, JobFailure, run_serial, run_workers
from keeper.sim.records import PathRun
from keeper.sim.scenarios import ScenarioPath
from keeper.sim.simulate import ERRORS_FILE, SimRequest, simulate


def request(out: Path, **overrides: object) -> SimRequest:
    base = dict(scenarios=("gap35", "flash"), paths=1, seed=11, policies=("hold", "keeper"),
                orders=("liquidator-first",), workers=1, out=out, chain="anvil",
                time_scale=0.1, tail_hours=2, report=False)
    base.update(overrides)
    return SimRequest(**base)  # type: ignore[arg-type]


@pytest.mark.skipif(anvil_path() is None, reason="anvil is not installed")
def test_serial_equals_workers_equals_ray(tmp_path: Path) -> None:
    serial = simulate(request(tmp_path / "serial"))
    workers = simulate(request(tmp_path / "workers", workers=2))
    pytest.importorskip("ray")
    on_ray = simulate(request(tmp_path / "ray", workers=2, ray="local"))
    assert not (serial.interrupted or workers.interrupted or on_ray.interrupted)
    assert len(serial.runs) == 4
    assert serial.metrics["results"] == workers.metrics["results"]
    assert serial.metrics["results"] == on_ray.metrics["results"]
    # Something happened worth comparing: the keeper acted and paid gas.
    keeper = serial.metrics["results"]["flash"]["liquidator-first"]["keeper"]["total"]
    assert keeper["txs"] >= 1 and keeper["gas_used"] > 0
    # The written file is the same strict JSON.
    written = json.loads((tmp_path / "workers" / "metrics.json").read_text())
    assert written["results"]["gap35"]["liquidator-first"]["hold"]["paths"][0]["path"] == 0


def _jobs(*scenarios: str) -> list[Job]:
    return [Job(name, 0, 11, ("hold",), ("liquidator-first",), "anvil", time_scale=0.1,
                tail_hours=2) for name in scenarios]


@pytest.mark.skipif(anvil_path() is None, reason="anvil is not installed")
@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_job_fails_alone(workers: int) -> None:
    # A job naming no scenario raises inside run_job (in the worker, for workers=2): the jobs
    # before and after it still finish, and the failure says which job and why.
    runs: list[PathRun] = []
    failures: list[JobFailure] = []
    jobs = _jobs("gap35", "no-such-scenario", "flash")
    if workers == 1:
        run_serial(jobs, lambda: None, runs.extend, failures.append)
    else:
        run_workers(jobs, workers, lambda: None, runs.extend, failures.append)
    assert sorted(r.scenario for r in runs) == ["flash", "gap35"]
    assert [(f.scenario, f.path) for f in failures] == [("no-such-scenario", 0)]
    assert failures[0].error.startswith("UnknownScenario: ")
    assert "no-such-scenario" in failures[0].error
    assert "Traceback" in failures[0].traceback


@pytest.mark.skipif(anvil_path() is None, reason="anvil is not installed")
def test_a_failed_path_is_reported_and_the_rest_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = runner.run_path

    def flaky(world: runner.World, path: ScenarioPath, *args: Any, **kwargs: Any) -> PathRun:
        if path.name == "gap35":
            raise RuntimeError("boom in the middle of gap35\nsecond line")
        return real(world, path, *args, **kwargs)

    monkeypatch.setattr(runner, "run_path", flaky)
    out = tmp_path / "out"
    code = main(["--env-file", str(tmp_path / "none.env"), "simulate", "--scenario",
                 "gap35,flash", "--policies", "hold,keeper", "--order", "liquidator-first",
                 "--chain", "anvil", "--time-scale", "0.1", "--tail-hours", "2",
                 "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("keeper: error: simulate: 1 path(s) failed, first gap35 path 0: "
                          "RuntimeError: boom in the middle of gap35 ")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["failed"] == [{"scenario": "gap35", "path": 0,
                                  "error": "RuntimeError: boom in the middle of gap35"}]
    # Neither policy has a gap35 run: every policy is compared on the same paths.
    assert list(metrics["results"]) == ["flash"]
    assert set(metrics["results"]["flash"]["liquidator-first"]) == {"hold", "keeper"}
    assert "second line" in (out / ERRORS_FILE).read_text()
    report = (out / "report.md").read_text()
    assert "1 path(s) failed" in report and "`gap35` path 0" in report
