"""`keeper simulate`: bad input is one line and exit 2; the scenario list is complete; Ctrl-C
keeps what is done and leaves no chain running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keeper.devnet.anvil import anvil_path
from keeper.sim.scenarios import SCENARIOS
from tests.cli.conftest import SUBPROCESS_TIMEOUT_S, assert_user_error, keeper_env, run_keeper

#: An API key in the URL path, as hosted RPC providers put it: it must never be printed.
SECRET = "sekr1tApiKey42"


def test_list_scenarios_names_every_scenario(workdir: Path) -> None:
    run = run_keeper(workdir, {}, "simulate", "--list-scenarios")
    assert run.returncode == 0, run.describe()
    listed = [line.split()[0] for line in run.stdout.splitlines() if line.strip()]
    assert listed == list(SCENARIOS)
    assert set(listed) >= {"gbm", "regime", "jumps", "gap35", "gap45", "gap50", "crash50",
                           "bleed60", "flash", "rally", "black-thursday", "may-2021", "aug-2024"}


@pytest.mark.parametrize(
    ("args", "flag", "phrase"),
    [
        (("--scenario", "gap99"), "--scenario", "unknown scenario 'gap99'"),
        (("--paths", "0"), "--paths", "at least 1"),
        (("--workers", "0"), "--workers", "at least 1"),
        (("--policies", "hold,yolo"), "--policies", "yolo"),
        (("--order", "random"), "--order", "random"),
    ],
)
def test_bad_flags(workdir: Path, args: tuple[str, ...], flag: str, phrase: str) -> None:
    run = run_keeper(workdir, {}, "simulate", *args, "--out", str(workdir / "out"))
    assert_user_error(run, flag, phrase)
    assert not (workdir / "out" / "metrics.json").exists()


def test_unwritable_out(workdir: Path) -> None:
    blocker = workdir / "a-file"
    blocker.write_text("not a directory")
    run = run_keeper(workdir, {}, "simulate", "--scenario", "gap50", "--out",
                     str(blocker / "out"))
    assert_user_error(run, "--out", str(blocker / "out"), "not writable")


def test_unreachable_rpc_url_is_masked(workdir: Path) -> None:
    url = f"http://127.0.0.1:9/v3/{SECRET}"
    run = run_keeper(workdir, {}, "simulate", "--scenario", "gap50", "--rpc-url", url,
                     "--out", str(workdir / "out"))
    assert_user_error(run, "--rpc-url", "not reachable", secrets=(SECRET,))


@pytest.mark.parametrize(
    ("address", "phrase"),
    [("127.0.0.1:1", "cannot reach the cluster head"), ("nowhere", "not an address")],
)
def test_unreachable_ray_is_one_line_at_once(workdir: Path, address: str, phrase: str) -> None:
    # ray.init on a dead address retries for minutes; the probe answers within its timeout.
    pytest.importorskip("ray")
    run = run_keeper(workdir, {}, "simulate", "--scenario", "gap50", "--ray", address,
                     "--out", str(workdir / "out"))
    assert_user_error(run, "--ray", address, phrase)
    assert not (workdir / "out" / "metrics.json").exists()


def _children(pid: int) -> set[int]:
    """Every live descendant of `pid` (from /proc: the simulator's chains and workers)."""
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            for kid in map(int, kids):
                if kid not in found:
                    found.add(kid)
                    frontier.append(kid)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(anvil_path() is None, reason="anvil is not installed")
@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_keeps_what_is_done_and_stops_every_chain(workdir: Path, workers: int) -> None:
    out = workdir / "out"
    # Four paths of a short gap, one policy: the first finishes in seconds, the rest are cut.
    args = ["--scenario", "gap35", "--paths", "4", "--policies", "hold", "--order",
            "liquidator-first", "--chain", "anvil", "--time-scale", "0.2", "--tail-hours", "24",
            "--workers", str(workers), "--no-report", "--out", str(out)]
    # As from a terminal: the run starts with Ctrl-C's default action. A test run started in
    # the background by a non-interactive shell (`.ci/run &`) has SIGINT ignored, which every
    # child inherits across exec; a Python handler does not survive exec, so installing one
    # here for the Popen hands the child SIG_DFL (the keeper leaves SIG_IGN alone on purpose).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "keeper", "--env-file", str(workdir / "none.env"), "simulate",
             *args],
            cwd=workdir, env=keeper_env({}), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,  # a terminal's Ctrl-C reaches the whole process group
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
    while b"paths 1/4" not in seen and b"paths 2/4" not in seen:
        assert time.monotonic() < deadline and proc.poll() is None, seen.decode()
        seen += os.read(proc.stderr.fileno(), 4096)
    chains = _children(proc.pid)
    assert chains, "no chain or worker running at the time of Ctrl-C"
    os.killpg(proc.pid, signal.SIGINT)
    stdout, rest = proc.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    stderr = (seen + rest).decode()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert "interrupted: writing what is done" in stderr
    assert "wrote" in stdout.decode()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] is True
    done = metrics["completed_runs"]
    assert 1 <= done < 4
    assert len(metrics["results"]["gap35"]["liquidator-first"]["hold"]["paths"]) == done
    # SIGTERM from the kernel (parent death) takes a moment to land, longer on a busy machine
    # (a fixed 1 s failed under a full CPU): poll for it, bounded.
    gone_by = time.monotonic() + 15.0
    while [pid for pid in chains if _alive(pid)] and time.monotonic() < gone_by:
        time.sleep(0.2)
    assert not [pid for pid in chains if _alive(pid)], "a chain or worker outlived the run"
