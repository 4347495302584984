"""The builder's bounds against the vault's own, on the deployed contracts.

Each call here is made by `keeper.tx.builder.build_call` from the vault's live `snapshot()`.
A swap's `minOut` is the vault's slippage bound at the snapshot's price: with the venue's fee set
so that a fill lands exactly on that bound, the builder's call goes through and the same call
asking one unit more is refused; with fills worse than the bound, the vault's own refusal
(`VaultSlippageExceeded(asset, minAcceptable, actual)`) names the same number the builder sent.
A perp leg's limit is the last feed tick the market fills at.

Seeded `vault` (rvBAL): ETH at 3 000, ~5 000 USDC idle, mandate max slippage 50 bps; the swap
venue's depth (5e9 USD) makes any trade below 500 000 USD cost exactly 1 bps of impact.
"""

from __future__ import annotations

import pytest

from keeper.chain.snapshot import VaultSnapshot, decode_snapshot
from keeper.devnet.deploy import FEED_DECIMALS
from keeper.risk.actions import Action, ActionKind, Urgency
from keeper.tx.builder import CallPlan, borrow_headroom, borrow_room, build_call
from tests.integration.conftest import expect_revert, one_event, send

WAD = 10**18
USDC = 10**6
#: Fee that, with the 1 bps of impact, makes a fill cost exactly the mandate's 50 bps.
FEE_AT_THE_BOUND_BPS = 49


def read(vault) -> VaultSnapshot:
    return decode_snapshot(vault.address, vault.functions.snapshot().call())


def plan_for(vault, weth, wbtc, kind: ActionKind, **legs) -> CallPlan:
    action = Action(kind=kind, vault=vault.address, urgency=Urgency.NORMAL,
                    expected_benefit_usd=1.0, expected_cost_usd=0.0, reason="test", **legs)
    plan = build_call(action, read(vault), {weth.address: "WETH", wbtc.address: "WBTC"})
    assert plan is not None
    return plan


def call(vault, plan: CallPlan, *args):
    return getattr(vault.functions, plan.function)(*(args or plan.args))


def with_min_out(plan: CallPlan, min_out) -> tuple:
    """The plan's args with every swap leg's minOut `m` replaced by `min_out(m)`."""
    swaps, *rest = plan.args
    return ([(a, buy, amount, min_out(m)) for a, buy, amount, m in swaps], *rest)


def set_eth(market, answer: int) -> None:
    """ETH/USD feed answer (FEED_DECIMALS = 8)."""
    market.set_answer("ETH_USD", answer)


# ------------------------------------------------------------------------------- swaps, exact
def test_buy_min_out_is_accepted_on_the_bound_and_one_more_is_refused(
    vault, swap, weth, wbtc, admin, keeper, market, pool
):
    send(swap.functions.setFee(FEE_AT_THE_BOUND_BPS), admin)
    set_eth(market, 3_000 * 10**FEED_DECIMALS)
    plan = plan_for(vault, weth, wbtc, ActionKind.REBALANCE, spot_legs={"WETH": 0.5})
    # Spend 0.5 × 3 000 = 1 500 USDC (from idle cash). fair = 1 500e6 × 1e30 / 3 000e18 = 5e17;
    # minOut = 5e17 × 9 950 / 10 000 = 4.975e17. The venue: 1 500 USD less 49 + 1 bps
    # = 1 492.5 USD → 1 492.5 / 3 000 = 0.4975 WETH, exactly the bound.
    assert plan.args[0] == [(weth.address, True, 1_500 * USDC, 497_500_000_000_000_000)]
    with expect_revert("SwapVenueSlippage", 497_500_000_000_000_000, 497_500_000_000_000_001):
        call(vault, plan, *with_min_out(plan, lambda m: m + 1)).call({"from": keeper})
    before = pool.functions.collateralOf(vault.address, weth.address).call()
    send(call(vault, plan), keeper)
    after = pool.functions.collateralOf(vault.address, weth.address).call()
    assert after - before == 497_500_000_000_000_000


def test_sell_min_out_is_accepted_on_the_bound_and_one_more_is_refused(
    vault, swap, weth, wbtc, admin, keeper, market
):
    send(swap.functions.setFee(FEE_AT_THE_BOUND_BPS), admin)
    set_eth(market, 3_000 * 10**FEED_DECIMALS)
    plan = plan_for(vault, weth, wbtc, ActionKind.DELEVERAGE, spot_legs={"WETH": -0.5})
    # Sell 5e17 WETH: fair 0.5 × 3 000 = 1 500 USDC; minOut 1 500 × 0.995 = 1 492.5 USDC; the
    # venue pays 1 500 × (1 − 0.0049 − 0.0001) = 1 492.5 USDC.
    assert plan.args[0] == [(weth.address, False, 5 * WAD // 10, 1_492_500_000)]
    with expect_revert("SwapVenueSlippage", 1_492_500_000, 1_492_500_001):
        call(vault, plan, *with_min_out(plan, lambda m: m + 1)).call({"from": keeper})
    receipt = send(call(vault, plan), keeper)
    assert one_event(swap, "Swapped", receipt).amountOut == 1_492_500_000


# --------------------------------------------------------------- swaps, the vault's own bound
@pytest.mark.parametrize(
    ("legs", "answers"),
    [
        ({"WETH": 0.123456789, "WBTC": 0.00987654}, (300_012_345_678, 6_000_098_765_432)),
        ({"WETH": -1.1111111111, "WBTC": -0.0333333}, (299_987_654_321, 5_999_912_345_678)),
        ({"WETH": 7.7, "WBTC": -0.5}, (300_000_000_001, 6_000_000_000_001)),
    ],
)
def test_the_vault_refuses_a_worse_fill_at_exactly_the_builders_min_out(
    vault, swap, weth, wbtc, admin, keeper, market, legs, answers
):
    """Fills 10 bps worse than the mandate allows, no minOut for the venue: the vault's own
    check refuses each leg and reports its bound, which must be the builder's minOut."""
    market.set_answer("ETH_USD", answers[0])
    market.set_answer("BTC_USD", answers[1])
    send(swap.functions.setFee(59), admin)  # 59 + 1 bps of impact = 60 > 50
    plan = plan_for(vault, weth, wbtc, ActionKind.REBALANCE, spot_legs=legs)
    assert len(plan.args[0]) == 2
    for i, (asset, _buy, _amount, min_out) in enumerate(plan.args[0]):
        one_leg = ([(a, b, n, 0) for a, b, n, _m in plan.args[0][i:i + 1]], *plan.args[1:])
        with expect_revert("VaultSlippageExceeded") as refused:
            call(vault, plan, *one_leg).call({"from": keeper})
        assert refused.args[0].lower() == asset.lower()
        assert refused.args[1] == min_out


# ------------------------------------------------------------------------------ perp limits
@pytest.mark.parametrize(
    ("size", "limit_answer", "beyond_answer"),
    [
        (1.0, 301_500_000_000, 301_500_000_001),  # buy: 3 000 × 1.005 = 3 015
        (-1.0, 298_500_000_000, 298_499_999_999),  # sell: 3 000 × 0.995 = 2 985
    ],
)
def test_perp_fills_up_to_the_builders_limit_and_not_one_tick_beyond(
    vault, perps, weth, wbtc, keeper, market, size, limit_answer, beyond_answer
):
    set_eth(market, 3_000 * 10**FEED_DECIMALS)
    plan = plan_for(vault, weth, wbtc, ActionKind.HEDGE, perp_legs={"WETH": size})
    limit = limit_answer * 10 ** (18 - FEED_DECIMALS)
    assert plan.args[0] == [(weth.address, int(size) * WAD, limit)]
    # The oracle moves to one feed tick past the limit before the call lands: refused.
    set_eth(market, beyond_answer)
    beyond = beyond_answer * 10 ** (18 - FEED_DECIMALS)
    with expect_revert("PerpMarketLimitPrice", beyond, limit):
        call(vault, plan).call({"from": keeper})
    # Exactly at the limit: filled there (the vault's own bound at that price is wider).
    set_eth(market, limit_answer)
    receipt = send(call(vault, plan), keeper)
    assert one_event(perps, "PositionChanged", receipt).executionPrice == limit


def test_a_deleverage_closes_at_most_the_open_perp(vault, perps, weth, wbtc, keeper):
    """Asked to buy back more than the short, the builder sends exactly the short; the vault
    refuses any leg larger than the position (VaultNotDeleverage)."""
    short = read(vault).asset(weth.address).perp_size
    assert short < 0
    plan = plan_for(vault, weth, wbtc, ActionKind.DELEVERAGE, spot_legs={"WETH": -1.0},
                    perp_legs={"WETH": 500.0})
    assert [leg[:2] for leg in plan.args[1]] == [(weth.address, -short)]
    send(call(vault, plan), keeper)
    assert perps.functions.positionOf(vault.address, weth.address).call()[0] == 0


# --------------------------------------------------------------------------------- repayDebt
def test_repay_call_is_accepted_and_repays_what_it_says(vault, pool, weth, wbtc, keeper):
    snap = read(vault)
    assert snap.idle_usdc > 1_001 * USDC and snap.debt > 1_001 * USDC
    plan = plan_for(vault, weth, wbtc, ActionKind.REPAY, repay_usd=1_000.5000009)
    assert plan.args[:2] == (0, 1_000_500_000)  # 1 000.5000009 USD floored to USDC units
    receipt = send(call(vault, plan), keeper)
    assert one_event(pool, "Repaid", receipt).amount == 1_000_500_000


# ----------------------------------------------------------------------------- borrow headroom
def test_a_buy_that_borrows_all_the_room_still_fits_a_block_later(
    vault2, weth, wbtc, keeper, chain
):
    # Before: the first leg borrowed the snapshot's whole room and was refused a block later
    # (LendingPoolBorrowCapacityExceeded by the interest accrued meanwhile and the pool's
    # round-up of new debt). Now it leaves 2 + ceil(debt / 10⁶) units of it free.
    snap = read(vault2)
    room = borrow_room(snap)
    assert snap.idle_usdc == 0 and room > 100_000 * USDC
    headroom = 2 - (-snap.debt // 10**6)
    assert borrow_headroom(snap.debt) == headroom
    # Room plus 50 000 USDC of ETH: the first leg borrows the room less the headroom, the
    # second the room the first leg's collateral adds.
    eth = snap.asset(weth.address)
    qty = (room + 50_000 * USDC) * 10**12 / eth.price
    plan = plan_for(vault2, weth, wbtc, ActionKind.REBALANCE, spot_legs={"WETH": qty})
    assert len(plan.args[0]) == 2 and plan.args[0][0][2] == room - headroom
    chain.increase_time(12)  # the next block, where a keeper's transaction lands
    call(vault2, plan).call({"from": keeper})
