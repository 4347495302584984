"""The keeper limits RiskVault enforces across calls: a cap on the NAV keeper calls may lose per
window (`maxDailyLossBps` of NAV per LOSS_WINDOW = 24 h) and a minimum interval between two
rebalances and between two hedges (`minActionInterval`), both set by the admin.

Rules (RiskVault._applyLimits):
- each keeper call counts navBefore − navAfter + 1 when NAV did not rise (both are floored, so
  +1 rounds the loss up), else 0; a call is refused (VaultDailyLossExceeded(loss, allowance))
  when the window's total would pass floor(window NAV × maxDailyLossBps ÷ 10,000), the window
  NAV being the NAV before the call that opened the window;
- the first keeper call at or after windowStart + 24 h opens a new window;
- a rescue — a deleverage or repayDebt that starts below the mandate's minHealth — is neither
  counted nor refused; at or above minHealth they are counted and refused like the rest;
- a rebalance within minActionInterval of the last rebalance (a hedge of the last hedge) is
  refused (VaultActionTooSoon(last, next)); deleverage and repayDebt have no interval;
- defaults (constructor): 100 bps (1 % of NAV a day) and 0 s (interval off: every deployer
  seeds a vault with a keeper rebalance and scripts/gas.py rebalances seconds later);
  setKeeperLimits takes 1–500 bps and 0–86,400 s (VaultInvalidKeeperLimits), admin only, and
  applies at once, also to the open window.

Seeded `vault` (rvBAL): NAV ~$997k, lending health ~1.63 (binds) against minHealth 1.30, perp fee
5 bps, short ~127 ETH and 10 BTC perps. Its seeding rebalance (at deployment) opened a window;
tests that need a fresh one travel a day first.
"""

from __future__ import annotations

import pytest
from eth_utils import function_signature_to_4byte_selector

from keeper.chain.errors import decode_revert
from tests.integration.conftest import BPS, WAD, events, expect_revert, one_event, send

USDC = 10**6
DAY = 86_400
DEFAULT_BPS = 100
DEFAULT_INTERVAL = 0
#: The interval the interval tests turn on (what a live vault would use: see the module doc).
INTERVAL = 300
#: A 20 ETH perp leg: ~$60k notional, ~$30 of perp fee (5 bps).
HEDGE_UNITS = 20 * WAD


# ------------------------------------------------------------------------------ helpers
def limits(vault):
    return vault.functions.keeperLimits().call()


def counted(ev) -> int:
    """What the vault adds to the window for one KeeperAction: the loss, rounded up."""
    return 0 if ev.navAfter > ev.navBefore else ev.navBefore - ev.navAfter + 1


def hedge(vault, weth, chain, sign: int, units: int = HEDGE_UNITS):
    """A one-leg ETH perp trade, limit left to the vault's own oracle bound."""
    return vault.functions.hedge(
        [(weth.address, sign * units, 10**30 if sign > 0 else 0)], 0, chain.deadline()
    )


def sell_weth(vault, swap, usdc, weth, chain, units: int = 5 * WAD):
    out = swap.functions.quote(weth.address, usdc.address, units).call()[0]
    return [(weth.address, False, units, out * 999 // 1000)]


def set_limits(vault, admin, bps: int, interval: int):
    return send(vault.functions.setKeeperLimits(bps, interval), admin)


def new_window(market):
    """A day later, feeds refreshed: the next keeper call opens a new window."""
    market.travel(DAY + 60)


def block_time(chain, receipt) -> int:
    return int(chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"])


def exhaust(vault, weth, chain, keeper, act):
    """Alternate ±20 ETH hedges until the window refuses the next; returns the events sent and
    the refusal's (loss, allowance)."""
    sent = []
    for i in range(50):
        fn = hedge(vault, weth, chain, -1 if i % 2 == 0 else 1)
        try:
            fn.estimate_gas({"from": keeper})
        except Exception:
            with expect_revert("VaultDailyLossExceeded") as r:
                fn.transact({"from": keeper})
            return sent, r.args
        sent.append(act(vault, fn)[1])
    pytest.fail("the window never filled")


def below_min_health(vault, market):
    """Lower both spot feeds (and the marks) in 5 % steps until the vault's health is under its
    minHealth (its lending side binds: the collateral falls)."""
    base = {feed: market.answer(feed) for feed in ("ETH_USD", "BTC_USD")}
    snap = vault.functions.snapshot().call()
    step = 0
    while snap.health >= snap.mandate.minHealth:
        step += 1
        assert step <= 10, "health never fell below minHealth"
        for feed, answer in base.items():
            market.set_answer(feed, answer * (100 - 5 * step) // 100)
        snap = vault.functions.snapshot().call()
    return snap


# ------------------------------------------------------------------------------ defaults, setter
def test_defaults_and_bounds_are_published(vault, vault2):
    for v in (vault, vault2):
        lim = limits(v)
        assert (lim.maxDailyLossBps, lim.minActionInterval) == (DEFAULT_BPS, DEFAULT_INTERVAL)
        assert v.functions.LOSS_WINDOW().call() == DAY
        assert v.functions.MAX_DAILY_LOSS_BPS_LIMIT().call() == 500
        assert v.functions.MAX_ACTION_INTERVAL_LIMIT().call() == DAY


def test_seeding_rebalance_opened_a_window(vault, chain):
    """Deployment seeds the vault with one keeper rebalance: it opened the first window, at the
    NAV before it (the deposit), and its loss (fees and impact) is counted."""
    lim = limits(vault)
    assert 0 < lim.windowStart == lim.lastRebalanceAt == vault.functions.lastActionAt().call()
    assert lim.lastHedgeAt == 0
    assert 0 < lim.windowLoss <= lim.windowAllowance


@pytest.mark.parametrize("who", ["strategist", "keeper", "guardian", "trader"])
def test_only_the_admin_sets_the_limits(vault, who, request):
    account = request.getfixturevalue(who)
    with expect_revert("AccessControlUnauthorizedAccount"):
        vault.functions.setKeeperLimits(50, 60).transact({"from": account})
    lim = limits(vault)
    assert (lim.maxDailyLossBps, lim.minActionInterval) == (DEFAULT_BPS, DEFAULT_INTERVAL)


@pytest.mark.parametrize("bps,interval", [(0, 0), (501, 300), (100, DAY + 1), (0, DAY + 1),
                                          (2**255, 0), (100, 2**40)])
def test_out_of_bounds_limits_are_refused(vault, admin, bps, interval):
    with expect_revert("VaultInvalidKeeperLimits", bps, interval):
        vault.functions.setKeeperLimits(bps, interval).transact({"from": admin})


@pytest.mark.parametrize("bps,interval", [(1, 0), (500, DAY), (37, 1)])
def test_limits_at_the_bounds_are_accepted_and_logged(vault, admin, bps, interval):
    receipt = set_limits(vault, admin, bps, interval)
    ev = one_event(vault, "KeeperLimitsUpdated", receipt)
    assert (ev.oldMaxDailyLossBps, ev.newMaxDailyLossBps) == (DEFAULT_BPS, bps)
    assert (ev.oldMinActionInterval, ev.newMinActionInterval) == (DEFAULT_INTERVAL, interval)
    lim = limits(vault)
    assert (lim.maxDailyLossBps, lim.minActionInterval) == (bps, interval)


# ------------------------------------------------------------------------------ the loss window
def test_window_counts_each_calls_loss_rounded_up(vault, weth, admin, keeper, market, chain, act):
    set_limits(vault, admin, 100, 0)
    new_window(market)
    opened, first, _ = act(vault, hedge(vault, weth, chain, -1))
    _, second, _ = act(vault, hedge(vault, weth, chain, 1))
    # margin only: NAV unchanged, counted as one unit (the floors may hide up to one)
    _, third, _ = act(vault, vault.functions.hedge([], 1_000 * USDC, chain.deadline()))
    assert third.navAfter == third.navBefore and counted(third) == 1
    lim = limits(vault)
    assert lim.windowLoss == counted(first) + counted(second) + counted(third)
    assert counted(first) > 20 * USDC  # ~$30 of perp fee: the loss is real, not just rounding
    # the allowance: the NAV before the window's first call × bps ÷ 10,000, rounded down
    assert lim.windowAllowance == first.navBefore * 100 // BPS
    assert lim.windowStart == block_time(chain, opened)  # opened by the first call


def test_window_refuses_once_exhausted(vault, weth, admin, keeper, market, chain, act):
    set_limits(vault, admin, 1, 0)  # ~$99.7 a day: three or four $30 hedges
    new_window(market)
    sent, (loss, allowance) = exhaust(vault, weth, chain, keeper, act)
    assert len(sent) >= 2
    used = sum(counted(ev) for ev in sent)
    assert limits(vault).windowLoss == used <= allowance
    assert allowance == sent[0].navBefore * 1 // BPS
    assert loss > allowance and loss - used > 20 * USDC  # this call's ~$30 tipped it over
    # a rebalance is refused too, even one that only sells (the window is not by risk)
    with expect_revert("VaultDailyLossExceeded"):
        vault.functions.rebalance(
            [], [(weth.address, -HEDGE_UNITS, 0)], 0, chain.deadline()
        ).transact({"from": keeper})


def test_raising_the_cap_applies_to_the_open_window(
    vault, weth, admin, keeper, market, chain, act
):
    set_limits(vault, admin, 1, 0)
    new_window(market)
    sent, _ = exhaust(vault, weth, chain, keeper, act)
    set_limits(vault, admin, 2, 0)
    lim = limits(vault)
    assert lim.windowAllowance == sent[0].navBefore * 2 // BPS  # same window NAV, new bps
    act(vault, hedge(vault, weth, chain, -1 if len(sent) % 2 == 0 else 1))
    # and lowering it below what is used refuses everything until the window ends
    set_limits(vault, admin, 1, 0)
    with expect_revert("VaultDailyLossExceeded"):
        hedge(vault, weth, chain, 1).transact({"from": keeper})


def test_window_resets_after_24h(vault, weth, admin, keeper, market, chain, act):
    set_limits(vault, admin, 1, 0)
    new_window(market)
    sent, _ = exhaust(vault, weth, chain, keeper, act)
    start = limits(vault).windowStart
    assert start > 0
    # One second before the window ends (eth_call runs at the head's timestamp): refused.
    market.travel(DAY - 120)
    nxt = hedge(vault, weth, chain, -1 if len(sent) % 2 == 0 else 1)
    chain.inner.mine_at(start + DAY - 1)
    assert chain.now() == start + DAY - 1
    with expect_revert("VaultDailyLossExceeded"):
        nxt.call({"from": keeper})
    # At windowStart + 24 h exactly: a new window, and the call goes.
    chain.mine()
    assert chain.now() == start + DAY
    nxt.call({"from": keeper})
    receipt, ev, _ = act(vault, nxt)
    lim = limits(vault)
    assert lim.windowStart == block_time(chain, receipt)
    assert lim.windowLoss == counted(ev)
    assert lim.windowAllowance == ev.navBefore * 1 // BPS


# ------------------------------------------------------------------------------ rescues
def test_deleverage_below_min_health_passes_an_exhausted_window(
    vault, swap, usdc, weth, admin, keeper, market, chain, act
):
    """A liquidation costs more than slippage: a deleverage that starts below minHealth is
    never refused by the window, and is not counted in it."""
    set_limits(vault, admin, 1, 0)
    new_window(market)
    exhaust(vault, weth, chain, keeper, act)
    used = limits(vault).windowLoss
    snap = below_min_health(vault, market)
    assert snap.lendingHealth == snap.health < snap.mandate.minHealth
    # a risk-reducing rebalance is not a rescue: the window refuses it
    with expect_revert("VaultDailyLossExceeded"):
        vault.functions.rebalance(
            sell_weth(vault, swap, usdc, weth, chain, 20 * WAD), [], 0, chain.deadline()
        ).transact({"from": keeper})
    _, ev, _ = act(
        vault,
        vault.functions.deleverage(sell_weth(vault, swap, usdc, weth, chain), [], 0,
                                   chain.deadline()),
    )
    assert ev.kind.rstrip(b"\0") == b"deleverage"
    assert ev.healthBefore < snap.mandate.minHealth and ev.healthAfter > ev.healthBefore
    assert ev.navBefore - ev.navAfter > 5 * USDC  # it lost fees and impact...
    assert limits(vault).windowLoss == used  # ...which the window did not count
    # repayDebt below minHealth: the same
    if vault.functions.health().call() < snap.mandate.minHealth:
        before = vault.functions.snapshot().call()
        send(vault.functions.repayDebt(10_000 * USDC, 10_000 * USDC + before.idleUsdc,
                                       chain.deadline()), keeper)
        assert limits(vault).windowLoss == used


def test_deleverage_and_repay_at_or_above_min_health_are_counted_and_refused(
    vault, swap, usdc, weth, admin, keeper, market, chain, act
):
    set_limits(vault, admin, 1, 0)
    new_window(market)
    _, first, _ = act(
        vault,
        vault.functions.deleverage(sell_weth(vault, swap, usdc, weth, chain), [], 0,
                                   chain.deadline()),
    )
    assert first.healthBefore >= vault.functions.mandate().call().minHealth
    assert limits(vault).windowLoss == counted(first) > 5 * USDC
    receipt = send(vault.functions.repayDebt(1_000 * USDC, 1_000 * USDC, chain.deadline()), keeper)
    repay = one_event(vault, "KeeperAction", receipt)
    assert limits(vault).windowLoss == counted(first) + counted(repay)
    exhaust(vault, weth, chain, keeper, act)  # what is left is less than one $30 hedge
    with expect_revert("VaultDailyLossExceeded"):  # a $60 sale (10 bps fee on 20 WETH)
        vault.functions.deleverage(
            sell_weth(vault, swap, usdc, weth, chain, 20 * WAD), [], 0, chain.deadline()
        ).transact({"from": keeper})


# ------------------------------------------------------------------------------ the interval
def test_second_rebalance_too_soon_is_refused_then_allowed(
    vault, swap, usdc, weth, admin, keeper, chain, act
):
    """300 s between two rebalances; the boundary is inclusive (next = last + 300)."""
    set_limits(vault, admin, DEFAULT_BPS, INTERVAL)
    buy = [(weth.address, True, 10_000 * USDC, 0)]
    receipt, _, _ = act(vault, vault.functions.rebalance(buy, [], 0, chain.deadline()))
    last = block_time(chain, receipt)
    assert limits(vault).lastRebalanceAt == last == vault.functions.lastActionAt().call()
    with expect_revert("VaultActionTooSoon", last, last + INTERVAL):
        vault.functions.rebalance(buy, [], 0, chain.deadline()).transact({"from": keeper})
    # other kinds are not held: a hedge, a deleverage and a repay right after
    act(vault, hedge(vault, weth, chain, -1, WAD))
    act(vault, vault.functions.deleverage(sell_weth(vault, swap, usdc, weth, chain, WAD), [], 0,
                                          chain.deadline()))
    send(vault.functions.repayDebt(1_000 * USDC, 1_000 * USDC, chain.deadline()), keeper)
    again = vault.functions.rebalance(buy, [], 0, chain.deadline(DAY))
    chain.inner.mine_at(last + INTERVAL - 1)
    with expect_revert("VaultActionTooSoon", last, last + INTERVAL):
        again.call({"from": keeper})
    chain.mine()
    assert chain.now() == last + INTERVAL
    again.call({"from": keeper})
    receipt, _, _ = act(vault, again)
    assert limits(vault).lastRebalanceAt == block_time(chain, receipt)


def test_second_hedge_too_soon_is_refused_and_a_rebalance_is_not(
    vault, weth, admin, keeper, chain, act
):
    set_limits(vault, admin, DEFAULT_BPS, INTERVAL)
    receipt, _, _ = act(vault, hedge(vault, weth, chain, -1, WAD))
    last = block_time(chain, receipt)
    assert limits(vault).lastHedgeAt == last
    with expect_revert("VaultActionTooSoon", last, last + INTERVAL):
        hedge(vault, weth, chain, 1, WAD).transact({"from": keeper})
    # the keeper's waves: a rebalance, then (next block) a hedge, both go
    chain.increase_time(INTERVAL)
    act(vault, vault.functions.rebalance([(weth.address, True, 5_000 * USDC, 0)], [], 0,
                                         chain.deadline()))
    act(vault, hedge(vault, weth, chain, 1, WAD))


def test_deleverage_and_repay_have_no_interval(
    vault, swap, usdc, weth, admin, keeper, chain, act
):
    set_limits(vault, admin, DEFAULT_BPS, DAY)
    for _ in range(2):
        act(vault, vault.functions.deleverage(sell_weth(vault, swap, usdc, weth, chain, WAD), [],
                                              0, chain.deadline()))
    for _ in range(2):
        send(vault.functions.repayDebt(1_000 * USDC, 1_000 * USDC, chain.deadline()), keeper)
    lim = limits(vault)
    assert (lim.lastHedgeAt, lim.lastRebalanceAt) == (0, lim.windowStart)  # seeding's only
    assert vault.functions.lastActionAt().call() == chain.now()


def test_default_interval_is_off(vault, weth, keeper, chain, act):
    buy = [(weth.address, True, 5_000 * USDC, 0)]
    for _ in range(2):
        act(vault, vault.functions.rebalance(buy, [], 0, chain.deadline()))
    for sign in (-1, 1):
        act(vault, hedge(vault, weth, chain, sign, WAD))


def test_interval_zero_allows_back_to_back_and_changes_apply_at_once(
    vault, weth, admin, keeper, chain, act
):
    set_limits(vault, admin, DEFAULT_BPS, 0)
    receipts = [act(vault, hedge(vault, weth, chain, s, WAD))[0] for s in (-1, 1, -1)]
    times = [block_time(chain, r) for r in receipts]
    assert times == sorted(times) and times[-1] - times[0] <= 2  # consecutive blocks
    set_limits(vault, admin, DEFAULT_BPS, DAY)
    with expect_revert("VaultActionTooSoon", times[-1], times[-1] + DAY):
        hedge(vault, weth, chain, 1, WAD).transact({"from": keeper})


def test_refused_calls_leave_no_trace(vault, weth, admin, keeper, market, chain, act):
    """A refusal reverts the whole call: positions, clocks and the window are as before."""
    set_limits(vault, admin, DEFAULT_BPS, INTERVAL)
    act(vault, hedge(vault, weth, chain, -1, WAD))
    before = limits(vault)
    snap = vault.functions.snapshot().call()
    with expect_revert("VaultActionTooSoon"):
        hedge(vault, weth, chain, 1, WAD).transact({"from": keeper})
    assert limits(vault) == before
    assert vault.functions.snapshot().call().assets[0].perpSize == snap.assets[0].perpSize


def test_new_errors_decode_by_name(vault, weth, keeper, chain, act):
    """The keeper's decoder reads the ABIs: the new errors come out by name, with arguments."""
    sel = function_signature_to_4byte_selector("VaultActionTooSoon(uint256,uint256)")
    decoded = decode_revert(sel + (7).to_bytes(32, "big") + (307).to_bytes(32, "big"))
    assert str(decoded) == "VaultActionTooSoon(7, 307)"
    for sig in ("VaultDailyLossExceeded(uint256,uint256)",
                "VaultInvalidKeeperLimits(uint256,uint256)"):
        sel = function_signature_to_4byte_selector(sig)
        decoded = decode_revert(sel + bytes(64))
        assert decoded is not None and decoded.name == sig.split("(")[0]
    receipt, _, _ = act(vault, hedge(vault, weth, chain, -1, WAD))
    assert events(vault, "KeeperAction", receipt)
