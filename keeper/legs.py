"""Splitting a leveraged buy into legs the lending pool will accept, in order.

The vault borrows any USDC shortfall of a buy leg before the bought asset is posted, so each
leg must fit the borrow room that idle cash and the earlier legs' collateral give. Pure integer
arithmetic in USDC units; the room a leg adds is floored (it shrinks the next leg, never grows
it). The room given is taken as exact: the pool's own rounding of scaled debt (a unit or two)
and the interest accrued between the read and the transaction are not deducted here.
"""

from __future__ import annotations

WAD = 10**18
#: Most legs one leveraged buy may be split into; each costs ~120k gas.
MAX_LEGS = 8


def leverage_legs(
    total_usdc: int,
    idle_usdc: int,
    borrow_room_usdc: int,
    ltv_wad: int,
    haircut_bps: int,
) -> list[int]:
    """Sizes (USDC units) of consecutive buy legs summing to `total_usdc`.

    `borrow_room_usdc` is Σ collateral × LTV − debt now; each leg adds its purchase × `ltv_wad`
    (WAD) × (1 − `haircut_bps`, the swap's fee and impact) to the room. Raises ValueError when
    the total cannot be reached in MAX_LEGS legs (the target leverage is beyond the LTV).
    """
    if min(total_usdc, idle_usdc, borrow_room_usdc, ltv_wad, haircut_bps) < 0:
        raise ValueError("leverage_legs: amounts must be non-negative")
    if ltv_wad >= WAD or haircut_bps >= 10_000:
        raise ValueError("leverage_legs: ltv must be < 1 and haircut < 100 %")
    legs: list[int] = []
    remaining, idle, room = total_usdc, idle_usdc, borrow_room_usdc
    while remaining > 0:
        if len(legs) == MAX_LEGS:
            raise ValueError(
                f"leverage_legs: {total_usdc} USDC needs more than {MAX_LEGS} legs"
                f" at LTV {ltv_wad * 10_000 // WAD} bps"
            )
        leg = min(remaining, idle + room)
        if leg == 0:
            raise ValueError("leverage_legs: no idle cash and no borrow room")
        borrowed = max(0, leg - idle)
        idle -= leg - borrowed
        room -= borrowed
        room += leg * ltv_wad * (10_000 - haircut_bps) // (WAD * 10_000)
        remaining -= leg
        legs.append(leg)
    return legs
