"""The metrics a report shows, how they are formatted, and the prose generated from them.

Every sentence `reading` and `order_notes` produce quotes the numbers it rests on, formatted as
the tables show them; a difference that the tables would show as equal is never claimed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

#: The policy every other one is compared against.
KEEPER = "keeper"
#: The order the other orders are compared with when the run has it.
BASE_ORDER = "keeper-first"
#: A health at or above this is the contract's "no debt" sentinel (max uint / WAD and the like).
HEALTH_INF_FLOOR = 1e9

Formatter = Callable[[float | None], str]
MISSING = "—"


def _guard(fmt: Callable[[float], str]) -> Formatter:
    def run(value: float | None) -> str:
        if value is None:
            return MISSING
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return fmt(value)

    return run


def _usd(value: float) -> str:
    # Cents only where they matter: gas and slippage of a few dollars.
    text = f"${abs(value):,.0f}" if abs(value) >= 1_000 else f"${abs(value):,.2f}"
    return f"-{text}" if value < 0 and text.strip("$0.,") else text


fmt_usd = _guard(_usd)
fmt_int = _guard(lambda v: f"{round(v):,}")
fmt_health = _guard(lambda v: f"{v:.3f}")
fmt_pct = _guard(lambda v: f"{100.0 * v:.2f}%")
fmt_pp = _guard(lambda v: f"{100.0 * v:.2f} pp")
fmt_hours = _guard(lambda v: f"{v:.1f} h")
fmt_blocks = _guard(lambda v: f"{v:.1f} blocks")
fmt_ratio = _guard(lambda v: f"{v:.2f}")


@dataclass(frozen=True, slots=True)
class Metric:
    """One key of a metrics dict `M`, as the report shows and compares it."""

    key: str
    header: str  # table column
    noun: str  # in prose
    fmt: Formatter
    higher_is_better: bool
    better: str  # the word for a better difference: "fewer", "less", "more", …
    #: Combining several scenarios' totals: "sum", "worst" (max if lower is better) or "none".
    across: Literal["sum", "worst", "none"]
    diff: Formatter | None = None  # formats |a − b|; defaults to fmt

    def phrase(self, other: float, keeper: float) -> str:
        """'3 fewer', '$1,200 more', …: how much better `other` is than `keeper`."""
        gap = abs(other - keeper)
        text = (self.diff or self.fmt)(gap) if math.isfinite(gap) else ""
        return f"{text} {self.better}".strip()


LIQUIDATIONS = Metric(
    "liquidations", "liquidations", "liquidations", fmt_int, False, "fewer", "sum"
)
LIQ_LOSS = Metric(
    "liquidation_loss_usd", "liq. loss", "liquidation loss", fmt_usd, False, "less", "sum"
)
MIN_HEALTH = Metric("min_health", "min health", "min health", fmt_health, True, "higher", "worst")
HOURS_BELOW = Metric(
    "hours_below_min_health",
    "h below min health",
    "time below min health",
    fmt_hours,
    False,
    "less",
    "sum",
)
BREACHES = Metric("breaches", "breaches", "breaches", fmt_int, False, "fewer", "sum")
TIME_TO_SAFE = Metric(
    "time_to_safe_blocks",
    "time to safe",
    "time back to safety",
    fmt_blocks,
    False,
    "sooner",
    "worst",
)
HOURS_OUTSIDE = Metric(
    "hours_outside_mandate",
    "h outside mandate",
    "time outside mandate",
    fmt_hours,
    False,
    "less",
    "sum",
)
DELTA_OUTSIDE = Metric(
    "hours_delta_outside_band",
    "h delta outside band",
    "time with net delta outside its band",
    fmt_hours,
    False,
    "less",
    "sum",
)
RECOVERY = Metric(
    "recovery_hours",
    "h to re-lever",
    "time to re-lever after implied vol came back",
    fmt_hours,
    False,
    "sooner",
    "worst",
)
RECOVERY_TO_TARGET = Metric(
    "recovery_hours_to_target",
    "h to own target",
    "time back to its own pre-move target after implied vol came back",
    fmt_hours,
    False,
    "sooner",
    "worst",
)
FINAL_NAV = Metric("final_nav_usd", "final NAV", "final NAV", fmt_usd, True, "more", "sum")
DRAWDOWN = Metric(
    "max_drawdown", "max drawdown", "max drawdown", fmt_pct, False, "smaller", "worst", fmt_pp
)
SHARPE = Metric("sharpe", "Sharpe", "Sharpe ratio", fmt_ratio, True, "higher", "none")
TXS = Metric("txs", "txs", "transactions", fmt_int, False, "fewer", "sum")
GAS_USED = Metric("gas_used", "gas used", "gas used", fmt_int, False, "less", "sum")
GAS_USD = Metric("gas_usd", "gas cost", "gas cost", fmt_usd, False, "less", "sum")
SLIPPAGE = Metric("slippage_usd", "slippage", "slippage", fmt_usd, False, "less", "sum")
REVERTED = Metric(
    "reverted_simulations", "reverted sims", "reverted simulations", fmt_int, False, "fewer", "sum"
)

RISK = (LIQUIDATIONS, LIQ_LOSS, MIN_HEALTH, HOURS_BELOW, BREACHES, TIME_TO_SAFE, HOURS_OUTSIDE,
        DELTA_OUTSIDE, RECOVERY, RECOVERY_TO_TARGET)
RETURN_COST = (FINAL_NAV, DRAWDOWN, SHARPE, TXS, GAS_USED, GAS_USD, SLIPPAGE, REVERTED)
SUMMARY = tuple(m for m in (*RISK, *RETURN_COST)
                if m.across != "none" and m not in (TIME_TO_SAFE, RECOVERY, RECOVERY_TO_TARGET))
#: The "who did best" lines, with their labels.
BEST = (
    (LIQUIDATIONS, "Fewest liquidations"),
    (LIQ_LOSS, "Least liquidation loss"),
    (FINAL_NAV, "Highest final NAV"),
    (TXS, "Fewest transactions"),
    (GAS_USD, "Least gas cost"),
)
#: What the other policies are compared with keeper on, in three groups with their own reason.
RISK_GROUP = (*RISK, REVERTED)
RETURN_GROUP = (FINAL_NAV, DRAWDOWN, SHARPE)
ACTIVITY_GROUP = (TXS, GAS_USED, GAS_USD, SLIPPAGE)
#: What keeper's extra transactions could have bought, checked when another policy spent less.
BOUGHT = (LIQUIDATIONS, LIQ_LOSS, MIN_HEALTH, HOURS_BELOW, HOURS_OUTSIDE)
#: The costs that come out of NAV, in the order a NAV gap is explained by.
COSTS = (GAS_USD, SLIPPAGE, LIQ_LOSS)


def metric_value(m: Mapping[str, Any], key: str) -> float | None:
    """`m[key]` as a float; None when missing. A missing or sentinel min_health is inf."""
    raw = m.get(key)
    value: float | None
    if isinstance(raw, bool) or raw is None:
        value = None
    elif isinstance(raw, int | float):
        value = float(raw)
    else:
        try:
            value = float(str(raw))
        except ValueError:
            value = None
    if key == MIN_HEALTH.key and (value is None or value >= HEALTH_INF_FLOOR):
        return math.inf
    return value


def beats(metric: Metric, other: float | None, keeper: float | None) -> bool:
    """Whether `other` is better than `keeper` by a difference the table shows."""
    if other is None or keeper is None or metric.fmt(other) == metric.fmt(keeper):
        return False
    return other > keeper if metric.higher_is_better else other < keeper


def _best_line(metric: Metric, label: str, totals: Mapping[str, Mapping[str, Any]]) -> str | None:
    values = {p: v for p, t in totals.items() if (v := metric_value(t, metric.key)) is not None}
    if not values:
        return None
    best = (max if metric.higher_is_better else min)(values.values())
    winners = [p for p, v in values.items() if metric.fmt(v) == metric.fmt(best)]
    if len(winners) == len(values):
        return f"**{label}**: all policies tied ({metric.fmt(best)})."
    rest = ", ".join(f"{p} {metric.fmt(v)}" for p, v in values.items() if p not in winners)
    return f"**{label}**: {' and '.join(winners)} ({metric.fmt(best)}); {rest}."


def _wins(
    group: Sequence[Metric],
    other: Mapping[str, Any],
    keeper: Mapping[str, Any],
    winner: str,
    loser: str,
) -> list[str]:
    """'3 fewer liquidations (1 vs 4)' for every metric of `group` where `other` beats `keeper`."""
    out = []
    for metric in group:
        o, k = metric_value(other, metric.key), metric_value(keeper, metric.key)
        if beats(metric, o, k) and o is not None and k is not None:
            out.append(
                f"{metric.phrase(o, k)} {metric.noun} ({winner} {metric.fmt(o)} vs "
                f"{loser} {metric.fmt(k)})"
            )
    return out


def _cost_reason(
    keeper: Mapping[str, Any], other: Mapping[str, Any], name: str, gap: float | None
) -> str:
    higher = []
    excess = 0.0
    for metric in COSTS:
        k, o = metric_value(keeper, metric.key), metric_value(other, metric.key)
        if k is not None and o is not None and beats(metric, o, k):
            higher.append(f"{metric.fmt(k)} in {metric.noun} ({name}: {metric.fmt(o)})")
            excess += k - o
    if not higher:
        listed = "; ".join(
            f"{m.noun} {m.fmt(metric_value(keeper, m.key))} vs {m.fmt(metric_value(other, m.key))}"
            for m in COSTS
        )
        return (
            f"not gas, slippage or liquidation loss — keeper's were not higher (keeper vs "
            f"{name}: {listed})"
        )
    text = "keeper paid " + ", ".join(higher)
    if gap is not None and gap > 0:
        rest = gap - excess
        text += f"; that is {fmt_usd(min(excess, gap))} of the {fmt_usd(gap)} gap"
        if fmt_usd(rest) != fmt_usd(0.0) and rest > 0:
            text += f"; the other {fmt_usd(rest)} is not from these three costs"
    return text


def _compare(name: str, other: Mapping[str, Any], keeper: Mapping[str, Any]) -> list[str]:
    out = []
    risk = _wins(RISK_GROUP, other, keeper, name, KEEPER)
    if risk:
        context = "; ".join(
            f"{who} sent {fmt_int(metric_value(m, TXS.key))} txs with "
            f"{fmt_int(metric_value(m, REVERTED.key))} reverted simulations"
            for who, m in ((KEEPER, keeper), (name, other))
        )
        out.append(f"**{name}** beat keeper on risk: {'; '.join(risk)}. Context: {context}.")
    ret = _wins(RETURN_GROUP, other, keeper, name, KEEPER)
    if ret:
        o_nav, k_nav = metric_value(other, FINAL_NAV.key), metric_value(keeper, FINAL_NAV.key)
        gap = o_nav - k_nav if o_nav is not None and k_nav is not None else None
        out.append(
            f"**{name}** beat keeper on return: {'; '.join(ret)}. Why: "
            f"{_cost_reason(keeper, other, name, gap)}."
        )
    spent = _wins(ACTIVITY_GROUP, other, keeper, name, KEEPER)
    if spent:
        bought = _wins(BOUGHT, keeper, other, KEEPER, name)
        gain = (
            "in return keeper had " + "; ".join(bought)
            if bought
            else "keeper's extra activity bought nothing on "
            + ", ".join(m.noun for m in BOUGHT)
            + " (equal or worse in the table)"
        )
        out.append(f"**{name}** beat keeper on cost: {'; '.join(spent)}; {gain}.")
    if not out:
        out.append(f"**{name}** did not beat keeper on any metric.")
    return out


def reading(totals: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Bullet sentences on one scenario and order: policy → its `total` metrics dict."""
    lines = [line for metric, label in BEST if (line := _best_line(metric, label, totals))]
    keeper = totals.get(KEEPER)
    if keeper is None:
        return lines
    for name, other in totals.items():
        if name != KEEPER:
            lines += _compare(name, other, keeper)
    return lines


def order_notes(
    by_order: Mapping[str, Mapping[str, Any]], orders: Sequence[str], policies: Sequence[str]
) -> list[str]:
    """Where the move order changed liquidations or liquidation loss, per policy.

    `by_order` is results[scenario]: order → policy → {"total": M, …}. Each order is compared
    with keeper-first (or the first order when keeper-first was not run).
    """
    if len(orders) < 2:
        return ["Only one move order was run."]
    base = BASE_ORDER if BASE_ORDER in orders else orders[0]
    notes = []
    for order in orders:
        if order == base:
            continue
        for policy in policies:
            a = by_order.get(base, {}).get(policy, {}).get("total")
            b = by_order.get(order, {}).get(policy, {}).get("total")
            if not isinstance(a, Mapping) or not isinstance(b, Mapping):
                continue
            n0, n1 = metric_value(a, LIQUIDATIONS.key), metric_value(b, LIQUIDATIONS.key)
            l0, l1 = metric_value(a, LIQ_LOSS.key), metric_value(b, LIQ_LOSS.key)
            if fmt_int(n0) == fmt_int(n1) and fmt_usd(l0) == fmt_usd(l1):
                continue
            delta = ""
            if n0 is not None and n1 is not None and l0 is not None and l1 is not None:
                sign = "+" if l1 >= l0 else "-"
                delta = (
                    f" ({n1 - n0:+,.0f} liquidations, {sign}{fmt_usd(abs(l1 - l0))} "
                    "liquidation loss)"
                )
            notes.append(
                f"**{policy}**: under {order} {fmt_int(n1)} liquidations and "
                f"{fmt_usd(l1)} lost, vs {fmt_int(n0)} and {fmt_usd(l0)} under "
                f"{base}{delta}."
            )
    if not notes:
        return [
            f"The move order changed neither liquidations nor liquidation loss for any "
            f"policy ({', '.join(o for o in orders if o != base)} vs {base})."
        ]
    return notes


__all__ = [
    "BASE_ORDER",
    "KEEPER",
    "RETURN_COST",
    "RISK",
    "SUMMARY",
    "Metric",
    "beats",
    "fmt_health",
    "fmt_usd",
    "metric_value",
    "order_notes",
    "reading",
]
