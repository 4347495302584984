"""Action (risk-core floats) → one vault call with integer arguments.

Rounding, stated once: every amount we sell, spend, post, withdraw, repay or trade is floored to
token units (`Rounding.FLOOR`) and capped by what the vault holds, so an action never asks for
more than the risk core decided; minimum
outputs are the vault's own slippage bound (ceil of oracle value × (1 − maxSlippageBps)), so the
keeper never accepts a fill the vault would refuse and never refuses one it would accept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from eth_typing import ChecksumAddress

from keeper.chain.snapshot import AssetSnapshot, VaultSnapshot
from keeper.legs import leverage_legs
from keeper.risk.actions import Action, ActionKind
from keeper.risk.units import Rounding, to_units

logger = logging.getLogger(__name__)

WAD = 10**18
BPS = 10_000
USDC_DECIMALS = 6
USDC_TO_WAD: int = 10 ** (18 - USDC_DECIMALS)
#: Seconds a keeper transaction stays valid on-chain (the vault's deadline argument).
DEADLINE_S = 300


@dataclass(frozen=True, slots=True)
class CallPlan:
    """A vault call ready to encode: function name, integer args, and a log-friendly summary."""

    vault: ChecksumAddress
    kind: ActionKind
    function: str
    args: tuple[Any, ...]
    summary: str


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _min_out(fair: int, slip_bps: int) -> int:
    """The vault's own bound: ceil(fair × (1 − slip))."""
    return _ceil_div(fair * (BPS - slip_bps), BPS)


def _sell_leg(a: AssetSnapshot, qty: float, slip: int) -> tuple[Any, ...] | None:
    amount = min(to_units(qty, a.decimals, Rounding.FLOOR), a.collateral)
    if amount == 0:
        return None
    fair_usdc = amount * a.price // 10**a.decimals // USDC_TO_WAD
    return (a.token, False, amount, _min_out(fair_usdc, slip))


def _buy_legs(
    a: AssetSnapshot, qty: float, slip: int, fee_bps: int, idle: int, room: int
) -> list[tuple[Any, ...]]:
    usdc = to_units(qty * a.price / WAD, USDC_DECIMALS, Rounding.FLOOR)
    if usdc == 0:
        return []
    legs = []
    for amount in leverage_legs(usdc, idle, room, a.ltv, fee_bps + slip):
        fair_tokens = amount * USDC_TO_WAD * 10**a.decimals // a.price
        legs.append((a.token, True, amount, _min_out(fair_tokens, slip)))
    return legs


def _perp_leg(a: AssetSnapshot, qty: float, slip: int, reduce_only: bool) -> tuple[Any, ...] | None:
    size = to_units(abs(qty), 18, Rounding.FLOOR)
    if reduce_only:
        size = min(size, abs(a.perp_size))
    if size == 0:
        return None
    signed = size if qty > 0 else -size
    # Buys no higher than oracle × (1 + slip), sells no lower than oracle × (1 − slip).
    if signed > 0:
        limit = a.price * (BPS + slip) // BPS
    else:
        limit = _ceil_div(a.price * (BPS - slip), BPS)
    return (a.token, signed, limit)


def _cash_units(usd: float, cap: int) -> int:
    """A USD cash amount (risk-core float) in USDC units, floored, at most ``cap``."""
    if usd <= 0.0:
        return 0
    return max(0, min(to_units(usd, USDC_DECIMALS, Rounding.FLOOR), cap))


def borrow_room(snap: VaultSnapshot) -> int:
    """Σ collateral × price × LTV − debt, in USDC units (floored, never negative)."""
    capacity_wad = sum(
        int(a.collateral * a.price // 10**a.decimals * a.ltv // WAD) for a in snap.assets
    )
    return max(0, capacity_wad // USDC_TO_WAD - int(snap.debt))


def build_call(
    action: Action, snap: VaultSnapshot, symbols: dict[ChecksumAddress, str]
) -> CallPlan | None:
    """The vault call for `action`, or None when every leg and amount rounds to zero."""
    deadline = snap.timestamp + DEADLINE_S
    if action.kind is ActionKind.SETTLE:
        if action.series_id is None:
            return None
        return CallPlan(snap.vault, action.kind, "settleOption", (action.series_id,),
                        f"settleOption: series {action.series_id}")
    if action.kind is ActionKind.REPAY:
        return _repay_call(action, snap, deadline)
    assets = {symbols.get(a.token, a.token): a for a in snap.assets}
    slip = int(snap.mandate.max_slippage_bps)
    deleverage = action.kind is ActionKind.DELEVERAGE
    # Margin is posted first (the contract deposits it before any trade), so buys see the
    # idle cash that is left and borrow the rest.
    margin = _cash_units(action.margin_usd, snap.idle_usdc)
    sells: list[tuple[Any, ...]] = []
    buys: list[tuple[Any, ...]] = []
    idle, room = snap.idle_usdc - margin, borrow_room(snap)
    for sym, qty in action.spot_legs.items():
        if qty < 0:
            leg = _sell_leg(assets[sym], -qty, slip)
            if leg:
                sells.append(leg)
        elif qty > 0 and not deleverage:
            legs = _buy_legs(assets[sym], qty, slip, snap.swap_fee_bps, idle, room)
            spent = sum(leg[2] for leg in legs)
            room = max(0, room - max(0, spent - idle))
            idle = max(0, idle - spent)
            buys.extend(legs)
    perps = [
        leg
        for sym, qty in action.perp_legs.items()
        if (leg := _perp_leg(assets[sym], qty, slip, deleverage)) is not None
    ]
    if not (sells or buys or perps or margin):
        logger.info("vault %s: %s rounds to nothing; skipped", snap.vault, action.kind.name)
        return None
    # Sells go first: their proceeds repay debt and free borrow room for the buys.
    swaps = sells + buys
    args: tuple[Any, ...]
    if action.kind is ActionKind.DELEVERAGE:
        function, args = "deleverage", (sells, perps, margin, deadline)
    elif action.kind is ActionKind.HEDGE:
        function, args = "hedge", (perps, margin, deadline)
    else:
        function, args = "rebalance", (swaps, perps, margin, deadline)
    named = [(symbols.get(s[0], s[0]), "buy" if s[1] else "sell", s[2], s[3]) for s in swaps]
    perp_named = [(symbols.get(p[0], p[0]), p[1], p[2]) for p in perps]
    summary = (f"{function}: swaps={named} perps={perp_named} margin={margin} "
               f"deadline={deadline}")
    return CallPlan(snap.vault, action.kind, function, args, summary)


def _repay_call(action: Action, snap: VaultSnapshot, deadline: int) -> CallPlan | None:
    """`repayDebt(marginWithdraw, repayAmount, deadline)`: surplus perp margin (at most the
    account's value) comes back first; the repayment is at most the cash then idle and the
    debt."""
    withdraw = _cash_units(-action.margin_usd, max(0, snap.perp_account_value))
    repay = _cash_units(action.repay_usd, min(snap.idle_usdc + withdraw, snap.debt))
    if repay == 0:
        logger.info("vault %s: REPAY rounds to nothing; skipped", snap.vault)
        return None
    return CallPlan(snap.vault, action.kind, "repayDebt", (withdraw, repay, deadline),
                    f"repayDebt: withdraw margin {withdraw}, repay {repay}, deadline={deadline}")
