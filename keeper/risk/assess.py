"""Vectorised assessment of many vaults at once: every number the decision rules need.

This module measures; it decides nothing. What a deleverage, a rebalance and a hedge would be,
and what each would cost and bring, is computed here for every vault; which of them to take is
`keeper.policy.gate` (each rule once), and the hedge is assessed by `assess_hedge` on the book
the decided rebalance leaves.

One `Book` (V vaults × U underlyings × O options) goes through numpy in a fixed number of array
operations, so assessing 1 000 vaults costs about as much as assessing a handful. The scalar
`keeper.policy.decide` is the same code on a book of one, so the two paths cannot disagree.

Models (all USD, annualised vols, horizons in years inside):

- tracking cost of a USD exposure error vector e over the horizon h: ``κ·h/(2·NAV) · eᵀΣe``
  (the certainty-equivalent cost of variance with relative risk aversion κ); the expected
  benefit of a rebalance or hedge is the reduction of this cost;
- deleverage benefit: reduction of the expected liquidation penalty,
  ``penalty × value × P(health falls below 1 within h)``, P from a lognormal move of the
  basket (informational: a deleverage is never skipped for cost).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from keeper.risk.allocation import (
    borrow_leverage_cap,
    cppi_leverage,
    effective_cap,
    health_leverage_cap,
    kelly_leverage,
    most_conservative,
    risk_parity_weights,
    vol_target_leverage,
)
from keeper.risk.book import Book
from keeper.risk.forecast import MarketForecast, implied_shock
from keeper.risk.greeks import black_scholes
from keeper.risk.hedging import no_trade_band_usd, target_delta_units, whalley_wilmott_half_width
from keeper.risk.params import PolicyParams
from keeper.risk.scenarios import grid_binding_health
from keeper.risk.types import SECONDS_PER_YEAR, Costs, MarketView
from keeper.risk.validation import BoolArray, FloatArray

logger = logging.getLogger(__name__)

#: Bisection steps for the margin-limited hedge scale and the perp rescue's cut: 2^-30 of the
#: full size is plenty.
HEDGE_SCALE_BISECTIONS: int = 30
#: A sweep leaves perp health at least this fraction above the lending health before it (the
#: vault refuses a repayDebt that does not raise binding health; funding moves it meanwhile).
SWEEP_HEALTH_MARGIN: float = 0.01
#: Fixed-point steps for the sweep and the leverage it allows. Each step shrinks the error by
#: (leverage cap per dollar of lending equity) × (hedge margin per unit of leverage): at most
#: 1.05 / (1.05 − 0.65) × 0.23 = 0.6 with the stress never below the 35 % design gap, 0.45 for
#: the bundled vaults; 40 steps leave under 1e-9 of the first error.
SWEEP_FIXED_POINT_STEPS: int = 40
#: A perp rescue or a hedge borrows at most this fraction less than the pool's LTV room
#: (Σ collateral × price × LTV − debt): the room is the read's, and interest accrues before
#: the call lands.
BORROW_ROOM_SLACK: float = 1e-3
#: One basis point as a fraction (fees and slippage arrive in bps).
BPS: float = 1e-4


@dataclass(frozen=True, slots=True)
class Assessment:
    """Everything assessed for a book; arrays are (V,) or (V, U) as named in comments."""

    book: Book
    vol_methods: tuple[str, ...]
    # --- (V,) --------------------------------------------------------------------------
    stale: BoolArray
    oldest_feed_age_s: FloatArray
    lending_health: FloatArray
    perp_health: FloatArray
    binding_health: FloatArray
    leverage: FloatArray
    collateral_usd: FloatArray
    basket_vol: FloatArray
    lev_vol: FloatArray
    lev_cppi: FloatArray
    lev_kelly: FloatArray
    lev_stress: FloatArray
    lev_health: FloatArray
    lev_borrow: FloatArray
    #: A re-lever's cap at the lending equity its hedge's margin leaves (inf where no leverage
    #: is added); the target never goes below today's leverage for it.
    lev_margin: FloatArray
    target_leverage: FloatArray
    #: Per venue: below the mandate's min health (what a deleverage would cure).
    lending_low: BoolArray
    perp_low: BoolArray
    delev_target_health: FloatArray
    delev_lending_after: FloatArray
    delev_perp_after: FloatArray
    delev_benefit: FloatArray
    delev_cost: FloatArray
    #: USD: what liquidators would take if every position were liquidated now (the penalty on
    #: the debt and on the perp notional) — the stake a breach of min health puts at risk.
    at_stake_usd: FloatArray
    #: USD: cash into perp margin (idle cash, then borrowed); debt repaid from idle and perp
    #: margin; margin withdrawn.
    delev_top_up: FloatArray
    #: The part of ``delev_top_up`` the vault borrows (idle cash covers the rest).
    delev_borrow: FloatArray
    delev_repay: FloatArray
    delev_margin_withdraw: FloatArray
    margin_target: FloatArray
    #: USD: posted perp margin above what the hedge at the mandate's own target leverage needs,
    #: at most the debt (what a sweep would withdraw and repay); the interest it saves over the
    #: horizon; its gas.
    sweep_usd: FloatArray
    sweep_benefit: FloatArray
    sweep_cost: FloatArray
    rebalance_band: FloatArray
    rebalance_out: BoolArray
    #: Some held underlying fell more than `relever_max_fall` over the trend lookback.
    market_falling: BoolArray
    #: Some held underlying moved more than `relever_max_fall` either way over the lookback.
    market_moving: BoolArray
    rebalance_benefit: FloatArray
    rebalance_cost: FloatArray
    slippage_ok: BoolArray
    perp_equity: FloatArray
    #: Idle cash the perp book needs to reach its margin target (never spent on spot).
    margin_reserve: FloatArray
    #: Perp health a risk-increasing move keeps: min health + the rebalance buffer.
    keep_health: FloatArray
    #: The scenario grid's lowest binding health on today's book (every underlying ±
    #: `grid_range` together); measured and reported in every action's inputs.
    grid_health: FloatArray
    # --- (V, U) ------------------------------------------------------------------------
    sigma: FloatArray
    shock: FloatArray
    weights: FloatArray
    gamma: FloatArray
    net_delta: FloatArray
    mm_frac: FloatArray
    delev_spot: FloatArray
    delev_perp: FloatArray
    #: The trade to the target leverage, whether or not it is worth making.
    rebalance_proposal: FloatArray
    # --- (V, U, U) ---------------------------------------------------------------------
    cov: FloatArray


@dataclass(frozen=True, slots=True)
class HedgeAssessment:
    """The hedge on a book after a given rebalance (see `assess_hedge`): (V,) or (V, U)."""

    #: Some underlying's net delta is outside its no-trade band.
    out: BoolArray
    #: The vault's net delta is outside the mandate's band (|Σ deviation| > hedge_band × NAV,
    #: as the mandate and the simulator judge it).
    off_mandate: BoolArray
    #: Fraction of the full hedge the cash for its margin allows (1 when it all fits).
    scale: FloatArray
    benefit: FloatArray
    cost: FloatArray
    #: USD posted as perp margin with the hedge: idle cash, then borrowed.
    top_up: FloatArray
    #: The part of ``top_up`` the vault borrows.
    borrow: FloatArray
    net_delta_post: FloatArray
    target_delta: FloatArray
    band_usd: FloatArray
    ww_units: FloatArray
    #: Perp units to trade (already scaled).
    legs: FloatArray


@functools.lru_cache(maxsize=256)
def _rp_weights(
    sigmas: tuple[float, ...], corr: tuple[tuple[float, ...], ...], cap: float
) -> tuple[float, ...]:
    s = np.array(sigmas)
    if np.any(s <= 0.0):
        return tuple([1.0 / len(s)] * len(s))
    cov = np.array(corr) * np.outer(s, s)
    return tuple(float(w) for w in risk_parity_weights(cov, effective_cap(cap, len(s))))


def _weights(has: BoolArray, sigma: FloatArray, corr: FloatArray, cap: float) -> FloatArray:
    """Risk-parity weights per vault over the underlyings it holds (cached per distinct row)."""
    out = np.zeros(sigma.shape)
    keys = np.concatenate((has.astype(np.float64), sigma), axis=1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    n_u = has.shape[1]
    for row_i, row in enumerate(uniq):
        idx = np.flatnonzero(row[:n_u] > 0.5)
        if idx.size == 0:
            continue
        sub = corr[np.ix_(idx, idx)]
        w = _rp_weights(tuple(row[n_u:][idx].tolist()), tuple(tuple(r) for r in sub.tolist()), cap)
        out[np.ix_(inverse.ravel() == row_i, idx)] = w
    return out


def _quad(x: FloatArray, cov: FloatArray) -> FloatArray:
    out: FloatArray = np.einsum("vi,vij,vj->v", x, cov, x)
    return out


def _p_below_one(health: FloatArray, vol_h: FloatArray) -> FloatArray:
    """P(health < 1 after a lognormal move with stdev vol_h), health ∝ price."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.log(1.0 / health) / np.where(vol_h > 0, vol_h, 1.0)
    p = ndtr(z)
    p = np.where(vol_h > 0, p, (health < 1.0).astype(np.float64))
    return np.where(np.isinf(health), 0.0, p)


def _bisect(ok: Callable[[FloatArray], BoolArray], good: FloatArray,
            bad: FloatArray) -> FloatArray:
    """(V,) per vault, the point of [good, bad] (either order) nearest ``bad`` where the
    monotone predicate ``ok`` still holds, to 2^-HEDGE_SCALE_BISECTIONS of the interval;
    ``ok(good)`` is assumed, ``good`` is returned where even that is not so."""
    for _ in range(HEDGE_SCALE_BISECTIONS):
        mid = 0.5 * (good + bad)
        holds = ok(mid)
        good, bad = np.where(holds, mid, good), np.where(holds, bad, mid)
    return good


def _borrow_room(
    lt_value: FloatArray, ltv_value: FloatArray, debt: FloatArray, health: FloatArray
) -> FloatArray:
    """(V,) USD the vault may borrow: down to lending health ``health`` (also without debt:
    infinite health is no licence) and within the pool's LTV less `BORROW_ROOM_SLACK`; >= 0."""
    room: FloatArray = np.clip(
        np.minimum(lt_value / health - debt, (1.0 - BORROW_ROOM_SLACK) * ltv_value - debt),
        0.0, None,
    )
    return room


def margin_requirements(
    size: FloatArray, price: FloatArray, mm_frac: FloatArray, keep_health: FloatArray,
    params: PolicyParams,
) -> tuple[FloatArray, FloatArray]:
    """(V,) USD equity a perp book of signed ``size`` (V, U) needs: (initial, target).

    initial — the market's initial margin (``initial_margin_multiple`` × maintenance) plus
    ``margin_buffer``, what a growing position needs; target — at least that, enough for the
    scenario grid's moves (every underlying ±``grid_range`` together) to leave perp health >=
    ``stress_health_floor`` (equity + n·m >= floor · mm · (1 + m) at m = ±range, n the signed
    notional Σ S·P), and enough for perp health to stay at ``keep_health`` after the design move
    against every position at once (shorts: up by ``design_rise``; longs: down by
    ``design_gap``): Σ |S|·P·move + keep · Σ |S|·P·(1 ± move)·mm.
    """
    notional = np.abs(size) * price
    maint = (notional * mm_frac).sum(axis=1)
    initial = maint * params.initial_margin_multiple * (1.0 + params.margin_buffer)
    signed = (size * price).sum(axis=1)
    r, floor = params.grid_range, params.stress_health_floor
    grid = np.maximum(
        floor * maint * (1.0 + r) - signed * r, floor * maint * (1.0 - r) + signed * r
    )
    move = np.where(size < 0, params.design_rise, np.where(size > 0, params.design_gap, 0.0))
    after = np.where(size < 0, 1.0 + move, 1.0 - move)
    stressed = (notional * move).sum(axis=1) + keep_health * (notional * after * mm_frac).sum(
        axis=1
    )
    return initial, np.maximum(np.maximum(initial, grid), stressed)


def assess_book(
    book: Book, market: MarketView, forecast: MarketForecast, costs: Costs, params: PolicyParams
) -> Assessment:
    """Assess every vault of ``book``; pure, vectorised over vaults."""
    m = book.mandate
    has, price, nav = book.has, book.price, book.nav
    n_u = len(book.underlyings)
    hz = params.horizon_s / SECONDS_PER_YEAR
    now = float(market.now)

    # Staleness: any price or IV feed the vault depends on.
    age = np.where(has, now - np.minimum(book.price_at, book.iv_at), -np.inf)
    oldest = age.max(axis=1, initial=-np.inf)
    stale = oldest > market.max_staleness_s

    # Valuation and health (the contract's definitions).
    coll_usd = book.coll * price * has
    coll_value = coll_usd.sum(axis=1)
    lt_value = (coll_usd * book.lt).sum(axis=1)
    debt = book.debt
    with np.errstate(divide="ignore", invalid="ignore"):
        lending = np.where(debt > 0, lt_value / np.where(debt > 0, debt, 1.0), np.inf)
        notional = np.abs(book.perp_size) * price
        mm_frac = np.where(np.isnan(book.perp_mm), params.default_perp_maintenance, book.perp_mm)
        maint = (notional * mm_frac).sum(axis=1)
        equity = book.margin + book.perp_upnl.sum(axis=1)
        perp = np.where(maint > 0, equity / np.where(maint > 0, maint, 1.0), np.inf)
        leverage = np.where(
            nav > 0, coll_value / np.where(nav > 0, nav, 1.0), np.where(coll_value > 0, np.inf, 0.0)
        )
    binding = np.minimum(lending, perp)
    idle = np.maximum(book.idle_usdc, 0.0)
    thr = m["min_health"] + params.rebalance_health_buffer
    _, margin_target = margin_requirements(book.perp_size, price, mm_frac, thr, params)
    # Idle cash the perp book needs to reach its margin target is not spent on spot.
    margin_reserve = np.clip(margin_target - equity, 0.0, idle)
    grid_health = grid_binding_health(
        lt_value, debt, equity, (book.perp_size * np.where(has, price, 0.0)).sum(axis=1), maint,
        params.grid_range,
    )

    # Greeks: every option of every vault in one call.
    gamma = np.zeros(has.shape)
    opt_delta = np.zeros(has.shape)
    if book.opt_size.size:
        spot = np.take_along_axis(price, book.opt_u, axis=1)
        g = black_scholes(
            spot,
            book.opt_strike,
            (book.opt_expiry - now) / SECONDS_PER_YEAR,
            market.risk_free_rate,
            book.opt_iv,
            book.opt_call,
        )
        for j in range(n_u):
            on_j = book.opt_u == j
            # A written call's locked tokens are still the vault's: delta one each.
            opt_delta[:, j] = np.sum((g.delta * book.opt_size + book.opt_locked) * on_j, axis=1)
            gamma[:, j] = np.sum(g.gamma * book.opt_size * on_j, axis=1)
    net_delta = (book.coll + book.idle + book.perp_size + opt_delta) * has

    # Volatility, correlation, covariance per vault.
    names = book.underlyings
    fc_vol = np.array([forecast.vols[u].vol if u in forecast.vols else np.nan for u in names])
    # The larger of the history's forecast and the implied vol: the market's own forward view
    # keeps leverage cut until it has calmed too (a flat tape after a gap reads as no vol).
    sigma = np.where(has, np.where(np.isnan(fc_vol), book.iv, np.maximum(fc_vol, book.iv)), 0.0)
    vol_methods = tuple(
        forecast.vols[u].method.value if u in forecast.vols else "implied" for u in names
    )
    corr = np.array([[forecast.correlation(a, b) for b in names] for a in names]).reshape(n_u, n_u)
    cov = sigma[:, :, None] * sigma[:, None, :] * corr
    weights = _weights(has, sigma, corr, params.max_asset_weight)
    basket_var = _quad(weights, cov)
    basket_vol = np.sqrt(basket_var)
    fc_shock = np.array([forecast.shocks.get(u, np.nan) for u in names])
    iv_shock = implied_shock(book.iv, params)
    shock = np.where(has, np.where(np.isnan(fc_shock), iv_shock, fc_shock), 0.0)

    # Target leverage: the most conservative of the mandate's rules.
    hwm = np.array([market.nav_high_water_usd.get(a, 0.0) for a in book.addresses])
    drifts = np.array([forecast.expected_returns.get(u, np.nan) for u in names])
    excess = np.nansum(weights * drifts, axis=1) - market.risk_free_rate
    missing_drift = np.any(has & np.isnan(drifts), axis=1)
    spendable = idle - margin_reserve if params.fund_buys_from_idle else 0.0
    lending_equity = coll_value - debt + spendable
    lev_vol = vol_target_leverage(m["target_vol"], basket_vol)
    lev_cppi = cppi_leverage(nav, hwm, m["cppi_floor"], m["cppi_multiplier"])
    lev_kelly = kelly_leverage(
        np.where(missing_drift, np.nan, excess), basket_var, m["kelly_fraction"]
    )
    lt_stressed = (weights * (1.0 - shock) * book.lt).sum(axis=1)
    lt_basket = (weights * book.lt).sum(axis=1)
    ltv_basket = (weights * book.ltv).sum(axis=1)

    def lending_caps(k: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(stress, health, borrow) leverage caps at lending equity ``k``."""
        return (
            health_leverage_cap(nav, k, lt_stressed, params.stress_health_floor),
            health_leverage_cap(nav, k, lt_basket, thr),
            borrow_leverage_cap(nav, k, ltv_basket),
        )

    lev_stress, lev_health, lev_borrow = lending_caps(lending_equity)
    target_lev = most_conservative(
        lev_vol, lev_cppi, lev_kelly, m["max_leverage"], lev_stress, lev_health, lev_borrow
    )
    lev_free = most_conservative(lev_vol, lev_cppi, lev_kelly, m["max_leverage"])
    # A re-lever grows its hedge, and the margin that hedge posts is lending equity no more:
    # idle cash up to the margin target of the book at the target leverage, and at least the
    # initial margin the growth needs, borrowed where idle cash lacks it (see `assess_hedge`).
    # The lending caps are taken again at the equity that leaves (the margin at the first
    # target is at least the margin at any lower one, so the cap errs low), and the target is
    # never cut below today's leverage for it: the hedge's margin only stops leverage being
    # added. Left out, a vault whose perps were liquidated spent its idle cash on spot, had no
    # margin left for the hedge, and so never re-levered ($850k idle at 0.12x for 72 h).
    adds = target_lev > leverage
    lev_margin = np.full(nav.shape, np.inf)
    hedge_units = target_delta_units(m["hedge_target"][:, None], nav[:, None], weights, price)
    unit_usd = nav[:, None] * weights / np.where(has, price, 1.0)
    if np.any(adds):
        # The perps that put net delta back on the mandate's target after the buys, where it
        # would be outside the mandate's band (the hedge's no-trade band is never narrower).
        bought = target_lev[:, None] * unit_usd - book.coll
        gap_at = np.where(has, hedge_units - net_delta - bought, 0.0)
        off_at = np.abs(gap_at) * price > m["hedge_band"][:, None] * nav[:, None]
        size_at = book.perp_size + np.where(off_at, gap_at, 0.0)
        im_at, want_at = margin_requirements(size_at, price, mm_frac, thr, params)
        grows_at = np.any(np.abs(size_at) > np.abs(book.perp_size) * (1 + 1e-12), axis=1)
        hard_at = np.where(grows_at, np.maximum(im_at - equity, 0.0), 0.0)
        posts = np.maximum(np.minimum(np.maximum(want_at - equity, 0.0), idle), hard_at)
        funded = idle - posts if params.fund_buys_from_idle else -np.maximum(posts - idle, 0.0)
        carried = most_conservative(lev_free, *lending_caps(coll_value - debt + funded))
        lev_margin = np.where(adds, carried, np.inf)
        target_lev = np.where(
            adds, np.maximum(np.minimum(target_lev, carried), leverage), target_lev
        )

    # Deleverage: sells pro rata until health is back at min_health + buffer (worst fill).
    swap_exp = (costs.swap_fee_bps + costs.swap_slippage_bps) * BPS
    swap_worst = (costs.swap_fee_bps + m["max_slippage_bps"]) * BPS
    perp_fee = costs.perp_fee_bps * BPS
    min_h = m["min_health"]
    h_t = min_h + params.deleverage_health_buffer
    lend_low = lending < min_h
    perp_low = perp < min_h
    total_notional = notional.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Perp venue below min health: cash into margin first (up to the margin target, so a
        # trend does not bring it back next hour), then cut what cash cannot cure. The cash is
        # idle cash, then lending room borrowed against the collateral (the vault borrows what
        # idle cash lacks) down to the deleverage's target health and within the pool's LTV:
        # in a rally the collateral that rose pays the shorts' margin.
        ltv_value = (coll_usd * book.ltv).sum(axis=1)
        borrowable = np.where(
            perp_low & ~lend_low, _borrow_room(lt_value, ltv_value, debt, h_t), 0.0
        )
        # What cash cannot cure is cut to the margin target (it survives the design rise), not
        # to min health + buffer: both scale with the position, so a cut of g leaves (1 − g)
        # of the aim, and needs (1 − g)·aim − equity + g·(fee on the notional) of cash. Cut to
        # the buffer, a +40 % rally cost a deleverage every hour.
        aim = np.maximum(h_t * maint, margin_target)
        cut_fee = total_notional * perp_fee
        den_p = aim - cut_fee

        def cash_for(g: FloatArray) -> FloatArray:
            out: FloatArray = np.clip((1.0 - g) * aim - equity + g * cut_fee, 0.0, None)
            return out

        g_cash = np.where(
            den_p > 0, (aim - equity - idle - borrowable) / np.where(den_p > 0, den_p, 1), 1.0
        )
        # Borrowed margin is lending equity no more, so it lowers the lending caps on leverage:
        # where that would leave leverage above the band of the lower target, the cut goes on
        # until it is back at the band's top (a short cut sells as much spot, and its proceeds
        # repay debt): one call instead of a borrow now and a sale to the lower target next
        # tick (in `rally` the delta-neutral vault borrowed $256k, then sold an hour later).
        spot_per_cut = (
            np.minimum(np.where(book.perp_size < 0, -book.perp_size, 0.0), book.coll) * price * has
        ).sum(axis=1)

        def in_band(g: FloatArray) -> BoolArray:
            b = np.clip(cash_for(g) - idle, 0.0, borrowable)
            t = most_conservative(lev_free, *lending_caps(lending_equity - b))
            top = t + np.maximum(params.rebalance_band_abs, params.rebalance_band_rel * t)
            nav_g = nav - g * (cut_fee + spot_per_cut * swap_exp)
            lev_g = (coll_value - g * spot_per_cut) / np.where(nav_g > 0, nav_g, np.inf)
            out: BoolArray = lev_g <= top * (1.0 + 1e-12)
            return out

        g_band = np.zeros(book.n_vaults)
        if np.any(borrowable > 0):
            # (Not where even a full cut would leave it above: then the rebalance's own cut,
            # which sells spot alone, is the lever, and the rescue only cures the margin.)
            ones = np.ones(book.n_vaults)
            banded = (borrowable > 0) & ~in_band(g_band) & in_band(ones)
            if np.any(banded):
                g_band = np.where(banded, _bisect(in_band, ones, g_band), 0.0)
        gcut = np.where(perp_low, np.clip(np.maximum(g_cash, g_band), 0.0, 1.0), 0.0)
        delev_top_up = np.where(perp_low, np.minimum(idle + borrowable, cash_for(gcut)), 0.0)
        delev_borrow = np.maximum(delev_top_up - idle, 0.0)
        equity_d = equity + delev_top_up
        left = (1.0 - gcut) * maint
        perp_after = np.where(
            left > 0,
            (equity_d - gcut * total_notional * perp_fee) / np.where(left > 0, left, 1.0),
            np.inf,
        )
        # Lending venue below min health: repay from idle cash, then from perp margin above its
        # target (a hedge's profit), and sell collateral only for what is left.
        need_r = np.where(lend_low, np.maximum(0.0, debt - lt_value / h_t), 0.0)
        from_idle = np.minimum(np.maximum(idle - delev_top_up, 0.0), need_r)
        # Only posted cash can be withdrawn (unrealised profit stays in the position).
        surplus = np.where(
            perp_low, 0.0, np.clip(equity - margin_target, 0.0, np.maximum(book.margin, 0.0))
        )
        from_margin = np.minimum(surplus, need_r - from_idle)
        # Cash alone when it cures; otherwise one deleverage that cures in one transaction (a
        # breach is no time for two: the second waited on the fee cap after a gap).
        cures = from_idle + from_margin >= need_r * (1.0 - 1e-9)
        repay = np.where(lend_low & cures, from_idle + from_margin, 0.0)
        from_margin = np.where(cures, from_margin, 0.0)
        debt_r = debt - repay + delev_borrow
        den = h_t * coll_value * (1.0 - swap_worst) - lt_value
        f = np.where(den > 0, (h_t * debt_r - lt_value) / np.where(den > 0, den, 1.0), 1.0)
        f = np.where(lend_low & (h_t * debt_r > lt_value * (1 + 1e-12)), np.clip(f, 0.0, 1.0), 0.0)
        rem = debt_r - f * coll_value * (1.0 - swap_worst)
        lending_after = np.where(rem > 0, lt_value * (1 - f) / np.where(rem > 0, rem, 1), np.inf)
    cur_w = np.where(
        coll_value[:, None] > 0,
        coll_usd / np.where(coll_value > 0, coll_value, 1.0)[:, None],
        weights,
    )
    vol_h = np.sqrt(_quad(cur_w, cov) * hz)
    pen = params.liquidation_penalty
    delev_benefit = pen * (
        coll_value * (_p_below_one(lending, vol_h) - (1 - f) * _p_below_one(lending_after, vol_h))
        + total_notional
        * (_p_below_one(perp, vol_h) - (1 - gcut) * _p_below_one(perp_after, vol_h))
    )
    # Keep the hedge: cutting a short perp alone would add delta just when the vault is most
    # exposed, so sell the matching spot too (at most the collateral the lending cut leaves).
    # The proceeds repay debt, so this only ever raises lending health.
    short_cut = np.where(book.perp_size < 0, gcut[:, None] * -book.perp_size, 0.0) * has
    hedge_sell = np.minimum(short_cut, book.coll * (1.0 - f[:, None])) * has
    # And the other way round: collateral sold to cure lending takes its delta out of the book,
    # so buy back as much of a short perp on the same underlying (what the perp cut leaves) —
    # net delta stays where the mandate put it, and perp health only rises. Without it a cure
    # left the Balanced vault at -5 % net delta against +30 % ± 5 % until fees fell.
    short_left = np.where(book.perp_size < 0, (1.0 - gcut[:, None]) * -book.perp_size, 0.0)
    buy_back = np.minimum(f[:, None] * book.coll, short_left) * has
    sells_or_cuts = (f > 0) | (gcut > 0) | (delev_top_up > 0)
    delev_txs = (repay > 0).astype(np.float64) + sells_or_cuts.astype(np.float64)
    delev_cost = (
        costs.gas_price_usd_per_gas * costs.gas_units_deleverage * delev_txs
        + f * coll_value * swap_exp
        + gcut * total_notional * perp_fee
        + (hedge_sell * price).sum(axis=1) * swap_exp
        + (buy_back * price).sum(axis=1) * perp_fee
    )
    delev_spot = -(f[:, None] * book.coll + hedge_sell) * has
    delev_perp = (-gcut[:, None] * book.perp_size + buy_back) * has

    # Sweep: perp margin above what the hedge at the leverage the vault can reach after the
    # sweep needs pays down debt; never below today's margin target (itself at least the
    # initial margin). Only posted cash can be withdrawn. The reachable leverage is the mandate's
    # own (vol targeting, CPPI, Kelly, max leverage) capped by the lending caps at the lending
    # equity the repay leaves — which depends on the sweep, so the two are solved together (a
    # contraction: each dollar swept raises the caps, and the hedge they allow keeps a fraction
    # of a dollar more). Kept for the hedge at the uncapped leverage instead, $259k of the
    # Balanced vault's margin sat idle after `flash` and held it at 1.18× against 1.39× before.
    # The vault takes a repayDebt only if it raises binding health: the margin withdrawn may
    # lower perp health only to SWEEP_HEALTH_MARGIN above the lending health the repay raises,
    # and with perp health the binding one, not at all. In `regime` a sweep took the
    # delta-neutral vault's binding perp health from 5.79 to 4.54 and reverted in simulation
    # (VaultDeleverageNoImprovement).
    with np.errstate(invalid="ignore"):
        perp_room = np.where(
            maint > 0, equity - lending * maint * (1.0 + SWEEP_HEALTH_MARGIN), np.inf
        )
    cap_sweep = np.minimum(
        np.minimum(np.clip(book.margin, 0.0, None), debt), np.maximum(perp_room, 0.0)
    )

    def sweep_at(lev: FloatArray) -> FloatArray:
        size = np.where(has, hedge_units - lev[:, None] * unit_usd, 0.0)
        _, need = margin_requirements(size, price, mm_frac, thr, params)
        free: FloatArray = np.clip(equity - np.maximum(margin_target, need), 0.0, None)
        return np.minimum(free, cap_sweep)

    sweep = sweep_at(lev_free)  # the least: the hedge at the uncapped leverage
    last = sweep
    for _ in range(SWEEP_FIXED_POINT_STEPS):
        reach = most_conservative(lev_free, *lending_caps(lending_equity + sweep))
        last, sweep = sweep, sweep_at(reach)
        if np.array_equal(sweep, last):  # a fixed point: every further step is the same
            break
    # The iterates alternate around the fixed point: the smaller of the last two never sweeps
    # past it.
    sweep = np.minimum(sweep, last)
    sweep_benefit = sweep * max(market.risk_free_rate, 0.0) * hz
    sweep_cost = np.full(nav.shape, costs.gas_price_usd_per_gas * costs.gas_units_hedge)

    # Rebalance: leverage outside its band → trade to the target (risk-parity weights).
    band = np.maximum(params.rebalance_band_abs, params.rebalance_band_rel * target_lev)
    out = np.abs(leverage - target_lev) > band
    target_usd = target_lev[:, None] * nav[:, None] * weights
    err = coll_usd - target_usd
    legs = -err / price * has
    kappa = params.risk_aversion
    safe_nav = np.where(nav > 0, nav, 1.0)
    reb_benefit = kappa * hz / (2.0 * safe_nav) * _quad(err, cov)
    reb_cost = (
        costs.gas_price_usd_per_gas * costs.gas_units_rebalance + np.abs(err).sum(axis=1) * swap_exp
    )
    slippage_ok = costs.swap_slippage_bps <= m["max_slippage_bps"]
    recent = np.array([forecast.recent_returns.get(u, 0.0) for u in names])
    falling = np.any(has & (recent < -params.relever_max_fall), axis=1)
    moving = np.any(has & (np.abs(recent) > params.relever_max_fall), axis=1)

    return Assessment(
        book=book,
        vol_methods=vol_methods,
        stale=stale,
        oldest_feed_age_s=oldest,
        lending_health=lending,
        perp_health=perp,
        binding_health=binding,
        leverage=leverage,
        collateral_usd=coll_value,
        basket_vol=basket_vol,
        lev_vol=lev_vol,
        lev_cppi=lev_cppi,
        lev_kelly=lev_kelly,
        lev_stress=lev_stress,
        lev_health=lev_health,
        lev_borrow=lev_borrow,
        lev_margin=lev_margin,
        target_leverage=target_lev,
        lending_low=lend_low,
        perp_low=perp_low,
        delev_target_health=h_t,
        delev_lending_after=lending_after,
        delev_perp_after=perp_after,
        delev_benefit=delev_benefit,
        delev_cost=delev_cost,
        at_stake_usd=pen * (debt + total_notional),
        delev_top_up=delev_top_up,
        delev_borrow=delev_borrow,
        delev_repay=repay,
        delev_margin_withdraw=np.where(lend_low, from_margin, 0.0),
        margin_target=margin_target,
        sweep_usd=sweep,
        sweep_benefit=sweep_benefit,
        sweep_cost=sweep_cost,
        rebalance_band=band,
        rebalance_out=out,
        market_falling=falling,
        market_moving=moving,
        rebalance_benefit=reb_benefit,
        rebalance_cost=reb_cost,
        slippage_ok=np.broadcast_to(slippage_ok, nav.shape),
        perp_equity=equity,
        margin_reserve=margin_reserve,
        keep_health=thr,
        grid_health=grid_health,
        sigma=sigma,
        shock=shock,
        weights=weights,
        gamma=gamma,
        net_delta=net_delta,
        mm_frac=mm_frac,
        delev_spot=delev_spot,
        delev_perp=delev_perp,
        rebalance_proposal=legs,
        cov=cov,
    )


def assess_hedge(
    a: Assessment, rebalance_legs: FloatArray, costs: Costs, params: PolicyParams
) -> HedgeAssessment:
    """The hedge on the book after `rebalance_legs` (the rebalance the policy decided, zeros
    where none): net delta back to the mandate's target per underlying, outside a
    Whalley–Wilmott no-trade band, its margin — initial margin when a position grows — from
    idle cash the rebalance does not spend, scaled down when that cash is short."""
    book, m = a.book, a.book.mandate
    has, price, nav = book.has, book.price, book.nav
    hz = params.horizon_s / SECONDS_PER_YEAR
    kappa = params.risk_aversion
    safe_nav = np.where(nav > 0, nav, 1.0)
    perp_fee = costs.perp_fee_bps * BPS
    cov, mm_frac, thr = a.cov, a.mm_frac, a.keep_health
    equity, perp, net_delta, gamma = a.perp_equity, a.perp_health, a.net_delta, a.gamma
    idle = np.maximum(book.idle_usdc, 0.0)
    margin_reserve = a.margin_reserve

    # Hedge, on the post-rebalance book: net delta back to the mandate's target per underlying.
    coll_post = book.coll + rebalance_legs
    net_post = net_delta + rebalance_legs
    post_usd = coll_post * price * has
    post_total = post_usd.sum(axis=1)
    n_has = np.maximum(has.sum(axis=1), 1)
    w_exp = np.where(
        post_total[:, None] > 0,
        post_usd / np.where(post_total > 0, post_total, 1.0)[:, None],
        has / n_has[:, None],
    )
    target_units = target_delta_units(m["hedge_target"][:, None], nav[:, None], w_exp, price)
    dev_units = (net_post - target_units) * has
    dev_usd = dev_units * price
    ww = whalley_wilmott_half_width(gamma, price, perp_fee, kappa / safe_nav[:, None]) * has
    band_usd = no_trade_band_usd(m["hedge_band"][:, None], nav[:, None], ww, price)
    out_u = has & (np.abs(dev_usd) > band_usd)
    full = np.where(out_u, -dev_units, 0.0)
    hedge_fee = (np.abs(full) * price).sum(axis=1) * perp_fee

    buy_usd = (np.maximum(rebalance_legs, 0.0) * price).sum(axis=1)
    sell_usd = (np.maximum(-rebalance_legs, 0.0) * price).sum(axis=1)

    def margin_need(k: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(hard, wanted) top-up for scale k: hard — what the market and the health floor
        require (initial margin when a position grows); wanted — up to the margin target."""
        size_k = book.perp_size + k[:, None] * full
        im_k, target_k = margin_requirements(size_k, price, mm_frac, thr, params)
        mm_k = (np.abs(size_k) * price * mm_frac).sum(axis=1)
        eq_k = equity - k * hedge_fee
        grows = np.any(np.abs(size_k) > np.abs(book.perp_size) * (1 + 1e-12), axis=1)
        hard = np.maximum(np.where(grows, im_k, 0.0), thr * mm_k) - eq_k
        # A hedge that leaves perp health no lower than now needs no margin of its own.
        with np.errstate(divide="ignore", invalid="ignore"):
            h_k = np.where(mm_k > 0, eq_k / np.where(mm_k > 0, mm_k, 1.0), np.inf)
        hard = np.where(~grows & (h_k >= perp), np.minimum(hard, 0.0), hard)
        return hard, np.maximum(hard, target_k - eq_k)

    # The cash a hedge may post as margin: idle USDC the rebalance does not spend — it spends
    # none of what this hedge wants (its margin target; the buys borrow instead: the contract
    # posts the margin first) — then, for what the market requires (initial margin for a
    # growth, min health + buffer), lending room borrowed down to that same health after the
    # rebalance, within the pool's LTV. Funded from idle cash alone, the hedge a re-lever needed
    # after a perp liquidation was scaled to nothing, so the re-lever waited for good.
    ones = np.ones(book.n_vaults)
    hard_full, wanted_full = margin_need(ones)
    keep = np.clip(np.maximum(wanted_full, margin_reserve), 0.0, idle)
    spent = np.minimum(np.maximum(idle - keep, 0.0), buy_usd)
    idle_cash = idle - spent
    lt_post = (np.maximum(coll_post, 0.0) * price * book.lt * has).sum(axis=1)
    ltv_post = (np.maximum(coll_post, 0.0) * price * book.ltv * has).sum(axis=1)
    debt_post = np.maximum(book.debt + buy_usd - spent - sell_usd, 0.0)
    hedge_cash = idle_cash + _borrow_room(lt_post, ltv_post, debt_post, thr)
    fits = hard_full <= hedge_cash
    scale = ones.copy()
    if not np.all(fits):
        fits_at = _bisect(lambda k: margin_need(k)[0] <= hedge_cash, np.zeros(book.n_vaults), ones)
        scale = np.where(fits, 1.0, fits_at)
    hard, wanted = margin_need(scale)
    hedge_top_up = np.clip(
        np.maximum(np.minimum(wanted, idle_cash), np.minimum(hard, hedge_cash)), 0.0, None
    )
    hedge_borrow = np.maximum(hedge_top_up - idle_cash, 0.0)
    hedge_legs = scale[:, None] * full
    dev_after = dev_usd + hedge_legs * price
    hedge_benefit = kappa * hz / (2.0 * safe_nav) * (_quad(dev_usd, cov) - _quad(dev_after, cov))
    hedge_cost = costs.gas_price_usd_per_gas * costs.gas_units_hedge + scale * hedge_fee
    return HedgeAssessment(
        out=np.asarray(out_u.any(axis=1), dtype=bool),
        off_mandate=np.abs(dev_usd.sum(axis=1)) > m["hedge_band"] * nav,
        scale=scale,
        benefit=hedge_benefit,
        cost=hedge_cost,
        top_up=hedge_top_up,
        borrow=hedge_borrow,
        net_delta_post=net_post,
        target_delta=target_units,
        band_usd=band_usd,
        ww_units=ww,
        legs=hedge_legs,
    )
