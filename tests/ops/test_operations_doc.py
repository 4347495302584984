"""docs/OPERATIONS.md keeps up with the code: every metric a fresh `KeeperMetrics` registry
exports has a row in its metric tables (with its labels), every row is a metric that exists,
and every alert in ops/alerts.yml has a runbook section (and every runbook an alert)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from keeper.metrics import KeeperMetrics

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "OPERATIONS.md"
RULES = ROOT / "ops" / "alerts.yml"
RUNBOOKS_HEADING = "## Alert runbooks"
#: A metric table row: | `name` | type | labels | unit | meaning |
ROW = re.compile(r"^\| `(\w+)` \| (\w+) \| ([^|]*) \|", flags=re.M)


def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def exported() -> dict[str, tuple[str, set[str]]]:
    """Every family a fresh keeper registry serves: scraped name → (type, label names)."""
    metrics = KeeperMetrics(CollectorRegistry(), interval_s=12.0)
    page = generate_latest(metrics.registry).decode()
    families = {
        name: (kind, set()) for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", page, re.M)
    }
    for collector in metrics.registry._collector_to_names:  # the keeper's own families
        names = metrics.registry._collector_to_names[collector]
        for name in names:
            for family in families:
                if name == family or name == family.removesuffix("_total"):
                    families[family][1].update(getattr(collector, "_labelnames", ()))
    for family in metrics.registry.collect():  # runtime collectors: labels from samples
        for sample in family.samples:
            for name in (family.name, f"{family.name}_total"):
                if name in families:
                    families[name][1].update(set(sample.labels) - {"le"})
    return families


def documented() -> dict[str, tuple[str, set[str]]]:
    rows = {}
    for name, kind, labels in ROW.findall(doc()):
        if name == "metric":
            continue
        rows[name] = (kind, set(re.findall(r"`(\w+)`", labels)))
    return rows


def test_the_registry_is_what_this_test_reads() -> None:
    families = exported()
    # The check below is only as good as this scrape: it must see labelled and runtime ones.
    assert families["keeper_action_outcomes_total"] == ("counter", {"kind", "urgency", "status"})
    assert families["keeper_vault_net_delta"] == ("gauge", {"vault", "underlying"})
    assert families["keeper_tick_duration_seconds"] == ("histogram", set())
    assert "process_cpu_seconds_total" in families and "python_info" in families
    assert len([n for n in families if n.startswith("keeper_")]) >= 40


def test_every_exported_metric_is_documented_with_type_and_labels() -> None:
    rows = documented()
    missing = sorted(set(exported()) - set(rows))
    assert not missing, f"metrics exported but not in {DOC.name}: {missing}"
    for name, (kind, labels) in exported().items():
        assert rows[name] == (kind, labels), f"{name}: doc says {rows[name]}, code {kind, labels}"


def test_every_documented_metric_exists() -> None:
    stale = sorted(set(documented()) - set(exported()))
    assert not stale, f"{DOC.name} documents metrics the keeper does not export: {stale}"


def alert_names() -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)\s*$", RULES.read_text(encoding="utf-8"), flags=re.M)


def runbook_headings() -> list[str]:
    text = doc()
    assert RUNBOOKS_HEADING in text
    section = text.split(RUNBOOKS_HEADING, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^### (\w+)\s*$", section, flags=re.M)


def test_every_alert_has_a_runbook() -> None:
    alerts = alert_names()
    assert len(alerts) >= 12
    missing = sorted(set(alerts) - set(runbook_headings()))
    assert not missing, f"alerts without a runbook in {DOC.name}: {missing}"


def test_every_runbook_is_an_alert() -> None:
    stale = sorted(set(runbook_headings()) - set(alert_names()))
    assert not stale, f"runbooks for alerts not in {RULES.name}: {stale}"


@pytest.mark.parametrize("name", alert_names())
def test_each_runbook_says_what_it_means_and_what_to_do(name: str) -> None:
    section = doc().split(f"### {name}\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    for part in ("**Means**", "**Check**", "**Fix**"):
        assert part in section, f"runbook {name}: no {part}"
