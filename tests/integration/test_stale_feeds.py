"""Every venue refuses a feed older than its maxPriceAge (3,600 s) with
OracleStalePrice(feed, updatedAt, maxAge), while the views a keeper reads keep answering."""

from __future__ import annotations

from keeper.devnet.deploy import MAX_PRICE_AGE_S
from tests.integration.conftest import WAD, expect_revert, send

USDC = 10**6


def _stale_setup(market, pool, perps, options, weth, trader, series):
    """trader: 10 WETH posted, 10,000 borrowed, a 5 ETH perp long, 2 ETH puts; 3,601 s pass."""
    market.fund("WETH", trader, 10 * WAD, pool.address)
    send(pool.functions.depositCollateral(weth.address, 10 * WAD), trader)
    send(pool.functions.borrow(10_000 * USDC), trader)
    market.approve("USDC", trader, perps.address)
    send(perps.functions.depositMargin(5_000 * USDC), trader)
    send(perps.functions.trade(weth.address, 5 * WAD, 10**30), trader)
    market.approve("USDC", trader, options.address)
    send(options.functions.trade(series["ETH-P-2700"], 2 * WAD, 10**12), trader)
    market.chain.increase_time(MAX_PRICE_AGE_S + 1)


def test_every_venue_refuses_stale_prices(
    pool, swap, perps, options, usdc, weth, eth_feed, marks, trader, liquidator, market, series
):
    _stale_setup(market, pool, perps, options, weth, trader, series)
    eth_at = eth_feed.functions.latestTimestamp().call()
    stale_eth = ("OracleStalePrice", eth_feed.address, eth_at, MAX_PRICE_AGE_S)
    mark = marks["ETH-P-2700"]
    stale_mark = (
        "OracleStalePrice",
        mark.address,
        mark.functions.latestTimestamp().call(),
        MAX_PRICE_AGE_S,
    )

    # lending pool: borrow, withdraw with debt, liquidation
    with expect_revert(*stale_eth):
        pool.functions.borrow(1 * USDC).transact({"from": trader})
    with expect_revert(*stale_eth):
        pool.functions.withdrawCollateral(weth.address, WAD, trader).transact({"from": trader})
    with expect_revert(*stale_eth):
        pool.functions.liquidate(trader, weth.address, USDC).transact({"from": liquidator})
    # swap venue: the quote view (eth_call) and the swap
    with expect_revert(*stale_eth):
        swap.functions.quote(usdc.address, weth.address, 1_000 * USDC).call()
    with expect_revert(*stale_eth):
        swap.functions.swap(usdc.address, weth.address, 1_000 * USDC, 0, trader).transact(
            {"from": trader}
        )
    # perps: trading and withdrawing margin against open positions
    with expect_revert(*stale_eth):
        perps.functions.trade(weth.address, WAD, 10**30).transact({"from": trader})
    with expect_revert(*stale_eth):
        perps.functions.withdrawMargin(USDC).transact({"from": trader})
    # options: priced from the series' mark feed
    with expect_revert(*stale_mark):
        options.functions.quote(series["ETH-P-2700"], WAD).call()
    with expect_revert(*stale_mark):
        options.functions.trade(series["ETH-P-2700"], WAD, 10**12).transact({"from": trader})

    # after fresh rounds, everything works again
    market.refresh()
    send(pool.functions.borrow(1 * USDC), trader)
    send(perps.functions.trade(weth.address, WAD, 10**30), trader)
    send(options.functions.trade(series["ETH-P-2700"], WAD, 10**12), trader)
    assert swap.functions.quote(usdc.address, weth.address, 1_000 * USDC).call()[0] > 0


def test_views_keep_answering_on_stale_feeds(
    vault, pool, perps, options, weth, trader, market, series
):
    _stale_setup(market, pool, perps, options, weth, trader, series)
    snap = vault.functions.snapshot().call()
    assert snap.timestamp - snap.assets[0].priceUpdatedAt > snap.maxPriceAge == MAX_PRICE_AGE_S
    assert snap.assets[0].price == 3_000 * WAD and snap.totalAssets > 0
    assert vault.functions.totalAssets().call() == snap.totalAssets
    assert vault.functions.health().call() == snap.health
    assert pool.functions.healthFactor(trader).call() > WAD
    assert pool.functions.debtOf(trader).call() > 10_000 * USDC
    assert perps.functions.marginHealth(trader).call() > WAD
    assert perps.functions.positionOf(trader, weth.address).call()[0] == 5 * WAD
    assert options.functions.markPrice(series["ETH-P-2700"]).call()[0] > 0


def test_non_positive_answers_are_refused_but_read_as_zero(
    vault, swap, usdc, weth, eth_feed, keeper, market, chain
):
    market.set_answer("ETH_USD", 0)
    with expect_revert("OracleInvalidPrice", eth_feed.address, 0):
        swap.functions.quote(usdc.address, weth.address, 1_000 * USDC).call()
    with expect_revert(
        "VaultStalePrice",
        eth_feed.address,
        eth_feed.functions.latestTimestamp().call(),
        MAX_PRICE_AGE_S,
    ):
        vault.functions.hedge([(weth.address, -WAD, 0)], 0, chain.deadline()).transact(
            {"from": keeper}
        )
    snap = vault.functions.snapshot().call()
    assert snap.assets[0].price == 0


def test_each_venue_has_its_own_price_age(swap, usdc, weth, admin, chain):
    send(swap.functions.setMaxPriceAge(10 * MAX_PRICE_AGE_S), admin)
    chain.increase_time(MAX_PRICE_AGE_S + 1)
    assert swap.functions.quote(usdc.address, weth.address, 1_000 * USDC).call()[0] > 0
