"""The simulation report: `report.md` with tables, a reading of the numbers, and PNG charts.

`write_report` is the only entry point. The metrics come from metrics.json (`keeper.sim.metrics`);
the runs supply the time series the charts draw. The prose is generated from the numbers alone
(`keeper.sim.reading`), so every sentence in it can be checked against a table cell.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from keeper.sim import charts
from keeper.sim.reading import (
    KEEPER,
    RETURN_COST,
    RISK,
    SUMMARY,
    Metric,
    metric_value,
    order_notes,
    reading,
)
from keeper.sim.records import PathRun

REPORT_NAME = "report.md"
#: Anything outside this alphabet is replaced in file names (spaces, slashes, dots, unicode).
_UNSAFE = re.compile(r"[^a-z0-9]+")


def slug(name: str) -> str:
    """A file-name-safe form of `name`: lower case, runs of other characters become one '-'."""
    return _UNSAFE.sub("-", name.lower()).strip("-") or "x"


def unique_slugs(names: Iterable[str]) -> dict[str, str]:
    """A slug per distinct name, suffixed -2, -3, … where two names would collide."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        if name in out:
            continue
        base = candidate = slug(name)
        n = 1
        while candidate in taken:
            n += 1
            candidate = f"{base}-{n}"
        out[name] = candidate
        taken.add(candidate)
    return out


def market_file(scenario_slug: str) -> str:
    return f"market-{scenario_slug}.png"


def vault_file(scenario_slug: str, order_slug: str, vault_slug: str) -> str:
    return f"vaults-{scenario_slug}-{order_slug}-{vault_slug}.png"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], labels: int) -> list[str]:
    """A GitHub-markdown table: the first `labels` columns left-aligned, the numbers right."""
    if not rows:
        return ["_no data_"]
    align = ["---" if i < labels else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def metric_rows(
    label_cells: Sequence[Sequence[str]],
    totals: Sequence[Mapping[str, Any]],
    metrics: Sequence[Metric],
) -> list[list[str]]:
    return [
        [*labels, *(m.fmt(metric_value(t, m.key)) for m in metrics)]
        for labels, t in zip(label_cells, totals, strict=True)
    ]


def _policy_tables(
    labels: Sequence[str], label_cells: Sequence[Sequence[str]], totals: Sequence[Mapping[str, Any]]
) -> list[str]:
    lines: list[str] = ["Risk:", ""]
    lines += md_table(
        [*labels, *(m.header for m in RISK)], metric_rows(label_cells, totals, RISK), len(labels)
    )
    lines += ["", "Return and cost:", ""]
    lines += md_table(
        [*labels, *(m.header for m in RETURN_COST)],
        metric_rows(label_cells, totals, RETURN_COST),
        len(labels),
    )
    return [*lines, ""]


def aggregate(totals: Sequence[Mapping[str, Any]], metric: Metric) -> float | None:
    """`metric` over several scenarios' totals: summed, or the worst value (see Metric.across)."""
    values = [v for t in totals if (v := metric_value(t, metric.key)) is not None]
    if not values:
        return None
    if metric.across == "sum":
        return math.fsum(values)
    if metric.across == "worst":
        return max(values) if not metric.higher_is_better else min(values)
    raise ValueError(f"metric {metric.key} has no rule to aggregate across scenarios")


def _listed(metrics: Mapping[str, Any], key: str, results: Mapping[str, Any]) -> list[str]:
    """Names from the parameters, else the keys seen in results (scenarios/orders/policies)."""
    names = metrics.get(key)
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    if key == "scenarios":
        return list(results)
    seen: dict[str, None] = {}
    for by_order in results.values():
        if key == "orders":
            seen.update(dict.fromkeys(by_order))
        else:
            for by_policy in by_order.values():
                seen.update(dict.fromkeys(by_policy))
    return list(seen)


def _header(
    metrics: Mapping[str, Any],
    scenarios: Sequence[str],
    orders: Sequence[str],
    policies: Sequence[str],
    results: Mapping[str, Any],
) -> list[str]:
    lines = ["# Simulation report", "", "## Parameters", ""]
    params = [
        ("chain", str(metrics.get("chain", "?"))),
        ("seed", str(metrics.get("seed", "?"))),
        ("paths", str(metrics.get("paths", "?"))),
        ("scenarios", ", ".join(scenarios)),
        ("policies", ", ".join(policies)),
        ("orders", ", ".join(orders)),
        ("metrics version", str(metrics.get("version", "?"))),
    ]
    lines += [f"- **{k}**: `{v}`" for k, v in params]
    if metrics.get("interrupted"):
        lines += ["", "**Interrupted** (Ctrl-C): only the runs that finished are here "
                  f"({metrics.get('completed_runs', '?')})."]
    failed = metrics.get("failed") or []
    if failed:
        lines += ["", f"**{len(failed)} path(s) failed** and are left out of every table, for "
                  "every policy (tracebacks in `errors.log`):", ""]
        lines += [f"- `{f['scenario']}` path {f['path']}: {f['error']}" for f in failed]
    lines += [
        "",
        "Every table row is a `total` of metrics.json: over the paths and vaults of "
        "one scenario, order and policy (see `keeper.sim.metrics` for how they combine).",
        "",
        "## Summary over all scenarios",
        "",
        "Per order and policy, every scenario's `total` combined: counts, dollars and hours "
        "are summed; min health and max drawdown are the worst scenario's.",
        "",
    ]
    rows: list[list[str]] = []
    for order in orders:
        for policy in policies:
            totals = [t for s in scenarios if (t := _total(results, s, order, policy)) is not None]
            if totals:
                rows.append([order, policy, *(m.fmt(aggregate(totals, m)) for m in SUMMARY)])
    lines += md_table(["order", "policy", *(m.header for m in SUMMARY)], rows, 2)
    return [*lines, ""]


def _total(
    results: Mapping[str, Any], scenario: str, order: str, policy: str
) -> Mapping[str, Any] | None:
    entry = results.get(scenario, {}).get(order, {}).get(policy)
    if not isinstance(entry, Mapping):
        return None
    total = entry.get("total")
    return total if isinstance(total, Mapping) else None


def _chart_path(runs: Sequence[PathRun]) -> int | None:
    """The path the charts show: 0 when it was run, else the lowest recorded."""
    return min((r.path for r in runs), default=None)


def _scenario_runs(
    runs: Sequence[PathRun], scenario: str, order: str | None, policies: Sequence[str]
) -> list[PathRun]:
    """One run per policy (parameter order first) of the chart path of `scenario`."""
    chosen = [r for r in runs if r.scenario == scenario and (order is None or r.order == order)]
    path = _chart_path(chosen)
    rank = {p: i for i, p in enumerate(policies)}
    by_policy: dict[str, PathRun] = {}
    for run in sorted(
        (r for r in chosen if r.path == path),
        key=lambda r: (rank.get(r.policy, len(rank)), r.policy),
    ):
        by_policy.setdefault(run.policy, run)
    return list(by_policy.values())


def _scenario_section(
    out_dir: Path,
    scenario: str,
    scenario_slug: str,
    runs: Sequence[PathRun],
    results: Mapping[str, Any],
    orders: Sequence[str],
    policies: Sequence[str],
    colours: Mapping[str, str],
) -> list[str]:
    lines = [f"## Scenario `{scenario}`", ""]
    market_runs = _scenario_runs(runs, scenario, None, policies)
    if market_runs:
        first = market_runs[0]
        name = market_file(scenario_slug)
        charts.draw_market(out_dir / name, first)
        lines += [
            f"Market of path {first.path} (seed {first.seed}):",
            "",
            f"![market {scenario}]({name})",
            "",
        ]
    else:
        lines += ["_No recorded runs of this scenario: nothing to chart._", ""]
    by_order = results.get(scenario, {})
    order_slugs = unique_slugs(orders)
    for order in orders:
        by_policy = by_order.get(order, {})
        present = [p for p in policies if _total(results, scenario, order, p) is not None]
        lines += [f"### `{scenario}` / `{order}`", ""]
        totals = [_total(results, scenario, order, p) or {} for p in present]
        lines += _policy_tables(["policy"], [[p] for p in present], totals)
        lines += _vault_tables(by_policy, present)
        order_runs = _scenario_runs(runs, scenario, order, policies)
        vault_names = list(dict.fromkeys(v.name for r in order_runs for v in r.vaults))
        vault_slugs = unique_slugs(vault_names)
        for vault in vault_names:
            name = vault_file(scenario_slug, order_slugs[order], vault_slugs[vault])
            charts.draw_vault(out_dir / name, order_runs, vault, colours)
            lines += [f"![{vault} under {order}]({name})", ""]
        if order_runs:
            lines += [
                f"Charts: path {order_runs[0].path}; lines are end-of-step reads; filled "
                "markers are mined actions (▼ deleverage, ● rebalance, ■ hedge), hollow ones "
                "failed attempts, red X liquidations.",
                "",
            ]
        lines += ["Reading:", ""]
        lines += [f"- {s}" for s in reading({p: t for p, t in zip(present, totals, strict=True)})]
        lines.append("")
    lines += ["### Move order", ""]
    lines += [f"- {s}" for s in order_notes(by_order, orders, policies)]
    return [*lines, ""]


def _vault_tables(by_policy: Mapping[str, Any], policies: Sequence[str]) -> list[str]:
    vaults: dict[str, None] = {}
    for policy in policies:
        vaults.update(dict.fromkeys(by_policy.get(policy, {}).get("vaults", {})))
    if len(vaults) < 2:
        return []
    labels: list[list[str]] = []
    totals: list[Mapping[str, Any]] = []
    for vault in vaults:
        for policy in policies:
            m = by_policy.get(policy, {}).get("vaults", {}).get(vault)
            if isinstance(m, Mapping):
                labels.append([vault, policy])
                totals.append(m)
    return ["Per vault:", "", *_policy_tables(["vault", "policy"], labels, totals)]


def write_report(out_dir: Path, runs: Sequence[PathRun], metrics: Mapping[str, Any]) -> Path:
    """Write `out_dir/report.md` and its PNG charts (created next to it); return the report path.

    `metrics` is metrics.json as loaded. Charts show one path (path 0 when it was run) per
    scenario: the market, then per order one figure per vault with a line per policy. File
    names are `market-<scenario>.png` and `vaults-<scenario>-<order>-<vault>.png`, slugged.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    results: Mapping[str, Any] = metrics.get("results", {})
    scenarios = _listed(metrics, "scenarios", results)
    orders = _listed(metrics, "orders", results)
    policies = _listed(metrics, "policies", results)
    extra = [r.policy for r in runs if r.policy not in policies]
    colours = charts.policy_colours([*policies, *extra])
    lines = _header(metrics, scenarios, orders, policies, results)
    if KEEPER not in policies:
        lines += [
            f"_No `{KEEPER}` policy in this run: the reading compares nothing against it._",
            "",
        ]
    for scenario, scenario_slug in unique_slugs(scenarios).items():
        lines += _scenario_section(
            out_dir,
            scenario,
            scenario_slug,
            runs,
            results,
            orders,
            [*policies, *dict.fromkeys(extra)],
            colours,
        )
    path = out_dir / REPORT_NAME
    path.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    return path


__all__ = ["REPORT_NAME", "market_file", "slug", "unique_slugs", "vault_file", "write_report"]
