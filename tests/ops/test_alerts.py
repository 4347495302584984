"""The alert rules in ops/alerts.yml: valid, and unit-tested by promtool (ops/alerts_test.yml)
with every alert both firing and not firing. `make install` installs promtool (Debian's
`prometheus` package); without it these tests skip and say so."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
RULES = OPS / "alerts.yml"
RULE_TESTS = OPS / "alerts_test.yml"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed: `make install` installs it (Debian package prometheus)",
)


def promtool(*args: str, cwd: Path = OPS) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def alert_names() -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)\s*$", RULES.read_text(), flags=re.M)


def without_alert(name: str) -> str:
    """The rules file with alert `name`'s block (from its `- alert:` line to the next) cut."""
    out, skipping = [], False
    for line in RULES.read_text().splitlines(keepends=True):
        match = re.match(r"^\s*- alert: (\w+)\s*$", line)
        if match:
            skipping = match.group(1) == name
        if not skipping:
            out.append(line)
    return "".join(out)


def test_the_rules_are_valid() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in result.stdout


def test_the_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alerts_are_the_ones_the_operations_issue_asks_for() -> None:
    assert alert_names() == [
        "KeeperDown",
        "KeeperTicksStalled",
        "KeeperTicksFailing",
        "KeeperVaultBelowMinHealth",
        "KeeperDeleverageFailing",
        "KeeperFeeCapReached",
        "KeeperNonceStuck",
        "KeeperGasBalanceLow",
        "KeeperGasBalanceCritical",
        "KeeperHeadStalled",
        "KeeperVaultHalted",
        "KeeperBreakerOpenLong",
    ]


@pytest.mark.parametrize("name", alert_names())
def test_every_alert_is_expected_to_fire_somewhere(name: str, tmp_path: Path) -> None:
    """Cut the alert from the rules: the unit tests must fail, naming it (so some test expects
    it firing — a test that cannot fail is a defect)."""
    (tmp_path / "alerts.yml").write_text(without_alert(name))
    shutil.copy(RULE_TESTS, tmp_path / "alerts_test.yml")
    assert promtool("check", "rules", "alerts.yml", cwd=tmp_path).returncode == 0
    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert f"alertname: {name}," in result.stdout + result.stderr


@pytest.mark.parametrize("name", alert_names())
def test_every_alert_is_expected_silent_somewhere(name: str) -> None:
    """Each alert also has an evaluation where it must not fire (`exp_alerts: []`)."""
    silent = re.findall(rf"alertname: {name}, exp_alerts: \[\]", RULE_TESTS.read_text(), flags=re.M)
    assert silent, f"{name}: no not-firing case in {RULE_TESTS.name}"


def test_a_threshold_mutation_is_caught(tmp_path: Path) -> None:
    """Tightening one threshold (5 → 6 blocks below min health) breaks the unit tests."""
    text = RULES.read_text()
    mutated = text.replace(
        "keeper_vault_below_min_health_blocks > 5", "keeper_vault_below_min_health_blocks > 6"
    )
    assert mutated != text
    (tmp_path / "alerts.yml").write_text(mutated)
    shutil.copy(RULE_TESTS, tmp_path / "alerts_test.yml")
    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "alertname: KeeperVaultBelowMinHealth," in result.stdout + result.stderr
