"""`keeper simulate`: bad input is one line and exit 2; the scenario list is complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from keeper.sim.scenarios import SCENARIOS
from tests.cli.conftest import assert_user_error, run_keeper

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
