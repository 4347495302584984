"""Where risk-core floats become money: the builder's integer arguments, hand-worked.

Every expected value below is an integer worked out by hand (the arithmetic is in the comment),
never computed by the code under test. The properties at the end check the builder's bounds
against an independent model of the vault's own checks (`RiskVault._swap`, `_requireSlippage`,
`_tradePerps`) and of `LendingPool.borrow`'s capacity, written with `Fraction` and explicit
rounding as Solidity's `Math.mulDiv` does.
"""

from __future__ import annotations

import ast
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from web3 import Web3

from keeper.chain.snapshot import AssetSnapshot, Mandate, VaultSnapshot
from keeper.risk.actions import Action, ActionKind, Urgency
from keeper.tx.builder import (
    DEADLINE_S,
    CallPlan,
    _min_out,
    borrow_headroom,
    borrow_room,
    build_call,
)

WAD = 10**18
BPS = 10_000
USDC = 10**6
NOW = 1_700_000_000
DEADLINE = NOW + 300  # DEADLINE_S
VAULT = Web3.to_checksum_address("0x" + "aa" * 20)
WETH = Web3.to_checksum_address("0x" + "11" * 20)
WBTC = Web3.to_checksum_address("0x" + "22" * 20)
SYMBOLS = {WETH: "WETH", WBTC: "WBTC"}
#: 2 000.12345678 USD: an 8-decimal feed answer (200 012 345 678) in WAD.
ODD_ETH = 2_000_123_456_780_000_000_000


def weth(**kw: Any) -> AssetSnapshot:
    """2 WETH posted at 2 000 USD (4 000 USD), LTV 0.80; short 3 ETH perp."""
    base: dict[str, Any] = dict(
        token=WETH, decimals=18, price_feed=WETH, price=2_000 * WAD, price_updated_at=NOW,
        price_round=1, vol_feed=WETH, implied_vol=WAD // 2, vol_updated_at=NOW,
        collateral=2 * WAD, idle=0, ltv=8 * WAD // 10, liquidation_threshold=85 * WAD // 100,
        perp_size=-3 * WAD, perp_entry_price=2_000 * WAD, perp_pnl=0,
        perp_maintenance_margin=WAD // 20,
    )
    base.update(kw)
    return AssetSnapshot(**base)


def wbtc(**kw: Any) -> AssetSnapshot:
    """0.1 WBTC (10 000 000 sats) posted at 60 000 USD (6 000 USD), LTV 0.75; no perp."""
    base: dict[str, Any] = dict(
        token=WBTC, decimals=8, price_feed=WBTC, price=60_000 * WAD, price_updated_at=NOW,
        price_round=1, vol_feed=WBTC, implied_vol=WAD // 2, vol_updated_at=NOW,
        collateral=10_000_000, idle=0, ltv=75 * WAD // 100, liquidation_threshold=8 * WAD // 10,
        perp_size=0, perp_entry_price=0, perp_pnl=0, perp_maintenance_margin=WAD // 20,
    )
    base.update(kw)
    return AssetSnapshot(**base)


def snapshot(*assets: AssetSnapshot, slip: int = 50, **kw: Any) -> VaultSnapshot:
    """10 000 USDC idle, 1 000 USDC debt, 2 000 USDC perp account; swap fee 10 bps,
    max slippage 50 bps. Borrow room: 4 000 × 0.80 + 6 000 × 0.75 − 1 000 = 6 700 USDC."""
    mandate = Mandate(
        target_vol=WAD, max_leverage=3 * WAD, min_health=13 * WAD // 10, hedge_target=0,
        hedge_band=WAD // 20, cppi_floor=WAD // 2, cppi_multiplier=3 * WAD,
        kelly_fraction=WAD // 2, max_slippage_bps=slip,
    )
    base: dict[str, Any] = dict(
        vault=VAULT, block_number=100, timestamp=NOW, total_assets=20_000 * USDC,
        total_supply=20_000 * USDC, high_water_mark=WAD, idle_usdc=10_000 * USDC,
        debt=1_000 * USDC, lending_health=2 * WAD, perp_margin=2_000 * USDC,
        perp_account_value=2_000 * USDC, perp_health=2 * WAD, health=2 * WAD,
        leverage=WAD // 2, swap_fee_bps=10, perp_fee_bps=5, max_price_age=3_600, paused=False,
        last_action_at=0, mandate=mandate, assets=assets or (weth(), wbtc()), options=(),
    )
    base.update(kw)
    return VaultSnapshot(**base)


def action(kind: ActionKind, **kw: Any) -> Action:
    return Action(kind=kind, vault=VAULT, urgency=Urgency.NORMAL, expected_benefit_usd=1.0,
                  expected_cost_usd=0.5, reason="test", **kw)


def build(kind: ActionKind, snap: VaultSnapshot | None = None, **kw: Any) -> CallPlan:
    plan = build_call(action(kind, **kw), snap or snapshot(), SYMBOLS)
    assert plan is not None
    return plan


# ==================================================================================== min_out
def test_min_out_is_the_ceil_of_fair_less_slippage() -> None:
    assert _min_out(1_000_000, 50) == 995_000  # 1 000 000 × 9 950 / 10 000, exact
    assert _min_out(1_000_001, 50) == 995_001  # 9 950 009 950 / 10 000 = 995 000.995 → ceil
    assert _min_out(199, 1_000) == 180  # 199 × 9 000 / 10 000 = 179.1 → ceil
    assert _min_out(0, 50) == 0


def test_sell_leg_amount_and_min_out() -> None:
    plan = build(ActionKind.REBALANCE, snapshot(weth(price=ODD_ETH), wbtc()),
                 spot_legs={"WETH": -0.3})
    # amount: 0.3 WETH = 300 000 000 000 000 000 units (floor, exact).
    # fair: 3e17 × 2 000 123 456 780 000 000 000 / 1e18 = 600 037 037 034 000 000 000 (USD WAD)
    #       → / 1e12, floored: 600 037 037 USDC units (600.037037).
    # min_out: 600 037 037 × 9 950 / 10 000 = 597 036 851.815 → ceil 597 036 852.
    assert plan.function == "rebalance"
    assert plan.args == ([(WETH, False, 300_000_000_000_000_000, 597_036_852)], [], 0, DEADLINE)


def test_sell_leg_is_capped_at_the_posted_collateral() -> None:
    plan = build(ActionKind.DELEVERAGE, spot_legs={"WETH": -5.0, "WBTC": -0.01})
    # WETH: min(5e18, 2e18 posted) = 2e18; fair 2 × 2 000 = 4 000 USDC; min 4 000 × 0.995 = 3 980.
    # WBTC: 0.01 BTC = 1 000 000 sats; fair 1e6 × 6e22 / 1e8 / 1e12 = 600 USDC; min 597 USDC.
    assert plan.function == "deleverage"
    assert plan.args == (
        [(WETH, False, 2 * WAD, 3_980 * USDC), (WBTC, False, 1_000_000, 597 * USDC)],
        [],
        0,
        DEADLINE,
    )


def test_buy_leg_spend_and_min_out() -> None:
    plan = build(ActionKind.REBALANCE, snapshot(weth(price=ODD_ETH), wbtc()),
                 spot_legs={"WETH": 0.3})
    # spend: 0.3 WETH × 2 000.12345678 = 600.037037034 USD → floor 600 037 037 USDC units
    #        (3e17 × 2 000 123 456 780 000 000 000 = 600 037 037 034 × 1e27; / 1e30 floored).
    # One leg: 10 000 USDC idle covers it.
    # fair: 600 037 037 × 1e12 × 1e18 / 2 000 123 456 780 000 000 000
    #       = 600 037 037e9 / 2.00012345678 = 299 999 999 983 001 049.9… → 299 999 999 983 001 049
    # min_out: × 0.995 = 298 499 999 983 086 043.755 → ceil 298 499 999 983 086 044.
    assert plan.args == (
        [(WETH, True, 600_037_037, 298_499_999_983_086_044)], [], 0, DEADLINE
    )


def test_a_deleverage_never_buys() -> None:
    plan = build(ActionKind.DELEVERAGE, spot_legs={"WETH": 1.0, "WBTC": -0.01})
    assert plan.args == ([(WBTC, False, 1_000_000, 597 * USDC)], [], 0, DEADLINE)
    assert build_call(action(ActionKind.DELEVERAGE, spot_legs={"WETH": 1.0}), snapshot(),
                      SYMBOLS) is None


def test_sells_go_before_buys() -> None:
    plan = build(ActionKind.REBALANCE, spot_legs={"WBTC": 0.02, "WETH": -0.5})
    # WBTC buy: 0.02 × 60 000 = 1 200 USDC; fair 1 200e6 × 1e12 × 1e8 / 6e22 = 2 000 000 sats;
    #           min 2 000 000 × 0.995 = 1 990 000.
    # WETH sell: 5e17; fair 0.5 × 2 000 = 1 000 USDC; min 995 USDC.
    assert plan.args[0] == [
        (WETH, False, 5 * WAD // 10, 995 * USDC),
        (WBTC, True, 1_200 * USDC, 1_990_000),
    ]


# ================================================================================ perp limits
def test_perp_limits_are_the_vaults_floored_bounds() -> None:
    eth = weth(price=2_000 * WAD + 1)
    btc = wbtc(price=60_000 * WAD + 7)
    plan = build(ActionKind.HEDGE, snapshot(eth, btc), perp_legs={"WETH": 1.5, "WBTC": -0.25})
    # Buy: (2 000e18 + 1) × 10 050 / 10 000 = 2 010 000 000 000 000 000 001.005 → floor …001.
    # Sell: (60 000e18 + 7) × 9 950 / 10 000 = 59 700 000 000 000 000 000 006.965 → floor …006.
    assert plan.function == "hedge"
    assert plan.args == (
        [
            (WETH, 1_500_000_000_000_000_000, 2_010_000_000_000_000_000_001),
            (WBTC, -250_000_000_000_000_000, 59_700_000_000_000_000_000_006),
        ],
        0,
        DEADLINE,
    )


def test_perp_limits_use_the_mandate_slippage() -> None:
    plan = build(ActionKind.HEDGE, snapshot(slip=1_000), perp_legs={"WETH": -1.0})
    # 2 000 × (1 − 0.10) = 1 800 USD.
    assert plan.args == ([(WETH, -WAD, 1_800 * WAD)], 0, DEADLINE)


def test_deleverage_perp_leg_is_clamped_to_the_position() -> None:
    plan = build(ActionKind.DELEVERAGE, perp_legs={"WETH": 5.0})
    # Short 3 ETH: a deleverage buys back at most 3; limit 2 000 × 1.005 = 2 010 USD.
    assert plan.args == ([], [(WETH, 3 * WAD, 2_010 * WAD)], 0, DEADLINE)
    plan = build(ActionKind.DELEVERAGE, perp_legs={"WETH": 1.25})
    assert plan.args == ([], [(WETH, 1_250_000_000_000_000_000, 2_010 * WAD)], 0, DEADLINE)


def test_hedge_perp_leg_is_not_clamped() -> None:
    plan = build(ActionKind.HEDGE, perp_legs={"WETH": 5.0})
    assert plan.args == ([(WETH, 5 * WAD, 2_010 * WAD)], 0, DEADLINE)


def test_deleverage_perp_leg_that_would_not_shrink_is_dropped() -> None:
    # Growing the short, or trading a market with no position, would make the vault refuse the
    # whole deleverage (VaultNotDeleverage); the sell still goes out.
    plan = build(ActionKind.DELEVERAGE, spot_legs={"WETH": -0.5},
                 perp_legs={"WETH": -1.0, "WBTC": 0.1})
    assert plan.args == ([(WETH, False, 5 * WAD // 10, 995 * USDC)], [], 0, DEADLINE)
    assert build_call(action(ActionKind.DELEVERAGE, perp_legs={"WETH": -1.0}), snapshot(),
                      SYMBOLS) is None


# ============================================================================= margin top-ups
def test_margin_top_up_is_floored_to_usdc_units() -> None:
    # 1 234.5678919 USD = 1 234 567 891.9 units → floor 1 234 567 891.
    plan = build(ActionKind.HEDGE, margin_usd=1_234.5678919)
    assert plan.args == ([], 1_234_567_891, DEADLINE)
    plan = build(ActionKind.DELEVERAGE, margin_usd=500.25)
    assert plan.args == ([], [], 500_250_000, DEADLINE)


def test_margin_top_up_is_capped_at_idle_cash_plus_borrow_room() -> None:
    # The vault borrows what idle cash lacks. Room 6 700 USDC less the headroom
    # 2 + ceil(1 000e6 / 1e6) = 1 002 units: 6 699 998 998; with 1 000 idle, the cap is
    # 7 699 998 998 units.
    snap = snapshot(idle_usdc=1_000 * USDC)
    plan = build(ActionKind.HEDGE, snap, margin_usd=2_500.0, perp_legs={"WETH": 1.0})
    assert plan.args == ([(WETH, WAD, 2_010 * WAD)], 2_500 * USDC, DEADLINE)
    plan = build(ActionKind.DELEVERAGE, snap, margin_usd=10_000.0)
    assert plan.args == ([], [], 7_699_998_998, DEADLINE)


def test_no_margin_is_withdrawn_by_a_hedge() -> None:
    assert build_call(action(ActionKind.HEDGE, margin_usd=-100.0), snapshot(), SYMBOLS) is None


def test_margin_is_posted_before_buys_which_split_into_legs() -> None:
    # 1 WETH posted (1 600 USDC at LTV 0.8), debt 1 300 → room 300 USDC, less the headroom
    # 2 + ceil(1 300e6 / 1e6) = 1 302 units → 299 998 698; idle 1 500, of which 1 000 goes to
    # margin first → 500 left. Buy 0.75 WETH = 1 500 USDC, haircut 10 + 50 bps:
    #   leg 1 = 500e6 + 299 998 698 = 799 998 698 → room 799 998 698 × 0.8 × 0.994
    #         = 636 158 964.65 → 636 158 964
    #   leg 2 = 636 158 964
    #   leg 3 = 1 500e6 − 799 998 698 − 636 158 964 = 63 842 338
    # min outs (fair = amount × 1e30 / 2 000e18 = amount × 5e8, then × 0.995, ceil):
    #   799 998 698 → 397 999 352 255 000 000; 636 158 964 → 316 489 084 590 000 000;
    #   63 842 338 → 31 761 563 155 000 000.
    snap = snapshot(weth(collateral=WAD), wbtc(collateral=0), idle_usdc=1_500 * USDC,
                    debt=1_300 * USDC)
    plan = build(ActionKind.REBALANCE, snap, spot_legs={"WETH": 0.75}, margin_usd=1_000.0)
    assert plan.args == (
        [
            (WETH, True, 799_998_698, 397_999_352_255_000_000),
            (WETH, True, 636_158_964, 316_489_084_590_000_000),
            (WETH, True, 63_842_338, 31_761_563_155_000_000),
        ],
        [],
        1_000_000_000,
        DEADLINE,
    )


def test_the_second_buy_sees_the_cash_and_room_the_first_used() -> None:
    # Idle 500, room 300e6 − 1 302 headroom (as above, no margin). WETH 0.3 = 600 USDC: one
    # leg, 100 borrowed → idle 0, room 199 998 698. WBTC 0.005 = 300 USDC at LTV 0.75,
    # haircut 60 bps: leg 1 = 199 998 698; leg 2 = 100 001 302 (fits the 149 099 029 the
    # first adds). min outs: WETH 600e6 × 5e8 = 3e17 → 2.985e17.
    #   WBTC fair = amount × 1e20 / 6e22 = amount / 600 (floor): 199 998 698 → 333 331
    #   → × 0.995 = 331 664.3 → 331 665; 100 001 302 → 166 668 → 165 834.7 → 165 835.
    snap = snapshot(weth(collateral=WAD), wbtc(collateral=0), idle_usdc=500 * USDC,
                    debt=1_300 * USDC)
    plan = build(ActionKind.REBALANCE, snap, spot_legs={"WETH": 0.3, "WBTC": 0.005})
    assert plan.args[0] == [
        (WETH, True, 600 * USDC, 298_500_000_000_000_000),
        (WBTC, True, 199_998_698, 331_665),
        (WBTC, True, 100_001_302, 165_835),
    ]


def test_borrow_headroom_by_hand() -> None:
    # 2 units plus ceil(debt / 1e6): 1 300 USDC (1.3e9 units) → 1 302; 1 unit → 3; none → 2.
    assert borrow_headroom(1_300 * USDC) == 1_302
    assert borrow_headroom(1) == 3
    assert borrow_headroom(0) == 2


# ================================================================================ borrow room
def test_borrow_room_of_the_default_snapshot() -> None:
    # 2 WETH × 2 000 × 0.80 = 3 200; 0.1 WBTC × 60 000 × 0.75 = 4 500; − 1 000 debt.
    assert borrow_room(snapshot()) == 6_700 * USDC


def test_borrow_room_floors_each_step_like_the_pool() -> None:
    eth = weth(collateral=1_234_567_890_123_456_789, price=ODD_ETH)
    btc = wbtc(collateral=12_345_678)
    # WETH value: 1 234 567 890 123 456 789 × 2 000 123 456 780 000 000 000 / 1e18
    #   = 2 469 288 196 023 319 613 777.62 → 2 469 288 196 023 319 613 777;
    #   × 0.80 = 1 975 430 556 818 655 691 021.6 → 1 975 430 556 818 655 691 021.
    # WBTC value: 12 345 678 × 6e14 = 7 407 406 800 000 000 000 000; × 0.75 =
    #   5 555 555 100 000 000 000 000.
    # Σ = 7 530 985 656 818 655 691 021 → / 1e12 floored: 7 530 985 656; − 1 000 000 000 debt.
    assert borrow_room(snapshot(eth, btc)) == 6_530_985_656


def test_borrow_room_is_never_negative() -> None:
    # Capacity 7 700 USDC against 10 000 debt: no room (not −2 300).
    underwater = snapshot(debt=10_000 * USDC)
    assert borrow_room(underwater) == 0
    # A buy there is paid from idle cash alone: 0.25 WETH = 500 USDC ≤ 10 000 idle.
    plan = build(ActionKind.REBALANCE, underwater, spot_legs={"WETH": 0.25})
    assert plan.args[0] == [(WETH, True, 500 * USDC, 248_750_000_000_000_000)]


def test_a_buy_beyond_cash_and_room_is_refused() -> None:
    # Idle 0, room 0: nothing can be borrowed against nothing.
    snap = snapshot(weth(collateral=0), wbtc(collateral=0), idle_usdc=0, debt=0)
    with pytest.raises(ValueError, match="no idle cash and no borrow room"):
        build_call(action(ActionKind.REBALANCE, spot_legs={"WETH": 0.25}), snap, SYMBOLS)


# ================================================================================== repayDebt
def test_repay_call_floors_both_amounts() -> None:
    # Withdraw 200.5555559 → 200 555 555 (≤ 1 000 account value); repay 250.1234567 →
    # 250 123 456 (≤ min(100 idle + 200.555555 withdrawn, 5 000 debt)).
    snap = snapshot(idle_usdc=100 * USDC, perp_account_value=1_000 * USDC, debt=5_000 * USDC)
    plan = build(ActionKind.REPAY, snap, margin_usd=-200.5555559, repay_usd=250.1234567)
    assert (plan.function, plan.args) == ("repayDebt", (200_555_555, 250_123_456, DEADLINE))


def test_repay_is_capped_at_the_cash_then_idle() -> None:
    snap = snapshot(idle_usdc=100 * USDC, perp_account_value=1_000 * USDC, debt=5_000 * USDC)
    plan = build(ActionKind.REPAY, snap, margin_usd=-200.5555559, repay_usd=1_000.0)
    # 100 000 000 idle + 200 555 555 withdrawn.
    assert plan.args == (200_555_555, 300_555_555, DEADLINE)


def test_repay_is_capped_at_the_debt() -> None:
    plan = build(ActionKind.REPAY, snapshot(debt=123_456_789), repay_usd=500.0)
    assert plan.args == (0, 123_456_789, DEADLINE)


def test_margin_withdrawal_is_capped_at_the_account_value() -> None:
    plan = build(ActionKind.REPAY, margin_usd=-5_000.0, repay_usd=500.0)
    assert plan.args == (2_000 * USDC, 500 * USDC, DEADLINE)
    plan = build(ActionKind.REPAY, snapshot(perp_account_value=-7), margin_usd=-5_000.0,
                 repay_usd=500.0)
    assert plan.args == (0, 500 * USDC, DEADLINE)


def test_repay_that_rounds_to_nothing_is_skipped() -> None:
    assert build_call(action(ActionKind.REPAY, repay_usd=0.0000004), snapshot(), SYMBOLS) is None
    assert build_call(action(ActionKind.REPAY, repay_usd=5.0), snapshot(debt=0), SYMBOLS) is None


# ============================================================================== other actions
def test_settle_names_the_series() -> None:
    plan = build(ActionKind.SETTLE, series_id=7)
    assert (plan.function, plan.args) == ("settleOption", (7,))
    assert build_call(action(ActionKind.SETTLE), snapshot(), SYMBOLS) is None


def test_legs_that_round_to_nothing_are_skipped() -> None:
    # 1e-19 WETH floors to 0 units; 1e-13 WETH × 2 000 = 2e-10 USD floors to 0 USDC units.
    for kw in ({"spot_legs": {"WETH": -1e-19}}, {"spot_legs": {"WETH": 1e-13}},
               {"perp_legs": {"WETH": 1e-19}}, {"margin_usd": 4e-7}):
        assert build_call(action(ActionKind.REBALANCE, **kw), snapshot(), SYMBOLS) is None


def test_deadline_is_the_snapshot_time_plus_the_window() -> None:
    assert DEADLINE_S == 300
    plan = build(ActionKind.HEDGE, snapshot(timestamp=NOW + 12), margin_usd=1.0)
    assert plan.args[-1] == NOW + 12 + 300


# ============================================================================ integers only
def _ints(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _ints(v)]
    return [value]


@given(qty=st.floats(1e-6, 1e3), usd=st.floats(0.0, 1e6))
def test_every_argument_is_an_integer(qty: float, usd: float) -> None:
    for kind, kw in (
        (ActionKind.REBALANCE, {"spot_legs": {"WETH": -qty, "WBTC": qty / 10_000},
                                "perp_legs": {"WETH": qty}, "margin_usd": usd / 100}),
        (ActionKind.DELEVERAGE, {"spot_legs": {"WBTC": -qty}, "perp_legs": {"WETH": qty},
                                 "margin_usd": usd}),
        (ActionKind.REPAY, {"margin_usd": -usd, "repay_usd": usd + 1.0}),
    ):
        plan = build_call(action(kind, **kw), snapshot(), SYMBOLS)
        assert plan is not None
        for v in _ints(plan.args):
            assert type(v) in (int, bool, str), (kind, v)


@pytest.mark.parametrize("module", ["keeper/tx/builder.py", "keeper/legs.py"])
def test_no_float_arithmetic_in_the_money_layer(module: str) -> None:
    """No true division and no float()/round(): a float enters only through `to_units`."""
    tree = ast.parse((Path(__file__).parents[2] / module).read_text())
    for node in ast.walk(tree):
        assert not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)), (
            f"{module}:{node.lineno}: true division"
        )
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in ("float", "round"), f"{module}:{node.lineno}"


# ================================================================ the vault's own bounds
def mul_div(a: int, b: int, c: int, up: bool = False) -> int:
    """OpenZeppelin `Math.mulDiv(a, b, c[, Ceil])`, from the exact rational."""
    exact = Fraction(a * b, c)
    return math.ceil(exact) if up else math.floor(exact)


def vault_sell_min(amount: int, price: int, decimals: int, slip: int) -> int:
    """RiskVault._swap (sell) then _requireSlippage: fairUsd = amountIn.mulDiv(price, 10^d);
    fair = fairUsd / usdcToWad; minAcceptable = fair.mulDiv(BPS − slip, BPS, Ceil)."""
    fair = mul_div(amount, price, 10**decimals) // 10**12
    return mul_div(fair, BPS - slip, BPS, up=True)


def vault_buy_min(amount_in: int, price: int, decimals: int, slip: int) -> int:
    """RiskVault._swap (buy): fair = (amountIn × usdcToWad).mulDiv(10^d, price)."""
    fair = mul_div(amount_in * 10**12, 10**decimals, price)
    return mul_div(fair, BPS - slip, BPS, up=True)


def vault_perp_bound(size: int, price: int, slip: int) -> int:
    """RiskVault._tradePerps: price.mulDiv(BPS ± slip, BPS), floored either way."""
    return mul_div(price, BPS + slip if size > 0 else BPS - slip, BPS)


def pool_capacity(snap: VaultSnapshot) -> int:
    """LendingPool.borrow: Σ value.mulDiv(ltv, WAD), value = amount.mulDiv(price, 10^d); then
    capacityUsd.mulDiv(10^6, WAD)."""
    usd = sum(mul_div(mul_div(a.collateral, a.price, 10**a.decimals), a.ltv, WAD)
              for a in snap.assets)
    return mul_div(usd, 10**6, WAD)


prices = st.one_of(
    st.integers(10**16, 10**24),  # any WAD price from 0.01 to 1e6 USD
    st.integers(10**6, 10**14).map(lambda answer: answer * 10**10),  # an 8-decimal feed
)


@given(
    price=prices,
    decimals=st.sampled_from([6, 8, 18]),
    slip=st.integers(1, 1_000),
    qty=st.floats(1e-9, 1e6, allow_nan=False),
)
def test_swap_min_outs_equal_the_vaults_bound(
    price: int, decimals: int, slip: int, qty: float
) -> None:
    asset = weth(decimals=decimals, price=price, collateral=10**40)
    snap = snapshot(asset, slip=slip, idle_usdc=10**30)
    plan = build_call(action(ActionKind.REBALANCE, spot_legs={"WETH": -qty}), snap, SYMBOLS)
    if plan is not None:
        ((_, buy, amount, min_out),) = plan.args[0]
        assert not buy and amount == math.floor(Fraction(repr(qty)) * 10**decimals)
        assert min_out == vault_sell_min(amount, price, decimals, slip)
    plan = build_call(action(ActionKind.REBALANCE, spot_legs={"WETH": qty}), snap, SYMBOLS)
    if plan is not None:
        ((_, buy, spend, min_out),) = plan.args[0]
        # What a buy spends: the quantity at WAD precision (floored) × price, floored to USDC.
        qty_wad = math.floor(Fraction(repr(qty)) * WAD)
        assert buy and spend == math.floor(Fraction(qty_wad * price, 10**30))
        assert min_out == vault_buy_min(spend, price, decimals, slip)


@given(price=prices, slip=st.integers(1, 1_000), qty=st.floats(-1e6, 1e6, allow_nan=False))
def test_perp_limits_equal_the_vaults_bound(price: int, slip: int, qty: float) -> None:
    snap = snapshot(weth(price=price), slip=slip)
    plan = build_call(action(ActionKind.HEDGE, perp_legs={"WETH": qty}), snap, SYMBOLS)
    if plan is None:
        assert abs(qty) < 1e-18
        return
    ((_, size, limit),) = plan.args[0]
    magnitude = math.floor(abs(Fraction(repr(qty))) * WAD)
    assert size == (magnitude if qty > 0 else -magnitude)
    bound = vault_perp_bound(size, price, slip)
    # The vault fills at min(limit, bound) for buys and max(limit, bound) for sells: the
    # builder's limit is exactly that bound, neither looser nor tighter.
    assert limit == bound


@given(
    eth_coll=st.integers(0, 10**24),
    btc_coll=st.integers(0, 10**12),
    eth_price=prices,
    btc_price=prices,
    ltv_bps=st.integers(0, 9_000),
    debt=st.integers(0, 10**13),
)
def test_borrow_room_equals_the_pools_capacity_less_debt(
    eth_coll: int, btc_coll: int, eth_price: int, btc_price: int, ltv_bps: int, debt: int
) -> None:
    snap = snapshot(
        weth(collateral=eth_coll, price=eth_price, ltv=ltv_bps * WAD // BPS),
        wbtc(collateral=btc_coll, price=btc_price),
        debt=debt,
    )
    assert borrow_room(snap) == max(0, pool_capacity(snap) - debt)


def test_one_bps_of_slippage() -> None:
    # With max slippage 1 bps the buy limit is 2 000 × 1.0001 = 2 000.2 USD.
    plan = build(ActionKind.HEDGE, snapshot(slip=1), perp_legs={"WETH": 1.0})
    assert plan.args[0] == [(WETH, WAD, 2_000_200_000_000_000_000_000)]


def test_room_a_buy_borrowed_beyond_the_snapshot_is_gone_for_the_next() -> None:
    # Room 300, idle 500: the WETH buy of 1 500 USDC borrows 1 000 over three legs (more than
    # the snapshot's room; the rest against its own collateral). The WBTC buy after it sees no
    # cash and no room (not −700), and the build is refused rather than sent to revert.
    snap = snapshot(weth(collateral=WAD), wbtc(collateral=0), idle_usdc=500 * USDC,
                    debt=1_300 * USDC)
    with pytest.raises(ValueError, match="no idle cash and no borrow room"):
        build_call(action(ActionKind.REBALANCE, spot_legs={"WETH": 0.75, "WBTC": 0.005}), snap,
                   SYMBOLS)
