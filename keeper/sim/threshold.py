"""The `threshold` policy's rule: the common automation (DeFi Saver's Automation style) — repay
to a target ratio when health crosses a trigger, boost when it rises above another, fixed bands.
Pure: a vault state and its mandate in, actions out (sent through the keeper's own transaction
layer by `keeper.sim.policies`).

Bands are offsets above the vault's own ``min_health`` (DeFi Saver users set theirs above the
protocol's liquidation ratio in the same way):

- **repay** when lending health < ``min_health + repay_trigger``: sell every collateral by the
  same fraction f (proceeds repay debt) so that lending health reaches ``min_health +
  repay_target`` at the worst accepted fill s (swap fee + mandate slippage):
  ``(1 − f)·C_lt / (D − f·C·(1 − s)) = H'``  ⇒  ``f = (H'·D − C_lt) / (H'·C·(1 − s) − C_lt)``
  with C the collateral value, C_lt its value × liquidation thresholds, D the debt;
- **cut perps** when perp margin health < ``min_health + repay_trigger``: every perp shrinks by
  the same fraction so margin health (≈ margin value / requirement, the requirement scales with
  size) reaches ``min_health + repay_target``; no hedge logic (the automation has none);
- **boost** when lending health > ``min_health + boost_trigger``: borrow B and buy collateral in
  the current value weights w so lending health falls to ``min_health + boost_target``:
  ``(C_lt + B(1 − s)·Σw·lt) / (D + B) = H'``  ⇒  ``B = (C_lt − H'·D) / (H' − (1 − s)·Σw·lt)``,
  capped so leverage stays under ``leverage_cap × max_leverage``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from keeper.risk.actions import Action, ActionKind, Urgency
from keeper.risk.health import lending_health, perp_health
from keeper.risk.types import Mandate, VaultState

BPS = 10_000.0


@dataclass(frozen=True, slots=True)
class ThresholdBands:
    """Health offsets above the mandate's minimum (DeFi-Saver-like defaults)."""

    repay_trigger: float = 0.05
    repay_target: float = 0.30
    boost_trigger: float = 0.90
    boost_target: float = 0.40
    #: Boosts stop at this share of the mandate's maximum leverage.
    leverage_cap: float = 0.95


DEFAULT_BANDS = ThresholdBands()


def repay_fraction(c_usd: float, c_lt_usd: float, debt_usd: float, target: float,
                   fill_loss: float) -> float:
    """Fraction of every collateral to sell so lending health reaches `target` (1.0 when even
    selling everything cannot: sell it all)."""
    if debt_usd <= 0 or c_usd <= 0:
        return 0.0
    denominator = target * c_usd * (1 - fill_loss) - c_lt_usd
    if denominator <= 0:
        return 1.0
    return min(1.0, max(0.0, (target * debt_usd - c_lt_usd) / denominator))


def boost_amount(c_lt_usd: float, debt_usd: float, weighted_lt: float, target: float,
                 fill_loss: float) -> float:
    """USD to borrow and spend on collateral so lending health falls to `target`."""
    denominator = target - (1 - fill_loss) * weighted_lt
    if denominator <= 0:
        return 0.0
    return max(0.0, (c_lt_usd - target * debt_usd) / denominator)


def threshold_actions(state: VaultState, mandate: Mandate, swap_fee_bps: float,
                      bands: ThresholdBands = DEFAULT_BANDS) -> list[Action]:
    """At most one action: a deleverage (repay and/or perp cut) or a boost rebalance."""
    if state.nav_usd <= 0:
        return []
    fill_loss = (swap_fee_bps + mandate.max_slippage_bps) / BPS
    lend_h, perp_h = lending_health(state), perp_health(state)
    values = {a.symbol: a.collateral * a.price_usd for a in state.assets}
    c_usd = sum(values.values())
    c_lt = sum(a.collateral * a.price_usd * a.liquidation_threshold for a in state.assets)
    trigger = mandate.min_health + bands.repay_trigger
    spot: dict[str, float] = {}
    perps: dict[str, float] = {}
    inputs: dict[str, float | str] = {"lending_health": lend_h, "perp_health": perp_h,
                                      "min_health": mandate.min_health}
    if lend_h < trigger:
        f = repay_fraction(c_usd, c_lt, state.debt_usdc, mandate.min_health + bands.repay_target,
                           fill_loss)
        spot = {a.symbol: -f * a.collateral for a in state.assets if a.collateral > 0 and f > 0}
        inputs["sell_fraction"] = f
    if perp_h < trigger and state.perps:
        keep = min(1.0, perp_h / (mandate.min_health + bands.repay_target))
        perps = {p.underlying: -(1 - keep) * p.size for p in state.perps if keep < 1}
        inputs["perp_keep_fraction"] = keep
    if spot or perps:
        return [Action(ActionKind.DELEVERAGE, state.address, Urgency.HIGH, 0.0, 0.0,
                       f"threshold: health {min(lend_h, perp_h):.3f} < trigger {trigger:.3f}",
                       inputs, spot_legs=spot, perp_legs=perps)]
    if (state.debt_usdc > 0 and math.isfinite(lend_h)
            and lend_h > mandate.min_health + bands.boost_trigger and c_usd > 0):
        weighted_lt = c_lt / c_usd
        amount = boost_amount(c_lt, state.debt_usdc, weighted_lt,
                              mandate.min_health + bands.boost_target, fill_loss)
        # Leverage after: (C + B(1 − s)) / (NAV − B·s) ≤ cap × max leverage.
        cap = bands.leverage_cap * mandate.max_leverage
        room = (cap * state.nav_usd - c_usd) / ((1 - fill_loss) + cap * fill_loss)
        amount = min(amount, max(room, 0.0))
        if amount <= 0:
            return []
        legs = {a.symbol: amount * values[a.symbol] / c_usd / a.price_usd
                for a in state.assets if values[a.symbol] > 0}
        inputs["boost_usd"] = amount
        return [Action(ActionKind.REBALANCE, state.address, Urgency.LOW, 0.0, 0.0,
                       f"threshold: lending health {lend_h:.3f} > boost trigger "
                       f"{mandate.min_health + bands.boost_trigger:.3f}", inputs,
                       spot_legs=legs)]
    return []


__all__ = ["DEFAULT_BANDS", "ThresholdBands", "boost_amount", "repay_fraction",
           "threshold_actions"]
