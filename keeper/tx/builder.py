"""Action (risk-core floats) → one vault call with integer arguments.

Rounding, stated once: every amount we sell, spend or trade is floored to token units
(`Rounding.FLOOR`), so an action never asks for more than the risk core decided; minimum
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
#: The perp market's initial margin is twice its maintenance margin in the bundled market;
#: margin top-ups aim at this multiple of maintenance, plus MARGIN_BUFFER.
INITIAL_MARGIN_MULTIPLE = 2
#: Extra margin (fraction) above the initial requirement when the keeper grows perps.
MARGIN_BUFFER = 0.25


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


def margin_top_up(snap: VaultSnapshot, perp_legs: list[tuple[Any, ...]], budget: int) -> int:
    """USDC units to move into perp margin so the account stays above initial margin (plus
    MARGIN_BUFFER) after `perp_legs`; never more than `budget` (idle cash)."""
    new_size = {a.token: a.perp_size for a in snap.assets}
    for token, delta, _limit in perp_legs:
        new_size[token] += delta
    required_wad = 0
    for a in snap.assets:
        notional = abs(new_size[a.token]) * a.price // WAD
        required_wad += notional * a.perp_maintenance_margin * INITIAL_MARGIN_MULTIPLE // WAD
    required = _ceil_div(int(required_wad * (1 + MARGIN_BUFFER)), USDC_TO_WAD)
    return max(0, min(required - snap.perp_account_value, budget))


def borrow_room(snap: VaultSnapshot) -> int:
    """Σ collateral × price × LTV − debt, in USDC units (floored, never negative)."""
    capacity_wad = sum(
        int(a.collateral * a.price // 10**a.decimals * a.ltv // WAD) for a in snap.assets
    )
    return max(0, capacity_wad // USDC_TO_WAD - int(snap.debt))


def build_call(
    action: Action, snap: VaultSnapshot, symbols: dict[ChecksumAddress, str]
) -> CallPlan | None:
    """The vault call for `action`, or None when every leg rounds to zero."""
    assets = {symbols.get(a.token, a.token): a for a in snap.assets}
    slip = int(snap.mandate.max_slippage_bps)
    deadline = snap.timestamp + DEADLINE_S
    deleverage = action.kind is ActionKind.DELEVERAGE
    sells: list[tuple[Any, ...]] = []
    buys: list[tuple[Any, ...]] = []
    idle, room = snap.idle_usdc, borrow_room(snap)
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
    if not (sells or buys or perps):
        logger.info("vault %s: %s rounds to nothing; skipped", snap.vault, action.kind.name)
        return None
    # Sells go first: their proceeds repay debt and free borrow room for the buys.
    swaps = sells + buys
    args: tuple[Any, ...]
    if action.kind is ActionKind.DELEVERAGE:
        function, args = "deleverage", (sells, perps, 0, deadline)
    elif action.kind is ActionKind.HEDGE:
        function, args = "hedge", (perps, margin_top_up(snap, perps, snap.idle_usdc), deadline)
    else:
        spare = max(0, snap.idle_usdc - sum(b[2] for b in buys))
        function, args = "rebalance", (swaps, perps, margin_top_up(snap, perps, spare), deadline)
    named = [(symbols.get(s[0], s[0]), "buy" if s[1] else "sell", s[2], s[3]) for s in swaps]
    perp_named = [(symbols.get(p[0], p[0]), p[1], p[2]) for p in perps]
    summary = f"{function}: swaps={named} perps={perp_named} deadline={deadline}"
    return CallPlan(snap.vault, action.kind, function, args, summary)
