"""Attacks on the vault's ERC-4626 entry points: reentrancy through the asset token, and the
first-depositor donation ("inflation") attack. Both on a fresh, empty vault on the seeded venues.
"""

from __future__ import annotations

import pytest

from keeper.chain.errors import decode_revert
from tests.integration.conftest import send
from tests.integration.fresh import deploy_contract, fresh_vault

USDC = 10**6
MAX_UINT = 2**256 - 1


# ------------------------------------------------------------------------------ 3. reentrancy
@pytest.fixture
def hooked(w3, deployment, admin, depositor):
    """A vault whose asset is ReentrantToken: the depositor holds 100 000 USDC of shares, the
    token contract itself 10 000 USDC of shares and 10 000 tokens it lets the vault pull."""
    token = deploy_contract(w3, "ReentrantToken", (), admin)
    vault = fresh_vault(w3, deployment, token.address)
    send(token.functions.mint(depositor, 1_000_000 * USDC), depositor)
    send(token.functions.approve(vault.address, MAX_UINT), depositor)
    send(vault.functions.deposit(100_000 * USDC, depositor), depositor)
    send(vault.functions.deposit(10_000 * USDC, token.address), depositor)
    send(token.functions.mint(token.address, 10_000 * USDC), depositor)
    send(token.functions.approveSelf(vault.address, MAX_UINT), depositor)
    return token, vault


def _args(vault, name, holder, assets):
    """Arguments of `name` for `assets` USDC worth, paid to and owned by `holder`."""
    shares = vault.functions.previewDeposit(assets).call()
    return {
        "deposit": (assets, holder),
        "mint": (shares, holder),
        "withdraw": (assets, holder, holder),
        "redeem": (shares, holder, holder),
    }[name]


@pytest.mark.parametrize(
    "outer,inner",
    [("deposit", "mint"), ("mint", "deposit"), ("withdraw", "redeem"), ("redeem", "withdraw")],
)
def test_erc4626_entry_points_are_not_reentrant(hooked, depositor, outer, inner):
    """The asset token calls back into the vault from inside the outer call's transfer (before
    balances move, as an ERC-777 hook would). Each entry point is once the outer call (its guard
    is set) and once the inner one (its guard is checked): the inner call is refused with
    ReentrancyGuardReentrantCall, the outer one completes.
    Before: the inner call went through — during a withdraw, after the outer call's shares were
    burnt but before its assets left, so at an inflated share price (measured: redeeming all the
    token's 10 000 USDC of shares inside a 1 000 USDC withdraw paid 10 091.74 USDC).
    Failed with: `assert not True` on `token.succeeded()`."""
    token, vault = hooked
    token_shares = vault.functions.balanceOf(token.address).call()
    token_cash = token.functions.balanceOf(token.address).call()
    payload = vault.encode_abi(inner, _args(vault, inner, token.address, 1_000 * USDC))
    send(token.functions.arm(vault.address, payload), depositor)
    send(vault.functions[outer](*_args(vault, outer, depositor, 1_000 * USDC)), depositor)
    assert token.functions.attempted().call()
    assert not token.functions.succeeded().call()
    decoded = decode_revert(token.functions.revertData().call())
    assert decoded is not None and (decoded.name, decoded.args) == (
        "ReentrancyGuardReentrantCall",
        (),
    )
    assert vault.functions.balanceOf(token.address).call() == token_shares
    assert token.functions.balanceOf(token.address).call() == token_cash


# ------------------------------------------------------------------------------ 8. donation
#: The attack: 1 unit deposited, then 10 000 USDC donated; the victim deposits 10 000 USDC.
DONATION = 10_000 * USDC
VICTIM_DEPOSIT = 10_000 * USDC


def test_first_depositor_donation_no_longer_steals_from_the_second(
    w3, deployment, usdc, trader, trader2, market
):
    """OpenZeppelin 5.7's ERC-4626: shares = ⌊a (S + 10^k) / (A + 1)⌋, assets = ⌊s (A + 1) /
    (S + 10^k)⌋, k = _decimalsOffset(). Hand-worked, attacker deposits 1, donates D = 10^10,
    victim deposits V = 10^10 (USDC units):

    k = 0 (before): attacker 1 share; A = 10^10 + 1. Victim ⌊10^10 · 2 / (10^10 + 2)⌋ = 1 share
      of 2; redeemed ⌊1 · (2·10^10 + 2) / 3⌋ = 6 666 666 667: the victim loses 3 333.33 USDC, a
      third (the attacker takes as much again as the virtual share does).
    k = 6 (now): attacker 10^6 shares. Victim ⌊10^10 · 2·10^6 / (10^10 + 2)⌋ = 1 999 999 shares;
      S = 2 999 999, A = 2·10^10 + 1; redeemed ⌊1 999 999 · (2·10^10 + 2) / 3 999 999⌋ =
      9 999 997 500: the victim loses 2 500 units (0.0025 USDC), and the attacker, who then
      redeems ⌊10^6 · (10 000 002 501 + 1) / (2·10^6)⌋ = 5 000 001 251, loses half the donation.
    Failed with: `assert 1 == 1999999` (the victim's shares)."""
    v = fresh_vault(w3, deployment, usdc.address)
    attacker, victim = trader, trader2
    market.fund("USDC", attacker, 1 + DONATION, v.address)
    send(v.functions.deposit(1, attacker), attacker)
    send(usdc.functions.transfer(v.address, DONATION), attacker)
    assert v.functions.totalAssets().call() == DONATION + 1

    market.fund("USDC", victim, VICTIM_DEPOSIT, v.address)
    send(v.functions.deposit(VICTIM_DEPOSIT, victim), victim)
    shares = v.functions.balanceOf(victim).call()
    assert shares == 1_999_999
    send(v.functions.redeem(shares, victim, victim), victim)
    assert market.balance("USDC", victim) == 9_999_997_500

    assert v.functions.decimals().call() == 12  # 6 + DECIMALS_OFFSET
    assert v.functions.balanceOf(attacker).call() == 10**6
    send(v.functions.redeem(10**6, attacker, attacker), attacker)
    assert market.balance("USDC", attacker) == 5_000_001_251
    assert v.functions.totalAssets().call() == 1 + DONATION + VICTIM_DEPOSIT - (
        9_999_997_500 + 5_000_001_251
    )
