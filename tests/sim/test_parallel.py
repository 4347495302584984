"""Same seeds, same metrics: serially, on two worker processes, and on a local Ray cluster with
two workers (each Ray task starts its own chain)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keeper.devnet.anvil import anvil_path
from keeper.sim.simulate import SimRequest, simulate


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
