"""Action (risk-core floats) → one vault call with integer arguments.

Integer arithmetic only: a risk-core float becomes an integer exactly once, through
:func:`keeper.risk.units.to_units`, and everything after that is ``int`` arithmetic on token
units, WAD prices and bps. Rounding, stated per conversion:

- **what we send is floored** (``Rounding.FLOOR``) and capped by what the vault holds, so an
  action never asks for more than the risk core decided: collateral sold (token units, at most
  the posted collateral), perp size (1e18 units; a deleverage's at most the open position and
  only against it), margin posted (at most idle USDC), margin withdrawn (at most the perp
  account value) and debt repaid (at most the cash then idle and the debt);
- **a buy's USDC** is floor(quantity × price): the quantity is read at WAD precision
  (``to_units(qty, 18, FLOOR)``, whatever the token's decimals: we spend USDC, not tokens), then
  multiplied by the WAD price in integers; :func:`keeper.legs.leverage_legs` splits it (floors);
- **bounds are the vault's own**, with the vault's rounding, so the keeper never accepts a fill
  the vault would refuse and never refuses one it would accept: a swap's ``minOut`` is
  ceil(fair × (1 − maxSlippageBps)) with fair floored as ``RiskVault._swap`` does; a perp leg's
  limit is floor(oracle × (1 ± maxSlippageBps)), the bound ``RiskVault._tradePerps`` clamps to;
- **borrow room** is floored like ``LendingPool.borrow``'s capacity, and never negative; a buy
  leaves `borrow_headroom` of it unused (interest and rounding until the call lands).
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
    # qty (whole tokens) at WAD precision × price (USD WAD) = USD in 1e36; floor to USDC units.
    qty_wad = to_units(qty, 18, Rounding.FLOOR)
    usdc = qty_wad * a.price // (WAD * USDC_TO_WAD)
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
        # The vault refuses a whole deleverage whose perp leg does not shrink its position
        # (VaultNotDeleverage): such a leg is dropped, and a cut is at most the position.
        if a.perp_size == 0 or (qty > 0) == (a.perp_size > 0):
            if size > 0:
                logger.warning("perp %s: deleverage leg %+d does not shrink position %d; dropped",
                               a.token, size if qty > 0 else -size, a.perp_size)
            return None
        size = min(size, abs(a.perp_size))
    if size == 0:
        return None
    signed = size if qty > 0 else -size
    # The vault's own bound (`price.mulDiv(BPS ± slip, BPS)`, floored both ways): buys no
    # higher than oracle × (1 + slip), sells no lower than oracle × (1 − slip).
    limit = a.price * (BPS + slip if signed > 0 else BPS - slip) // BPS
    return (a.token, signed, limit)


def _cash_units(usd: float, cap: int) -> int:
    """A USD cash amount (risk-core float) in USDC units, floored, at most ``cap``."""
    if usd <= 0.0:
        return 0
    return max(0, min(to_units(usd, USDC_DECIMALS, Rounding.FLOOR), cap))


#: Borrow room a buy leaves unused: the room is the snapshot's, and by the block the call lands
#: in the pool has accrued interest on the debt and rounds new debt up by a unit or two. A
#: first leg that borrowed all of it was refused (LendingPoolBorrowCapacityExceeded, by 1 unit
#: at the same block and ~7,650 units 12 s later on a ~$600k debt). One ppm of the debt is
#: ~4 minutes of interest at 12 % a year.
BORROW_HEADROOM_UNITS = 2
BORROW_HEADROOM_PPM_OF_DEBT = 1


def borrow_headroom(debt: int) -> int:
    """USDC units of borrow room a buy keeps free (ceil of 1 ppm of the debt, plus 2)."""
    return BORROW_HEADROOM_UNITS + _ceil_div(debt * BORROW_HEADROOM_PPM_OF_DEBT, 10**6)


def borrow_room(snap: VaultSnapshot) -> int:
    """Σ collateral × price × LTV − debt, in USDC units (floored, never negative)."""
    # `10**decimals` types as Any (a negative exponent would be a float): state the int.
    capacity_wad: int = sum(
        a.collateral * a.price // 10**a.decimals * a.ltv // WAD for a in snap.assets
    )
    return max(0, capacity_wad // USDC_TO_WAD - snap.debt)


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
    # Margin is posted first (the contract deposits it before any trade, borrowing what idle
    # cash lacks), so buys see the idle cash and borrow room that are left.
    room = max(0, borrow_room(snap) - borrow_headroom(snap.debt))
    margin = _cash_units(action.margin_usd, snap.idle_usdc + room)
    sells: list[tuple[Any, ...]] = []
    buys: list[tuple[Any, ...]] = []
    idle = max(0, snap.idle_usdc - margin)
    room -= max(0, margin - snap.idle_usdc)
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
