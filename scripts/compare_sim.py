"""Compare two `keeper simulate` runs (before / after a policy change), per scenario, order and
vault, for one policy: the figures a decision-rule change is judged on.

    .venv/bin/python scripts/compare_sim.py BEFORE/metrics.json AFTER/metrics.json [--policy keeper]

Per row, summed over the run's paths (NAV and drawdown: mean per path): liquidations, bonus lost,
keeper transactions, gas used, reverted simulations, hours outside the mandate, the longest
time to safe (blocks), hours with net delta outside its band, the longest time to re-lever
after implied vol came back (hours: to the leverage held before the move, and to the policy's
own pre-move target; `—` where a run has no such figure, as one from before the target was
recorded), max drawdown and final NAV. A markdown table, before → after.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: Combined over paths as the worst (largest), not summed.
WORST = ("time_to_safe_blocks", "recovery_hours", "recovery_hours_to_target")
COLUMNS = (
    ("liquidations", "liq", "{:.0f}"),
    ("liquidation_loss_usd", "bonus lost $", "{:,.0f}"),
    ("txs", "txs", "{:.0f}"),
    ("gas_used", "gas M", "{:.1f}"),
    ("reverted_simulations", "reverted", "{:.0f}"),
    ("hours_outside_mandate", "h outside", "{:.0f}"),
    ("time_to_safe_blocks", "to safe", "{:.0f}"),
    ("hours_delta_outside_band", "h Δ out", "{:.0f}"),
    ("recovery_hours", "re-lever h", "{:.0f}"),
    ("recovery_hours_to_target", "to target h", "{:.0f}"),
    ("max_drawdown", "max DD %", "{:.1f}"),
    ("final_nav_usd", "final NAV $k", "{:,.1f}"),
)


def _vault_rows(run: dict[str, Any], policy: str) -> dict[tuple[str, str, str], dict[str, float]]:
    out: dict[tuple[str, str, str], dict[str, float]] = {}
    for scenario, orders in run["results"].items():
        for order, policies in orders.items():
            if policy not in policies:
                continue
            paths = policies[policy]["paths"]
            for p in paths:
                for vault, m in p["vaults"].items():
                    row = out.setdefault((scenario, order, vault), {"n": 0.0})
                    row["n"] += 1
                    for key, _label, _fmt in COLUMNS:
                        value = m.get(key)
                        if value is None:
                            continue
                        if key in WORST:
                            row[key] = max(row.get(key, 0.0), float(value))
                        else:
                            row[key] = row.get(key, 0.0) + float(value)
    for row in out.values():
        n = row.pop("n")
        for key in ("max_drawdown", "final_nav_usd"):
            if key in row:
                row[key] /= n
        if "max_drawdown" in row:
            row["max_drawdown"] *= 100
        if "final_nav_usd" in row:
            row["final_nav_usd"] /= 1_000
        if "gas_used" in row:
            row["gas_used"] /= 1e6
    return out


def _cell(before: dict[str, float] | None, after: dict[str, float] | None, key: str,
          fmt: str) -> str:
    def one(row: dict[str, float] | None) -> str:
        if row is None:
            return "—"
        return fmt.format(row[key]) if key in row else "—"

    b, a = one(before), one(after)
    return b if b == a else f"{b} → {a}"


def compare(before: dict[str, Any], after: dict[str, Any], policy: str) -> str:
    rb, ra = _vault_rows(before, policy), _vault_rows(after, policy)
    lines = [
        "| scenario | order | vault | " + " | ".join(label for _k, label, _f in COLUMNS) + " |",
        "|---|---|---|" + "---:|" * len(COLUMNS),
    ]
    for key in sorted(set(rb) | set(ra)):
        cells = [_cell(rb.get(key), ra.get(key), k, f) for k, _label, f in COLUMNS]
        lines.append("| " + " | ".join(key) + " | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--policy", default="keeper")
    args = ap.parse_args(argv)
    runs = []
    for path in (args.before, args.after):
        try:
            run = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"compare_sim: {path}: {exc}", file=sys.stderr)
            return 2
        if not isinstance(run, dict) or not isinstance(run.get("results"), dict):
            print(f"compare_sim: {path}: not a `keeper simulate` metrics.json (no results)",
                  file=sys.stderr)
            return 2
        runs.append(run)
    print(compare(runs[0], runs[1], args.policy))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
