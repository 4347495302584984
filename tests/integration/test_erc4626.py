"""ERC-4626 on the vault: conversions round in the vault's favour, withdrawals are served from idle
USDC only, deposits stop when paused or when prices are stale.

OpenZeppelin's formulas with the vault's decimals offset of 6 (V = 10^6 virtual shares against
one virtual asset unit), checked here in Python integers:
  previewDeposit(a) = ⌊a (S+V) / (A+1)⌋    previewMint(s)     = ⌈s (A+1) / (S+V)⌉
  previewRedeem(s)  = ⌊s (A+1) / (S+V)⌋    previewWithdraw(a) = ⌈a (S+V) / (A+1)⌉
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import ceil_div, expect_revert, one_event, send

USDC = 10**6
#: Virtual shares: 10 ** RiskVault.DECIMALS_OFFSET.
V = 10**6
ODD_ASSETS = (1, 7, 1_234_567_891, 98_765_432_109)
ODD_SHARES = (1, 3, 777_777_777, 55_555_555_555)


def a_s(vault, block="latest"):
    return vault.functions.totalAssets().call(
        block_identifier=block
    ), vault.functions.totalSupply().call(block_identifier=block)


@pytest.mark.parametrize("num,den", [(1, 1), (113, 100)], ids=["nav<supply", "nav>supply"])
def test_previews_round_in_the_vaults_favour(vault, market, num, den):
    market.scale_prices(num, den)
    A, S = a_s(vault)
    assert A != S  # the share price is off 1:1, so rounding shows
    f = vault.functions
    for a in ODD_ASSETS:
        assert f.previewDeposit(a).call() == a * (S + V) // (A + 1) == f.convertToShares(a).call()
        assert f.previewWithdraw(a).call() == ceil_div(a * (S + V), A + 1)
    for s in ODD_SHARES:
        assert f.previewMint(s).call() == ceil_div(s * (A + 1), S + V)
        assert f.previewRedeem(s).call() == s * (A + 1) // (S + V) == f.convertToAssets(s).call()
    # round trips never create value for the caller
    for a in ODD_ASSETS[1:]:
        assert f.previewMint(f.previewDeposit(a).call()).call() <= a
        assert f.previewRedeem(f.previewWithdraw(a).call()).call() >= a


def test_deposit_mints_floor_shares(vault, market, depositor):
    a = 1_234_567_891
    market.fund("USDC", depositor, a, vault.address)
    S = vault.functions.totalSupply().call()
    shares0 = vault.functions.balanceOf(depositor).call()
    receipt = send(vault.functions.deposit(a, depositor), depositor)
    A_then = vault.functions.totalAssets().call(block_identifier=receipt["blockNumber"]) - a
    shares = vault.functions.balanceOf(depositor).call() - shares0
    assert shares == a * (S + V) // (A_then + 1)
    ev = one_event(vault, "Deposit", receipt)
    assert (ev.sender, ev.owner, ev.assets, ev.shares) == (depositor, depositor, a, shares)
    assert shares * (A_then + 1) <= a * (S + V)  # never more than the deposit is worth


def test_mint_pulls_ceil_assets(vault, market, depositor):
    s = 777_777_777
    market.fund("USDC", depositor, 10_000 * USDC, vault.address)
    S = vault.functions.totalSupply().call()
    usdc0 = market.balance("USDC", depositor)
    receipt = send(vault.functions.mint(s, depositor), depositor)
    paid = usdc0 - market.balance("USDC", depositor)
    A_then = vault.functions.totalAssets().call(block_identifier=receipt["blockNumber"]) - paid
    assert paid == ceil_div(s * (A_then + 1), S + V)
    assert paid * (S + V) >= s * (A_then + 1)


def test_withdraw_burns_ceil_shares(vault, market, depositor):
    a = 333_333_333
    S = vault.functions.totalSupply().call()
    receipt = send(vault.functions.withdraw(a, depositor, depositor), depositor)
    burned = S - vault.functions.totalSupply().call()
    A_then = vault.functions.totalAssets().call(block_identifier=receipt["blockNumber"]) + a
    assert burned == ceil_div(a * (S + V), A_then + 1)
    assert market.balance("USDC", depositor) == a


def test_redeem_pays_floor_assets(vault, market, depositor):
    s = 123_456_789
    S = vault.functions.totalSupply().call()
    receipt = send(vault.functions.redeem(s, depositor, depositor), depositor)
    got = market.balance("USDC", depositor)
    A_then = vault.functions.totalAssets().call(block_identifier=receipt["blockNumber"]) + got
    assert got == s * (A_then + 1) // (S + V)
    assert vault.functions.totalSupply().call() == S - s


def test_deposit_then_redeem_returns_no_more_than_deposited(
    vault, market, trader, admin, pool, perps, weth, wbtc
):
    """With interest and funding at zero the NAV stands still, so only rounding is left: it must
    not favour the caller. (With them on, NAV drifts by a few hundred units a second.)"""
    send(pool.functions.setBorrowRate(0), admin)
    for token in (weth, wbtc):
        send(perps.functions.setFundingRate(token.address, 0), admin)
    a = 98_765_432_109
    market.fund("USDC", trader, a, vault.address)
    send(vault.functions.deposit(a, trader), trader)
    shares = vault.functions.balanceOf(trader).call()
    assert vault.functions.maxRedeem(trader).call() == shares  # the deposit itself sits idle
    send(vault.functions.redeem(shares, trader, trader), trader)
    got = market.balance("USDC", trader)
    assert a - 2 <= got <= a  # rounded down twice: never a gain


# ------------------------------------------------------------------------------ limits
def test_withdrawals_are_limited_to_idle_usdc(vault, market, depositor):
    idle = market.balance("USDC", vault.address)
    owned = vault.functions.previewRedeem(vault.functions.balanceOf(depositor).call()).call()
    assert 0 < idle < owned
    A, S = a_s(vault)
    max_shares = idle * (S + V) // (A + 1)
    assert vault.functions.maxRedeem(depositor).call() == max_shares
    # OpenZeppelin 5.7 derives maxWithdraw from maxRedeem: previewRedeem(convertToShares(idle)),
    # floored twice, so it sits a unit or two under idle — never above it.
    max_assets = max_shares * (A + 1) // (S + V)
    assert vault.functions.maxWithdraw(depositor).call() == min(max_assets, idle)
    assert idle - 2 <= max_assets <= idle
    with expect_revert("ERC4626ExceededMaxWithdraw") as r:
        vault.functions.withdraw(idle + 1, depositor, depositor).transact({"from": depositor})
    assert (
        r.args[0].lower() == depositor.lower()
        and r.args[1] == idle + 1
        and idle - 2 <= r.args[2] <= idle
    )
    with expect_revert("ERC4626ExceededMaxRedeem") as r:
        vault.functions.redeem(10**12 * V, depositor, depositor).transact({"from": depositor})
    assert (
        r.args[1] == 10**12 * V and abs(r.args[2] - max_shares) <= 100 * V
    )  # NAV drifts a little per block
    send(vault.functions.withdraw(idle - 3, depositor, depositor), depositor)
    assert market.balance("USDC", vault.address) == 3
    assert vault.functions.maxWithdraw(depositor).call() <= 3


def test_deposits_blocked_but_withdrawals_open_when_paused(vault, market, guardian, depositor):
    send(vault.functions.pause(), guardian)
    assert vault.functions.maxDeposit(depositor).call() == 0
    assert vault.functions.maxMint(depositor).call() == 0
    market.fund("USDC", depositor, 1_000 * USDC, vault.address)
    with expect_revert("ERC4626ExceededMaxDeposit", depositor, 1_000 * USDC, 0):
        vault.functions.deposit(1_000 * USDC, depositor).transact({"from": depositor})
    with expect_revert("ERC4626ExceededMaxMint", depositor, 1_000 * USDC, 0):
        vault.functions.mint(1_000 * USDC, depositor).transact({"from": depositor})
    send(vault.functions.withdraw(500 * USDC, depositor, depositor), depositor)
    assert market.balance("USDC", depositor) == 1_500 * USDC
    assert vault.functions.maxDeposit(depositor).call() == 0


def test_deposit_and_withdraw_refuse_stale_prices(vault, market, depositor, eth_feed, chain):
    market.fund("USDC", depositor, 1_000 * USDC, vault.address)
    updated = eth_feed.functions.latestTimestamp().call()
    chain.increase_time(3_601)
    with expect_revert("VaultStalePrice", eth_feed.address, updated, 3_600):
        vault.functions.deposit(1_000 * USDC, depositor).transact({"from": depositor})
    with expect_revert("VaultStalePrice", eth_feed.address, updated, 3_600):
        vault.functions.withdraw(1 * USDC, depositor, depositor).transact({"from": depositor})
    assert vault.functions.totalAssets().call() > 0  # views still answer
    market.refresh()
    send(vault.functions.deposit(1_000 * USDC, depositor), depositor)
