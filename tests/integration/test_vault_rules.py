"""The rules RiskVault enforces on every keeper action, each with the custom error it raises.

Seeded state of `vault` (rvBAL): ~216 WETH + ~10 WBTC posted, ~508k USDC debt, short 100 ETH perp
on ~100k margin, long 100 ETH puts, short 50 ETH calls; binding health = lending (~2.03);
mandate minHealth 1.30, maxLeverage 2.5, maxSlippage 50 bps.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from keeper.chain.abi import load_artifact
from tests.integration.conftest import (
    BPS,
    MANDATE_FIELDS,
    USDC_TO_WAD,
    WAD,
    ceil_div,
    events,
    expect_revert,
    mandate_with,
    one_event,
    pool_capacities,
    send,
    swap_quote,
    vault_raw_state,
)

USDC = 10**6


def price(market, feed="ETH_USD"):
    return market.price_wad(feed)


def quote_buy(swap, usdc, token, amount):
    return swap.functions.quote(usdc.address, token.address, amount).call()[0]


def quote_sell(swap, usdc, token, amount):
    return swap.functions.quote(token.address, usdc.address, amount).call()[0]


def close(actual, expected, rel=Fraction(1, 10**6)):
    return abs(Fraction(actual) - Fraction(expected)) <= rel * abs(Fraction(expected))


# ------------------------------------------------------------------------------ deadline / empty
def test_deadline_passed_for_every_keeper_action(vault, weth, keeper, chain):
    deadline = chain.now() - 1
    calls = (
        vault.functions.rebalance([], [(weth.address, -WAD, 0)], 0, deadline),
        vault.functions.hedge([(weth.address, -WAD, 0)], 0, deadline),
        vault.functions.deleverage([], [(weth.address, WAD, 10**30)], 0, deadline),
    )
    for call in calls:
        with expect_revert("VaultDeadlinePassed") as r:
            call.transact({"from": keeper})
        assert r.args[0] == deadline and r.args[1] > deadline


def test_deadline_equal_to_block_time_is_accepted(vault, weth, keeper, chain):
    """`block.timestamp > deadline` is the refusal: a deadline equal to the block time passes."""
    deadline = chain.now() + 1  # the next block's timestamp
    receipt = send(
        vault.functions.hedge([(weth.address, -WAD, 0)], 0, deadline), keeper, gas=3_000_000
    )
    assert chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"] == deadline


def test_empty_actions_are_refused(vault, keeper, chain):
    dl = chain.deadline()
    for call in (
        vault.functions.rebalance([], [], 0, dl),
        vault.functions.hedge([], 0, dl),
        vault.functions.deleverage([], [], 0, dl),
    ):
        with expect_revert("VaultEmptyAction"):
            call.transact({"from": keeper})


# ------------------------------------------------------------------------------ unknown assets
def test_unknown_assets_and_series_are_refused(vault, usdc, keeper, strategist, trader, chain):
    dl = chain.deadline()
    for outsider in (usdc.address, keeper, trader):
        with expect_revert("VaultUnknownAsset", outsider):
            vault.functions.rebalance([(outsider, True, 1_000 * USDC, 0)], [], 0, dl).transact(
                {"from": keeper}
            )
        with expect_revert("VaultUnknownAsset", outsider):
            vault.functions.deleverage([(outsider, False, 1, 0)], [], 0, dl).transact(
                {"from": keeper}
            )
        with expect_revert("VaultUnknownAsset", outsider):
            vault.functions.hedge([(outsider, WAD, 10**30)], 0, dl).transact({"from": keeper})
    with expect_revert("VaultUnknownSeries", 999):
        vault.functions.tradeOption(999, WAD, 10**12).transact({"from": strategist})


# ------------------------------------------------------------------------------ mandate
#: (field index, lowest valid, highest valid), as documented on VaultInvalidMandate's field order.
MANDATE_BOUNDS = (
    (0, 1, 5 * WAD),
    (1, WAD, 10 * WAD),
    (2, WAD * 101 // 100, 10 * WAD),
    (3, -2 * WAD, 2 * WAD),
    (4, 0, WAD),
    (5, 0, WAD - 1),
    (6, 0, 10 * WAD),
    (7, 1, WAD),
    (8, 1, 100),  # RiskVault.MAX_SLIPPAGE_BPS
)


@pytest.mark.parametrize("field,lo,hi", MANDATE_BOUNDS)
def test_out_of_bounds_mandate_fields_name_the_field(vault, strategist, field, lo, hi):
    base = list(vault.functions.mandate().call())
    bad = [hi + 1] + ([lo - 1] if field == 3 or lo > 0 else [])
    for value in bad:
        m = list(base)
        m[field] = value
        with expect_revert("VaultInvalidMandate", field, value):
            vault.functions.setMandate(tuple(m)).transact({"from": strategist})
    for value in (lo, hi):  # the bounds themselves are accepted
        m = list(base)
        m[field] = value
        vault.functions.setMandate(tuple(m)).call({"from": strategist})


def test_huge_unsigned_mandate_value_is_reported_as_its_int256_cast(vault, strategist):
    m = list(vault.functions.mandate().call())
    m[4] = 2**256 - 1
    with expect_revert("VaultInvalidMandate", 4, -1):
        vault.functions.setMandate(tuple(m)).transact({"from": strategist})


def test_mandate_updated_event_has_old_and_new(vault, strategist):
    old = tuple(vault.functions.mandate().call())
    new = mandate_with(
        vault,
        maxLeverage=3 * WAD,
        minHealth=WAD * 125 // 100,
        hedgeTarget=-WAD // 10,
        maxSlippageBps=30,
    )
    receipt = send(vault.functions.setMandate(new), strategist)
    ev = one_event(vault, "MandateUpdated", receipt)
    assert tuple(ev.oldMandate[f] for f in MANDATE_FIELDS) == old
    assert tuple(ev.newMandate[f] for f in MANDATE_FIELDS) == new
    assert tuple(vault.functions.mandate().call()) == new
    assert tuple(vault.functions.snapshot().call().mandate) == new


# ------------------------------------------------------------------------------ slippage
def test_swap_leg_beyond_max_slippage_after_fee_raise(
    vault, swap, usdc, weth, admin, keeper, market, chain
):
    send(swap.functions.setFee(100), admin)  # 1 % > the mandate's 50 bps
    amount = 10_000 * USDC + 123
    p = price(market)
    out, _impact = swap_quote(swap, usdc.address, weth.address, amount, usdc.address, p, 18)
    assert out == quote_buy(swap, usdc, weth, amount)
    fair = amount * USDC_TO_WAD * WAD // p
    min_ok = ceil_div(fair * (BPS - 50), BPS)
    assert out < min_ok
    with expect_revert("VaultSlippageExceeded", weth.address, min_ok, out):
        vault.functions.rebalance(
            [(weth.address, True, amount, 0)], [], 0, chain.deadline()
        ).transact({"from": keeper})
    # a sell leg in a deleverage is held to the same bound, against the oracle value of what is sold
    units = 3 * WAD + 7
    proceeds, _ = swap_quote(swap, weth.address, usdc.address, units, usdc.address, p, 18)
    fair_usdc = units * p // WAD // USDC_TO_WAD
    with expect_revert(
        "VaultSlippageExceeded", weth.address, ceil_div(fair_usdc * (BPS - 50), BPS), proceeds
    ):
        vault.functions.deleverage(
            [(weth.address, False, units, 0)], [], 0, chain.deadline()
        ).transact({"from": keeper})


def test_swap_leg_beyond_max_slippage_from_price_impact(
    vault, swap, usdc, wbtc, btc_feed, admin, keeper, market, chain, act
):
    """A shallow venue: 1M USD of depth, so 100k USDC of BTC moves the price 100 bps."""
    send(swap.functions.listAsset(wbtc.address, btc_feed.address, 8, 1_000_000 * WAD), admin)
    p = price(market, "BTC_USD")
    big = 100_000 * USDC
    out, impact = swap_quote(swap, usdc.address, wbtc.address, big, usdc.address, p, 8)
    assert impact == 1_000 and out == quote_buy(swap, usdc, wbtc, big)
    min_ok = ceil_div(big * USDC_TO_WAD * 10**8 // p * (BPS - 50), BPS)
    with expect_revert("VaultSlippageExceeded", wbtc.address, min_ok, out):
        vault.functions.rebalance([(wbtc.address, True, big, 0)], [], 0, chain.deadline()).transact(
            {"from": keeper}
        )
    # 2k USDC moves it 20 bps: with the 10 bps fee that is inside 50 bps, and it goes through
    small = 2_000 * USDC
    out_small, impact_small = swap_quote(
        swap, usdc.address, wbtc.address, small, usdc.address, p, 8
    )
    assert impact_small == 20
    coll = vault.functions.snapshot().call().assets[1].collateral
    _, ev, changes = act(
        vault,
        vault.functions.rebalance(
            [(wbtc.address, True, small, out_small)], [], 0, chain.deadline()
        ),
    )
    assert vault.functions.snapshot().call().assets[1].collateral == coll + out_small
    assert changes[("WBTC", swap.address)] == -out_small
    assert ev.navAfter + ceil_div(small * 50, BPS) + 1 >= ev.navBefore


def test_swap_min_out_is_passed_to_the_venue(vault, swap, usdc, weth, keeper, chain):
    amount = 5_000 * USDC
    out = quote_buy(swap, usdc, weth, amount)
    with expect_revert("SwapVenueSlippage", out, out + 1):
        vault.functions.rebalance(
            [(weth.address, True, amount, out + 1)], [], 0, chain.deadline()
        ).transact({"from": keeper})


def test_perp_fee_above_max_slippage_is_refused(vault, perps, weth, strategist, keeper, chain):
    send(vault.functions.setMandate(mandate_with(vault, maxSlippageBps=4)), strategist)
    fee = perps.functions.feeBps().call()
    assert fee == 5
    dl = chain.deadline()
    for call in (
        vault.functions.hedge([(weth.address, -WAD, 0)], 0, dl),
        vault.functions.rebalance([], [(weth.address, -WAD, 0)], 0, dl),
        vault.functions.deleverage([], [(weth.address, WAD, 10**30)], 0, dl),
    ):
        with expect_revert("VaultSlippageExceeded", perps.address, 4, fee):
            call.transact({"from": keeper})


def test_perp_limit_price_refused_and_generous_limit_clamped_to_oracle(
    vault, perps, weth, keeper, market, chain, act
):
    p = price(market)
    with expect_revert("PerpMarketLimitPrice", p, p - 1):
        vault.functions.hedge([(weth.address, WAD, p - 1)], 0, chain.deadline()).transact(
            {"from": keeper}
        )
    # A sell limit of 0 (no protection asked) is replaced by the vault's own bound;
    # it fills at the oracle.
    receipt, _ev, _ = act(
        vault, vault.functions.hedge([(weth.address, -WAD, 0)], 0, chain.deadline())
    )
    fill = one_event(perps, "PositionChanged", receipt)
    assert fill.executionPrice == p
    assert fill.fee == ceil_div(WAD * p // WAD * 5 // BPS, USDC_TO_WAD)


# ------------------------------------------------------------------------------ health / leverage
# These tests derive sizes from the live snapshot, so they hold whatever the seeded vaults hold.
def perp_health_after(snap, deltas, fee_usdc):
    """Perp margin health (WAD) after changing sizes by `deltas` (asset index → WAD size) and paying
    `fee_usdc`: (value − fee) ÷ Σ |size| × price × maintenance, as PerpMarket documents it."""
    req = 0
    for i, a in enumerate(snap.assets):
        size = a.perpSize + deltas.get(i, 0)
        req += abs(size) * a.price // WAD * a.perpMaintenanceMargin // WAD
    value = snap.perpAccountValue - fee_usdc
    return value * USDC_TO_WAD * WAD // req if req else 2**256 - 1


def perp_fee(size, p):
    return ceil_div(abs(size) * p // WAD * 5 // BPS, USDC_TO_WAD)


def test_risk_increasing_rebalance_below_min_health(
    vault, pool, swap, usdc, weth, wbtc, strategist, keeper, market, chain
):
    """A leveraged ETH buy using 90 % of the vault's borrow room lowers lending health; with the
    minimum set between the health before and the health after, it is refused with the health it
    would have left."""
    snap = vault.functions.snapshot().call()
    prices = {weth.address: price(market), wbtc.address: price(market, "BTC_USD")}
    borrow_cap, liq = pool_capacities(pool, vault.address, prices)
    room = borrow_cap // USDC_TO_WAD - snap.debt + snap.idleUsdc
    # the leg borrows its whole shortfall before the purchase is posted: it must fit today's room
    amount = room * 9 // 10
    assert amount > 100_000 * USDC
    out = quote_buy(swap, usdc, weth, amount)
    liq_after = liq + out * prices[weth.address] // WAD * 85 // 100
    debt_after = snap.debt + amount - snap.idleUsdc
    expected = min(Fraction(liq_after * WAD, debt_after * USDC_TO_WAD), snap.perpHealth)
    assert expected < snap.health
    minimum = max(int(expected + snap.health) // 2, WAD * 101 // 100)
    assert expected < minimum
    send(vault.functions.setMandate(mandate_with(vault, minHealth=minimum)), strategist)
    with expect_revert("VaultHealthTooLow") as r:
        vault.functions.rebalance(
            [(weth.address, True, amount, 0)], [], 0, chain.deadline()
        ).transact({"from": keeper})
    current, required = r.args
    assert required == minimum
    assert close(current, expected)


def test_borrowing_beyond_the_pools_capacity_is_refused(
    vault, pool, swap, usdc, weth, wbtc, keeper, market, chain
):
    """The vault's own checks sit on top of the pool's: a buy needing more debt than Σ collateral ×
    LTV (with the purchase posted after the borrow) is refused by the pool."""
    snap = vault.functions.snapshot().call()
    prices = {weth.address: price(market), wbtc.address: price(market, "BTC_USD")}
    borrow_cap, _ = pool_capacities(pool, vault.address, prices)
    room = borrow_cap // USDC_TO_WAD - snap.debt + snap.idleUsdc
    with expect_revert("LendingPoolBorrowCapacityExceeded") as r:
        vault.functions.rebalance(
            [(weth.address, True, room + 1_000 * USDC, 0)], [], 0, chain.deadline()
        ).transact({"from": keeper})
    capacity, debt_after = r.args
    assert capacity == borrow_cap // USDC_TO_WAD
    assert debt_after > capacity


def test_risk_increasing_hedge_below_min_health(vault, vault2, weth, strategist, keeper, chain):
    """Growing the ETH short until perp health would sit near 2.2 (initial margin allows down to
    2.0); with the minimum between before and after, the hedge is refused. Only a vault whose
    binding health is above 2.2 can be pushed below it by a perp trade: at least one must be."""
    tested = 0
    for v in (vault, vault2):
        snap = v.functions.snapshot().call()
        eth = snap.assets[0]
        assert eth.token == weth.address
        p = eth.price
        other_req = sum(
            abs(a.perpSize) * a.price // WAD * a.perpMaintenanceMargin // WAD
            for a in snap.assets[1:]
        )
        target_req = snap.perpAccountValue * USDC_TO_WAD * 10 // 22
        size_needed = (target_req - other_req) * WAD // (eth.perpMaintenanceMargin * p // WAD)
        delta = (
            (abs(eth.perpSize) - size_needed) // WAD * WAD
            if eth.perpSize <= 0
            else (size_needed - eth.perpSize) // WAD * WAD
        )
        expected = min(perp_health_after(snap, {0: delta}, perp_fee(delta, p)), snap.lendingHealth)
        if not (delta != 0 and 2 * WAD < expected < snap.health):
            continue
        minimum = (expected + snap.health) // 2
        send(v.functions.setMandate(mandate_with(v, minHealth=minimum)), strategist)
        with expect_revert("VaultHealthTooLow") as r:
            v.functions.hedge(
                [(weth.address, delta, 0 if delta < 0 else 2 * p)], 0, chain.deadline()
            ).transact({"from": keeper})
        assert r.args[1] == minimum
        assert close(r.args[0], expected)
        tested += 1
    assert tested >= 1


def test_risk_increasing_rebalance_above_max_leverage(
    vault, swap, usdc, weth, strategist, keeper, market, chain
):
    snap = vault.functions.snapshot().call()
    amount = 100_000 * USDC
    out = quote_buy(swap, usdc, weth, amount)
    p = price(market)
    collateral_usd = sum(a.collateral * a.price // 10**a.decimals for a in snap.assets)
    added = out * p // WAD
    nav_after = snap.totalAssets * USDC_TO_WAD - (amount * USDC_TO_WAD - added)
    expected = Fraction((collateral_usd + added) * WAD, nav_after)
    assert snap.leverage < expected
    maximum = max(int(snap.leverage + expected) // 2, WAD)
    send(vault.functions.setMandate(mandate_with(vault, maxLeverage=maximum)), strategist)
    with expect_revert("VaultLeverageTooHigh") as r:
        vault.functions.rebalance(
            [(weth.address, True, amount, 0)], [], 0, chain.deadline()
        ).transact({"from": keeper})
    assert r.args[1] == maximum
    assert close(r.args[0], expected)


# ------------------------------------------------------------------------------ deleverage rules
def test_deleverage_must_strictly_improve_health(vault, vault2, swap, usdc, weth, keeper, chain):
    """A deleverage that only helps the non-binding side leaves health unchanged and is refused:
    a margin top-up when lending health binds, a collateral sale when perp health binds."""
    for v in (vault, vault2):
        snap = v.functions.snapshot().call()
        if snap.lendingHealth < snap.perpHealth:
            i, a = _largest_perp(snap)
            if a.perpSize != 0:  # shrinking a perp only helps the perp side
                delta = WAD if a.perpSize < 0 else -WAD
                leg = (a.token, delta, a.price * 2 if delta > 0 else 0)
                call = v.functions.deleverage([], [leg], 0, chain.deadline())
            else:
                assert snap.idleUsdc > 0
                call = v.functions.deleverage(
                    [], [], min(snap.idleUsdc, 1_000 * USDC), chain.deadline()
                )
        else:
            call = v.functions.deleverage(
                [(weth.address, False, WAD, quote_sell(swap, usdc, weth, WAD))],
                [],
                0,
                chain.deadline(),
            )
        with expect_revert("VaultDeleverageNoImprovement") as r:
            call.transact({"from": keeper})
        before, after = r.args
        assert before == after
        assert close(
            before, snap.health, Fraction(1, 10**8)
        )  # read a block earlier: seconds of interest


def test_deleverage_only_sells_and_shrinks(vault, weth, wbtc, keeper, chain, act):
    snap = vault.functions.snapshot().call()
    eth_size = snap.assets[0].perpSize
    assert eth_size != 0
    grow = -WAD if eth_size < 0 else WAD
    flip = -eth_size - grow  # one unit past flat
    dl = chain.deadline()
    cases = (
        ([(weth.address, True, 1_000 * USDC, 0)], [], weth.address),  # a buy leg
        ([], [(weth.address, grow, 0 if grow < 0 else 10**30)], weth.address),  # grows the position
        ([], [(weth.address, flip, 0 if flip < 0 else 10**30)], weth.address),  # flips it
    )
    for sells, perp_legs, asset in cases:
        with expect_revert("VaultNotDeleverage", asset):
            vault.functions.deleverage(sells, perp_legs, 0, dl).transact({"from": keeper})
    btc_size = snap.assets[1].perpSize
    if btc_size != 0:  # close the BTC perp so there is no position to shrink
        act(
            vault,
            vault.functions.hedge(
                [(wbtc.address, -btc_size, 0 if btc_size > 0 else 10**30)], 0, dl
            ),
        )
    with expect_revert("VaultNotDeleverage", wbtc.address):
        vault.functions.deleverage([], [(wbtc.address, WAD, 10**30)], 0, chain.deadline()).transact(
            {"from": keeper}
        )


def test_paused_vault_refuses_risk_but_allows_deleverage(
    vault, swap, usdc, weth, guardian, keeper, pool, market, chain, act
):
    send(vault.functions.pause(), guardian)
    dl = chain.deadline()
    with expect_revert("VaultPausedRiskIncrease"):
        vault.functions.rebalance([(weth.address, True, 10_000 * USDC, 0)], [], 0, dl).transact(
            {"from": keeper}
        )
    with expect_revert("VaultPausedRiskIncrease"):
        vault.functions.hedge([(weth.address, -10 * WAD, 0)], 0, dl).transact({"from": keeper})
    snap = vault.functions.snapshot().call()
    if snap.perpHealth <= snap.lendingHealth:  # make lending bind, so selling collateral helps
        market.set_price("ETH_USD", 2_700)
    units = 20 * WAD
    proceeds = quote_sell(swap, usdc, weth, units)
    scaled_before = pool.functions.scaledDebt(vault.address).call()
    health_before = vault.functions.health().call()
    receipt, ev, changes = act(
        vault, vault.functions.deleverage([(weth.address, False, units, proceeds)], [], 0, dl)
    )
    assert ev.kind.rstrip(b"\0") == b"deleverage"
    assert ev.healthAfter > ev.healthBefore
    assert vault.functions.health().call() > health_before
    assert ev.leverageAfter < ev.leverageBefore
    # proceeds went to the pool against the vault's debt; nothing reached the vault or anyone else
    assert changes[("USDC", swap.address)] == -proceeds
    assert changes[("USDC", pool.address)] == proceeds
    assert changes[("WETH", pool.address)] == -units
    assert changes[("WETH", swap.address)] == units
    # the repayment removed proceeds ÷ index (rounded down) of scaled debt, at the block's index
    index = pool.functions.borrowIndex().call()
    assert (
        pool.functions.scaledDebt(vault.address).call() == scaled_before - proceeds * WAD // index
    )
    assert (
        ev.navAfter + ceil_div(units * price(market) // WAD // USDC_TO_WAD * 50, BPS) + 1
        >= ev.navBefore
    )
    assert vault.functions.paused().call() is True


def test_paused_vault_allows_risk_reducing_rebalance(
    vault, swap, usdc, wbtc, guardian, market, chain, act
):
    """Pause blocks only what increases risk: a sell-only rebalance still goes through."""
    send(vault.functions.pause(), guardian)
    snap = vault.functions.snapshot().call()
    if snap.perpHealth <= snap.lendingHealth:
        market.set_price("BTC_USD", 54_000)
    units = 10**8 // 2
    proceeds = quote_sell(swap, usdc, wbtc, units)
    _, ev, _ = act(
        vault,
        vault.functions.rebalance(
            [(wbtc.address, False, units, proceeds)], [], 0, chain.deadline()
        ),
    )
    assert ev.healthAfter > ev.healthBefore and ev.leverageAfter < ev.leverageBefore


def perp_binding(market, v):
    """Raise both spot prices in 5 % steps until the vault's (short) perps bind its health."""
    snap = v.functions.snapshot().call()
    base = {feed: market.answer(feed) for feed in ("ETH_USD", "BTC_USD")}
    step = 0
    while snap.perpHealth >= snap.lendingHealth:
        step += 1
        assert step <= 10, "perp health never binds"
        for feed, answer in base.items():
            market.set_answer(feed, answer * (100 + 5 * step) // 100)
        snap = v.functions.snapshot().call()
    return snap


def _largest_perp(snap):
    i = max(
        range(len(snap.assets)), key=lambda k: abs(snap.assets[k].perpSize) * snap.assets[k].price
    )
    return i, snap.assets[i]


@pytest.mark.parametrize("paused", [False, True], ids=["live", "paused"])
def test_deleverage_can_shrink_a_perp_when_perp_health_binds(
    vault2, guardian, keeper, market, chain, act, paused
):
    """Buying back half the largest short is a pure deleverage: it raises the binding health and
    adds no exposure. The perp fee (bounded by maxSlippage) lowers NAV a little, which nudges
    collateral ÷ NAV up: that must not block it, nor must pause (DESIGN: never blocks
    deleverage)."""
    before = perp_binding(market, vault2)
    i, a = _largest_perp(before)
    delta = -a.perpSize // 2
    limit = a.price * 1005 // 1000 if delta > 0 else a.price * 995 // 1000
    if paused:
        send(vault2.functions.pause(), guardian)
        with expect_revert(
            "VaultPausedRiskIncrease"
        ):  # via hedge, the fee counts as added leverage
            vault2.functions.hedge([(a.token, delta, limit)], 0, chain.deadline()).transact(
                {"from": keeper}
            )
    _, ev, _ = act(
        vault2, vault2.functions.deleverage([], [(a.token, delta, limit)], 0, chain.deadline())
    )
    after = vault2.functions.snapshot().call()
    assert after.assets[i].perpSize == a.perpSize + delta
    assert ev.healthAfter > ev.healthBefore
    expected = min(
        perp_health_after(before, {i: delta}, perp_fee(delta, a.price)), before.lendingHealth
    )
    assert close(ev.healthAfter, expected, Fraction(1, 10**5))
    assert ev.navBefore - ev.navAfter <= perp_fee(delta, a.price) + 1


# ------------------------------------------------------------------------------ stale prices
def test_keeper_actions_refuse_stale_prices(
    vault, weth, eth_feed, keeper, strategist, depositor, series, market, chain
):
    updated = eth_feed.functions.latestTimestamp().call()
    chain.increase_time(3_601)
    dl = chain.deadline()
    calls = (
        (vault.functions.rebalance([(weth.address, True, 1_000 * USDC, 0)], [], 0, dl), keeper),
        (vault.functions.hedge([(weth.address, -WAD, 0)], 0, dl), keeper),
        (vault.functions.deleverage([(weth.address, False, WAD, 0)], [], 0, dl), keeper),
        (vault.functions.tradeOption(series["ETH-P-2700"], WAD, 10**12), strategist),
    )
    for call, sender in calls:
        with expect_revert("VaultStalePrice", eth_feed.address, updated, 3_600):
            call.transact({"from": sender})
    market.refresh()
    send(vault.functions.hedge([(weth.address, -WAD, 0)], 0, chain.deadline()), keeper)


def test_price_age_boundary_is_inclusive(vault, weth, eth_feed, btc_feed, keeper, market, chain):
    """Fresh while block.timestamp <= updatedAt + maxPriceAge (eth_call at the latest block)."""
    market.refresh(with_marks=False)
    updated = max(
        eth_feed.functions.latestTimestamp().call(), btc_feed.functions.latestTimestamp().call()
    )
    assert eth_feed.functions.latestTimestamp().call() == updated - 1  # pushed one block earlier
    chain.increase_time(updated + 3_599 - chain.now())  # ETH feed exactly 3600 s old
    assert chain.now() == updated - 1 + 3_600
    call = vault.functions.hedge([(weth.address, -WAD, 0)], 0, chain.deadline())
    call.call({"from": keeper})
    chain.mine(1)
    with expect_revert("VaultStalePrice", eth_feed.address, updated - 1, 3_600):
        call.call({"from": keeper})


# ------------------------------------------------------------------------------ events and funds
@pytest.mark.parametrize("kind", ["rebalance", "hedge", "deleverage"])
def test_keeper_action_event_matches_snapshots(
    vault, pool, perps, swap, usdc, weth, wbtc, admin, keeper, market, chain, act, kind
):
    """With interest and funding set to zero, NAV does not move between blocks, so the event's
    before values equal snapshot() read before the action and its after values snapshot() after."""
    send(pool.functions.setBorrowRate(0), admin)
    for token in (weth, wbtc):
        send(perps.functions.setFundingRate(token.address, 0), admin)
    dl = chain.deadline()
    p = price(market)
    if kind == "rebalance":
        eth_in = 50_000 * USDC
        btc_out = 10**8 // 2
        fn = vault.functions.rebalance(
            [
                (weth.address, True, eth_in, quote_buy(swap, usdc, weth, eth_in)),
                (wbtc.address, False, btc_out, quote_sell(swap, usdc, wbtc, btc_out)),
            ],
            [(weth.address, -10 * WAD, p * 995 // 1000)],
            1_000 * USDC,
            dl,
        )
    elif kind == "hedge":
        fn = vault.functions.hedge([(weth.address, -25 * WAD, p * 995 // 1000)], -5_000 * USDC, dl)
    else:
        fn = vault.functions.deleverage(
            [(weth.address, False, 5 * WAD, quote_sell(swap, usdc, weth, 5 * WAD))],
            [(weth.address, 40 * WAD, p * 1005 // 1000)],
            2_000 * USDC,
            dl,
        )
    before = vault.functions.snapshot().call()
    receipt, ev, _ = act(vault, fn)
    after = vault.functions.snapshot().call(block_identifier=receipt["blockNumber"])
    assert ev.kind.rstrip(b"\0").decode() == kind
    assert ev.keeper == keeper
    assert (ev.navBefore, ev.healthBefore, ev.leverageBefore) == (
        before.totalAssets,
        before.health,
        before.leverage,
    )
    assert (ev.navAfter, ev.healthAfter, ev.leverageAfter) == (
        after.totalAssets,
        after.health,
        after.leverage,
    )
    assert after.lastActionAt == chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert before.lastActionAt < after.lastActionAt


# ------------------------------------------------------------------------------ repayDebt
def test_repay_debt_from_surplus_margin_and_idle_cash(vault, keeper, chain):
    """Surplus perp margin comes back into the vault and repays debt with its idle cash: no
    sale, NAV unchanged, lending health up; the event says "repay"."""
    snap = vault.functions.snapshot().call()
    withdraw = 10_000 * USDC  # of ~100k margin against a ~300k short: far above initial margin
    amount = withdraw + snap.idleUsdc
    receipt = send(vault.functions.repayDebt(withdraw, amount, chain.deadline()), keeper)
    after = vault.functions.snapshot().call()
    # Withdrawing settles the funding owed since seeding into margin first (~$20), so compare
    # the account's value, which already counted it.
    assert abs(after.perpAccountValue - (snap.perpAccountValue - withdraw)) < USDC
    assert after.idleUsdc == 0
    # Debt accrues for the one block between the reads (seconds of interest, < 1 USDC).
    assert 0 <= after.debt - (snap.debt - amount) < USDC
    assert after.lendingHealth > snap.lendingHealth
    assert abs(after.totalAssets - snap.totalAssets) < USDC
    (ev,) = events(vault, "KeeperAction", receipt)
    assert ev["args"]["kind"].rstrip(b"\0") == b"repay"
    assert ev["args"]["healthAfter"] > ev["args"]["healthBefore"]


def test_repay_debt_cannot_take_margin_below_initial(vault, keeper, chain):
    snap = vault.functions.snapshot().call()
    with expect_revert("PerpMarketInsufficientMargin"):
        vault.functions.repayDebt(snap.perpMargin, snap.perpMargin, chain.deadline()).transact(
            {"from": keeper}
        )


def test_repay_debt_of_nothing_is_refused(vault, keeper, chain):
    with expect_revert("VaultEmptyAction"):
        vault.functions.repayDebt(0, 0, chain.deadline()).transact({"from": keeper})
    snap = vault.functions.snapshot().call()
    send(vault.functions.repayDebt(0, snap.idleUsdc, chain.deadline()), keeper)
    # No cash left and no margin withdrawn: nothing to repay with.
    with expect_revert("VaultEmptyAction"):
        vault.functions.repayDebt(0, 10**6, chain.deadline()).transact({"from": keeper})


# ------------------------------------------------------------------- margin beyond idle cash
def lending_health_after_borrow(snap, borrowed_usdc):
    """Lending health (WAD) with `borrowed_usdc` more debt: the same Σ collateral × price ×
    threshold over the larger debt."""
    lt_value = snap.lendingHealth * snap.debt  # WAD × USDC units
    return lt_value // (snap.debt + borrowed_usdc)


def test_deleverage_borrows_the_margin_idle_cash_lacks_when_perps_bind(
    vault2, market, chain, act
):
    """With the short perps binding (prices up) and lending health to spare, a deleverage's
    margin top-up beyond idle cash is borrowed: debt up by exactly the shortfall, margin up by
    the top-up, nothing sold, NAV unchanged, binding health up to the lower of the two venues'
    new health."""
    before = perp_binding(market, vault2)
    top_up = before.idleUsdc + 50_000 * USDC
    borrowed = top_up - before.idleUsdc
    lending = lending_health_after_borrow(before, borrowed)
    perp = perp_health_after(before._replace(perpAccountValue=before.perpAccountValue + top_up),
                             {}, 0)
    assert before.perpHealth < min(lending, perp), "the case needs a top-up that cures"
    _, ev, _ = act(vault2, vault2.functions.deleverage([], [], top_up, chain.deadline()))
    after = vault2.functions.snapshot().call()
    assert 0 <= after.debt - (before.debt + borrowed) < USDC  # a block of interest
    assert after.idleUsdc == 0
    assert abs(after.perpAccountValue - (before.perpAccountValue + top_up)) < USDC
    assert [a.collateral for a in after.assets] == [a.collateral for a in before.assets]
    assert abs(after.totalAssets - before.totalAssets) < USDC
    assert ev.healthAfter > ev.healthBefore
    assert close(ev.healthAfter, min(lending, perp), Fraction(1, 10**5))


def test_deleverage_borrowing_margin_while_lending_binds_is_refused(vault, keeper, chain):
    """Seeded, the Balanced vault's lending health binds: borrowing for margin lowers it, so the
    'deleverage' would not improve health and the vault refuses it."""
    snap = vault.functions.snapshot().call()
    assert snap.lendingHealth < snap.perpHealth
    with expect_revert("VaultDeleverageNoImprovement") as r:
        vault.functions.deleverage(
            [], [], snap.idleUsdc + 10_000 * USDC, chain.deadline()
        ).transact({"from": keeper})
    assert close(r.args[0], snap.health)  # a block of interest since the read
    assert close(r.args[1], lending_health_after_borrow(snap, 10_000 * USDC), Fraction(1, 10**5))


def test_hedge_margin_beyond_idle_is_borrowed_within_min_health(
    vault, admin, guardian, strategist, keeper, chain, act
):
    """A hedge's margin beyond idle cash is borrowed like a buy's shortfall and is checked like
    any call that lowers health: refused under minHealth (VaultHealthTooLow with the lending
    health it would leave) and while paused; accepted above, NAV unchanged."""
    snap = vault.functions.snapshot().call()
    lt_value = snap.lendingHealth * snap.debt
    # Borrowing down to a lending health of 1.40 is allowed at minHealth 1.30, to 1.20 is not.
    to_140 = lt_value * 10 // (14 * WAD) - snap.debt
    to_120 = lt_value * 10 // (12 * WAD) - snap.debt
    minimum = 13 * WAD // 10
    send(vault.functions.setMandate(mandate_with(vault, minHealth=minimum)), strategist)
    with expect_revert("VaultHealthTooLow") as r:
        vault.functions.hedge([], snap.idleUsdc + to_120, chain.deadline()).transact(
            {"from": keeper}
        )
    assert r.args[1] == minimum
    assert close(r.args[0], lending_health_after_borrow(snap, to_120), Fraction(1, 10**5))
    send(vault.functions.pause(), guardian)
    with expect_revert("VaultPausedRiskIncrease"):
        vault.functions.hedge([], snap.idleUsdc + to_140, chain.deadline()).transact(
            {"from": keeper}
        )
    send(vault.functions.unpause(), admin)
    _, ev, _ = act(vault, vault.functions.hedge([], snap.idleUsdc + to_140, chain.deadline()))
    after = vault.functions.snapshot().call()
    assert 0 <= after.debt - (snap.debt + to_140) < USDC
    assert close(ev.healthAfter, 14 * WAD // 10, Fraction(1, 10**5))
    assert abs(after.totalAssets - snap.totalAssets) < USDC


def test_keeper_functions_take_no_recipient(vault):
    """No keeper-role entry point takes an address other than an `asset` (which must be listed)."""
    abi = load_artifact("RiskVault").abi
    keeper_fns = [
        f
        for f in abi
        if f.get("type") == "function"
        and f["name"] in ("rebalance", "hedge", "deleverage", "repayDebt")
    ]
    assert len(keeper_fns) == 4

    def addresses(params, path=""):
        for p in params:
            if p["type"].startswith("tuple"):
                yield from addresses(p["components"], f"{path}{p['name']}.")
            elif p["type"].startswith("address"):
                yield f"{path}{p['name']}"

    for f in keeper_fns:
        names = list(addresses(f["inputs"]))
        assert all(n.endswith(".asset") for n in names), (f["name"], names)


def test_keeper_cannot_take_shares_or_assets_of_depositors(vault, keeper, depositor):
    shares = vault.functions.balanceOf(depositor).call()
    with expect_revert(
        "ERC20InsufficientAllowance", keeper, 0, vault.functions.previewWithdraw(1).call()
    ):
        vault.functions.withdraw(1, keeper, depositor).transact({"from": keeper})
    with expect_revert("ERC20InsufficientAllowance", keeper, 0, 1):
        vault.functions.redeem(1, keeper, depositor).transact({"from": keeper})
    with expect_revert("ERC20InsufficientAllowance", keeper, 0, 1):
        vault.functions.transferFrom(depositor, keeper, 1).transact({"from": keeper})
    assert vault.functions.balanceOf(depositor).call() == shares


def test_reverted_keeper_transaction_leaves_state_unchanged(
    vault, contracts, weth, keeper, balances, chain
):
    """A refused action mined anyway (explicit gas, no estimate) changes nothing but the block."""
    state = vault_raw_state(contracts, vault)
    bal = balances.read()
    tx = vault.functions.rebalance(
        [(weth.address, True, 5_000_000 * USDC, 0)], [], 0, chain.deadline()
    ).transact({"from": keeper, "gas": 5_000_000})
    receipt = chain.w3.eth.wait_for_transaction_receipt(tx)
    assert receipt["status"] == 0
    assert events(vault, "KeeperAction", receipt) == []
    assert vault_raw_state(contracts, vault) == state
    assert balances.read() == bal
