"""`totalAssets()` against an independent Python valuation (integers only) at several prices."""

from __future__ import annotations

import pytest

from tests.integration.conftest import USDC_TO_WAD, WAD, send

#: Price points as (numerator, denominator) multipliers on both spot feeds and the option marks.
PRICE_POINTS = ((7, 10), (1, 1), (13, 10))


@pytest.mark.parametrize("num,den", PRICE_POINTS, ids=["x0.7", "x1.0", "x1.3"])
@pytest.mark.parametrize("which", ["vault", "vault2"])
def test_total_assets_matches_python_valuation(request, valuer, market, chain, num, den, which):
    v = request.getfixturevalue(which)
    market.scale_prices(num, den)
    expected = valuer(v)
    snap = v.functions.snapshot().call()
    assert snap.timestamp == chain.now()
    assert v.functions.totalAssets().call() == expected.nav
    assert snap.totalAssets == expected.nav
    # Leverage = Σ collateral value ÷ NAV (WAD), as the snapshot reports it.
    assert snap.leverage == expected.collateral_usd * WAD // (expected.nav * USDC_TO_WAD)
    assert expected.nav > 0


def test_valuation_after_time_travel_accrues_interest_and_funding(valuer, vault, vault2, market):
    """A week on, debt has grown and funding has moved from longs to shorts; the Python model
    (index × (1 + rate × dt) rounded up; cumulative funding rate × dt × price) still agrees."""
    before = vault.functions.snapshot().call()
    market.travel(7 * 24 * 3600)
    for v in (vault, vault2):
        expected = valuer(v)
        assert v.functions.totalAssets().call() == expected.nav
    after = vault.functions.snapshot().call()
    assert after.debt > before.debt
    for a_before, a_after in zip(before.assets, after.assets, strict=True):
        if a_before.perpSize == 0:
            continue
        received = a_after.perpPnl - a_before.perpPnl  # prices unchanged: only funding moved
        assert (received > 0) == (a_before.perpSize < 0), (
            a_before.token
        )  # shorts receive, longs pay


def test_valuation_past_expiry_uses_intrinsic_value(valuer, vault, market, chain, options, series):
    """Past expiry the options are marked at intrinsic value from the spot feed."""
    expiry = options.functions.getSeries(series["ETH-P-2700"]).call().expiry
    chain.increase_time(expiry - chain.now() + 10)
    market.set_price("ETH_USD", 2_500)  # puts 200 in the money, calls out of the money
    market.set_price("BTC_USD", 60_000)
    expected = valuer(vault)
    assert vault.functions.totalAssets().call() == expected.nav
    mark, _ = options.functions.markPrice(series["ETH-P-2700"]).call()
    assert mark == 200 * WAD


def test_valuation_after_keeper_trades_and_a_margin_withdrawal(
    valuer, vault, weth, keeper, market, chain
):
    """Funding settled by a trade or a margin withdrawal moves into margin: still the same NAV."""
    market.travel(2 * 24 * 3600)
    send(vault.functions.hedge([(weth.address, -WAD, 0)], 0, chain.deadline()), keeper)
    market.travel(24 * 3600)
    send(vault.functions.hedge([], -1_000 * 10**6, chain.deadline()), keeper)
    market.travel(3_000)
    assert vault.functions.totalAssets().call() == valuer(vault).nav
