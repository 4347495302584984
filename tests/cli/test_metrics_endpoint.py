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
