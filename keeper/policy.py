"""The decision policy: vault state + mandate + market view + costs → actions. Pure.

Rules, in order, per vault:

1. **Stale data** — any price or implied-vol feed of the vault older than
   ``market.max_staleness_s``: no action at all (logged with the oldest age).
2. **Deleverage** — binding health (min of lending and perp margin health) below
   ``mandate.min_health``, the cheapest safe lever first: when lending binds, a REPAY of debt
   from idle cash and then from perp margin above its target (only posted cash); when perps
   bind, idle cash and then lending room (borrowed down to lending health ``min_health +
   deleverage buffer``, within the pool's LTV; none while lending is under min health too)
   posted as margin, up to the margin target (survive the design rise at the re-lever
   threshold) — cutting perps (and as much spot) instead where the borrowing would lower the
   lending caps enough to leave leverage above its rebalance band, to the band's top; then,
   for what cash cannot cure, sell collateral pro rata (proceeds
   repay debt) until lending health is back at ``min_health + deleverage buffer`` at the worst
   accepted fill, and/or cut every perp pro rata until perp health is back there; a short perp
   cut is matched by a sale of the same spot amount, so the hedge ratio is kept. Urgency HIGH,
   CRITICAL below ``critical_health``. Never skipped for cost, allowed when paused. A
   deleveraging vault gets nothing else this cycle (but a later action of the tick is decided
   again on a fresh read once the first has mined).
3. **Paused** — nothing but deleverage and sweep.
   **Sweep** — (not while deleveraging, nor while a held underlying moved more than
   ``relever_max_fall`` either way over ``trend_lookback_s``) posted perp margin above what
   the hedge at the leverage the vault can reach after the sweep needs (a hedge's profit; the
   repay raises the lending caps, so sweep and leverage are solved together) repays debt in
   one REPAY, once it is at least ``sweep_min_nav_fraction`` of NAV and the interest it saves
   over the horizon beats its gas (HIGH: worth today's gas, it does not wait); last in its
   tick — except before a re-lever, when it goes first whatever its size (if the re-lever's
   benefit pays for both) and the re-lever is decided again on the read after it lands.
   Never past the point where perp health would fall to the lending health (1 % above it), and
   not at all while perp health binds: the vault takes a repay only if binding health rises.
4. **Rebalance** — leverage (spot collateral / NAV) outside ``target ± max(abs, rel × target)``,
   target = the most conservative of vol targeting, CPPI, fractional Kelly, ``max_leverage``,
   the stress cut (stressed lending health >= floor, the stress never below the design gap nor
   the scenario grid's fall), the health cap (health >=
   ``min_health + rebalance buffer``) and the borrow (LTV) cap; trades straight to the target
   in risk-parity weights. Sent only if the expected benefit beats gas + swap fee + slippage and
   the venue's expected slippage is within the mandate's ``max_slippage_bps``.
5. **Hedge** — on the post-rebalance book, per underlying, net delta vs the target
   ``hedge_target × NAV`` split by spot exposure; underlyings outside their no-trade band
   (max of the mandate's ``hedge_band`` and the Whalley–Wilmott width) are traded back to the
   target with perps, scaled down if the perp margin health would fall below
   ``min_health + rebalance buffer`` or, when a position grows, the perp market's initial
   margin — posting idle cash the rebalance does not spend as margin in the same call; sent
   only if the benefit beats gas + perp fees, or always when the vault's net delta is outside
   the mandate's band (then it is owed, like a cut above max leverage); off the mandate, net
   long, and with no margin cash for the hedge (its perps were liquidated, say), the excess
   spot is sold instead (a REBALANCE, HIGH; never a buy). A rebalance and a
   hedge due together are one ``rebalance`` call (margin first, buys borrow the rest, perps on
   the rebalanced book).
6. **Settle** — every expired series the vault still holds (`settlements`), first.
7. **No re-levering into a falling market** — no leverage increase while a held underlying
   fell more than ``relever_max_fall`` over ``trend_lookback_s``; the target itself uses the
   larger of the forecast and the implied vol, and the stress is never below the design gap.

Expected benefit model (USD, over ``params.horizon_s``): the certainty-equivalent cost of
carrying a USD exposure error vector e against the target, ``κ·h/(2·NAV) · eᵀΣe`` with Σ the
forecast covariance and κ the relative risk aversion; a rebalance or hedge is worth the
reduction of this cost. A deleverage reports the reduction of the expected liquidation penalty.

Hysteresis without memory: triggers and targets are different points. A deleverage restores
health *above* its trigger; risk-increasing moves stop further above it still (so a rebalance
can never re-trigger a deleverage); rebalances and hedges trade to the band's *centre*, so the
next cycle starts well inside the band. ``decide`` keeps no state between calls.

Volatility: GARCH(1,1) when a history has >= ``GARCH_MIN_RETURNS`` returns, else EWMA (>=
``EWMA_MIN_RETURNS``), else the implied vol; the method is in each action's ``inputs``.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

import numpy as np

from keeper.errors import RiskInputError
from keeper.risk.actions import Action, ActionKind, InputValue, Urgency
from keeper.risk.assess import BPS, Assessment, HedgeAssessment, assess_book, assess_hedge
from keeper.risk.book import pack
from keeper.risk.forecast import MarketForecast, build_forecast
from keeper.risk.params import PolicyParams
from keeper.risk.types import Costs, Mandate, MarketView, VaultState

logger = logging.getLogger(__name__)

#: Legs smaller than this (token units) are rounding noise, not trades.
MIN_LEG_UNITS: float = 1e-12
#: Cash moves below one cent are rounding noise too.
MIN_CASH_USD: float = 0.01

DEFAULT_PARAMS = PolicyParams()

__all__ = [
    "Action",
    "ActionKind",
    "Gates",
    "Urgency",
    "assess_batch",
    "decide",
    "decide_batch",
    "gate",
    "observing_decisions",
    "risk_reducing_only",
    "settlements",
]

DecisionObserver = Callable[["Assessment", "Gates"], None]
#: Told of every batch `decide_batch` decides, with the assessment and gates its actions were
#: built from (the simulator records each vault's target leverage). A context variable, so a
#: tick in another thread or context never reports to it; unset, it costs one lookup a batch.
_OBSERVER: ContextVar[DecisionObserver | None] = ContextVar("decision_observer", default=None)


@contextmanager
def observing_decisions(observer: DecisionObserver) -> Iterator[None]:
    """Within the block, `observer(assessment, gates)` is called for every batch decided in
    this context, before its actions are built. It must only read what it is given (the very
    arrays the actions are built from): the decisions are then the same with or without it."""
    token = _OBSERVER.set(observer)
    try:
        yield
    finally:
        _OBSERVER.reset(token)


def _check_forecast(
    market: MarketView, forecast: MarketForecast | None, params: PolicyParams
) -> MarketForecast:
    if forecast is None:
        return build_forecast(market, params)
    if forecast.now != market.now or forecast.risk_free_rate != market.risk_free_rate:
        raise RiskInputError(
            f"forecast: built for now={forecast.now}, not for the market view at {market.now}"
        )
    return forecast


def assess_batch(
    states: Sequence[VaultState],
    mandates: Sequence[Mandate],
    market: MarketView,
    costs: Costs,
    params: PolicyParams = DEFAULT_PARAMS,
    forecast: MarketForecast | None = None,
) -> Assessment:
    """Vectorised assessment of many vaults (see `keeper.risk.assess`)."""
    fc = _check_forecast(market, forecast, params)
    return assess_book(pack(states, mandates), market, fc, costs, params)


def decide_batch(
    states: Sequence[VaultState],
    mandates: Sequence[Mandate],
    market: MarketView,
    costs: Costs,
    params: PolicyParams = DEFAULT_PARAMS,
    forecast: MarketForecast | None = None,
) -> list[list[Action]]:
    """`decide` for many vaults of one market at once; same actions, vectorised numerics.

    Pass ``forecast`` (from `keeper.risk.forecast.build_forecast`) to share the per-market fits
    across calls of one tick; otherwise they are fitted here.
    """
    if not states:
        return []
    a = assess_batch(states, mandates, market, costs, params, forecast)
    g = gate(a, costs, params)
    observer = _OBSERVER.get()
    if observer is not None:
        observer(a, g)
    return _all_actions(a, g, params, costs)


def decide(
    state: VaultState,
    mandate: Mandate,
    market: MarketView,
    costs: Costs,
    params: PolicyParams = DEFAULT_PARAMS,
    forecast: MarketForecast | None = None,
) -> list[Action]:
    """Actions for one vault now: [] (inside every band, stale data, not worth the cost), a
    single DELEVERAGE, or a REBALANCE and/or a HEDGE — in the order they should be sent.

    Pure: same inputs, same actions; no memory between calls. ``market.max_staleness_s`` is the
    operator's staleness limit. Without ``forecast`` the per-market fits (GARCH, Student-t,
    correlation; tens of ms) run inside this call — pass one per tick when deciding for several
    vaults, or use `decide_batch`. Raises `RiskInputError` on inconsistent inputs.
    """
    return decide_batch([state], [mandate], market, costs, params, forecast)[0]


# --- the rules: which of the assessed actions to take ------------------------------------
@dataclass(frozen=True, slots=True)
class Gates:
    """The decisions for a book, per vault (V,), and the hedge assessed on the decided
    rebalance. Each rule is here once; `keeper.risk.assess` only measures."""

    #: Some venue is under the mandate's min health and the feeds are fresh: cure it, nothing
    #: else this cycle.
    deleverage: np.ndarray
    #: May take a risk-changing trade at all: fresh, not paused, not deleveraging, NAV > 0.
    can_trade: np.ndarray
    #: The rebalance would add leverage while the market falls.
    relever_blocked: np.ndarray
    rebalance: np.ndarray
    #: (V, U) the decided rebalance's spot legs (zeros where none).
    rebalance_legs: np.ndarray
    hedge: np.ndarray
    hedged: HedgeAssessment
    #: Perp margin the hedge at the leverage the repay allows does not need repays debt.
    sweep: np.ndarray
    #: The sweep goes before the decided rebalance, which adds leverage (the re-lever is decided
    #: again on the read after the sweep lands).
    sweep_first: np.ndarray
    #: Net delta off the mandate with no margin cash for a hedge: sell the excess spot instead
    #: ((V, U) units, negative: sells).
    delta_cut_due: np.ndarray
    delta_cut: np.ndarray


def gate(a: Assessment, costs: Costs, params: PolicyParams) -> Gates:
    """Deleverage when a venue is under min health (never skipped for cost); otherwise
    sweep perp margin the hedge at the mandate's target leverage does not need into debt;
    rebalance when leverage is outside its band, the benefit beats the cost (or leverage is
    above the mandate's max), the venue's slippage fits the mandate, it does not re-lever into
    a falling market and its hedge's margin can carry it; then hedge, on the book that
    rebalance leaves, when net delta is outside its band, the margin cash allows at least
    `min_hedge_scale` of it and the benefit beats the cost (or net delta is outside the
    mandate's band: then it is owed)."""
    deleverage = ~a.stale & (a.lending_low | a.perp_low)
    can_trade = ~a.stale & ~a.book.paused & ~deleverage & (a.book.nav > 0)
    adds_leverage = a.target_leverage > a.leverage
    relever_blocked = a.market_falling & adds_leverage
    # Above the mandate's max leverage the cut is owed, whatever the tracking model makes of it.
    over_max = a.leverage > a.book.mandate["max_leverage"]
    rebalance = (
        can_trade
        & a.rebalance_out
        & a.slippage_ok
        & ((a.rebalance_benefit > a.rebalance_cost) | over_max)
        & ~relever_blocked
    )

    def hedge_after(rebalance: np.ndarray) -> tuple[np.ndarray, HedgeAssessment]:
        legs = np.where(rebalance[:, None], a.rebalance_proposal, 0.0)
        return legs, assess_hedge(a, legs, costs, params)

    legs, h = hedge_after(rebalance)
    # No leverage is added that its hedge cannot carry: when the margin cash covers only part of
    # the hedge the re-lever needs, the re-lever waits (it pushed the Balanced vault to +86 %
    # net delta against +30 % in a rally).
    unhedged = rebalance & adds_leverage & h.out & (h.scale < 1.0 - 1e-9)
    if np.any(unhedged):
        rebalance = rebalance & ~unhedged
        legs, h = hedge_after(rebalance)
    # Outside the mandate's own band the hedge is owed, whatever the tracking model makes of
    # it (as a cut above max leverage is): cost-gated, the delta-neutral vault sat at +4 to +7 %
    # net delta against 0 ± 2 % for 6 hours of a flash crash's high fees.
    hedge = (
        can_trade
        & h.out
        & (h.scale >= params.min_hedge_scale)
        & ((h.benefit > h.cost) | h.off_mandate)
    )
    # A sweep only moves the vault's own cash between its venues; allowed when paused. Not while
    # the tape moves: a short's crash profit is its margin for the rebound (swept during the
    # flash crash, the +43 % rebound liquidated both vaults' shorts with the liquidator first).
    sweepable = ~a.stale & ~deleverage & ~a.market_moving
    # Before a re-lever the sweep goes first, whatever its size, and is worth the leverage its
    # repay lets the re-lever take rather than its interest: it is sent when the re-lever's own
    # benefit (measured against today's lower target) pays for both transactions. At the first
    # calm hour after `flash` the Balanced vault's $49k sweep was under 5 % of NAV and its
    # interest under the gas, so it re-levered to 1.18× and the sweep never came.
    relever = rebalance & adds_leverage
    sweep = sweepable & (
        (
            (a.sweep_usd >= np.maximum(MIN_CASH_USD, params.sweep_min_nav_fraction * a.book.nav))
            & (a.sweep_benefit > a.sweep_cost)
        )
        | (
            relever
            & (a.sweep_usd >= MIN_CASH_USD)
            & (a.rebalance_benefit > a.rebalance_cost + a.sweep_cost)
        )
    )
    # Off the mandate, long, and no margin cash for the hedge (its perps were liquidated, say):
    # sell the excess spot instead (the proceeds repay debt). Left alone, the delta-neutral vault
    # sat at +96 % net delta for 120 h after a perp liquidation.
    excess = np.where(
        a.book.has,
        np.clip(h.net_delta_post - h.target_delta, 0.0, a.book.coll + legs),
        0.0,
    )
    delta_cut_due = (
        can_trade
        & a.slippage_ok
        & ~rebalance
        & h.out
        & h.off_mandate
        & (h.scale < params.min_hedge_scale)
        & np.any(excess * a.book.price > MIN_CASH_USD, axis=1)
    )
    delta_cut = np.where(delta_cut_due[:, None], -excess, 0.0)
    return Gates(deleverage, can_trade, relever_blocked, rebalance, legs, hedge, h, sweep,
                 sweep & relever, delta_cut_due, delta_cut)


# --- building actions from one row of the assessment ------------------------------------
# Rows are read from plain lists (one ``tolist`` per array per batch): indexing numpy scalars
# one by one costs more than the whole vectorised assessment.

Rows = dict[str, list[Any]]

_HEDGE_KEYS = (
    "net_delta",
    "net_delta_post_rebalance",
    "target_delta",
    "delta_gap_usd",
    "band_usd",
    "ww_half_width",
    "gamma",
)


def _rows(a: Assessment, g: Gates, idx: np.ndarray) -> Rows:
    """Plain-list rows of every per-vault array, for the vaults in ``idx`` only (row i of each
    list is vault ``idx[i]``); the hedge's under ``hedge_<name>``."""
    out: Rows = {}
    for obj, prefix in ((a, ""), (g, ""), (g.hedged, "hedge_")):
        for f in fields(obj):
            value = getattr(obj, f.name)
            if isinstance(value, np.ndarray) and f.name != "cov":
                out[prefix + f.name] = value[idx].tolist()
    for name, arr in a.book.mandate.items():
        out[f"mandate.{name}"] = arr[idx].tolist()
    for name in ("has", "price", "nav", "paused"):
        out[f"book.{name}"] = getattr(a.book, name)[idx].tolist()
    out["book.addresses"] = [a.book.addresses[v] for v in idx.tolist()]
    out["book.blocks"] = [a.book.blocks[v] for v in idx.tolist()]
    return out


def _legs(a: Assessment, r: Rows, key: str, v: int) -> MappingProxyType[str, float]:
    row, has = r[key][v], r["book.has"][v]
    return MappingProxyType(
        {
            u: row[j]
            for j, u in enumerate(a.book.underlyings)
            if has[j] and abs(row[j]) > MIN_LEG_UNITS
        }
    )


@functools.lru_cache(maxsize=64)
def _keys(prefixes: tuple[str, ...], underlying: str) -> tuple[str, ...]:
    return tuple(f"{p}.{underlying}" for p in prefixes)


def _common(a: Assessment, r: Rows, v: int) -> dict[str, InputValue]:
    out: dict[str, InputValue] = {
        "block": float(r["book.blocks"][v]),
        "nav_usd": r["book.nav"][v],
        "lending_health": r["lending_health"][v],
        "perp_health": r["perp_health"][v],
        "binding_health": r["binding_health"][v],
        "grid_health": r["grid_health"][v],
        "min_health": r["mandate.min_health"][v],
        "leverage": r["leverage"][v],
    }
    sigma, has = r["sigma"][v], r["book.has"][v]
    for j, u in enumerate(a.book.underlyings):
        if has[j]:
            k_vol, k_method = _keys(("vol", "vol_method"), u)
            out[k_vol] = sigma[j]
            out[k_method] = a.vol_methods[j]
    return out


def deleverage_urgency(binding: float, stake_usd: float, params: PolicyParams,
                       costs: Costs) -> Urgency:
    """CRITICAL one bad block from liquidation (binding health under `critical_health`), or
    when the stake — what liquidators would take — is worth the gas at the CRITICAL cap many
    times over (`breach_stake_multiple`); else HIGH. Only the fee cap differs: neither waits
    for a cheaper base fee."""
    if binding < params.critical_health:
        return Urgency.CRITICAL
    per_gas = costs.critical_gas_price_usd_per_gas
    if per_gas is None:
        per_gas = costs.gas_price_usd_per_gas
    gas_usd = per_gas * costs.gas_units_deleverage
    if stake_usd >= params.breach_stake_multiple * gas_usd:
        return Urgency.CRITICAL
    return Urgency.HIGH


def _deleverage(
    a: Assessment, r: Rows, v: int, params: PolicyParams, costs: Costs
) -> list[Action]:
    """The cheapest safe levers first: REPAY (idle cash and surplus perp margin pay down debt)
    when lending binds; then, for what cash cannot cure, a DELEVERAGE that posts idle cash as
    perp margin, sells collateral and cuts perps."""
    binding, min_h = r["binding_health"][v], r["mandate.min_health"][v]
    inputs = _common(a, r, v)
    inputs.update(
        {
            "target_health": r["delev_target_health"][v],
            "lending_health_after": r["delev_lending_after"][v],
            "perp_health_after": r["delev_perp_after"][v],
            "worst_fill_bps": costs.swap_fee_bps + r["mandate.max_slippage_bps"][v],
            "cost_usd": r["delev_cost"][v],
            "margin_target_usd": r["margin_target"][v],
            "repay_usd": r["delev_repay"][v],
            "margin_top_up_usd": r["delev_top_up"][v],
            "margin_borrow_usd": r["delev_borrow"][v],
        }
    )
    venues = [name for name in ("lending", "perp") if r[f"{name}_health"][v] < min_h]
    urgency = deleverage_urgency(binding, r["at_stake_usd"][v], params, costs)
    reason = f"{'+'.join(venues)} health {binding:.3f} < min {min_h:.3f}"
    out: list[Action] = []
    repay, withdraw = r["delev_repay"][v], r["delev_margin_withdraw"][v]
    if repay > MIN_CASH_USD:
        out.append(
            Action(
                kind=ActionKind.REPAY,
                vault=r["book.addresses"][v],
                urgency=urgency,
                expected_benefit_usd=r["delev_benefit"][v],
                expected_cost_usd=costs.gas_price_usd_per_gas * costs.gas_units_hedge,
                reason=f"{reason}: repay ${repay:,.0f} from cash"
                + (f" (${withdraw:,.0f} of it surplus perp margin)" if withdraw > 0 else ""),
                inputs=MappingProxyType(inputs),
                margin_usd=-withdraw if withdraw > MIN_CASH_USD else 0.0,
                repay_usd=repay,
            )
        )
    spot, perp = _legs(a, r, "delev_spot", v), _legs(a, r, "delev_perp", v)
    top_up = r["delev_top_up"][v]
    if spot or perp or top_up > MIN_CASH_USD:
        out.append(
            Action(
                kind=ActionKind.DELEVERAGE,
                vault=r["book.addresses"][v],
                urgency=urgency,
                expected_benefit_usd=r["delev_benefit"][v],
                expected_cost_usd=r["delev_cost"][v],
                reason=reason + _top_up_reason(top_up, r["delev_borrow"][v]),
                inputs=MappingProxyType(inputs),
                spot_legs=spot,
                perp_legs=perp,
                margin_usd=top_up if top_up > MIN_CASH_USD else 0.0,
            )
        )
    return out


def _top_up_reason(top_up: float, borrowed: float) -> str:
    if top_up <= MIN_CASH_USD:
        return ""
    if borrowed <= MIN_CASH_USD:
        return f": ${top_up:,.0f} of cash into perp margin"
    return f": ${top_up:,.0f} into perp margin (${borrowed:,.0f} of it borrowed)"


#: A hedge is only decided outside the mandate's band (the no-trade band is never narrower
#: than it) and only when it is worth today's gas, so it does not wait for a cheaper block:
#: NORMAL waited while the base fee sat at 26–27 gwei against the 25 gwei acceptable level,
#: and the delta-neutral vault stayed 3× its band off target for 17 hours after `gap35`.
HEDGE_URGENCY = Urgency.HIGH


def rebalance_urgency(leverage: float, target: float, max_leverage: float) -> Urgency:
    """HIGH above the mandate's max leverage (a breach: like a hedge, it does not wait);
    NORMAL for a cut toward the target; LOW for adding leverage (it waits for cheap gas)."""
    if leverage > max_leverage:
        return Urgency.HIGH
    return Urgency.NORMAL if target < leverage else Urgency.LOW


def _rebalance(a: Assessment, r: Rows, v: int) -> Action:
    lev, tgt, band = r["leverage"][v], r["target_leverage"][v], r["rebalance_band"][v]
    inputs = _common(a, r, v)
    inputs.update(
        {
            "target_leverage": tgt,
            "band": band,
            "lev_vol_target": r["lev_vol"][v],
            "lev_cppi": r["lev_cppi"][v],
            "lev_kelly": r["lev_kelly"][v],
            "lev_max": r["mandate.max_leverage"][v],
            "lev_stress": r["lev_stress"][v],
            "lev_health": r["lev_health"][v],
            "lev_borrow": r["lev_borrow"][v],
            "lev_hedge_margin": r["lev_margin"][v],
            "basket_vol": r["basket_vol"][v],
            "cost_usd": r["rebalance_cost"][v],
        }
    )
    weights, shock, has = r["weights"][v], r["shock"][v], r["book.has"][v]
    for j, u in enumerate(a.book.underlyings):
        if has[j]:
            k_w, k_s = _keys(("weight", "stress_shock"), u)
            inputs[k_w] = weights[j]
            inputs[k_s] = shock[j]
    return Action(
        kind=ActionKind.REBALANCE,
        vault=r["book.addresses"][v],
        urgency=rebalance_urgency(lev, tgt, r["mandate.max_leverage"][v]),
        expected_benefit_usd=r["rebalance_benefit"][v],
        expected_cost_usd=r["rebalance_cost"][v],
        reason=f"leverage {lev:.3f} outside {tgt:.3f} ± {band:.3f}",
        inputs=MappingProxyType(inputs),
        spot_legs=_legs(a, r, "rebalance_legs", v),
    )


def _hedge(a: Assessment, r: Rows, v: int) -> Action:
    inputs = _common(a, r, v)
    inputs.update(
        {
            "hedge_target": r["mandate.hedge_target"][v],
            "hedge_scale": r["hedge_scale"][v],
            "cost_usd": r["hedge_cost"][v],
            "margin_top_up_usd": r["hedge_top_up"][v],
            "margin_borrow_usd": r["hedge_borrow"][v],
            "margin_target_usd": r["margin_target"][v],
        }
    )
    has, price = r["book.has"][v], r["book.price"][v]
    net, post, tgt = r["net_delta"][v], r["hedge_net_delta_post"][v], r["hedge_target_delta"][v]
    band, ww, gamma = r["hedge_band_usd"][v], r["hedge_ww_units"][v], r["gamma"][v]
    worst, worst_ratio = "", -1.0
    for j, u in enumerate(a.book.underlyings):
        if not has[j]:
            continue
        gap = (post[j] - tgt[j]) * price[j]
        keys = _keys(_HEDGE_KEYS, u)
        for key, value in zip(
            keys, (net[j], post[j], tgt[j], gap, band[j], ww[j], gamma[j]), strict=True
        ):
            inputs[key] = value
        ratio = abs(gap) / band[j] if band[j] > 0 else math.inf
        if ratio > worst_ratio:
            worst, worst_ratio = u, ratio
    return Action(
        kind=ActionKind.HEDGE,
        vault=r["book.addresses"][v],
        urgency=HEDGE_URGENCY,
        expected_benefit_usd=r["hedge_benefit"][v],
        expected_cost_usd=r["hedge_cost"][v],
        reason=f"net delta off target by {worst_ratio:.2f}× the band ({worst})"
        + _top_up_reason(r["hedge_top_up"][v], r["hedge_borrow"][v]),
        inputs=MappingProxyType(inputs),
        perp_legs=_legs(a, r, "hedge_legs", v),
        margin_usd=r["hedge_top_up"][v] if r["hedge_top_up"][v] > MIN_CASH_USD else 0.0,
    )


def _delta_cut(a: Assessment, r: Rows, v: int, costs: Costs) -> Action:
    inputs = _common(a, r, v)
    inputs.update({"hedge_target": r["mandate.hedge_target"][v],
                   "hedge_scale": r["hedge_scale"][v]})
    nav = r["book.nav"][v]
    price = r["book.price"][v]
    net = sum(d * p for d, p in zip(r["net_delta"][v], price, strict=True))
    sold_usd = -sum(q * p for q, p in zip(r["delta_cut"][v], price, strict=True))
    cost = (costs.gas_price_usd_per_gas * costs.gas_units_rebalance
            + sold_usd * (costs.swap_fee_bps + costs.swap_slippage_bps) * BPS)
    return Action(
        kind=ActionKind.REBALANCE,
        vault=r["book.addresses"][v],
        urgency=HEDGE_URGENCY,
        expected_benefit_usd=r["hedge_benefit"][v],
        expected_cost_usd=cost,
        reason=f"net delta {net / nav:+.1%} of NAV is off the mandate and the margin cash "
        "allows no hedge: sell the excess spot",
        inputs=MappingProxyType(inputs),
        spot_legs=_legs(a, r, "delta_cut", v),
    )


#: A sweep lowers interest and raises lending health (and so the leverage caps). It is decided
#: only when worth today's gas, so, like a hedge, it does not wait for a cheaper block: NORMAL
#: waited the whole 168 h after `gap35` (the base fee eased from 140 to 26–27 gwei, never to
#: the 25 gwei acceptable level) with $172k of the Balanced vault's margin unswept.
SWEEP_URGENCY = Urgency.HIGH


def _sweep(a: Assessment, r: Rows, v: int) -> Action:
    amount = r["sweep_usd"][v]
    inputs = _common(a, r, v)
    inputs.update(
        {
            "perp_equity_usd": r["perp_equity"][v],
            "margin_target_usd": r["margin_target"][v],
            "sweep_usd": amount,
        }
    )
    return Action(
        kind=ActionKind.REPAY,
        vault=r["book.addresses"][v],
        urgency=SWEEP_URGENCY,
        expected_benefit_usd=r["sweep_benefit"][v],
        expected_cost_usd=r["sweep_cost"][v],
        reason=f"perp margin ${r['perp_equity'][v]:,.0f} is above its keep "
        f"(${r['margin_target'][v]:,.0f} target): ${amount:,.0f} of it repays debt",
        inputs=MappingProxyType(inputs),
        margin_usd=-amount,
        repay_usd=amount,
    )


def _rebalance_and_hedge(rebalance: Action, hedge: Action) -> Action:
    """One call for both: the contract posts the hedge's margin first, the buys borrow what
    idle cash no longer covers, and the perps trade on the rebalanced book — nothing is built
    from a read the first transaction made stale."""
    inputs = dict(rebalance.inputs)
    inputs.update({f"hedge.{k}": val for k, val in hedge.inputs.items() if k not in inputs})
    return Action(
        kind=ActionKind.REBALANCE,
        vault=rebalance.vault,
        urgency=max(rebalance.urgency, hedge.urgency),
        expected_benefit_usd=rebalance.expected_benefit_usd + hedge.expected_benefit_usd,
        expected_cost_usd=rebalance.expected_cost_usd + hedge.expected_cost_usd,
        reason=f"{rebalance.reason}; and {hedge.reason}",
        inputs=MappingProxyType(inputs),
        spot_legs=rebalance.spot_legs,
        perp_legs=hedge.perp_legs,
        margin_usd=hedge.margin_usd,
    )


def settlements(
    vault: str, options: Sequence[tuple[int, int, float]], now: int
) -> list[Action]:
    """SETTLE every expired series the vault still holds (``options``: series id, expiry, signed
    size): settling frees the locked collateral and ends the series' marking at the latest spot.
    The contract settles at the expiry price whenever it is called; never cost-gated."""
    return [
        Action(
            kind=ActionKind.SETTLE,
            vault=vault,
            urgency=Urgency.NORMAL,
            expected_benefit_usd=0.0,
            expected_cost_usd=0.0,
            reason=f"series {sid} expired at {expiry}",
            series_id=sid,
        )
        for sid, expiry, size in options
        if size != 0 and expiry <= now
    ]


def _shrinks_net_delta(action: Action) -> bool:
    """Every perp leg moves its underlying's net delta (units) strictly toward zero, from the
    book the leg trades on: post-rebalance when the action carries a rebalance (a combined call
    files the hedge's inputs under ``hedge.``). False when the inputs do not say."""
    for u, leg in action.perp_legs.items():
        base = next(
            (
                action.inputs[k]
                for k in (
                    f"net_delta_post_rebalance.{u}",
                    f"hedge.net_delta_post_rebalance.{u}",
                    f"net_delta.{u}",
                    f"hedge.net_delta.{u}",
                )
                if k in action.inputs
            ),
            None,
        )
        if base is None or isinstance(base, str) or not abs(base + leg) < abs(base):
            return False
    return True


def risk_reducing_only(actions: Sequence[Action]) -> tuple[list[Action], list[Action]]:
    """Split ``actions`` into (kept, held_back), order kept: what may still go while a vault's
    prices are suspect (its circuit breaker is open, `keeper.breaker`). By kind and legs, never
    by urgency (a fee tier: a HIGH rebalance may be a cut or a delta sale):

    - DELEVERAGE, REPAY (the deleverage's repay and the sweep: debt only goes down) and SETTLE:
      always kept;
    - REBALANCE: kept if it only sells (no spot leg > 0, so debt and leverage fall — the delta
      cut, most cuts to target) and any perp legs it carries shrink |net delta|; a re-lever or
      a rotation that buys is held back;
    - HEDGE: kept if every perp leg shrinks its underlying's |net delta| (from the action's
      inputs); held back if one grows it or the inputs do not say.
    """
    kept: list[Action] = []
    held: list[Action] = []
    for a in actions:
        if a.kind in (ActionKind.DELEVERAGE, ActionKind.REPAY, ActionKind.SETTLE):
            ok = True
        elif a.kind is ActionKind.REBALANCE:
            ok = all(q <= 0 for q in a.spot_legs.values()) and _shrinks_net_delta(a)
        elif a.kind is ActionKind.HEDGE:
            ok = _shrinks_net_delta(a)
        else:
            ok = False
        (kept if ok else held).append(a)
    return kept, held


def _why_not(r: Rows, v: int) -> str:
    if r["book.paused"][v]:
        return "paused"
    if r["book.nav"][v] <= 0:
        return "nav is zero"
    reasons = []
    if not r["rebalance_out"][v]:
        reasons.append("leverage inside band")
    elif r["relever_blocked"][v]:
        reasons.append("rebalance: no re-levering while the market falls")
    elif not r["slippage_ok"][v]:
        reasons.append("rebalance: expected slippage above mandate max")
    else:
        reasons.append(
            f"rebalance: benefit {r['rebalance_benefit'][v]:.2f} <= cost "
            f"{r['rebalance_cost'][v]:.2f}"
        )
    if not r["hedge_out"][v]:
        reasons.append("delta inside band")
    else:
        reasons.append(
            f"hedge: benefit {r['hedge_benefit'][v]:.2f} vs cost "
            f"{r['hedge_cost'][v]:.2f}, margin scale {r['hedge_scale'][v]:.2f}"
        )
    return "; ".join(reasons)


def _all_actions(
    a: Assessment, g: Gates, params: PolicyParams, costs: Costs
) -> list[list[Action]]:
    out: list[list[Action]] = [[] for _ in range(a.book.n_vaults)]
    debug = logger.isEnabledFor(logging.DEBUG)
    info = logger.isEnabledFor(logging.INFO)
    # Only vaults that act or must be logged are read row by row.
    wanted = (
        np.ones(a.book.n_vaults, dtype=bool)
        if debug
        else (g.deleverage | g.rebalance | g.hedge | g.sweep | g.delta_cut_due | a.stale)
    )
    idx = np.flatnonzero(wanted)
    if idx.size == 0:
        return out
    r = _rows(a, g, idx)
    for i, v in enumerate(idx.tolist()):
        vault = r["book.addresses"][i]
        if r["stale"][i]:
            logger.warning(
                "vault %s block %d: no action, stale feed (oldest %.0f s old)",
                vault,
                r["book.blocks"][i],
                r["oldest_feed_age_s"][i],
            )
            continue
        actions = out[v]
        if r["deleverage"][i]:
            actions.extend(_deleverage(a, r, i, params, costs))
        elif r["rebalance"][i] and r["hedge"][i]:
            actions.append(_rebalance_and_hedge(_rebalance(a, r, i), _hedge(a, r, i)))
        elif r["rebalance"][i]:
            actions.append(_rebalance(a, r, i))
        elif r["hedge"][i]:
            actions.append(_hedge(a, r, i))
        elif r["delta_cut_due"][i]:
            actions.append(_delta_cut(a, r, i, costs))
        if r["sweep"][i]:
            # Last: a sweep waiting for its fee never holds up a cut or a hedge, and after one of
            # those lands the sweep is decided again on the fresh read. Before a re-lever: the
            # debt it repays raises the lending caps, and the re-lever, decided again on the
            # read after the sweep lands, trades to the target they allow (after it, the sweep
            # would leave the new leverage inside the higher target's band: `flash` left the
            # Balanced vault at 1.18× against 1.39× before the move).
            actions.insert(0 if r["sweep_first"][i] else len(actions), _sweep(a, r, i))
        if actions and info:
            for act in actions:
                logger.info(
                    "vault %s: %s (%s) urgency=%s benefit=%.2f cost=%.2f inputs=%s",
                    vault,
                    act.kind.value,
                    act.reason,
                    act.urgency.name,
                    act.expected_benefit_usd,
                    act.expected_cost_usd,
                    dict(act.inputs),
                )
        elif not actions and debug:
            logger.debug(
                "vault %s block %d: no action (%s); health=%.4f leverage=%.4f target=%.4f",
                vault,
                r["book.blocks"][i],
                _why_not(r, i),
                r["binding_health"][i],
                r["leverage"][i],
                r["target_leverage"][i],
            )
    return out
