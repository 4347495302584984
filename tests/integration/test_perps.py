"""PerpMarket: funding accrual, PnL, margin health, initial margin, limit prices, liquidation.

Traders are plain accounts; ETH at 3,000 USD; fee 5 bps; maintenance 5 %, initial 10 %;
funding: longs pay shorts 10 % a year of notional (WAD per second). Expected values are
computed here in Python integers from the documented formulas.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from keeper.devnet.deploy import (
    PERP_FEE_BPS,
    PERP_FUNDING_PER_SECOND,
    PERP_INITIAL,
    PERP_MAINTENANCE,
    SECONDS_PER_YEAR,
)
from tests.integration.conftest import (
    USDC_TO_WAD,
    WAD,
    ceil_div,
    expect_revert,
    one_event,
    send,
    trunc_div,
)

USDC = 10**6
RATE = PERP_FUNDING_PER_SECOND["ETH"]
P0 = 3_000 * WAD


def fee_usdc(size, price):
    return ceil_div(abs(size) * price // WAD * PERP_FEE_BPS // 10_000, USDC_TO_WAD)


def block_ts(chain, receipt):
    return chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]


def open_position(market, perps, weth, who, size, margin=10_000 * USDC, limit=None):
    market.fund("USDC", who, margin, perps.address)
    send(perps.functions.depositMargin(margin), who)
    price = market.price_wad("ETH_USD")
    limit = limit if limit is not None else (price * 2 if size > 0 else 0)
    receipt = send(perps.functions.trade(weth.address, size, limit), who)
    market_state = perps.functions.markets(weth.address).call()
    return receipt, int(market_state[5])  # the position's funding checkpoint


def cumulative_at(perps, weth, ts, price):
    m = perps.functions.markets(weth.address).call()
    return m[5] + trunc_div(m[4] * (ts - m[6]) * price, WAD)


# ------------------------------------------------------------------------------ funding
def test_funding_longs_pay_shorts_at_the_listed_rate(perps, weth, trader, trader2, market, chain):
    size = 10 * WAD
    _, checkpoint_long = open_position(market, perps, weth, trader, size)
    _, checkpoint_short = open_position(market, perps, weth, trader2, -size)
    margin_long = perps.functions.marginOf(trader).call()
    margin_short = perps.functions.marginOf(trader2).call()
    assert margin_long == margin_short == 10_000 * USDC - fee_usdc(size, P0)

    opened_at = perps.functions.markets(weth.address).call()[
        6
    ]  # trader2 opened here (the short side)
    market.travel(10 * 24 * 3600)  # same price pushed again, so funding accrues at 3,000
    cum = cumulative_at(perps, weth, chain.now(), P0)
    owed_long = trunc_div(size * (cum - checkpoint_long), WAD)  # USD WAD
    owed_short_side = trunc_div(size * (cum - checkpoint_short), WAD)
    # independent check of the rate: 10 %/yr × 30,000 notional × elapsed ≈ 82.19 USD over 10 days
    elapsed = chain.now() - opened_at
    approx = Fraction(10, 100) * 30_000 * elapsed / SECONDS_PER_YEAR
    assert abs(Fraction(owed_short_side, WAD) - approx) < Fraction(1, 10**6)
    assert 82 * WAD < owed_long < 83 * WAD
    assert perps.functions.positionOf(trader, weth.address).call()[2] == (-owed_long) // USDC_TO_WAD
    owed_short = trunc_div(-size * (cum - checkpoint_short), WAD)
    assert (
        perps.functions.positionOf(trader2, weth.address).call()[2] == (-owed_short) // USDC_TO_WAD
    )

    # settling (on a margin withdrawal) moves it into margin: longs pay rounded up,
    # shorts get it rounded down
    r_long = send(perps.functions.withdrawMargin(USDC), trader)
    cum_long = cumulative_at(perps, weth, block_ts(chain, r_long), P0)
    assert cum_long == perps.functions.markets(weth.address).call()[5]
    paid = ceil_div(trunc_div(size * (cum_long - checkpoint_long), WAD), USDC_TO_WAD)
    assert perps.functions.marginOf(trader).call() == margin_long - paid - USDC
    send(perps.functions.withdrawMargin(USDC), trader2)
    cum_short = perps.functions.markets(weth.address).call()[5]
    received = trunc_div(size * (cum_short - checkpoint_short), WAD) // USDC_TO_WAD
    assert perps.functions.marginOf(trader2).call() == margin_short + received - USDC
    assert 82 * USDC < paid < 83 * USDC and 82 * USDC < received < 83 * USDC


# ------------------------------------------------------------------------------ pnl and health
def test_pnl_and_margin_health_at_a_new_price(perps, weth, trader, market, chain):
    size = 10 * WAD
    _, checkpoint = open_position(market, perps, weth, trader, size)
    margin = perps.functions.marginOf(trader).call()
    market.set_price("ETH_USD", 3_300)
    p = 3_300 * WAD
    cum = cumulative_at(perps, weth, chain.now(), p)
    pnl = (
        trunc_div(size * (p - P0), WAD) - trunc_div(size * (cum - checkpoint), WAD)
    ) // USDC_TO_WAD
    assert 2_999 * USDC < pnl <= 3_000 * USDC
    s, entry, upnl = perps.functions.positionOf(trader, weth.address).call()
    assert (s, entry, upnl) == (size, P0, pnl)
    value = margin + pnl
    assert perps.functions.accountValue(trader).call() == value
    req = size * p // WAD * PERP_MAINTENANCE // WAD
    assert perps.functions.maintenanceRequirement(trader).call() == req == 1_650 * WAD
    assert perps.functions.marginHealth(trader).call() == value * USDC_TO_WAD * WAD // req


def test_no_position_means_unbounded_health(perps, trader):
    assert perps.functions.marginHealth(trader).call() == 2**256 - 1


def test_reducing_realizes_pnl_into_margin(perps, weth, trader, market):
    size = 10 * WAD
    open_position(market, perps, weth, trader, size)
    margin = perps.functions.marginOf(trader).call()
    market.set_price("ETH_USD", 3_300)
    receipt = send(perps.functions.trade(weth.address, -4 * WAD, 0), trader)
    ev = one_event(perps, "PositionChanged", receipt)
    assert ev.realizedPnl == 4 * 300 * USDC
    assert ev.fee == fee_usdc(4 * WAD, 3_300 * WAD)
    assert 0 < ev.fundingPaid < USDC  # a few seconds of funding on 30,000 of notional
    assert (
        perps.functions.marginOf(trader).call() == margin + ev.realizedPnl - ev.fee - ev.fundingPaid
    )
    assert tuple(perps.functions.positionOf(trader, weth.address).call()[:2]) == (6 * WAD, P0)


# ------------------------------------------------------------------------------ refusals
def test_trade_beyond_initial_margin_is_refused(perps, weth, trader, market):
    market.fund("USDC", trader, 10_000 * USDC, perps.address)
    send(perps.functions.depositMargin(10_000 * USDC), trader)
    size = 40 * WAD  # 120,000 notional needs 12,000 of initial margin
    value = 10_000 * USDC - fee_usdc(size, P0)
    required = ceil_div(size * P0 // WAD * PERP_INITIAL // WAD, USDC_TO_WAD)
    with expect_revert("PerpMarketInsufficientMargin", value, required):
        perps.functions.trade(weth.address, size, P0).transact({"from": trader})
    send(perps.functions.trade(weth.address, 30 * WAD, P0), trader)  # 9,000 required: fits


def test_margin_withdrawal_beyond_initial_margin_is_refused(perps, weth, trader, market, chain):
    size = 10 * WAD
    _, checkpoint = open_position(
        market, perps, weth, trader, size
    )  # 3,000 of initial margin needed
    margin = perps.functions.marginOf(trader).call()
    # the withdrawal settles funding first (at the next block's time), then checks initial margin
    paid = ceil_div(
        trunc_div(size * (cumulative_at(perps, weth, chain.now() + 1, P0) - checkpoint), WAD),
        USDC_TO_WAD,
    )
    with expect_revert("PerpMarketInsufficientMargin", margin - paid - 7_000 * USDC, 3_000 * USDC):
        perps.functions.withdrawMargin(7_000 * USDC).transact({"from": trader})
    send(perps.functions.withdrawMargin(6_000 * USDC), trader)


def test_limit_price_is_enforced(perps, weth, trader, market):
    market.fund("USDC", trader, 10_000 * USDC, perps.address)
    send(perps.functions.depositMargin(10_000 * USDC), trader)
    with expect_revert("PerpMarketLimitPrice", P0, P0 - 1):
        perps.functions.trade(weth.address, WAD, P0 - 1).transact({"from": trader})
    with expect_revert("PerpMarketLimitPrice", P0, P0 + 1):
        perps.functions.trade(weth.address, -WAD, P0 + 1).transact({"from": trader})
    receipt = send(perps.functions.trade(weth.address, WAD, P0), trader)  # at the limit: fills
    assert one_event(perps, "PositionChanged", receipt).executionPrice == P0


# ------------------------------------------------------------------------------ liquidation
def test_healthy_account_is_not_liquidatable(perps, weth, trader, liquidator, market):
    open_position(market, perps, weth, trader, 30 * WAD)
    health = perps.functions.marginHealth(trader).call()
    with expect_revert("PerpMarketNotLiquidatable") as r:
        perps.functions.liquidate(trader).transact({"from": liquidator})
    assert abs(r.args[0] - health) * 10**6 < health  # a second of funding apart


@pytest.mark.parametrize(
    "crash_usd,capped",
    [(2_750, False), (2_680, True), (2_600, True)],
    ids=["reward-1pct", "reward-capped", "bad-debt"],
)
def test_liquidation_after_an_adverse_move(
    perps, weth, trader, liquidator, market, chain, crash_usd, capped
):
    """Long 30 ETH on 10,000 margin; ETH falls. All positions close at the oracle price and the
    liquidator earns 1 % of the closed notional, capped at what the account has left."""
    size = 30 * WAD
    _, checkpoint = open_position(market, perps, weth, trader, size)
    margin = perps.functions.marginOf(trader).call()
    market.set_price("ETH_USD", crash_usd)
    p = crash_usd * WAD
    assert perps.functions.marginHealth(trader).call() < WAD
    before = market.balance("USDC", liquidator)
    cum = cumulative_at(
        perps, weth, chain.now() + 1, p
    )  # what the liquidation's block will accrue to
    receipt = send(perps.functions.liquidate(trader), liquidator)
    assert perps.functions.markets(weth.address).call()[5] == cum
    assert block_ts(chain, receipt) == chain.now()
    funding_paid = ceil_div(trunc_div(size * (cum - checkpoint), WAD), USDC_TO_WAD)
    realized = trunc_div(size * (p - P0), WAD) // USDC_TO_WAD
    left = margin - funding_paid + realized
    notional_reward = size * p // WAD * WAD // 100 // WAD // USDC_TO_WAD
    expected_reward = 0 if left <= 0 else min(notional_reward, left)
    assert (expected_reward < notional_reward) == capped
    reward = market.balance("USDC", liquidator) - before
    assert reward == expected_reward
    ev = one_event(perps, "Liquidated", receipt)
    assert (ev.account, ev.liquidator, ev.reward) == (trader, liquidator, reward)
    assert perps.functions.positionOf(trader, weth.address).call()[0] == 0
    assert perps.functions.marginOf(trader).call() == max(left - expected_reward, 0)
    assert perps.functions.marginHealth(trader).call() == 2**256 - 1


def test_relisting_a_market_keeps_accrued_funding(perps, weth, trader, admin, market, chain):
    open_position(market, perps, weth, trader, -10 * WAD)
    market.travel(3 * 24 * 3600)
    before_block = chain.w3.eth.get_block("latest")
    value = perps.functions.accountValue(trader).call(block_identifier=before_block["number"])
    receipt = send(
        perps.functions.listMarket(
            weth.address, market.c["ETH_USD"].address, PERP_MAINTENANCE, PERP_INITIAL, RATE
        ),
        admin,
    )
    block = receipt["blockNumber"]
    elapsed = chain.w3.eth.get_block(block)["timestamp"] - before_block["timestamp"]
    price = market.c["ETH_USD"].functions.latestAnswer().call() * 10**10
    # The short earns the longs' funding for the seconds the relisting took, nothing else:
    # 10 units × price × rate × elapsed (USD WAD) → USDC units. (Resetting the funding index, the
    # old bug, moved this account by ~313 USDC.)
    earned = 10 * WAD * price // WAD * RATE * elapsed // WAD // 10**12
    after = perps.functions.accountValue(trader).call(block_identifier=block)
    assert abs(after - (value + earned)) <= 1
