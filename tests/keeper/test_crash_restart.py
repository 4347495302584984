"""SIGKILL at each point of the send path, then a restart on the same journal, on anvil: the
vault's deleverage lands, every intent ends with at most one on-chain action and those are
exactly the nonces the chain counted (nothing sent twice, no gap), and the restart prints no
traceback. The keeper runs as a real process (`crash_driver`), killed by SIGKILL: no
finaliser, no flush."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from keeper.chain.reader import SnapshotReader
from keeper.devnet.market import Market
from keeper.journal import Journal
from tests.keeper.conftest import Env, move
from tests.keeper.crash_driver import POINTS

ROOT = Path(__file__).resolve().parents[2]
RISK_REDUCING = ("deleverage", "repayDebt")
#: One keeper process start and tick (imports and all) on this machine takes a few seconds.
PROCESS_LIMIT_S = 120


def run_driver(
    env: Env, journal: Path, point: str, deployment: Path
) -> subprocess.CompletedProcess[str]:
    url = str(env.w3.provider.endpoint_uri)  # type: ignore[attr-defined]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.keeper.crash_driver",
            url,
            str(deployment),
            str(journal),
            point,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=PROCESS_LIMIT_S,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_each_point_of_the_send_path_then_restart(
    anvil_env: Env, market: Market, tmp_path: Path, point: str
) -> None:
    env, balanced = anvil_env, anvil_env.dep.vaults[0]
    deployment = tmp_path / "deployment.json"
    deployment.write_text(json.dumps(env.dep.to_json()))
    journal = tmp_path / "journal.sqlite"
    move(market, env, 0.65, 0.70)  # the crash: the balanced vault must reduce risk
    start_nonce = env.nonce("latest")

    killed = run_driver(env, journal, point, deployment)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    restarted = run_driver(env, journal, "none", deployment)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    assert "Traceback" not in restarted.stderr
    seen = json.loads(restarted.stdout.strip().splitlines()[-1])
    assert seen["error"] is None

    with Journal(journal) as j:
        intents = j.recent_intents(limit=500)
        assert j.unfinished_intents() == []
    # Every intent that reached the chain did so once: the chain's count is theirs.
    on_chain = [i for i in intents if i.status in ("mined", "reverted")]
    assert env.nonce("latest") == start_nonce + len(on_chain)
    assert sorted(i.nonce for i in on_chain) == list(range(start_nonce, env.nonce("latest")))
    assert env.nonce("pending") == env.nonce("latest")  # no gap, nothing stuck
    for i in intents:
        included = [t for t in i.transactions if t.status in ("mined", "reverted")]
        assert len(included) <= 1, i
    risk = [i for i in on_chain if i.vault == balanced and i.kind in RISK_REDUCING]
    assert [i.status for i in risk] == ["mined"]
    # The intent in flight at the kill was settled by the restart, not sent again.
    if point in ("after_sign", "after_broadcast", "before_receipt", "mid_receipt"):
        assert any(status == "mined" for _, _, status in seen["reconciled"])
    snap = SnapshotReader(env.w3).read([balanced], int(env.w3.eth.block_number))[balanced]
    assert snap.health >= snap.mandate.min_health  # the vault is safe again
