"""Who may call what: vault roles (OpenZeppelin AccessControl) and venue owners (Ownable)."""

from __future__ import annotations

import pytest
from web3 import Web3

from tests.integration.conftest import WAD, events, expect_revert, one_event, send

ZERO_ROLE = b"\x00" * 32
KEEPER_ROLE = Web3.keccak(text="KEEPER_ROLE")
STRATEGIST_ROLE = Web3.keccak(text="STRATEGIST_ROLE")
GUARDIAN_ROLE = Web3.keccak(text="GUARDIAN_ROLE")


def test_roles_are_distinct_accounts_with_the_expected_grants(
    vault, vault2, admin, strategist, keeper, guardian, depositor, liquidator
):
    assert len({admin, strategist, keeper, guardian, depositor, liquidator}) == 6
    assert vault.functions.KEEPER_ROLE().call() == KEEPER_ROLE
    assert vault.functions.STRATEGIST_ROLE().call() == STRATEGIST_ROLE
    assert vault.functions.GUARDIAN_ROLE().call() == GUARDIAN_ROLE
    for v in (vault, vault2):
        has = v.functions.hasRole
        expected = {
            ZERO_ROLE: admin,
            KEEPER_ROLE: keeper,
            STRATEGIST_ROLE: strategist,
            GUARDIAN_ROLE: guardian,
        }
        for role, holder in expected.items():
            for account in (admin, strategist, keeper, guardian, depositor, liquidator):
                assert has(role, account).call() == (account == holder), (role.hex(), account)


# ---------------------------------------------------------------------------------- keeper
def _keeper_calls(vault, weth, deadline):
    return {
        "rebalance": vault.functions.rebalance(
            [(weth.address, True, 1_000 * 10**6, 0)], [], 0, deadline
        ),
        "hedge": vault.functions.hedge([(weth.address, -WAD, 0)], 0, deadline),
        "deleverage": vault.functions.deleverage([(weth.address, False, WAD, 0)], [], 0, deadline),
        "repayDebt": vault.functions.repayDebt(10**6, 10**6, deadline),
    }


@pytest.mark.parametrize("fn", ["rebalance", "hedge", "deleverage", "repayDebt"])
@pytest.mark.parametrize("role", ["admin", "strategist", "guardian", "depositor", "liquidator"])
def test_only_keeper_may_rebalance_hedge_deleverage(request, vault, weth, chain, fn, role):
    account = request.getfixturevalue(role)
    call = _keeper_calls(vault, weth, chain.deadline())[fn]
    with expect_revert("AccessControlUnauthorizedAccount", account, KEEPER_ROLE):
        call.transact({"from": account})


def test_keeper_actions_succeed_for_keeper_and_stop_when_revoked(vault, weth, keeper, admin, chain):
    calls = _keeper_calls(vault, weth, chain.deadline())
    for name in ("hedge", "deleverage", "repayDebt"):
        receipt = send(calls[name], keeper)
        assert len(events(vault, "KeeperAction", receipt)) == 1
    send(vault.functions.revokeRole(KEEPER_ROLE, keeper), admin)
    with expect_revert("AccessControlUnauthorizedAccount", keeper, KEEPER_ROLE):
        _keeper_calls(vault, weth, chain.deadline())["hedge"].transact({"from": keeper})


# ---------------------------------------------------------------------------------- strategist
@pytest.mark.parametrize("role", ["admin", "keeper", "guardian", "depositor"])
def test_only_strategist_may_set_mandate_or_trade_options(request, vault, series, role):
    account = request.getfixturevalue(role)
    mandate = vault.functions.mandate().call()
    with expect_revert("AccessControlUnauthorizedAccount", account, STRATEGIST_ROLE):
        vault.functions.setMandate(mandate).transact({"from": account})
    with expect_revert("AccessControlUnauthorizedAccount", account, STRATEGIST_ROLE):
        vault.functions.tradeOption(series["ETH-P-2700"], WAD, 10**12).transact({"from": account})


# ------------------------------------------------------------------------- guardian / admin
@pytest.mark.parametrize("role", ["admin", "strategist", "keeper", "depositor"])
def test_only_guardian_may_pause(request, vault, role):
    account = request.getfixturevalue(role)
    with expect_revert("AccessControlUnauthorizedAccount", account, GUARDIAN_ROLE):
        vault.functions.pause().transact({"from": account})
    assert vault.functions.paused().call() is False


def test_guardian_pauses_but_only_admin_unpauses(vault, guardian, admin, strategist):
    send(vault.functions.pause(), guardian)
    assert vault.functions.paused().call() is True
    for account in (guardian, strategist):
        with expect_revert("AccessControlUnauthorizedAccount", account, ZERO_ROLE):
            vault.functions.unpause().transact({"from": account})
    assert vault.functions.paused().call() is True
    send(vault.functions.unpause(), admin)
    assert vault.functions.paused().call() is False


@pytest.mark.parametrize("role", ["strategist", "keeper", "guardian", "depositor"])
def test_only_admin_may_add_assets_set_price_age_or_grant_roles(
    request, vault, weth, eth_feed, eth_iv, role
):
    account = request.getfixturevalue(role)
    with expect_revert("AccessControlUnauthorizedAccount", account, ZERO_ROLE):
        vault.functions.addAsset(weth.address, eth_feed.address, eth_iv.address).transact(
            {"from": account}
        )
    with expect_revert("AccessControlUnauthorizedAccount", account, ZERO_ROLE):
        vault.functions.setMaxPriceAge(1).transact({"from": account})
    for role_id in (KEEPER_ROLE, STRATEGIST_ROLE, GUARDIAN_ROLE, ZERO_ROLE):
        with expect_revert("AccessControlUnauthorizedAccount", account, ZERO_ROLE):
            vault.functions.grantRole(role_id, account).transact({"from": account})
    assert vault.functions.maxPriceAge().call() == 3_600


def test_admin_sets_max_price_age_with_event(vault, admin):
    receipt = send(vault.functions.setMaxPriceAge(900), admin)
    ev = one_event(vault, "MaxPriceAgeUpdated", receipt)
    assert (ev.oldMaxAge, ev.newMaxAge) == (3_600, 900)
    assert vault.functions.maxPriceAge().call() == 900


# ---------------------------------------------------------------------------------- venue owners
def _owner_calls(contracts, series, anyone):
    c = contracts
    weth, feed = c["WETH"].address, c["ETH_USD"].address
    return {
        "ETH_USD.updateAnswer": c["ETH_USD"].functions.updateAnswer(1),
        "ETH-P-2700_MARK.updateAnswer": c["ETH-P-2700_MARK"].functions.updateAnswer(1),
        "ETH_IV.updateAnswer": c["ETH_IV"].functions.updateAnswer(1),
        "USDC.mint": c["USDC"].functions.mint(anyone, 10**12),
        "WETH.mint": c["WETH"].functions.mint(anyone, WAD),
        "WBTC.mint": c["WBTC"].functions.mint(anyone, 10**8),
        "pool.configureCollateral": c["LendingPool"].functions.configureCollateral(
            weth, feed, 18, WAD // 2, WAD * 6 // 10, WAD // 20
        ),
        "pool.setBorrowRate": c["LendingPool"].functions.setBorrowRate(0),
        "pool.setMaxPriceAge": c["LendingPool"].functions.setMaxPriceAge(10**9),
        "swap.listAsset": c["SwapVenue"].functions.listAsset(weth, feed, 18, WAD),
        "swap.setFee": c["SwapVenue"].functions.setFee(0),
        "swap.setMaxPriceAge": c["SwapVenue"].functions.setMaxPriceAge(10**9),
        "perps.listMarket": c["PerpMarket"].functions.listMarket(
            weth, feed, WAD // 100, WAD // 50, 0
        ),
        "perps.setFundingRate": c["PerpMarket"].functions.setFundingRate(weth, 0),
        "options.createSeries": c["OptionMarket"].functions.createSeries(
            weth, 18, feed, feed, True, WAD, 2**40
        ),
        "options.setSpread": c["OptionMarket"].functions.setSpread(0),
    }


OWNER_CALLS = (
    "ETH_USD.updateAnswer",
    "ETH-P-2700_MARK.updateAnswer",
    "ETH_IV.updateAnswer",
    "USDC.mint",
    "WETH.mint",
    "WBTC.mint",
    "pool.configureCollateral",
    "pool.setBorrowRate",
    "pool.setMaxPriceAge",
    "swap.listAsset",
    "swap.setFee",
    "swap.setMaxPriceAge",
    "perps.listMarket",
    "perps.setFundingRate",
    "options.createSeries",
    "options.setSpread",
)


@pytest.mark.parametrize("what", OWNER_CALLS)
def test_only_owner_may_update_feeds_mint_or_configure_venues(
    contracts, series, strategist, keeper, depositor, liquidator, vault, what
):
    for account in (strategist, keeper, depositor, liquidator):
        call = _owner_calls(contracts, series, account)[what]
        with expect_revert("OwnableUnauthorizedAccount", account):
            call.transact({"from": account})


def test_owner_calls_cover_every_onlyowner_function(contracts, series, admin):
    """The list above is every owner-only entry point of the market (so none was forgotten)."""
    assert set(_owner_calls(contracts, series, admin)) == set(OWNER_CALLS)


def test_owner_is_admin_everywhere_and_never_the_vault(contracts, vault, vault2, admin):
    for name, c in contracts.items():
        if name.startswith("vault"):
            continue
        owner = c.functions.owner().call()
        assert owner == admin, name
        assert owner not in (vault.address, vault2.address)
