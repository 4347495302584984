"""LendingPool: borrow capacity, health, per-second interest, liquidation, repayWithCollateral.

A plain borrower (`trader`, no roles) posts WETH at 3,000 USD: LTV 0.80, threshold 0.85, bonus 5 %.
Expected values are computed here from the documented formulas in Python integers.
"""

from __future__ import annotations

import pytest

from keeper.devnet.deploy import BORROW_RATE_PER_SECOND, COLLATERAL_PARAMS, SECONDS_PER_YEAR
from tests.integration.conftest import (
    USDC_TO_WAD,
    WAD,
    ceil_div,
    expect_revert,
    one_event,
    pool_index_at,
    send,
    swap_quote,
)

USDC = 10**6
LTV, THRESHOLD, BONUS = COLLATERAL_PARAMS["ETH"]
BTC_BONUS = COLLATERAL_PARAMS["BTC"][2]


def open_loan(market, pool, weth, who, collateral=10 * WAD, borrow=23_000 * USDC):
    market.fund("WETH", who, collateral, pool.address)
    send(pool.functions.depositCollateral(weth.address, collateral), who)
    if borrow:
        send(pool.functions.borrow(borrow), who)


def debt_next_block(pool, chain, who):
    """Debt as the next transaction (one second on) will see it: index × (1 + rate × dt), ceil."""
    index = pool_index_at(pool, chain.now() + 1)
    return ceil_div(pool.functions.scaledDebt(who).call() * index, WAD), index


def liq_capacity(units, price_wad, threshold=THRESHOLD, decimals=18):
    return units * price_wad // 10**decimals * threshold // WAD


# ------------------------------------------------------------------------------ capacity / health
def test_borrow_is_limited_to_collateral_times_ltv(pool, weth, trader, market, chain):
    """10 WETH at 3,000 USD with an 80 % LTV lends at most 24,000 USDC."""
    open_loan(market, pool, weth, trader, borrow=0)
    capacity = 10 * 3_000 * LTV // WAD * USDC
    assert capacity == 24_000 * USDC
    index = pool_index_at(pool, chain.now() + 1)
    amount = capacity + 1
    debt_after = ceil_div(ceil_div(amount * WAD, index) * index, WAD)
    with expect_revert("LendingPoolBorrowCapacityExceeded", capacity, debt_after):
        pool.functions.borrow(amount).transact({"from": trader})
    with expect_revert("LendingPoolBorrowCapacityExceeded"):
        pool.functions.borrow(1_000_000 * USDC).transact({"from": trader})
    send(pool.functions.borrow(capacity - 10), trader)
    assert market.balance("USDC", trader) == capacity - 10
    with expect_revert("LendingPoolBorrowCapacityExceeded"):
        pool.functions.borrow(20).transact({"from": trader})


def test_borrow_without_collateral_is_refused(pool, trader2):
    with expect_revert("LendingPoolBorrowCapacityExceeded"):
        pool.functions.borrow(1).transact({"from": trader2})


def test_withdraw_that_would_leave_health_below_one_is_refused(pool, weth, trader, market, chain):
    open_loan(market, pool, weth, trader, borrow=20_000 * USDC)
    debt, _ = debt_next_block(pool, chain, trader)
    health = liq_capacity(7 * WAD, 3_000 * WAD) * WAD // (debt * USDC_TO_WAD)
    assert health < WAD
    with expect_revert("LendingPoolHealthTooLow", health):
        pool.functions.withdrawCollateral(weth.address, 3 * WAD, trader).transact({"from": trader})
    send(pool.functions.withdrawCollateral(weth.address, 2 * WAD, trader), trader)  # leaves 1.02
    assert market.balance("WETH", trader) == 2 * WAD
    assert pool.functions.collateralOf(trader, weth.address).call() == 8 * WAD
    debt = pool.functions.debtOf(trader).call()
    assert pool.functions.healthFactor(trader).call() == liq_capacity(
        8 * WAD, 3_000 * WAD
    ) * WAD // (debt * USDC_TO_WAD)


# ------------------------------------------------------------------------------ interest
def test_interest_accrues_per_second_on_the_index(pool, weth, trader, market, chain):
    open_loan(market, pool, weth, trader)
    index0 = pool.functions.borrowIndex().call()
    last0 = pool.functions.lastAccrual().call()
    scaled = pool.functions.scaledDebt(trader).call()
    assert (
        pool.functions.borrowRatePerSecond().call()
        == BORROW_RATE_PER_SECOND
        == 5 * WAD // 100 // SECONDS_PER_YEAR
    )
    chain.increase_time(30 * 24 * 3600)
    receipt = send(pool.functions.accrue(), trader)
    ts = chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    expected_index = ceil_div(index0 * (WAD + BORROW_RATE_PER_SECOND * (ts - last0)), WAD)
    assert pool.functions.borrowIndex().call() == expected_index
    assert pool.functions.lastAccrual().call() == ts
    ev = one_event(pool, "InterestAccrued", receipt)
    assert (ev.oldIndex, ev.newIndex, ev.timestamp) == (index0, expected_index, ts)
    debt = pool.functions.debtOf(trader).call()
    assert debt == ceil_div(scaled * expected_index, WAD)
    # ≈ 23,000 × (1 + 5 % × 30/365): 94.52 USDC of interest
    simple = 23_000 * USDC * (WAD + BORROW_RATE_PER_SECOND * (ts - last0)) // WAD
    assert abs(debt - simple) <= 2
    assert 94 * USDC < debt - 23_000 * USDC < 95 * USDC


def test_debt_view_between_accruals_uses_the_same_formula(pool, weth, trader, market, chain):
    open_loan(market, pool, weth, trader)
    chain.increase_time(12 * 3600 + 7)
    assert pool.functions.debtOf(trader).call() == ceil_div(
        pool.functions.scaledDebt(trader).call() * pool_index_at(pool, chain.now()), WAD
    )


def test_interest_compounds_across_accruals(pool, weth, trader, market, chain):
    """Two 15-day accruals grow the index more than one simple 30-day step."""
    open_loan(market, pool, weth, trader)
    index0, last0 = pool.functions.borrowIndex().call(), pool.functions.lastAccrual().call()
    chain.increase_time(15 * 24 * 3600)
    send(pool.functions.accrue(), trader)
    chain.increase_time(15 * 24 * 3600)
    receipt = send(pool.functions.accrue(), trader)
    ts = chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    single = ceil_div(index0 * (WAD + BORROW_RATE_PER_SECOND * (ts - last0)), WAD)
    assert pool.functions.borrowIndex().call() > single


# ------------------------------------------------------------------------------ liquidation
def test_healthy_account_is_not_liquidatable(pool, weth, trader, liquidator, market, chain):
    open_loan(market, pool, weth, trader)
    debt, _ = debt_next_block(pool, chain, trader)
    health = liq_capacity(10 * WAD, 3_000 * WAD) * WAD // (debt * USDC_TO_WAD)
    assert health > WAD
    with expect_revert("LendingPoolNotLiquidatable", health):
        pool.functions.liquidate(trader, weth.address, 1_000 * USDC).transact({"from": liquidator})


def test_liquidation_after_a_crash(pool, weth, trader, liquidator, market, chain):
    open_loan(market, pool, weth, trader)
    market.set_price("ETH_USD", 2_500)  # health 21,250 / 23,000 ≈ 0.92
    market.fund("USDC", liquidator, 20_000 * USDC, pool.address)
    debt, _ = debt_next_block(pool, chain, trader)
    max_repay = debt * 5 // 10
    with expect_revert("LendingPoolCloseFactorExceeded", max_repay, max_repay + 1):
        pool.functions.liquidate(trader, weth.address, max_repay + 1).transact({"from": liquidator})

    repay = 5_000 * USDC
    scaled_before = pool.functions.scaledDebt(trader).call()
    receipt = send(pool.functions.liquidate(trader, weth.address, repay), liquidator)
    index = pool.functions.borrowIndex().call()  # accrued in the liquidation's block
    debt_at = ceil_div(scaled_before * index, WAD)
    seized = repay * USDC_TO_WAD * (WAD + BONUS) // WAD * WAD // (2_500 * WAD)
    assert seized == 21 * WAD // 10  # 5,000 × 1.05 ÷ 2,500
    assert market.balance("WETH", liquidator) == seized
    assert market.balance("USDC", liquidator) == 15_000 * USDC
    assert pool.functions.collateralOf(trader, weth.address).call() == 10 * WAD - seized
    assert pool.functions.scaledDebt(trader).call() == scaled_before - repay * WAD // index
    debt_after = pool.functions.debtOf(trader).call()
    ev = one_event(pool, "Liquidated", receipt)
    assert (ev.account, ev.liquidator, ev.collateralAsset, ev.repaid, ev.seized) == (
        trader,
        liquidator,
        weth.address,
        repay,
        seized,
    )
    assert ev.healthBefore == liq_capacity(10 * WAD, 2_500 * WAD) * WAD // (debt_at * USDC_TO_WAD)
    assert ev.healthAfter == liq_capacity(10 * WAD - seized, 2_500 * WAD) * WAD // (
        debt_after * USDC_TO_WAD
    )
    assert ev.healthBefore < ev.healthAfter < WAD


def test_liquidation_seizing_all_of_a_small_collateral_scales_the_repayment(
    pool, weth, wbtc, trader, liquidator, market
):
    """0.01 WBTC (600 USD) beside 10 WETH: repaying 5,000 against WBTC seizes all of it and only
    charges what it is worth net of the 6 % bonus, rounded up."""
    open_loan(market, pool, weth, trader, borrow=0)
    market.fund("WBTC", trader, 10**6, pool.address)
    send(pool.functions.depositCollateral(wbtc.address, 10**6), trader)
    send(pool.functions.borrow(23_000 * USDC), trader)
    market.set_price("ETH_USD", 2_500)
    market.fund("USDC", liquidator, 5_000 * USDC, pool.address)
    send(pool.functions.liquidate(trader, wbtc.address, 5_000 * USDC), liquidator)
    value = 10**6 * 60_000 * WAD // 10**8
    charged = ceil_div(value * WAD // (WAD + BTC_BONUS) * USDC, WAD)
    assert charged == 566_037_736
    assert market.balance("WBTC", liquidator) == 10**6
    assert market.balance("USDC", liquidator) == 5_000 * USDC - charged
    assert pool.functions.collateralOf(trader, wbtc.address).call() == 0


# ------------------------------------------------------------------------------ repayWithCollateral
def test_repay_with_collateral_below_health_one(pool, swap, usdc, weth, trader, market, chain):
    open_loan(market, pool, weth, trader)
    market.set_price("ETH_USD", 2_500)
    h0 = pool.functions.healthFactor(trader).call()
    assert h0 < WAD
    with expect_revert("LendingPoolHealthTooLow"):
        pool.functions.withdrawCollateral(weth.address, WAD, trader).transact({"from": trader})
    units = 3 * WAD
    proceeds, impact = swap_quote(
        swap, weth.address, usdc.address, units, usdc.address, 2_500 * WAD, 18
    )
    assert impact == 1 and proceeds == 7_500 * USDC * (10_000 - 10 - 1) // 10_000
    scaled_before = pool.functions.scaledDebt(trader).call()
    receipt = send(
        pool.functions.repayWithCollateral(weth.address, units, swap.address, proceeds), trader
    )
    ev = one_event(pool, "RepaidWithCollateral", receipt)
    assert (ev.collateralSold, ev.proceeds, ev.repaid) == (units, proceeds, proceeds)
    index = pool.functions.borrowIndex().call()
    assert pool.functions.scaledDebt(trader).call() == scaled_before - proceeds * WAD // index
    assert market.balance("USDC", trader) == 23_000 * USDC  # no excess: all went to the debt
    h1 = pool.functions.healthFactor(trader).call()
    debt = pool.functions.debtOf(trader).call()
    assert h1 == liq_capacity(7 * WAD, 2_500 * WAD) * WAD // (debt * USDC_TO_WAD)
    assert h0 < h1


def test_repay_with_collateral_that_worsens_health_below_one_is_refused(
    pool, swap, usdc, weth, trader, market
):
    """Below threshold ÷ (1 − fee − impact) ≈ 0.851, selling collateral lowers health further."""
    open_loan(market, pool, weth, trader)
    market.set_price("ETH_USD", 2_000)  # health ≈ 0.74
    with expect_revert("LendingPoolHealthWorsened") as r:
        pool.functions.repayWithCollateral(weth.address, WAD, swap.address, 0).transact(
            {"from": trader}
        )
    before, after = r.args
    assert after < before < WAD


def test_repay_with_collateral_returns_the_excess(pool, swap, usdc, weth, trader, market, chain):
    open_loan(market, pool, weth, trader, borrow=1_000 * USDC)
    proceeds = swap.functions.quote(weth.address, usdc.address, WAD).call()[0]
    scaled = pool.functions.scaledDebt(trader).call()
    send(pool.functions.repayWithCollateral(weth.address, WAD, swap.address, proceeds), trader)
    debt_at = ceil_div(scaled * pool.functions.borrowIndex().call(), WAD)
    assert pool.functions.debtOf(trader).call() == 0
    assert pool.functions.scaledDebt(trader).call() == 0
    # it kept the 1,000 borrowed and received the proceeds beyond the debt
    assert market.balance("USDC", trader) == 1_000 * USDC + proceeds - debt_at


@pytest.mark.parametrize("amount", [0])
def test_zero_amounts_are_refused(pool, weth, trader, amount):
    with expect_revert("LendingPoolZeroAmount"):
        pool.functions.borrow(amount).transact({"from": trader})
    with expect_revert("LendingPoolZeroAmount"):
        pool.functions.depositCollateral(weth.address, amount).transact({"from": trader})
