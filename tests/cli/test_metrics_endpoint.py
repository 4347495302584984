"""`keeper run` with KEEPER_METRICS_PORT: a real keeper process on anvil serves /metrics,
/healthz and /readyz on loopback while it ticks, and stops on SIGTERM with exit code 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from keeper.devnet.anvil import _free_port
from tests.cli.conftest import Node, assert_user_error, keeper_env, run_keeper
from tests.cli.test_bad_input import node_settings

#: Seconds the keeper may take to start and serve (imports, start-up checks, first tick).
START_LIMIT_S = 60.0


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - loopback only
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


@pytest.mark.anvil
def test_run_serves_metrics_and_health_on_loopback(node: Node, tmp_path: Path) -> None:
    port = _free_port()
    settings = node_settings(
        node,
        KEEPER_METRICS_PORT=str(port),
        KEEPER_POLL_INTERVAL="1",
        KEEPER_JOURNAL=str(tmp_path / "journal.sqlite"),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "keeper", "run"],
        cwd=tmp_path,
        env=keeper_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_LIMIT_S
        metrics = ""
        while time.monotonic() < deadline:
            status, metrics = get(f"{base}/metrics")
            if status == 200 and 'keeper_ticks_total{result="ok"} 2.0' in metrics:
                break
            time.sleep(0.2)
        assert 'keeper_ticks_total{result="ok"} 2.0' in metrics, metrics[-2000:]
        for vault in node.vaults:
            assert f'keeper_vault_health_ratio{{vault="{vault}"}}' in metrics
        assert "keeper_head_block_number" in metrics and "keeper_signer_balance_wei" in metrics
        assert get(f"{base}/healthz")[0] == 200
        assert get(f"{base}/readyz")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    assert f"metrics on http://127.0.0.1:{port}/metrics" in err
    assert get(f"{base}/metrics")[0] == 0  # closed with the process


@pytest.mark.anvil
def test_a_bad_notification_url_is_one_line_and_exit_2(node: Node, tmp_path: Path) -> None:
    token = "XOXBSECRETTOKEN"
    settings = node_settings(
        node, KEEPER_NOTIFY_URLS=f"json://127.0.0.1:1/hook,nosuchservice://{token}/x"
    )
    run = run_keeper(tmp_path, settings, "run", "--once")
    assert_user_error(run, "KEEPER_NOTIFY_URLS", "entry 2", secrets=(token,))
    assert not (tmp_path / "keeper-journal.sqlite").exists()  # refused before anything


@pytest.mark.anvil
def test_a_running_keeper_logs_as_it_goes_not_only_at_exit(node: Node, tmp_path: Path) -> None:
    """The start's log lines are held back only until the start is done (a refused start is
    its one error line); a running keeper writes its INFO lines as they happen."""
    settings = node_settings(
        node, KEEPER_POLL_INTERVAL="1", KEEPER_JOURNAL=str(tmp_path / "journal.sqlite")
    )
    log = tmp_path / "stderr.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "keeper", "run"], cwd=tmp_path, env=keeper_env(settings),
            stdout=subprocess.DEVNULL, stderr=err,
        )
    try:
        deadline = time.monotonic() + START_LIMIT_S
        while time.monotonic() < deadline and "keeper running:" not in log.read_text():
            time.sleep(0.2)
        text = log.read_text()
        assert proc.poll() is None, text[-2000:]  # still running: written as it went
        assert "keeper running:" in text and "start-up check gas balance" in text, text[-2000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
