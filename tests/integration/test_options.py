"""OptionMarket: premiums at mark ± spread with their rounding, covered shorts, settlement of calls
and puts in and out of the money, and the expiry errors. Expected values in Python integers.

Series: ETH-P-2700, ETH-C-3300, BTC-P-54000, all expiring 30 days after deployment; spread 100 bps.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from keeper.devnet.deploy import OPTION_SPREAD_BPS
from tests.integration.conftest import (
    USDC_TO_WAD,
    WAD,
    ceil_div,
    events,
    expect_revert,
    one_event,
    send,
)

USDC = 10**6
ODD = 1_234_567_890_123_456_789  # 1.234… units: exercises every rounding step


def mark_wad(market, name):
    return market.price_wad(f"{name}_MARK")


def buy_premium(mark, size):
    """mark × (1 + spread), then × size, then to USDC: each step rounded up (trader pays)."""
    unit = ceil_div(mark * (10_000 + OPTION_SPREAD_BPS), 10_000)
    return ceil_div(ceil_div(size * unit, WAD) * USDC, WAD)


def sell_premium(mark, size):
    unit = mark * (10_000 - OPTION_SPREAD_BPS) // 10_000
    return size * unit // WAD * USDC // WAD


def put_lock(strike, size):
    return ceil_div(ceil_div(size * strike, WAD) * USDC, WAD)


def expiry_of(options, sid):
    return options.functions.getSeries(sid).call().expiry


# ------------------------------------------------------------------------------ premiums
@pytest.mark.parametrize("name", ["ETH-P-2700", "ETH-C-3300", "BTC-P-54000"])
def test_buy_and_sell_premiums_round_in_the_markets_favour(options, market, series, trader, name):
    sid = series[name]
    mark = mark_wad(market, name)
    pay = buy_premium(mark, ODD)
    exact = Fraction(mark * ODD, WAD) * Fraction(10_000 + OPTION_SPREAD_BPS, 10_000) / USDC_TO_WAD
    assert pay >= exact and pay - exact < 2
    assert options.functions.quote(sid, ODD).call() == pay
    get = sell_premium(mark, ODD)
    exact_sell = (
        Fraction(mark * ODD, WAD) * Fraction(10_000 - OPTION_SPREAD_BPS, 10_000) / USDC_TO_WAD
    )
    assert get <= exact_sell and exact_sell - get < 1
    assert options.functions.quote(sid, -ODD).call() == get

    market.fund("USDC", trader, pay, options.address)
    with expect_revert("OptionMarketPremiumLimit", pay, pay - 1):
        options.functions.trade(sid, ODD, pay - 1).transact({"from": trader})
    receipt = send(options.functions.trade(sid, ODD, pay), trader)
    assert market.balance("USDC", trader) == 0
    assert tuple(options.functions.positionOf(trader, sid).call()) == (ODD, 0)
    ev = one_event(options, "Traded", receipt)
    assert (ev.sizeBefore, ev.sizeAfter, ev.premium) == (0, ODD, pay)
    # selling back what is held receives the floored bid and locks nothing
    with expect_revert("OptionMarketPremiumLimit", get, get + 1):
        options.functions.trade(sid, -ODD, get + 1).transact({"from": trader})
    send(options.functions.trade(sid, -ODD, get), trader)
    assert market.balance("USDC", trader) == get
    assert tuple(options.functions.positionOf(trader, sid).call()) == (0, 0)


def test_short_call_locks_the_underlying(options, market, series, trader):
    sid = series["ETH-C-3300"]
    market.fund("WETH", trader, ODD, options.address)
    get = sell_premium(mark_wad(market, "ETH-C-3300"), ODD)
    send(options.functions.trade(sid, -ODD, get), trader)
    assert tuple(options.functions.positionOf(trader, sid).call()) == (
        -ODD,
        ODD,
    )  # 18 decimals: one for one
    assert market.balance("WETH", trader) == 0
    assert market.balance("USDC", trader) == get
    # buying half back releases half the lock
    half = ODD // 2
    pay = buy_premium(mark_wad(market, "ETH-C-3300"), half)
    market.approve("USDC", trader, options.address, pay)
    send(options.functions.trade(sid, half, pay), trader)
    assert tuple(options.functions.positionOf(trader, sid).call()) == (-(ODD - half), ODD - half)
    assert market.balance("WETH", trader) == half
    assert market.balance("USDC", trader) == get - pay


@pytest.mark.parametrize("name,strike_usd", [("ETH-P-2700", 2_700), ("BTC-P-54000", 54_000)])
def test_short_put_locks_strike_times_size_in_usdc(
    options, market, series, trader, name, strike_usd
):
    sid = series[name]
    size = ODD // 10 if strike_usd > 10_000 else ODD
    lock = put_lock(strike_usd * WAD, size)
    get = sell_premium(mark_wad(market, name), size)
    market.fund("USDC", trader, lock, options.address)
    send(options.functions.trade(sid, -size, get), trader)
    assert tuple(options.functions.positionOf(trader, sid).call()) == (-size, lock)
    assert market.balance("USDC", trader) == get  # paid the lock, received the premium
    assert lock >= Fraction(size * strike_usd, WAD) * USDC


# ------------------------------------------------------------------------------ settlement
def _open_book(options, market, series, long_acct, short_acct):
    """long: 2 calls and 3 puts (ETH); short: 1.5 calls and 2.5 puts, covered."""
    call, put = series["ETH-C-3300"], series["ETH-P-2700"]
    book = {
        "long_call": 2 * WAD,
        "long_put": 3 * WAD,
        "short_call": 3 * WAD // 2,
        "short_put": 5 * WAD // 2,
    }
    market.fund("USDC", long_acct, 10_000 * USDC, options.address)
    send(options.functions.trade(call, book["long_call"], 10**12), long_acct)
    send(options.functions.trade(put, book["long_put"], 10**12), long_acct)
    market.fund("WETH", short_acct, book["short_call"], options.address)
    market.fund("USDC", short_acct, put_lock(2_700 * WAD, book["short_put"]), options.address)
    send(options.functions.trade(call, -book["short_call"], 0), short_acct)
    send(options.functions.trade(put, -book["short_put"], 0), short_acct)
    return book


@pytest.mark.parametrize(
    "settle_usd", [3_600, 2_400, 3_000], ids=["calls-itm", "puts-itm", "both-otm"]
)
def test_settlement_of_calls_and_puts(options, market, series, trader, trader2, chain, settle_usd):
    book = _open_book(options, market, series, trader, trader2)
    call, put = series["ETH-C-3300"], series["ETH-P-2700"]
    expiry = expiry_of(options, call)
    chain.increase_time(expiry - chain.now() + 60)
    market.set_price("ETH_USD", settle_usd)
    price = settle_usd * WAD
    call_iv, put_iv = max(price - 3_300 * WAD, 0), max(2_700 * WAD - price, 0)

    usdc0 = {a: market.balance("USDC", a) for a in (trader, trader2)}
    weth0 = market.balance("WETH", trader2)
    r1 = send(
        options.functions.settle(call, trader), trader2
    )  # anyone may settle; proceeds to the holder
    assert one_event(options, "SettlementPriceSet", r1).price == price
    send(options.functions.settle(put, trader), trader)
    long_payout = (
        book["long_call"] * call_iv // WAD * USDC // WAD
        + book["long_put"] * put_iv // WAD * USDC // WAD
    )
    assert market.balance("USDC", trader) - usdc0[trader] == long_payout

    market.set_price("ETH_USD", settle_usd + 500)  # the settlement price is fixed once set
    r3 = send(options.functions.settle(call, trader2), trader2)
    send(options.functions.settle(put, trader2), trader2)
    owed_call = ceil_div(ceil_div(book["short_call"] * call_iv, price) * WAD, WAD)
    owed_put = ceil_div(ceil_div(book["short_put"] * put_iv, WAD) * USDC, WAD)
    assert market.balance("WETH", trader2) - weth0 == book["short_call"] - owed_call
    assert (
        market.balance("USDC", trader2) - usdc0[trader2]
        == put_lock(2_700 * WAD, book["short_put"]) - owed_put
    )
    ev = one_event(options, "Settled", r3)
    assert (ev.size, ev.usdcPaid, ev.underlyingReturned) == (
        -book["short_call"],
        0,
        book["short_call"] - owed_call,
    )
    assert options.functions.getSeries(call).call().settlementPrice == price
    assert options.functions.markPrice(call).call()[0] == call_iv
    for acct in (trader, trader2):
        for sid in (call, put):
            assert tuple(options.functions.positionOf(acct, sid).call()) == (0, 0)
            with expect_revert("OptionMarketNoPosition", sid, acct):
                options.functions.settle(sid, acct).transact({"from": acct})
    if settle_usd == 3_600:  # 2 × 300 paid to the long; 1.5 × 300 / 3,600 ETH kept from the short
        assert long_payout == 600 * USDC and owed_call == WAD // 8
    if settle_usd == 3_000:
        assert long_payout == 0 and owed_call == 0 and owed_put == 0


def test_vault_settles_its_options_into_cash_and_collateral(
    vault, options, pool, weth, market, series, chain, usdc
):
    """rvBAL holds 100 long ETH-P-2700 and 50 short ETH-C-3300. At 2,400 the puts pay 300 each;
    the calls expire worthless and their 50 WETH go back into the lending pool as collateral."""
    put, call = series["ETH-P-2700"], series["ETH-C-3300"]
    assert tuple(options.functions.positionOf(vault.address, put).call()) == (100 * WAD, 0)
    assert tuple(options.functions.positionOf(vault.address, call).call()) == (-50 * WAD, 50 * WAD)
    chain.increase_time(expiry_of(options, put) - chain.now() + 60)
    market.set_price("ETH_USD", 2_400)
    idle0 = market.balance("USDC", vault.address)
    coll0 = pool.functions.collateralOf(vault.address, weth.address).call()
    r1 = send(vault.functions.settleOption(put), chain.w3.eth.accounts[9])
    r2 = send(vault.functions.settleOption(call), chain.w3.eth.accounts[9])
    assert market.balance("USDC", vault.address) - idle0 == 30_000 * USDC
    assert pool.functions.collateralOf(vault.address, weth.address).call() - coll0 == 50 * WAD
    e1, e2 = one_event(vault, "OptionSettled", r1), one_event(vault, "OptionSettled", r2)
    assert (e1.seriesId, e1.usdcReceived, e1.underlyingReceived) == (put, 30_000 * USDC, 0)
    assert (e2.seriesId, e2.usdcReceived, e2.underlyingReceived) == (call, 0, 50 * WAD)
    assert [o.seriesId for o in vault.functions.snapshot().call().options] == []
    assert events(usdc, "Transfer", r1)[0]["args"]["to"] == vault.address


# ------------------------------------------------------------------------------ expiry errors
def test_settle_before_expiry_is_refused(options, series, trader):
    sid = series["ETH-P-2700"]
    with expect_revert("OptionMarketNotExpired", sid, expiry_of(options, sid)):
        options.functions.settle(sid, trader).transact({"from": trader})


def test_trade_after_expiry_is_refused(options, series, trader, market, chain):
    sid = series["ETH-C-3300"]
    expiry = expiry_of(options, sid)
    chain.increase_time(expiry - chain.now())
    market.refresh()
    with expect_revert("OptionMarketExpired", sid, expiry):
        options.functions.trade(sid, WAD, 10**12).transact({"from": trader})


def test_settlement_needs_a_spot_round_at_or_after_expiry(
    options, series, eth_feed, trader, vault, market, chain
):
    sid = series["ETH-P-2700"]
    expiry = expiry_of(options, sid)
    updated = eth_feed.functions.latestTimestamp().call()
    chain.increase_time(expiry - chain.now() + 3_600)
    with expect_revert("OptionMarketSettlementPriceStale", sid, updated, expiry):
        options.functions.settle(sid, vault.address).transact({"from": trader})
    market.set_price("ETH_USD", 2_500)
    send(options.functions.settle(sid, vault.address), trader)
    assert options.functions.getSeries(sid).call().settlementPrice == 2_500 * WAD


def test_settlement_price_is_the_first_round_at_expiry_not_the_latest(
    vault, options, series, trader, market, chain
):
    """The put expires with ETH at 2,400; nobody settles for a day while ETH recovers to 3,000.
    Before, the first caller's price (3,000: the puts worthless) was taken; now the first round
    at or after expiry (2,400: 300 a put) settles it, and the NAV marks the expired puts there
    before anyone settles."""
    put = series["ETH-P-2700"]
    expiry = expiry_of(options, put)
    chain.increase_time(expiry - chain.now() + 60)
    market.set_price("ETH_USD", 2_400)  # the first round after expiry
    for px in (2_600, 2_800, 3_000):  # later rounds, hours apart
        chain.increase_time(8 * 3_600)
        market.set_price("ETH_USD", px)
    assert options.functions.markPrice(put).call()[0] == 300 * WAD
    assert options.functions.positionValue(vault.address, put).call() == 100 * 300 * WAD
    r = send(options.functions.settle(put, vault.address), trader)
    assert one_event(options, "SettlementPriceSet", r).price == 2_400 * WAD
    assert one_event(options, "Settled", r).usdcPaid == 30_000 * USDC
