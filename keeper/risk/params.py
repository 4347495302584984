"""The policy's own tuning (not the mandate's): horizons, buffers, bands, risk aversion.

Defaults are module constants with the reason beside each; an operator may pass a different
`PolicyParams` to `keeper.policy.decide`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from keeper.risk.validation import at_least, in_range

logger = logging.getLogger(__name__)

#: Benefit horizon: a deviation left alone persists until the next trade, typically days. With
#: σ 0.5, κ 4 and 40 bps swap costs, one week makes a 50 %-of-NAV leverage miss worth fixing and
#: a 5 % one not; perps (5 bps) make a 5 % delta miss roughly break-even.
HORIZON_S: float = 7 * 86_400.0
#: Relative risk aversion κ (certainty-equivalent cost of variance = κ/(2·NAV)·Var in USD);
#: 2–10 is the range surveyed in the asset-pricing literature, 4 sits in its middle.
RISK_AVERSION: float = 4.0
#: Stress scenarios are one-day moves: what can happen before an operator can react.
STRESS_HORIZON_S: float = 86_400.0
#: Never stress by less than this joint fall, however calm the history (2022-style days).
STRESS_MIN_SHOCK: float = 0.10
#: The design gap: one block the keeper cannot outrun — the oracle moves every held underlying
#: down by this much at once and a liquidator moves first. Leverage and margin are sized so that
#: it leaves stressed health >= the floor below; a larger gap (the library's gap45, gap50) can
#: liquidate a vault when a liquidator moves first, and then only then. 35 % is the largest
#: one-hour fall in the published days the simulator replays (ETH on 12 Mar 2020: −30 % in
#: hours, −43 % in the day) that a position must survive without the keeper.
DESIGN_GAP: float = 0.35
#: The same for a rise (what short perps must survive on margin): above the library's worst
#: hourly rise (~9 %/h in the flash crash's recovery).
DESIGN_RISE: float = 0.15
#: The perp market's initial margin as a multiple of maintenance (the bundled market: 10 % vs
#: 5 %); a position may only grow above it. Margin posted for a growing hedge aims this much
#: above it (a fill at the limit price and a few hours of funding).
INITIAL_MARGIN_MULTIPLE: float = 2.0
MARGIN_BUFFER: float = 0.25
#: No leverage is added while any held underlying fell more than RELEVER_MAX_FALL (log) over the
#: last TREND_LOOKBACK_S: re-levering into a falling market was how the delta-neutral vault
#: went from 1.0× to 1.4× part-way down a crash and then deleveraged 6–12 times.
TREND_LOOKBACK_S: float = 86_400.0
RELEVER_MAX_FALL: float = 0.05
#: The scenario grid's price range (Deribit's portfolio margin: every underlying moved ±16 %
#: together, see `keeper.risk.scenarios`). The lending stress that caps a re-lever is never
#: below its fall, and the perp margin target leaves health >= STRESS_HEALTH_FLOOR after its
#: moves; with the defaults the design gap and rise are the larger. A growing hedge is not
#: sized to it yet (tried: the delta-neutral vault then never re-levered to its target).
GRID_RANGE: float = 0.16
#: Stressed health must stay at or above this (1 plus a buffer for liquidation-bonus slippage).
STRESS_HEALTH_FLOOR: float = 1.05
#: Deleverage restores health to min_health + this, so one noisy tick does not re-trigger it.
DELEVERAGE_HEALTH_BUFFER: float = 0.05
#: Risk-increasing moves keep health >= min_health + this; it must exceed the deleverage
#: buffer or a rebalance could undo a deleverage and flip every cycle.
REBALANCE_HEALTH_BUFFER: float = 0.10
#: Below this binding health a deleverage is CRITICAL (liquidation is one bad block away).
CRITICAL_HEALTH: float = 1.05
#: Below min health, a deleverage or repay is CRITICAL (it may pay up to the CRITICAL fee cap)
#: when what liquidators would take is at least this multiple of its gas at that cap: a breach
#: is one design gap from liquidation, and waiting for the base fee to fall below the HIGH cap
#: left vaults under min health for 21–39 blocks after the replays' gaps.
BREACH_STAKE_MULTIPLE: float = 10.0
#: Leverage no-trade half-width: max(abs, rel × target); vol forecasts move the target daily.
REBALANCE_BAND_ABS: float = 0.10
REBALANCE_BAND_REL: float = 0.10
#: Per-asset cap in risk-parity weights (raised to 1/n when fewer assets make it infeasible).
MAX_ASSET_WEIGHT: float = 0.60
#: Lending liquidation bonus paid out of the vault's collateral on liquidation (Aave-like 5 %).
LIQUIDATION_PENALTY: float = 0.05
#: Maintenance fraction assumed for a perp market the vault has no position in yet.
DEFAULT_PERP_MAINTENANCE: float = 0.05
#: Perp profit sits in margin while the vault pays interest on its debt and its lending health
#: (and with it the leverage caps) stays where the move left it: after `gap35` the Balanced vault
#: held ~$500k of margin against a ~$110k target for days, capped at 0.85× leverage against a
#: pre-shock 1.39×. Margin above what the hedge at the mandate's target leverage needs repays
#: debt once it is at least SWEEP_MIN_NAV_FRACTION of NAV (fewer, larger transactions) and its
#: interest over the horizon beats the gas.
SWEEP_MIN_NAV_FRACTION: float = 0.05
#: A hedge scaled below this fraction of its full size (margin-limited) is not worth sending.
MIN_HEDGE_SCALE: float = 0.05


@dataclass(frozen=True, slots=True)
class PolicyParams:
    """Operator-side policy tuning; see the module constants for why each default."""

    horizon_s: float = HORIZON_S
    risk_aversion: float = RISK_AVERSION
    stress_horizon_s: float = STRESS_HORIZON_S
    stress_min_shock: float = STRESS_MIN_SHOCK
    stress_health_floor: float = STRESS_HEALTH_FLOOR
    design_gap: float = DESIGN_GAP
    design_rise: float = DESIGN_RISE
    grid_range: float = GRID_RANGE
    initial_margin_multiple: float = INITIAL_MARGIN_MULTIPLE
    margin_buffer: float = MARGIN_BUFFER
    trend_lookback_s: float = TREND_LOOKBACK_S
    relever_max_fall: float = RELEVER_MAX_FALL
    deleverage_health_buffer: float = DELEVERAGE_HEALTH_BUFFER
    rebalance_health_buffer: float = REBALANCE_HEALTH_BUFFER
    critical_health: float = CRITICAL_HEALTH
    breach_stake_multiple: float = BREACH_STAKE_MULTIPLE
    rebalance_band_abs: float = REBALANCE_BAND_ABS
    rebalance_band_rel: float = REBALANCE_BAND_REL
    max_asset_weight: float = MAX_ASSET_WEIGHT
    liquidation_penalty: float = LIQUIDATION_PENALTY
    default_perp_maintenance: float = DEFAULT_PERP_MAINTENANCE
    min_hedge_scale: float = MIN_HEDGE_SCALE
    sweep_min_nav_fraction: float = SWEEP_MIN_NAV_FRACTION
    #: True: a positive spot leg spends idle USDC before borrowing (counts it as equity).
    fund_buys_from_idle: bool = True

    def __post_init__(self) -> None:
        at_least("horizon_s", self.horizon_s, 1.0)
        at_least("risk_aversion", self.risk_aversion, 1e-9)
        at_least("stress_horizon_s", self.stress_horizon_s, 1.0)
        in_range("stress_min_shock", self.stress_min_shock, 0.0, 0.95)
        at_least("stress_health_floor", self.stress_health_floor, 1.0)
        in_range("design_gap", self.design_gap, 0.0, 0.95)
        in_range("design_rise", self.design_rise, 0.0, 10.0)
        in_range("grid_range", self.grid_range, 1e-6, 0.99)
        at_least("initial_margin_multiple", self.initial_margin_multiple, 1.0)
        at_least("margin_buffer", self.margin_buffer, 0.0)
        at_least("trend_lookback_s", self.trend_lookback_s, 1.0)
        at_least("relever_max_fall", self.relever_max_fall, 0.0)
        at_least("deleverage_health_buffer", self.deleverage_health_buffer, 0.0)
        at_least(
            "rebalance_health_buffer", self.rebalance_health_buffer, self.deleverage_health_buffer
        )
        at_least("critical_health", self.critical_health, 1.0)
        at_least("breach_stake_multiple", self.breach_stake_multiple, 0.0)
        at_least("rebalance_band_abs", self.rebalance_band_abs, 0.0)
        at_least("rebalance_band_rel", self.rebalance_band_rel, 0.0)
        in_range("max_asset_weight", self.max_asset_weight, 0.0, 1.0)
        in_range("liquidation_penalty", self.liquidation_penalty, 0.0, 1.0)
        in_range("default_perp_maintenance", self.default_perp_maintenance, 0.0, 1.0)
        in_range("min_hedge_scale", self.min_hedge_scale, 0.0, 1.0)
        in_range("sweep_min_nav_fraction", self.sweep_min_nav_fraction, 0.0, 1.0)
