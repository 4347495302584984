"""Valuation, health factors, leverage and net delta of one vault (the contract's definitions).

- lending health = Σ(collateral × price × liquidation threshold) / debt; +inf when debt is 0;
- perp margin health = (margin + Σ unrealised pnl) / Σ(|size| × price × maintenance fraction);
  +inf with no open position;
- binding health = min(lending, perp);
- leverage = Σ spot collateral value / NAV (balance-sheet leverage; perps are not in it);
- net delta per underlying (units) = collateral + idle + perp size + Σ option delta × size.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from keeper.errors import RiskInputError
from keeper.risk.greeks import black_scholes
from keeper.risk.types import SECONDS_PER_YEAR, VaultState
from keeper.risk.validation import non_negative

logger = logging.getLogger(__name__)


def health_factor(collateral_usd: object, liquidation_thresholds: object, debt_usd: float) -> float:
    """Aave-style health factor: Σ(collateral_usd × liquidation_threshold) / debt_usd.

    ``collateral_usd`` (USD values, >= 0) and ``liquidation_thresholds`` (fractions in [0, 1])
    are array-likes of one shape; ``debt_usd`` >= 0. Returns +inf when debt is 0. Invariant:
    non-decreasing in every collateral value, non-increasing in debt.
    """
    coll = non_negative("collateral_usd", collateral_usd)
    lt = non_negative("liquidation_thresholds", liquidation_thresholds)
    if coll.shape != lt.shape:
        raise RiskInputError(
            f"collateral_usd {coll.shape} and liquidation_thresholds {lt.shape}: shape mismatch"
        )
    if np.any(lt > 1.0):
        raise RiskInputError("liquidation_thresholds: must be <= 1")
    debt = float(non_negative("debt_usd", debt_usd))
    if debt == 0.0:
        return math.inf
    return float(np.sum(coll * lt)) / debt


def lending_health(state: VaultState) -> float:
    """The vault's lending health factor (dimensionless; +inf without debt)."""
    return health_factor(
        [a.collateral * a.price_usd for a in state.assets],
        [a.liquidation_threshold for a in state.assets],
        state.debt_usdc,
    )


def perp_health(state: VaultState) -> float:
    """Perp margin health: (margin + Σ upnl) / Σ(|size| × price × maintenance); +inf if flat."""
    maintenance = 0.0
    for p in state.perps:
        maintenance += abs(p.size) * state.asset(p.underlying).price_usd * p.maintenance_fraction
    if maintenance == 0.0:
        return math.inf
    equity = state.perp_margin_usd + sum(p.unrealized_pnl_usd for p in state.perps)
    return equity / maintenance


def binding_health(state: VaultState) -> float:
    """The worst of the vault's venue health factors."""
    return min(lending_health(state), perp_health(state))


def collateral_value_usd(state: VaultState) -> float:
    """Σ spot collateral × price, USD."""
    return sum(a.collateral * a.price_usd for a in state.assets)


def leverage(state: VaultState) -> float:
    """Balance-sheet leverage: spot collateral value / NAV (+inf when NAV is 0 with collateral)."""
    value = collateral_value_usd(state)
    if state.nav_usd == 0.0:
        return math.inf if value > 0.0 else 0.0
    return value / state.nav_usd


def nav_from_positions(state: VaultState) -> float:
    """NAV rebuilt from positions and marks, USD.

    idle USDC + (collateral + idle tokens) × price − debt + perp margin + Σ upnl
    + Σ option size × mark + what written series lock (a call's tokens at spot, a put's USDC).
    The vault's own ``nav_usd`` is authoritative for leverage; this is for reconciliation (a
    large gap means the snapshot or the marks are inconsistent).
    """
    spot = sum((a.collateral + a.idle) * a.price_usd for a in state.assets)
    perp = state.perp_margin_usd + sum(p.unrealized_pnl_usd for p in state.perps)
    options = sum(
        o.size * o.mark_usd + o.locked_underlying * state.asset(o.underlying).price_usd
        + o.locked_usdc
        for o in state.options
    )
    return state.idle_usdc + spot - state.debt_usdc + perp + options


@dataclass(frozen=True, slots=True)
class PortfolioGreeks:
    """Greeks of everything the vault holds on one underlying (signed by long/short).

    delta in underlying units (spot collateral + idle + perp + Σ option delta × size + the
    tokens written calls lock, which the vault still owns and NAV values at spot), gamma in
    units²/USD, vega in USD per 1.00 of vol, theta in USD per year; only options carry gamma,
    vega and theta.
    """

    underlying: str
    delta: float
    gamma: float
    vega: float
    theta: float


def portfolio_greeks(state: VaultState, now: int, rate: float) -> dict[str, PortfolioGreeks]:
    """Per-underlying portfolio greeks at ``now`` (unix s) and risk-free ``rate`` (annual).

    Options use their own implied vol and time to expiry ``(expiry - now) / year``; expired
    options contribute their step delta until settled.
    """
    acc = {a.symbol: [a.collateral + a.idle, 0.0, 0.0, 0.0] for a in state.assets}
    for p in state.perps:
        acc[p.underlying][0] += p.size
    if state.options:
        opts = state.options
        g = black_scholes(
            [state.asset(o.underlying).price_usd for o in opts],
            [o.strike for o in opts],
            [(o.expiry - now) / SECONDS_PER_YEAR for o in opts],
            rate,
            [o.implied_vol for o in opts],
            [o.is_call for o in opts],
        )
        for o, d, gm, vg, th in zip(
            opts, g.delta.tolist(), g.gamma.tolist(), g.vega.tolist(), g.theta.tolist(), strict=True
        ):
            row = acc[o.underlying]
            row[0] += d * o.size + o.locked_underlying
            row[1] += gm * o.size
            row[2] += vg * o.size
            row[3] += th * o.size
    return {u: PortfolioGreeks(u, *v) for u, v in acc.items()}


def net_delta(state: VaultState, now: int, rate: float) -> dict[str, float]:
    """Net delta per underlying in underlying units (see `portfolio_greeks`)."""
    return {u: g.delta for u, g in portfolio_greeks(state, now, rate).items()}
