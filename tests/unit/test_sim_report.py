"""The simulation report (`keeper.sim.report`): files, links, formatted numbers and the reading,
from synthetic runs and metrics built here (no chain)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from keeper.sim import charts
from keeper.sim.reading import fmt_health, fmt_usd, metric_value, order_notes, reading
from keeper.sim.records import (
    PHASE_END,
    PHASE_ORACLE,
    ActionRecord,
    Bands,
    LiquidationRecord,
    MarketStep,
    Observation,
    PathRun,
    VaultRun,
)
from keeper.sim.report import slug, unique_slugs, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = 1_700_000_000
STEP_S = 3_600
POLICIES = ["hold", "threshold", "keeper"]
ORDERS = ["keeper-first", "liquidator-first"]
BANDS = Bands(min_health=1.2, max_leverage=2.0, hedge_target=0.0, hedge_band=0.05)
LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def market(steps: int = 12) -> list[MarketStep]:
    """ETH falls 2 % a step from 2 000, BTC 1 % from 60 000; ETH vol rises, base fee climbs."""
    return [
        MarketStep(
            i,
            T0 + STEP_S * i,
            {"ETH": 2_000.0 * (1 - 0.02 * i), "BTC": 60_000.0 * (1 - 0.01 * i)},
            {"ETH": 0.5 + 0.02 * i, "BTC": 0.45},
            10.0 + i,
        )
        for i in range(steps)
    ]


def vault_run(
    name: str = "ETH Basis #1", steps: int = 12, actions: bool = True, liquidated: bool = False
) -> VaultRun:
    """Health falls from inf (no debt yet) through the 1.2 line; a deleverage, a hedge, a
    reverted rebalance; optionally a liquidation at step 9."""
    observations = []
    for i in range(steps):
        health = math.inf if i == 0 else 2.0 - 0.08 * i
        for phase in (PHASE_ORACLE, PHASE_END):
            observations.append(
                Observation(
                    step=i,
                    phase=phase,
                    block=100 + 300 * i,
                    timestamp=T0 + STEP_S * i,
                    nav_usd=1_000_000.0 - 5_000.0 * i,
                    health=health,
                    lending_health=health,
                    perp_health=math.inf,
                    leverage=1.5 + 0.03 * i,
                    net_delta_usd=(-1) ** i * 8_000.0,
                    debt_usd=500_000.0,
                    idle_usd=0.0,
                )
            )
    acts = (
        [
            ActionRecord(3, 1_000, "deleverage", "mined", gas_used=250_000, gas_usd=4.0),
            ActionRecord(5, 1_600, "hedge", "mined", gas_used=180_000, gas_usd=3.0),
            ActionRecord(7, 2_200, "rebalance", "reverted"),
        ]
        if actions
        else []
    )
    liqs = [LiquidationRecord(9, 2_800, "lending", 50_000.0, 2_500.0)] if liquidated else []
    return VaultRun(name, "0x" + "ab" * 20, BANDS, observations, acts, liqs)


def path_run(
    policy: str,
    order: str,
    scenario: str = "crash",
    path: int = 0,
    vaults: list[VaultRun] | None = None,
) -> PathRun:
    return PathRun(
        scenario=scenario,
        path=path,
        seed=7 + path,
        policy=policy,
        order=order,
        step_s=STEP_S,
        blocks_per_step=300.0,
        market=market(),
        vaults=vaults if vaults is not None else [vault_run()],
    )


def m(**kw: Any) -> dict[str, Any]:
    """A metrics dict M: a calm path, overridden by `kw`."""
    base: dict[str, Any] = dict(
        liquidations=0,
        liquidation_loss_usd=0.0,
        min_health=1.5,
        hours_below_min_health=0.0,
        max_drawdown=0.04,
        final_nav_usd=1_000_000.0,
        sharpe=1.0,
        txs=10,
        gas_used=2_000_000,
        gas_usd=40.0,
        slippage_usd=2_000.0,
        reverted_simulations=0,
        hours_outside_mandate=1.0,
        time_to_safe_blocks=None,
        breaches=0,
        hours_delta_outside_band=0.5,
        recovery_hours=None,
    )
    base.update(kw)
    return base


def metrics(
    results: dict[str, dict[str, dict[str, dict[str, Any]]]],
    vault_names: tuple[str, ...] = ("ETH Basis #1",),
) -> dict[str, Any]:
    """metrics.json from `results`: scenario → order → policy → total M (each vault gets it)."""
    out: dict[str, Any] = {}
    for scenario, by_order in results.items():
        for order, by_policy in by_order.items():
            for policy, total in by_policy.items():
                out.setdefault(scenario, {}).setdefault(order, {})[policy] = {
                    "total": total,
                    "vaults": {v: total for v in vault_names},
                    "paths": [
                        {
                            "path": 0,
                            "seed": 7,
                            "total": total,
                            "vaults": {v: total for v in vault_names},
                        }
                    ],
                }
    return {
        "version": 1,
        "chain": "tester",
        "seed": 7,
        "paths": 1,
        "scenarios": list(results),
        "policies": POLICIES,
        "orders": ORDERS,
        "results": out,
    }


def same_totals(**per_policy: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Both orders with the same totals per policy."""
    return {order: dict(per_policy) for order in ORDERS}


def all_runs(scenario: str = "crash", **kw: Any) -> list[PathRun]:
    return [path_run(p, o, scenario, **kw) for p in POLICIES for o in ORDERS]


def links(report: Path) -> list[str]:
    return LINK.findall(report.read_text(encoding="utf-8"))


def reading_lines(text: str, scenario: str, order: str) -> str:
    """The reading bullets of one scenario/order section."""
    section = text.split(f"### `{scenario}` / `{order}`", 1)[1].split("\n### ", 1)[0]
    return section.split("Reading:", 1)[1]


def is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 10_000


# ---------------------------------------------------------------- files and links


def test_writes_report_and_real_pngs_with_deterministic_names(tmp_path: Path) -> None:
    report = write_report(
        tmp_path, all_runs(), metrics({"crash": same_totals(hold=m(), threshold=m(), keeper=m())})
    )
    assert report == tmp_path / "report.md"
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == [
        "market-crash.png",
        "vaults-crash-keeper-first-eth-basis-1.png",
        "vaults-crash-liquidator-first-eth-basis-1.png",
    ]
    for name in pngs:
        assert is_png(tmp_path / name), name


def test_every_linked_image_exists_and_every_image_is_linked(tmp_path: Path) -> None:
    two_vaults = [vault_run("ETH Basis #1"), vault_run("btc/options")]
    runs = [path_run(p, o, vaults=two_vaults) for p in POLICIES for o in ORDERS]
    totals = same_totals(hold=m(), threshold=m(), keeper=m())
    report = write_report(
        tmp_path, runs, metrics({"crash": totals}, ("ETH Basis #1", "btc/options"))
    )
    linked = links(report)
    assert len(linked) == 5  # market + 2 orders × 2 vaults
    for name in linked:
        assert "/" not in name and (tmp_path / name).is_file(), name
    assert sorted(linked) == sorted(p.name for p in tmp_path.glob("*.png"))
    assert "vaults-crash-liquidator-first-btc-options.png" in linked


def test_out_dir_is_created(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    report = write_report(out, all_runs(), metrics({"crash": same_totals(keeper=m())}))
    assert report.is_file() and (out / "market-crash.png").is_file()


def test_slugs_are_safe_and_unique() -> None:
    assert slug("ETH Basis #1") == "eth-basis-1"
    assert slug("../../etc/passwd") == "etc-passwd"
    assert slug("###") == "x"
    assert unique_slugs(["a b", "a-b", "A B", "a b"]) == {
        "a b": "a-b",
        "a-b": "a-b-2",
        "A B": "a-b-3",
    }


# ---------------------------------------------------------------- tables


def test_table_shows_the_metrics_formatted(tmp_path: Path) -> None:
    keeper = m(
        liquidations=1,
        liquidation_loss_usd=2_500.0,
        min_health=1.23449,
        hours_below_min_health=1.5,
        breaches=2,
        time_to_safe_blocks=12.0,
        hours_outside_mandate=3.25,
        final_nav_usd=1_234_567.89,
        max_drawdown=0.125,
        sharpe=1.254,
        txs=7,
        gas_used=1_234_567,
        gas_usd=12.5,
        slippage_usd=1_500.0,
        reverted_simulations=2,
    )
    text = write_report(
        tmp_path, all_runs(), metrics({"crash": same_totals(keeper=keeper)})
    ).read_text(encoding="utf-8")
    assert "| keeper | 1 | $2,500 | 1.234 | 1.5 h | 2 | 12.0 blocks | 3.2 h |" in text
    assert "| keeper | $1,234,568 | 12.50% | 1.25 | 7 | 1,234,567 | $12.50 | $1,500 | 2 |" in text


def test_inf_health_formats_as_inf(tmp_path: Path) -> None:
    for raw in (math.inf, "inf", "Infinity", None, 1.15e59):
        assert fmt_health(metric_value({"min_health": raw}, "min_health")) == "inf"
    assert fmt_health(metric_value({"min_health": 1.0}, "min_health")) == "1.000"
    text = write_report(
        tmp_path, all_runs(), metrics({"crash": same_totals(keeper=m(min_health="inf"))})
    ).read_text(encoding="utf-8")
    assert "| keeper | 0 | $0.00 | inf | 0.0 h | 0 | — | 1.0 h |" in text


def test_usd_format() -> None:
    assert fmt_usd(1_234_567.89) == "$1,234,568"
    assert fmt_usd(999.5) == "$999.50"
    assert fmt_usd(-2_500.4) == "-$2,500"
    assert fmt_usd(-0.001) == "$0.00"
    assert fmt_usd(None) == "—"


def test_per_vault_table_only_with_several_vaults(tmp_path: Path) -> None:
    one = write_report(
        tmp_path / "one", all_runs(), metrics({"crash": same_totals(keeper=m())})
    ).read_text(encoding="utf-8")
    assert "Per vault:" not in one
    two = write_report(
        tmp_path / "two",
        all_runs(),
        metrics({"crash": same_totals(keeper=m(final_nav_usd=500_000.0))}, ("vault A", "vault B")),
    ).read_text(encoding="utf-8")
    assert "Per vault:" in two
    assert "| vault B | keeper | $500,000 |" in two


def test_summary_combines_scenarios(tmp_path: Path) -> None:
    results = {
        "crash": same_totals(
            keeper=m(
                liquidations=2, liquidation_loss_usd=1_000.0, min_health=1.1, max_drawdown=0.30
            )
        ),
        "calm": same_totals(
            keeper=m(liquidations=1, liquidation_loss_usd=500.0, min_health=1.4, max_drawdown=0.05)
        ),
    }
    runs = all_runs("crash") + all_runs("calm")
    text = write_report(tmp_path, runs, metrics(results)).read_text(encoding="utf-8")
    summary = text.split("## Summary over all scenarios", 1)[1].split("## Scenario", 1)[0]
    # Σ liquidations, Σ loss, worst min health, Σ hours below, Σ breaches, Σ hours outside,
    # Σ hours delta outside, Σ final NAV, worst drawdown, Σ txs, Σ gas used, Σ gas cost,
    # Σ slippage, Σ reverted.
    assert (
        "| keeper-first | keeper | 3 | $1,500 | 1.100 | 0.0 h | 0 | 2.0 h | 1.0 h | $2,000,000 | "
        "30.00% | 20 | 4,000,000 | $80.00 | $4,000 | 0 |"
    ) in summary
    assert "- **scenarios**: `crash, calm`" in text and "- **chain**: `tester`" in text


# ---------------------------------------------------------------- the reading


def test_reading_says_threshold_did_better_with_the_reason(tmp_path: Path) -> None:
    threshold = m(
        final_nav_usd=1_005_000.0, txs=6, gas_used=1_000_000, gas_usd=20.0, slippage_usd=500.0
    )
    keeper = m(final_nav_usd=1_000_000.0)
    text = write_report(
        tmp_path,
        all_runs(),
        metrics(
            {
                "crash": same_totals(
                    hold=m(
                        txs=0,
                        gas_used=0,
                        gas_usd=0.0,
                        slippage_usd=0.0,
                        liquidations=3,
                        liquidation_loss_usd=9_000.0,
                        final_nav_usd=990_000.0,
                    ),
                    threshold=threshold,
                    keeper=keeper,
                )
            }
        ),
    ).read_text(encoding="utf-8")
    lines = reading_lines(text, "crash", "keeper-first")
    assert (
        "**threshold** beat keeper on return: $5,000 more final NAV (threshold $1,005,000 "
        "vs keeper $1,000,000). Why: keeper paid $40.00 in gas cost (threshold: $20.00), "
        "$2,000 in slippage (threshold: $500.00); that is $1,520 of the $5,000 gap; the "
        "other $3,480 is not from these three costs."
    ) in lines
    assert (
        "**threshold** beat keeper on cost: 4 fewer transactions (threshold 6 vs keeper "
        "10); 1,000,000 less gas used (threshold 1,000,000 vs keeper 2,000,000); $20.00 "
        "less gas cost (threshold $20.00 vs keeper $40.00); $1,500 less slippage (threshold "
        "$500.00 vs keeper $2,000); keeper's extra activity bought nothing on"
    ) in lines
    assert (
        "**Highest final NAV**: threshold ($1,005,000); hold $990,000, keeper $1,000,000." in lines
    )
    assert "**Fewest liquidations**: threshold and keeper (0); hold 3." in lines
    # hold spent nothing but lost more to liquidations: its cost win says what keeper bought.
    assert (
        "in return keeper had 3 fewer liquidations (keeper 0 vs hold 3); $9,000 less "
        "liquidation loss (keeper $0.00 vs hold $9,000)" in lines
    )
    assert "**hold** beat keeper on return" not in lines


def test_reading_does_not_claim_threshold_did_better_when_it_did_not() -> None:
    keeper = m(final_nav_usd=1_000_000.0)
    # Worse or equal everywhere; the NAV edge of $0.30 is invisible in the table.
    threshold = m(
        final_nav_usd=1_000_000.3,
        txs=12,
        gas_used=2_500_000,
        gas_usd=50.0,
        liquidations=1,
        liquidation_loss_usd=700.0,
        min_health=1.1,
    )
    lines = reading({"threshold": threshold, "keeper": keeper})
    assert "**threshold** did not beat keeper on any metric." in lines
    assert not any(line.startswith("**threshold** beat keeper") for line in lines)


def test_reading_explains_nav_gap_when_costs_do_not() -> None:
    lines = reading({"hold": m(final_nav_usd=1_010_000.0), "keeper": m()})
    nav = next(line for line in lines if line.startswith("**hold** beat keeper on return"))
    assert "not gas, slippage or liquidation loss — keeper's were not higher" in nav


def test_reading_credits_threshold_on_risk_with_context() -> None:
    lines = reading(
        {
            "threshold": m(liquidations=0, txs=8),
            "keeper": m(liquidations=2, liquidation_loss_usd=4_000.0, reverted_simulations=3),
        }
    )
    assert (
        "**threshold** beat keeper on risk: 2 fewer liquidations (threshold 0 vs keeper 2); "
        "$4,000 less liquidation loss (threshold $0.00 vs keeper $4,000); 3 fewer reverted "
        "simulations (threshold 0 vs keeper 3). Context: keeper sent 10 txs with 3 reverted "
        "simulations; threshold sent 8 txs with 0 reverted simulations."
    ) in lines


def test_order_note_when_liquidator_first_liquidates_more(tmp_path: Path) -> None:
    results = {
        "crash": {
            "keeper-first": {"keeper": m(liquidations=1, liquidation_loss_usd=1_500.0)},
            "liquidator-first": {"keeper": m(liquidations=3, liquidation_loss_usd=4_500.0)},
        }
    }
    text = write_report(tmp_path, all_runs(), metrics(results)).read_text(encoding="utf-8")
    note = text.split("### Move order", 1)[1]
    assert (
        "- **keeper**: under liquidator-first 3 liquidations and $4,500 lost, vs 1 and "
        "$1,500 under keeper-first (+2 liquidations, +$3,000 liquidation loss)."
    ) in note
    assert "changed neither" not in note


def test_no_order_note_when_order_did_not_matter() -> None:
    by_order = {o: {"keeper": {"total": m(liquidations=1)}} for o in ORDERS}
    assert order_notes(by_order, ORDERS, POLICIES) == [
        "The move order changed neither liquidations nor liquidation loss for any policy "
        "(liquidator-first vs keeper-first)."
    ]


# ---------------------------------------------------------------- charts


def test_scenario_with_zero_actions_still_draws(tmp_path: Path) -> None:
    runs = [path_run(p, o, vaults=[vault_run(actions=False)]) for p in POLICIES for o in ORDERS]
    report = write_report(
        tmp_path,
        runs,
        metrics({"crash": same_totals(hold=m(txs=0), threshold=m(txs=0), keeper=m(txs=0))}),
    )
    for name in links(report):
        assert is_png(tmp_path / name), name


def test_vault_without_observations_still_draws(tmp_path: Path) -> None:
    empty = VaultRun("empty", "0x0", BANDS)
    charts.draw_vault(
        tmp_path / "v.png",
        [path_run("keeper", "keeper-first", vaults=[empty])],
        "empty",
        charts.policy_colours(POLICIES),
    )
    assert is_png(tmp_path / "v.png")


def test_markers_and_liquidations_change_the_figure(tmp_path: Path) -> None:
    colours = charts.policy_colours(POLICIES)
    mined, failed = vault_run(actions=False), vault_run(actions=False)
    mined.actions.append(ActionRecord(3, 1_000, "deleverage", "mined"))
    failed.actions.append(ActionRecord(3, 1_000, "deleverage", "reverted"))
    variants = {
        "none": vault_run(actions=False),
        "mined": mined,
        "failed": failed,
        "liquidated": vault_run(actions=False, liquidated=True),
    }
    images = {}
    for key, vault in variants.items():
        target = tmp_path / f"{key}.png"
        charts.draw_vault(
            target, [path_run("keeper", "keeper-first", vaults=[vault])], vault.name, colours
        )
        images[key] = target.read_bytes()
    assert images["none"] != images["mined"]
    assert images["none"] != images["failed"]
    assert images["mined"] != images["failed"]  # filled vs hollow
    assert images["none"] != images["liquidated"]


def test_policy_colours_are_fixed_across_figures() -> None:
    a = charts.policy_colours(["keeper", "hold", "threshold", "mine"])
    b = charts.policy_colours(["mine", "threshold", "hold", "keeper"])
    assert a["keeper"] == b["keeper"] == charts.KNOWN_COLOURS["keeper"]
    assert a["mine"] == b["mine"] == charts.EXTRA_COLOURS[0]
    assert len(set(a.values())) == 4


def test_health_cap() -> None:
    assert charts.health_cap(BANDS) == pytest.approx(3.0)
    assert charts.health_cap(Bands(1.6, 2.0, 0.0, 0.05)) == pytest.approx(4.0)


def test_importing_the_report_does_not_import_matplotlib() -> None:
    code = "import sys, keeper.sim.report; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
