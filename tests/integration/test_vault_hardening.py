"""Hardening of the bundled contracts (issue 9, "Contracts"): each test names the defect and what
it failed with on the bytecode before the fix.

Seeded `vault` (rvBAL): WETH and WBTC listed, long 100 ETH-P-2700, short 50 ETH-C-3300 (tracked
in that order), mandate maxSlippageBps 50; ETH at 3 000, BTC at 60 000; perp fee 5 bps.
"""

from __future__ import annotations

import pytest

from keeper.devnet.deploy import MAX_PRICE_AGE_S, OPTION_TENOR_S, VAULT_SPECS
from keeper.risk.types import MAX_SLIPPAGE_BPS as MANDATE_SLIPPAGE_CAP
from tests.integration.conftest import (
    WAD,
    expect_revert,
    mandate_with,
    one_event,
    send,
)
from tests.integration.fresh import deploy_contract, fresh_vault

USDC = 10**6
#: RiskVault.MAX_PRICE_AGE_LIMIT and MAX_SLIPPAGE_BPS, as the contract documents them.
ONE_DAY_S = 86_400
SLIPPAGE_CAP_BPS = 100


# ------------------------------------------------------------------------------ 1. duplicate asset
def test_add_asset_refuses_a_listed_token_or_usdc(
    vault, weth, usdc, eth_feed, eth_iv, admin, market
):
    """Before: `addAsset(WETH, …)` on a vault that lists WETH succeeded, and an idle WETH balance
    then counted twice in NAV (with 1 idle WETH, totalAssets rose by another 3 000 USDC).
    Failed with: "expected revert VaultDuplicateAsset, but nothing reverted"."""
    market.mint("WETH", vault.address, WAD)  # idle: NAV counts it once per listing
    nav = vault.functions.totalAssets().call()
    with expect_revert("VaultDuplicateAsset", weth.address):
        vault.functions.addAsset(weth.address, eth_feed.address, eth_iv.address).transact(
            {"from": admin}
        )
    # USDC is the vault's own asset: listing it would count idle cash twice too.
    with expect_revert("VaultDuplicateAsset", usdc.address):
        vault.functions.addAsset(usdc.address, eth_feed.address, eth_iv.address).transact(
            {"from": admin}
        )
    assert len(vault.functions.snapshot().call().assets) == 2
    assert vault.functions.totalAssets().call() == nav


# ------------------------------------------------------------------------------ 2. mark freshness
def test_deposit_and_withdraw_refuse_a_stale_option_mark(
    vault, marks, weth, depositor, keeper, market, chain
):
    """Before: the deposit/withdraw gate read only the spot feeds, so with both option marks an
    hour stale (spot fresh) the deposit went through at a NAV priced off stale marks.
    Failed with: "expected revert VaultStalePrice, but nothing reverted"."""
    market.fund("USDC", depositor, 1_000 * USDC, vault.address)
    put, call = marks["ETH-P-2700"], marks["ETH-C-3300"]
    put_at = put.functions.latestTimestamp().call()
    call_at = call.functions.latestTimestamp().call()
    chain.increase_time(MAX_PRICE_AGE_S + 1)
    market.refresh(with_marks=False)  # spot feeds fresh, marks not
    stale_put = ("VaultStalePrice", put.address, put_at, MAX_PRICE_AGE_S)
    with expect_revert(*stale_put):
        vault.functions.deposit(1_000 * USDC, depositor).transact({"from": depositor})
    with expect_revert(*stale_put):
        vault.functions.mint(1_000, depositor).transact({"from": depositor})
    with expect_revert(*stale_put):
        vault.functions.withdraw(USDC, depositor, depositor).transact({"from": depositor})
    with expect_revert(*stale_put):
        vault.functions.redeem(1_000, depositor, depositor).transact({"from": depositor})
    # every tracked series is checked, not only the first
    market.set_answer("ETH-P-2700_MARK", market.answer("ETH-P-2700_MARK"))
    with expect_revert("VaultStalePrice", call.address, call_at, MAX_PRICE_AGE_S):
        vault.functions.deposit(1_000 * USDC, depositor).transact({"from": depositor})
    # keeper actions keep the spot-only gate: a stale mark must never block a deleverage
    send(vault.functions.hedge([(weth.address, -WAD, 0)], 0, chain.deadline()), keeper)
    market.set_answer("ETH-C-3300_MARK", market.answer("ETH-C-3300_MARK"))
    send(vault.functions.deposit(1_000 * USDC, depositor), depositor)


def test_an_expired_series_mark_does_not_block_deposits(vault, marks, depositor, market, chain):
    """After expiry a series is valued from its settlement price (the spot feed's first round at
    or after expiry), not its mark feed: a mark left stale then must not lock the vault before
    anyone settles."""
    market.fund("USDC", depositor, 1_000 * USDC, vault.address)
    chain.increase_time(OPTION_TENOR_S + 1)
    market.refresh(with_marks=False)
    put = marks["ETH-P-2700"]
    assert chain.now() - put.functions.latestTimestamp().call() > MAX_PRICE_AGE_S
    send(vault.functions.deposit(1_000 * USDC, depositor), depositor)


# ------------------------------------------------------------------------------ 5. maxPriceAge
def test_max_price_age_is_bounded(vault, admin, w3, deployment, usdc):
    """Before: setMaxPriceAge took any value — 0 (every feed refused but in its own block) or
    10**9 s (a feed dead for 30 years accepted). Bound: 1 s ≤ maxAge ≤ 1 day, the longest
    Chainlink heartbeat. Failed with: "expected revert VaultInvalidMaxPriceAge, but nothing
    reverted"."""
    for bad in (0, ONE_DAY_S + 1, 10**9):
        with expect_revert("VaultInvalidMaxPriceAge", bad, ONE_DAY_S):
            vault.functions.setMaxPriceAge(bad).transact({"from": admin})
    assert vault.functions.maxPriceAge().call() == MAX_PRICE_AGE_S
    for good in (1, ONE_DAY_S):
        receipt = send(vault.functions.setMaxPriceAge(good), admin)
        ev = one_event(vault, "MaxPriceAgeUpdated", receipt)
        assert ev.newMaxAge == good == vault.functions.maxPriceAge().call()
    # the constructor holds the same bound
    c = deployment.contracts
    args = (
        usdc.address,
        "x",
        "x",
        c["LendingPool"],
        c["SwapVenue"],
        c["PerpMarket"],
        c["OptionMarket"],
        VAULT_SPECS[0].mandate,
        0,
        admin,
    )
    with expect_revert("VaultInvalidMaxPriceAge", 0, ONE_DAY_S):
        deploy_contract(w3, "RiskVault", args, admin)
    assert vault.functions.MAX_PRICE_AGE_LIMIT().call() == ONE_DAY_S


# ------------------------------------------------------------------------------ 7. slippage cap
def test_mandate_max_slippage_is_capped_at_100_bps(vault, vault2, strategist):
    """Before: the mandate accepted maxSlippageBps up to 1 000 (10 % per leg and on NAV per
    call). Cap: 100 bps. Failed with: "expected revert VaultInvalidMandate, but nothing
    reverted" (101 was accepted)."""
    for v in (vault, vault2):
        for bad in (SLIPPAGE_CAP_BPS + 1, 1_000):
            with expect_revert("VaultInvalidMandate", 8, bad):
                v.functions.setMandate(mandate_with(v, maxSlippageBps=bad)).transact(
                    {"from": strategist}
                )
        send(v.functions.setMandate(mandate_with(v, maxSlippageBps=SLIPPAGE_CAP_BPS)), strategist)
        assert v.functions.mandate().call()[8] == SLIPPAGE_CAP_BPS
    assert vault.functions.MAX_SLIPPAGE_BPS().call() == SLIPPAGE_CAP_BPS == MANDATE_SLIPPAGE_CAP
    for spec in VAULT_SPECS:  # the seeded mandates stay valid
        assert 1 <= spec.mandate[8] <= SLIPPAGE_CAP_BPS


# ------------------------------------------------------------------------------ 4. budget rounding
def _perp_budget_vault(w3, deployment, usdc, keeper, market):
    mandate = VAULT_SPECS[0].mandate[:8] + (5,)  # maxSlippageBps = the perp fee, 5 bps
    v = fresh_vault(w3, deployment, usdc.address, mandate=mandate, assets=True, keeper=keeper)
    depositor = deployment.accounts["depositor"]
    market.fund("USDC", depositor, 100_000 * USDC, v.address)
    send(v.functions.deposit(100_000 * USDC, depositor), depositor)
    return v


#: ETH 1.0000001 at 3 000 = 3 000.0003 USD; BTC 0.10000001 at 60 000 = 6 000.0006 USD.
ETH_SIZE = 1_000_000_100_000_000_000
BTC_SIZE = 100_000_010_000_000_000


def test_keeper_loss_budget_rounds_down(w3, deployment, usdc, weth, wbtc, keeper, market, chain):
    """A fresh vault (100 000 USDC idle, no positions) at maxSlippageBps = perp fee = 5 bps opens
    two perp longs, so NAV falls by exactly the two fees (oracle fills, no funding yet):
      ETH notional 3 000.0003 USD = 3 000 000 300 units: fee ⌈1 500 000.15⌉ = 1 500 001,
        budget ⌊1 500 000.15⌋ = 1 500 000 (was ⌈⌉ = 1 500 001);
      BTC notional 6 000.0006 USD = 6 000 000 600 units: fee ⌈3 000 000.3⌉ = 3 000 001,
        budget 3 000 000 (was 3 000 001).
    Loss 4 500 002 > budget 4 500 000 + 1 unit of rounding: refused. Before, the ceiled budget
    4 500 002 let the keeper take every rounding unit; failed with: "expected revert
    VaultNavLoss, but nothing reverted"."""
    assert market.price_wad("ETH_USD") == 3_000 * WAD
    assert market.price_wad("BTC_USD") == 60_000 * WAD
    v = _perp_budget_vault(w3, deployment, usdc, keeper, market)
    nav = v.functions.totalAssets().call()
    assert nav == 100_000 * USDC
    legs = [(weth.address, ETH_SIZE, 10**30), (wbtc.address, BTC_SIZE, 10**30)]
    with expect_revert("VaultNavLoss", nav, nav - 4_500_002, 4_500_000):
        v.functions.hedge(legs, 10_000 * USDC, chain.deadline()).transact({"from": keeper})
    # One such leg still fits: loss 1 500 001 = budget 1 500 000 + the 1 unit the check allows.
    receipt = send(v.functions.hedge(legs[:1], 10_000 * USDC, chain.deadline()), keeper)
    ev = one_event(v, "KeeperAction", receipt)
    assert (ev.navBefore, ev.navAfter) == (nav, nav - 1_500_001)


# ---------------------------------------------------------------------------- 9. one leg per asset
def test_a_keeper_call_cannot_round_trip_an_asset(vault, swap, usdc, weth, wbtc, keeper, chain):
    """Before: rebalance accepted a buy and a sell of WETH in one call (and two sells, or two perp
    legs on one asset), so a keeper could round-trip an asset through the venue's fee inside one
    NAV budget. Failed with: "expected revert VaultDuplicateLeg, but nothing reverted"."""
    dl = chain.deadline()
    buy = (weth.address, True, 10_000 * USDC, 0)
    sell = (weth.address, False, 3 * WAD, 0)
    for call in (
        vault.functions.rebalance([buy, sell], [], 0, dl),
        vault.functions.rebalance([sell, buy], [], 0, dl),
        vault.functions.rebalance([sell, sell], [], 0, dl),
        vault.functions.deleverage([sell, (wbtc.address, False, 10**6, 0), sell], [], 0, dl),
        vault.functions.hedge([(weth.address, -WAD, 0), (weth.address, WAD, 10**30)], 0, dl),
        vault.functions.rebalance([], [(weth.address, -WAD, 0), (weth.address, -WAD, 0)], 0, dl),
        vault.functions.deleverage([], [(weth.address, WAD, 10**30)] * 2, 0, dl),
    ):
        with expect_revert("VaultDuplicateLeg", weth.address):
            call.transact({"from": keeper})


def test_split_buys_and_a_hedge_on_one_asset_still_go_through(
    vault, swap, usdc, weth, wbtc, keeper, chain, act
):
    """What the keeper sends today stays allowed: a leveraged buy split into several buy legs
    (keeper.legs.leverage_legs), a perp leg on the asset bought, and a sell of another asset."""
    legs = []
    for amount in (20_000 * USDC, 10_000 * USDC):
        out = swap.functions.quote(usdc.address, weth.address, amount).call()[0]
        legs.append((weth.address, True, amount, out))
    units = 10**6  # 0.01 WBTC
    legs.insert(0, (wbtc.address, False, units, 0))
    coll = vault.functions.snapshot().call().assets[0].collateral
    _, ev, _ = act(
        vault,
        vault.functions.rebalance(legs, [(weth.address, -WAD, 0)], 0, chain.deadline()),
    )
    assert vault.functions.snapshot().call().assets[0].collateral == coll + legs[1][3] + legs[2][3]
    assert ev.navAfter < ev.navBefore


# ------------------------------------------------------------------------------ 6. SwapVenue costs
def test_swap_venue_refuses_fee_plus_impact_of_100_percent(
    swap, usdc, weth, eth_feed, admin, trader, market
):
    """A 1M USD deep WETH listing: a 500 000 USDC buy has impact min(5 000, 5 000) bps. With the
    fee at 6 000 bps, fee + impact = 110 % and `BPS - fee - impact` underflowed.
    Failed with: "expected SwapVenueCostTooHigh, got Panic(17)"."""
    send(swap.functions.listAsset(weth.address, eth_feed.address, 18, 1_000_000 * WAD), admin)
    amount = 500_000 * USDC
    market.fund("USDC", trader, amount, swap.address)
    for fee in (6_000, 5_000):  # 110 % and exactly 100 % (nothing would be paid out)
        send(swap.functions.setFee(fee), admin)
        with expect_revert("SwapVenueCostTooHigh", fee, 5_000):
            swap.functions.quote(usdc.address, weth.address, amount).call()
        with expect_revert("SwapVenueCostTooHigh", fee, 5_000):
            swap.functions.swap(usdc.address, weth.address, amount, 0, trader).transact(
                {"from": trader}
            )
    # 99.99 %: 1 bps of 500 000 USD = 50 USD of ETH at 3 000 = 0.016666… ETH, floored
    send(swap.functions.setFee(4_999), admin)
    out, impact = swap.functions.quote(usdc.address, weth.address, amount).call()
    assert (out, impact) == (16_666_666_666_666_666, 5_000)


@pytest.mark.parametrize("fee", [10, 4_999])
def test_swap_venue_small_trades_unaffected(swap, usdc, weth, admin, fee):
    """A 1 000 USDC buy at the seeded depth has 1 bps of impact: any fee below 9 999 quotes."""
    send(swap.functions.setFee(fee), admin)
    out, impact = swap.functions.quote(usdc.address, weth.address, 1_000 * USDC).call()
    assert impact == 1
    assert out == 1_000 * USDC * 10**12 * (10_000 - fee - 1) // 10_000 * WAD // (3_000 * WAD)
