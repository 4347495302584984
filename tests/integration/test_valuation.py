"""`totalAssets()` against an independent Python valuation (integers only) at several prices,
and the keeper's own view of the seeded vaults (NAV rebuilt, linear delta) against the chain."""

from __future__ import annotations

import pytest
from web3 import Web3
from web3.contract import Contract

from keeper.chain.convert import to_vault_state
from keeper.chain.reader import SnapshotReader
from keeper.devnet.deploy import VAULT_SPECS
from keeper.inputs import RISK_FREE_RATE
from keeper.risk.greeks import black_scholes
from keeper.risk.health import nav_from_positions, net_delta
from keeper.risk.types import SECONDS_PER_YEAR, VaultState
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


def _keeper_view(w3: Web3, contracts: dict[str, Contract], vault: Contract) -> VaultState:
    address = Web3.to_checksum_address(vault.address)
    snap = SnapshotReader(w3).read([address], int(w3.eth.block_number))[address]
    return to_vault_state(snap, {contracts[s].address: s for s in ("WETH", "WBTC")})


@pytest.mark.parametrize("which", ["vault", "vault2"])
def test_the_keepers_view_rebuilds_nav_and_its_delta_moves_it(request, w3, contracts, market,
                                                              which):
    """The risk core's view of a seeded vault, rebuilt position by position, is the chain's NAV;
    and moving only the spot feeds +10 % (option marks held, so the options' model delta is out of
    it) moves `totalAssets()` by the view's linear delta × the move — which counts the WETH the
    written calls lock in the option market (rvBAL: 50 WETH, $148k at the seed's price, that
    the keeper's net delta used to leave out)."""
    v = request.getfixturevalue(which)
    state = _keeper_view(w3, contracts, v)
    assert nav_from_positions(state) == pytest.approx(state.nav_usd, abs=0.01 * (1 + len(
        state.assets) + len(state.perps) + len(state.options)))
    # Tokens: spot held + those written calls lock (no model greeks: the marks do not move).
    tokens = {a.symbol: a.collateral + a.idle for a in state.assets}
    for o in state.options:
        tokens[o.underlying] += o.locked_underlying
    before = int(v.functions.totalAssets().call())
    market.scale_prices(11, 10, with_marks=False)
    moved = _keeper_view(w3, contracts, v)
    # Perps as the snapshot reports them: size × move, and the funding accrued since the last
    # settlement, which the market marks at today's price (so it moves with spot too).
    perps = sum(p.unrealized_pnl_usd for p in moved.perps) - sum(
        p.unrealized_pnl_usd for p in state.perps)
    expected = sum(tokens[a.symbol] * (b.price_usd - a.price_usd)
                   for a, b in zip(state.assets, moved.assets, strict=True)
                   ) + perps - (moved.debt_usdc - state.debt_usdc)
    # Both sides in USDC units (floored): at most a few units apart.
    assert (int(v.functions.totalAssets().call()) - before) / 1e6 == pytest.approx(expected,
                                                                                   abs=0.05)
    written_calls = [o for o in state.options if o.is_call and o.size < 0]
    if which == "vault":
        # rvBAL writes 50 ETH calls, fully collateralised in WETH; rvDNC writes nothing.
        assert [o.locked_underlying for o in written_calls] == [50.0]
        eth = state.asset("WETH")
        assert net_delta(state, state.timestamp, RISK_FREE_RATE)["WETH"] == pytest.approx(
            eth.collateral + eth.idle - 177.0 + 50.0 + _option_model_delta(state, "WETH"),
            abs=1e-9)
    else:
        assert written_calls == []


def _option_model_delta(state: VaultState, symbol: str) -> float:
    opts = [o for o in state.options if o.underlying == symbol]
    g = black_scholes([state.asset(symbol).price_usd] * len(opts), [o.strike for o in opts],
                      [(o.expiry - state.timestamp) / SECONDS_PER_YEAR for o in opts],
                      RISK_FREE_RATE, [o.implied_vol for o in opts], [o.is_call for o in opts])
    return float(sum(d * o.size for d, o in zip(g.delta.tolist(), opts, strict=True)))


@pytest.mark.parametrize("spec_index", [0, 1])
def test_every_seeded_vault_starts_inside_its_delta_band(w3, contracts, spec_index):
    """The deploy script seeds vaults their keeper has nothing to hedge: net delta (spot, perps,
    option model deltas and the tokens written calls lock) inside half the mandate's band."""
    state = _keeper_view(w3, contracts, contracts[f"vault{spec_index}"])
    deltas = net_delta(state, state.timestamp, RISK_FREE_RATE)
    ratio = sum(deltas[a.symbol] * a.price_usd for a in state.assets) / state.nav_usd
    target, band = (VAULT_SPECS[spec_index].mandate[3] / WAD, VAULT_SPECS[spec_index].mandate[4]
                    / WAD)
    assert abs(ratio - target) < band / 2, ratio
