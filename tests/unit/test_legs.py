"""Splitting a leveraged buy into legs the lending pool accepts: hand-worked integer cases and
properties checked against an independent model of the pool's borrow rule."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeper.legs import MAX_LEGS, WAD, leverage_legs

USDC = 10**6


def test_a_buy_within_idle_cash_is_one_leg() -> None:
    assert leverage_legs(1_000 * USDC, 5_000 * USDC, 0, 8 * WAD // 10, 60) == [1_000 * USDC]


def test_a_buy_within_idle_plus_room_is_one_leg() -> None:
    # 3 000 ≤ 1 000 idle + 2 500 room.
    assert leverage_legs(3_000 * USDC, 1_000 * USDC, 2_500 * USDC, 8 * WAD // 10, 60) == [
        3_000 * USDC
    ]


def test_legs_grow_the_room_by_the_posted_collateral_at_ltv_less_haircut() -> None:
    # LTV 0.5, no haircut; idle 1 000, room 2 000, total 5 000:
    #   leg 1 = min(5 000, 1 000 + 2 000) = 3 000 (borrows 2 000; room 0 + 3 000 × 0.5 = 1 500)
    #   leg 2 = min(2 000, 1 500) = 1 500 (room 0 + 1 500 × 0.5 = 750)
    #   leg 3 = min(500, 750) = 500
    assert leverage_legs(5_000 * USDC, 1_000 * USDC, 2_000 * USDC, WAD // 2, 0) == [
        3_000 * USDC,
        1_500 * USDC,
        500 * USDC,
    ]


def test_legs_with_a_haircut() -> None:
    # LTV 0.8, haircut 1 % → each leg adds leg × 0.8 × 0.99 = leg × 0.792 of room;
    # idle 2 000, room 3 000, total 13 000 USDC:
    #   leg 1 = min(13 000, 2 000 + 3 000) = 5 000  → room 5 000 × 0.792 = 3 960
    #   leg 2 = 3 960                               → room 3 960 × 0.792 = 3 136.32
    #   leg 3 = 3 136.32                            → room 3 136.32 × 0.792 = 2 483.96544
    #   leg 4 = 13 000 − 5 000 − 3 960 − 3 136.32 = 903.68
    legs = leverage_legs(13_000 * USDC, 2_000 * USDC, 3_000 * USDC, 8 * WAD // 10, 100)
    assert legs == [5_000_000_000, 3_960_000_000, 3_136_320_000, 903_680_000]


def test_the_room_a_leg_adds_is_floored() -> None:
    # Room 7 units at LTV 0.8 and haircut 1 %, total 15: leg 7 adds 7 × 0.792 = 5.544 → 5
    # (ceil, 6, would borrow a unit more than the collateral covers); leg 5 adds 3.96 → 3;
    # the last leg is the remaining 15 − 7 − 5 = 3.
    assert leverage_legs(15, 0, 7, 8 * WAD // 10, 100) == [7, 5, 3]


def test_a_buy_beyond_the_ltv_cannot_be_split() -> None:
    # LTV 0.5 with no haircut: idle 1 000 + room 2 000 reach at most 3 000 × (1 + ½ + ¼ + …)
    # = 6 000 in the limit, and 3 000 × (2 − 2⁻⁷) = 5 976.5625 in MAX_LEGS = 8 legs.
    with pytest.raises(ValueError, match=f"needs more than {MAX_LEGS} legs at LTV 5000 bps"):
        leverage_legs(6_000 * USDC, 1_000 * USDC, 2_000 * USDC, WAD // 2, 0)
    assert sum(leverage_legs(5_976_562_500, 1_000 * USDC, 2_000 * USDC, WAD // 2, 0)) == (
        5_976_562_500
    )


def test_no_idle_cash_and_no_room_is_refused() -> None:
    with pytest.raises(ValueError, match="no idle cash and no borrow room"):
        leverage_legs(1, 0, 0, 8 * WAD // 10, 60)


def test_nothing_to_buy_is_no_leg() -> None:
    assert leverage_legs(0, 0, 0, 8 * WAD // 10, 60) == []


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((-1, 0, 0, WAD // 2, 0), "non-negative"),
        ((1, -1, 0, WAD // 2, 0), "non-negative"),
        ((1, 0, -1, WAD // 2, 0), "non-negative"),
        ((1, 1, 0, WAD, 0), "ltv must be < 1"),
        ((1, 1, 0, WAD // 2, 10_000), "haircut < 100 %"),
    ],
)
def test_invalid_inputs_raise(args: tuple[int, int, int, int, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        leverage_legs(*args)


@given(
    total=st.integers(0, 10**15),
    idle=st.integers(0, 10**14),
    room=st.integers(0, 10**14),
    ltv_bps=st.integers(0, 9_000),
    haircut=st.integers(0, 500),
)
def test_every_leg_fits_the_pool_and_the_legs_sum_to_the_buy(
    total: int, idle: int, room: int, ltv_bps: int, haircut: int
) -> None:
    ltv = ltv_bps * WAD // 10_000
    try:
        legs = leverage_legs(total, idle, room, ltv, haircut)
    except ValueError:
        # Refused only when the reachable total (a geometric series) falls short of the buy.
        if idle + room == 0:
            assert total > 0
            return
        grow = Fraction(ltv, WAD) * Fraction(10_000 - haircut, 10_000)
        # Each leg's room is floored (−1 unit), compounding over at most MAX_LEGS legs.
        reachable = (idle + room) * sum(grow**k for k in range(MAX_LEGS))
        assert total > reachable - MAX_LEGS**2
        return
    assert sum(legs) == total and len(legs) <= MAX_LEGS and all(leg > 0 for leg in legs)
    # Independent model of the pool: a leg borrows its shortfall over idle cash, which must fit
    # the room; what it buys is worth at least leg × (1 − haircut) and is posted at the LTV.
    cash, free = Fraction(idle), Fraction(room)
    for leg in legs:
        borrowed = max(Fraction(0), leg - cash)
        assert borrowed <= free
        cash -= leg - borrowed
        free += leg * Fraction(ltv, WAD) * Fraction(10_000 - haircut, 10_000) - borrowed
