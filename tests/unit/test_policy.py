"""The decision policy, one branch at a time, with numbers worked out by hand.

Default vault (conftest): 750 ETH at 2 000 (1.5M) as collateral, 0.5M debt, NAV 1.0M, so
leverage 1.5 and lending health 1.5M × 0.80 / 0.5M = 2.4. No price history: vol = implied 0.50.
Default mandate: target vol 0.75 → vol-target leverage 1.5; CPPI 4 × (1 − 0.5) = 2.0; health cap
1.35 × 1.0M / (1.0M × (1.35 − 0.80)) = 2.45; hedge target 1.5 × NAV = 750 ETH = current delta.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pytest
from scipy.optimize import brentq

from keeper.errors import RiskInputError
from keeper.policy import Action, ActionKind, Urgency, assess_batch, decide
from keeper.risk.forecast import build_forecast
from keeper.risk.params import PolicyParams
from keeper.risk.types import (
    SECONDS_PER_YEAR,
    OptionPosition,
    PerpPosition,
    PriceHistory,
    VaultState,
)

from .conftest import NOW, costs, eth, mandate, market, replace, vault

#: κ·h/(2·NAV)·σ² for NAV 1M, σ 0.5, κ 4, one week: USD of benefit per USD² of exposure error.
QUAD = 4.0 * (7 * 86_400 / SECONDS_PER_YEAR) / (2 * 1_000_000.0) * 0.25


def kinds(actions: list[Action]) -> list[ActionKind]:
    return [a.kind for a in actions]


def test_inside_every_band_does_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="keeper.policy"):
        assert decide(vault(), mandate(), market(), costs()) == []
    assert "leverage inside band" in caplog.text and "delta inside band" in caplog.text


def test_rebalance_down_to_the_vol_target() -> None:
    # target vol 0.5 / implied 0.5 → leverage 1.0: sell 250 ETH (0.5M). Hedge target 1.0 × NAV
    # = 500 ETH = the post-rebalance delta, so no hedge.
    acts = decide(vault(), mandate(target_vol=0.5, hedge_target=1.0), market(), costs())
    assert kinds(acts) == [ActionKind.REBALANCE]
    a = acts[0]
    assert a.urgency is Urgency.NORMAL
    assert dict(a.spot_legs) == pytest.approx({"ETH": -250.0})
    assert a.perp_legs == {}
    assert a.inputs["target_leverage"] == pytest.approx(1.0)
    assert a.inputs["lev_vol_target"] == pytest.approx(1.0)
    assert a.inputs["lev_cppi"] == pytest.approx(2.0)
    assert a.inputs["lev_health"] == pytest.approx(1.35 / 0.55)
    assert a.inputs["vol_method.ETH"] == "implied"
    # benefit: (0.5M)² × QUAD ≈ 2 397; cost: 0.5M × 40 bps + 700k gas × 1e-6 = 2 000.70.
    assert a.expected_benefit_usd == pytest.approx(500_000.0**2 * QUAD, rel=1e-9)
    assert a.expected_cost_usd == pytest.approx(2_000.70, rel=1e-9)


def test_rebalance_up_is_low_urgency_and_stays_healthy() -> None:
    # A 10 % design gap: leverage 2 survives it (1 000 ETH × 0.9 × 0.8 / 1M = 1.44 >= 1.05).
    acts = decide(vault(), mandate(target_vol=1.0, hedge_target=2.0), market(), costs(),
                  PolicyParams(design_gap=0.10))
    assert kinds(acts) == [ActionKind.REBALANCE]
    assert acts[0].urgency is Urgency.LOW
    assert dict(acts[0].spot_legs) == pytest.approx({"ETH": 250.0})
    # after: 1 000 ETH (2M) against 1M debt: health 1.6 >= min 1.25 + 0.10.
    assert (750 + 250) * 2_000 * 0.8 / (500_000 + 250 * 2_000) >= 1.35


def test_design_gap_caps_the_leverage_a_rebalance_builds() -> None:
    # Same vault (750 ETH at $2 000 = 1.5M collateral, NAV 1M, LT 0.8), target 2× by vol; the
    # 35 % design gap must leave stressed health >= 1.05: L·0.8·0.65 / (L − 1) >= 1.05, so
    # L <= 1.05 / (1.05 − 0.52) = 1.98113… → buy 1.98113M/2 000 − 750 = 240.566 ETH.
    acts = decide(vault(), mandate(target_vol=1.0, hedge_target=2.0), market(), costs())
    assert kinds(acts) == [ActionKind.REBALANCE]
    cap = 1.05 / (1.05 - 0.8 * 0.65)
    assert acts[0].inputs["lev_stress"] == pytest.approx(cap, rel=1e-9)
    assert dict(acts[0].spot_legs) == pytest.approx({"ETH": cap * 1_000_000 / 2_000 - 750})


def test_rebalance_skipped_when_costs_exceed_benefit(caplog: pytest.LogCaptureFixture) -> None:
    # 20 bps slippage: cost 0.5M × 50 bps = 2 500.70 > benefit 2 397.
    with caplog.at_level(logging.DEBUG, logger="keeper.policy"):
        # (net delta 1.5 × NAV is the hedge target: only the rebalance is in question)
        assert decide(vault(), mandate(target_vol=0.5, hedge_target=1.5), market(),
                      costs(swap_slippage_bps=20.0)) == []
    assert "rebalance: benefit 2397" in caplog.text


def test_rebalance_skipped_when_venue_slippage_exceeds_mandate() -> None:
    # target 0.5: benefit (1M)² × QUAD ≈ 9 589 easily beats 3 000; but 60 bps > 50 bps allowed.
    # (Net delta 750 ETH against 0.5 × NAV = 250 ETH: the hedge goes alone, on borrowed margin.)
    m = mandate(target_vol=0.25, hedge_target=0.5)
    c = costs(swap_fee_bps=0.0, swap_slippage_bps=60.0)
    assert kinds(decide(vault(), m, market(), c)) == [ActionKind.HEDGE]
    acts = decide(vault(), replace(m, max_slippage_bps=100), market(), c)
    assert kinds(acts) == [ActionKind.REBALANCE]


def _worst_fill_health(coll: float, debt: float, sold: float, fill: float) -> float:
    return (coll - sold) * 2_000.0 * 0.8 / (debt - sold * 2_000.0 * (1 - fill))


def test_deleverage_restores_health_with_a_buffer_at_the_worst_fill() -> None:
    v = vault(debt_usdc=1_000_000.0, nav_usd=500_000.0)  # health 1.2M / 1.0M = 1.2 < 1.25
    acts = decide(v, mandate(), market(), costs())
    assert kinds(acts) == [ActionKind.DELEVERAGE]
    a = acts[0]
    # $50k at stake (5 % of the $1M debt) against $0.70 of gas: CRITICAL, worth the top cap.
    assert a.urgency is Urgency.CRITICAL
    assert set(a.spot_legs) == {"ETH"} and a.spot_legs["ETH"] < 0 and a.perp_legs == {}
    sold = -a.spot_legs["ETH"]
    # worst accepted fill: 30 bps fee + 50 bps max slippage; health lands on 1.25 + 0.05.
    assert _worst_fill_health(750.0, 1e6, sold, 0.008) == pytest.approx(1.30, rel=1e-12)
    # f = (1.3 × 1.0M − 1.2M) / (1.3 × 1.5M × 0.992 − 1.2M) = 100k / 734.4k
    assert sold == pytest.approx(750.0 * 100_000 / 734_400, rel=1e-12)
    assert a.inputs["lending_health"] == pytest.approx(1.2)
    assert a.inputs["target_health"] == pytest.approx(1.30)
    assert a.expected_benefit_usd > 0.0


def test_a_lending_cure_buys_back_the_short_it_unhedges() -> None:
    # Lending health 1.2 as above, plus a 250 ETH short with $100k margin (below its $115k
    # design-rise target: no surplus to repay from). The cure sells the same 102.1 ETH as
    # above and buys back 102.1 ETH of the short, so net delta stays 750 − 250 = 500 ETH.
    v = vault(debt_usdc=1_000_000.0, nav_usd=600_000.0, perp_margin_usd=100_000.0,
              perps=(PerpPosition("ETH", -250.0, 2_000.0, 0.0, 0.05),))
    (a,) = decide(v, mandate(), market(), costs())
    assert a.kind is ActionKind.DELEVERAGE
    sold = 750.0 * 100_000 / 734_400
    assert -a.spot_legs["ETH"] == pytest.approx(sold, rel=1e-12)
    assert a.perp_legs["ETH"] == pytest.approx(sold, rel=1e-12)
    net_after = 750.0 + a.spot_legs["ETH"] - 250.0 + a.perp_legs["ETH"]
    assert net_after == pytest.approx(500.0, rel=1e-12)


def test_deleverage_below_one_plus_buffer_is_critical() -> None:
    v = vault(debt_usdc=1_160_000.0, nav_usd=340_000.0)  # health 1.034
    (a,) = decide(v, mandate(), market(), costs())
    assert (a.kind, a.urgency) == (ActionKind.DELEVERAGE, Urgency.CRITICAL)


@pytest.mark.parametrize(
    ("cap_usd_per_gas", "urgency"),
    [
        # stake = 5 % × $1M debt = $50,000; gas at the CRITICAL cap = price × 700k units.
        (0.00714, Urgency.CRITICAL),  # 10 × $4,998 = $49,980 <= $50,000
        (0.00715, Urgency.HIGH),  # 10 × $5,005 = $50,050 > $50,000
    ],
)
def test_a_breach_pays_the_critical_cap_when_the_stake_is_worth_it(
    cap_usd_per_gas: float, urgency: Urgency
) -> None:
    v = vault(debt_usdc=1_000_000.0, nav_usd=500_000.0)  # health 1.2: breach, not critical
    c = costs(critical_gas_price_usd_per_gas=cap_usd_per_gas)
    (a,) = decide(v, mandate(), market(), c)
    assert (a.kind, a.urgency) == (ActionKind.DELEVERAGE, urgency)


def test_the_perp_notional_is_at_stake_too() -> None:
    # Same lending breach plus a 250 ETH short ($500k notional, 5 % → $25k): $75k at stake,
    # so a cap that the $50k lending stake alone would not justify ($5,005 × 10) now is.
    v = vault(debt_usdc=1_000_000.0, nav_usd=700_000.0, perp_margin_usd=200_000.0,
              perps=(PerpPosition("ETH", -250.0, 2_000.0, 0.0, 0.05),))
    cures = (ActionKind.REPAY, ActionKind.DELEVERAGE)  # surplus perp margin repays first
    acts = decide(v, mandate(), market(), costs(critical_gas_price_usd_per_gas=0.00715))
    assert {a.urgency for a in acts if a.kind in cures} == {Urgency.CRITICAL}
    # and when even $75k is not ten times the gas (10 × $10,500 = $105,000): HIGH.
    acts = decide(v, mandate(), market(), costs(critical_gas_price_usd_per_gas=0.015))
    assert {a.urgency for a in acts if a.kind in cures} == {Urgency.HIGH}


def test_without_a_known_cap_todays_gas_price_stands_in() -> None:
    v = vault(debt_usdc=1_000_000.0, nav_usd=500_000.0)
    (a,) = decide(v, mandate(), market(), costs(gas_price_usd_per_gas=0.00715))
    assert a.urgency is Urgency.HIGH


def test_deleverage_is_never_skipped_for_cost() -> None:
    v = vault(debt_usdc=1_000_000.0, nav_usd=500_000.0)
    (a,) = decide(v, mandate(), market(), costs(gas_price_usd_per_gas=1.0))  # 700k USD of gas
    assert a.kind is ActionKind.DELEVERAGE
    assert a.expected_cost_usd > a.expected_benefit_usd


def test_perp_margin_deleverage_cuts_perps_pro_rata_and_keeps_the_hedge() -> None:
    # margin 55k vs maintenance 500 × 2000 × 5 % = 50k: perp health 1.1; lending health
    # 1.2M / 950k = 1.263, above min 1.25 but under the deleverage's 1.30: no room to borrow.
    v = vault(perp_margin_usd=55_000.0, debt_usdc=950_000.0, nav_usd=605_000.0,
              perps=(PerpPosition("ETH", -500.0, 2_000.0, 0.0, 0.05),))
    (a,) = decide(v, mandate(), market(), costs())
    assert a.kind is ActionKind.DELEVERAGE
    cut = a.perp_legs["ETH"] / 500.0  # positive: buys back part of the short
    # The short bought back is matched by the same spot sold: net delta does not move.
    assert a.spot_legs["ETH"] == pytest.approx(-a.perp_legs["ETH"], rel=1e-12)
    # The cut aims at the margin target, which survives the design rise (+15 %) at health
    # 1.25 + 0.10: max(initial 50k × 2 × 1.25 = 125k, 1M × 0.15 + 1.35 × 1M × 1.15 × 5 %
    # = 227,625). g = (227,625 − 55k) / (227,625 − 1M notional × 5 bps) = 172,625 / 227,125.
    assert cut == pytest.approx(172_625 / 227_125, rel=1e-12)
    after = (55_000 - cut * 1_000_000 * 0.0005) / ((1 - cut) * 227_625)
    assert after == pytest.approx(1.0, rel=1e-12)  # exactly the target left, no more cut
    # and the book left then survives a +15 % rise at health 1.35:
    left = (1 - cut) * 500.0
    equity = 55_000 - cut * 1_000_000 * 0.0005 - left * 2_000 * 0.15
    assert equity / (left * 2_300 * 0.05) == pytest.approx(1.35, rel=1e-9)


def short_book_at_perp_health_1_1(debt: float) -> VaultState:
    """The short of the test above (perp health 1.1) with ``debt`` against 1.5M of ETH."""
    return vault(perp_margin_usd=55_000.0, debt_usdc=debt, nav_usd=1_555_000.0 - debt,
                 perps=(PerpPosition("ETH", -500.0, 2_000.0, 0.0, 0.05),))


def test_perp_deleverage_borrows_its_margin_against_lending_room_first() -> None:
    # Lending health 1.2M / 500k = 2.4: room down to the deleverage's 1.30 is 1.2M / 1.3 − 500k
    # = 423,077, more than the 227,625 − 55,000 = 172,625 the margin target needs. So the whole
    # top-up is borrowed and nothing is sold or cut: lending health 1.2M / 672,625 = 1.784,
    # perp health 227,625 / 50,000 = 4.55. (Before, it bought back 76 % of the short and sold
    # as much spot.)
    (a,) = decide(short_book_at_perp_health_1_1(500_000.0), mandate(), market(), costs())
    assert a.kind is ActionKind.DELEVERAGE
    assert a.spot_legs == {} and a.perp_legs == {}
    assert a.margin_usd == pytest.approx(172_625.0, rel=1e-12)
    assert a.inputs["margin_borrow_usd"] == pytest.approx(172_625.0, rel=1e-12)
    assert a.inputs["lending_health_after"] == pytest.approx(1.2e6 / 672_625, rel=1e-12)
    assert a.inputs["perp_health_after"] == pytest.approx(227_625 / 50_000, rel=1e-12)
    assert "$172,625 of it borrowed" in a.reason


def test_perp_deleverage_cuts_only_what_the_lending_room_cannot_fund() -> None:
    # Room 100k (debt 1.2M / 1.3 − 100k): 100k borrowed, equity 155k, and the cut covers the
    # rest of the 227,625 target: g = (227,625 − 155,000) / (227,625 − 500) = 72,625 / 227,125,
    # matched by the same ETH sold. (target_vol 2: leverage 1.5M / 732k = 2.05 sits inside the
    # band of the 2.27 the health cap allows, so the band does not limit the borrow.)
    m = mandate(target_vol=2.0)
    v = short_book_at_perp_health_1_1(1.2e6 / 1.3 - 100_000.0)
    (a,) = decide(v, m, market(), costs(), PolicyParams(design_gap=0.20))
    assert a.kind is ActionKind.DELEVERAGE
    assert a.margin_usd == pytest.approx(100_000.0, rel=1e-9)
    assert a.perp_legs["ETH"] / 500.0 == pytest.approx(72_625 / 227_125, rel=1e-9)
    assert a.spot_legs["ETH"] == pytest.approx(-a.perp_legs["ETH"], rel=1e-12)


def test_perp_deleverage_cuts_until_leverage_stays_in_the_band_the_borrowing_leaves() -> None:
    # Debt 700k: NAV 1.5M − 700k + 55k = 855k, leverage 1.5M / 855k = 1.7544, lending room
    # 1.2M / 1.3 − 700k = 223,077. The target is the stress cap (target_vol 2 puts vol
    # targeting at 4, max leverage at 3): ETH −35 % leaves LT 0.52, so T = 1.05 K / (855k ×
    # 0.53) with K = 800k − borrowed. Borrowing all 172,625 the margin target needs drops T to
    # 1.4538, and 1.7544 > 1.1 T: a rebalance would sell next tick. So the rescue cuts a
    # fraction g of the short and sells as much ETH (1M × g, at 40 bps), needing
    # b(g) = (1 − g) 227,625 − 55,000 + 500 g of borrowed margin, until
    # (1.5M − 1M g) / (855k − 4,500 g) = 1.1 × 1.05 (800k − b(g)) / (855k × 0.53).
    def gap(g: float, vol_cap: float = math.inf) -> float:
        b = (1 - g) * 227_625 - 55_000 + 500 * g
        target = min(vol_cap, 1.05 * (800_000 - b) / (855_000 * 0.53))
        return (1.5e6 - 1e6 * g) / (855_000 - 4_500 * g) - 1.1 * target

    g = brentq(gap, 0.0, 1.0, xtol=1e-14)
    (a,) = decide(short_book_at_perp_health_1_1(700_000.0), mandate(target_vol=2.0), market(),
                  costs())
    assert a.kind is ActionKind.DELEVERAGE
    assert a.perp_legs["ETH"] / 500.0 == pytest.approx(g, rel=1e-7)
    assert a.spot_legs["ETH"] == pytest.approx(-a.perp_legs["ETH"], rel=1e-12)
    borrowed = (1 - g) * 227_625 - 55_000 + 500 * g
    assert a.margin_usd == pytest.approx(borrowed, rel=1e-7)
    assert a.inputs["margin_borrow_usd"] == pytest.approx(borrowed, rel=1e-7)
    # With the default target_vol vol targeting caps it at 0.75 / 0.50 = 1.5: already above
    # that band (1.65) before any borrowing, the same rule cuts to the band's top in the call.
    g_vol = brentq(lambda x: gap(x, 1.5), 0.0, 1.0, xtol=1e-14)
    assert g_vol > g
    (b,) = decide(short_book_at_perp_health_1_1(700_000.0), mandate(), market(), costs())
    assert b.perp_legs["ETH"] / 500.0 == pytest.approx(g_vol, rel=1e-7)
    assert b.margin_usd == pytest.approx((1 - g_vol) * 227_625 - 55_000 + 500 * g_vol, rel=1e-7)


def test_a_vault_without_debt_borrows_its_rescue_only_down_to_the_target_health() -> None:
    # 100 ETH (200k, LT 160k, LTV 150k) and no debt; short 5,000 ETH on 550k of margin: perp
    # health 550k / 500k = 1.1. Its margin target is the design rise at 1.35: 10M × 0.15 +
    # 1.35 × 10M × 1.15 × 5 % = 2,276,250, far beyond what lending can give. Lending health is
    # infinite without debt, but the rescue still borrows only down to 1.30: 160k / 1.3 =
    # 123,077 (the pool's LTV would allow 149,850 and leave 160k / 149,850 = 1.07), and cuts
    # g = (2,276,250 − 550,000 − 123,077) / (2,276,250 − 5,000) of the short.
    v = vault(assets=(eth(collateral=100.0),), debt_usdc=0.0, perp_margin_usd=550_000.0,
              nav_usd=750_000.0, perps=(PerpPosition("ETH", -5_000.0, 2_000.0, 0.0, 0.05),))
    (a,) = decide(v, mandate(), market(), costs())
    assert a.kind is ActionKind.DELEVERAGE
    assert a.margin_usd == pytest.approx(160_000 / 1.3, rel=1e-9)
    assert a.inputs["lending_health_after"] == pytest.approx(1.3, rel=1e-9)
    assert a.perp_legs["ETH"] / 5_000.0 == pytest.approx(
        (2_276_250 - 550_000 - 160_000 / 1.3) / 2_271_250, rel=1e-9
    )


def test_a_lending_breach_never_borrows_for_margin() -> None:
    # Both venues low (lending 1.2M / 1M = 1.2 < 1.25, perp 1.1): no borrowing, the idle cash
    # (none here) is all the margin there is, and the cure sells.
    (a,) = decide(short_book_at_perp_health_1_1(1_000_000.0), mandate(), market(), costs())
    assert a.kind is ActionKind.DELEVERAGE
    assert a.margin_usd == 0.0 and a.inputs["margin_borrow_usd"] == 0.0
    assert a.spot_legs["ETH"] < 0


def test_paused_vault_only_deleverages() -> None:
    m = mandate(target_vol=0.25, hedge_target=0.5)
    assert decide(vault(paused=True), m, market(), costs()) == []
    low = vault(paused=True, debt_usdc=1_000_000.0, nav_usd=500_000.0)
    assert kinds(decide(low, m, market(), costs())) == [ActionKind.DELEVERAGE]


@pytest.mark.parametrize("asset_kw", [dict(price_updated_at=NOW - 3_601),
                                      dict(implied_vol_updated_at=NOW - 7_200)])
def test_stale_feed_means_no_action_at_all(asset_kw: dict[str, int],
                                           caplog: pytest.LogCaptureFixture) -> None:
    v = vault(assets=(eth(**asset_kw),), debt_usdc=1_000_000.0, nav_usd=500_000.0)
    with caplog.at_level(logging.WARNING, logger="keeper.policy"):
        assert decide(v, mandate(), market(), costs()) == []
    assert "stale feed" in caplog.text
    # one second inside the limit it acts again
    fresh = {k: NOW - 3_600 for k in asset_kw}
    v2 = vault(assets=(eth(**fresh),), debt_usdc=1_000_000.0, nav_usd=500_000.0)
    assert kinds(decide(v2, mandate(), market(), costs())) == [ActionKind.DELEVERAGE]


def hedged_vault(perp_size: float, margin: float = 200_000.0, **kw: Any) -> VaultState:
    # 1.5M collateral, debt chosen so NAV = 1.0M (leverage 1.5, in band).
    return vault(debt_usdc=500_000.0 + margin, perp_margin_usd=margin,
                 perps=(PerpPosition("ETH", perp_size, 2_000.0, 0.0, 0.05),), **kw)


def test_hedge_brings_net_delta_to_target() -> None:
    # net delta 750 − 500 = 250 ETH = 500k USD vs target 0, band 2 % × 1M = 20k → sell 250 perps.
    acts = decide(hedged_vault(-500.0), mandate(hedge_target=0.0), market(), costs())
    assert kinds(acts) == [ActionKind.HEDGE]
    a = acts[0]
    assert dict(a.perp_legs) == pytest.approx({"ETH": -250.0})
    assert a.spot_legs == {}
    assert a.inputs["band_usd.ETH"] == pytest.approx(20_000.0)
    assert a.inputs["delta_gap_usd.ETH"] == pytest.approx(500_000.0)
    assert a.expected_benefit_usd == pytest.approx(500_000.0**2 * QUAD, rel=1e-9)
    assert a.expected_cost_usd == pytest.approx(0.3 + 500_000 * 0.0005, rel=1e-9)
    assert a.inputs["hedge_scale"] == 1.0


def test_the_hedge_counts_the_tokens_a_written_call_locks() -> None:
    # hedged_vault(-400): 750 − 400 = 350 ETH. Writing 100 calls locked 100 WETH in the option
    # market (the vault's still, valued at spot in NAV: delta one each); the 4 000-strike call
    # expires in 1 s on 2 000 spot, so its model delta is 0 to many digits. Net delta
    # 350 + 100 = 450 ETH = 900k against a 0 target → sell 450 perps (400k of margin carries
    # the 850 short). Without the locked
    # tokens it sold 350 and left the vault 100 ETH (200k, 20 % of NAV) long of a 0 ± 2 %
    # mandate.
    call = OptionPosition("ETH", True, 4_000.0, NOW + 1, -100.0, 0.0, 0.5,
                          locked_underlying=100.0)
    (a,) = decide(hedged_vault(-400.0, margin=400_000.0, options=(call,)),
                  mandate(hedge_target=0.0), market(), costs())
    assert a.kind == ActionKind.HEDGE
    assert a.inputs["hedge_scale"] == 1.0  # margin enough for the whole short
    assert dict(a.perp_legs) == pytest.approx({"ETH": -450.0})
    assert a.inputs["delta_gap_usd.ETH"] == pytest.approx(900_000.0)


def test_a_hedge_does_not_wait_for_cheap_gas_and_a_breach_of_max_leverage_neither() -> None:
    # Net delta 500 ETH against a 1.5 × NAV = 750 ETH target is outside the 2 % band: HIGH
    # (HIGH and CRITICAL never wait on the acceptable base fee; see keeper.tx.fees).
    (h,) = decide(hedged_vault(-250.0), mandate(), market(), costs())
    assert (h.kind, h.urgency) == (ActionKind.HEDGE, Urgency.HIGH)
    # Leverage 1.5 above a 1.2 max: the cut is a breach, HIGH; a cut to a vol target
    # (1.5 → 1.0 with max 3.0) is NORMAL. (Hedge target 1.0 × NAV = the 500 ETH the cut keeps:
    # no hedge joins the call, whose urgency would then be the hedge's HIGH.)
    (cut,) = decide(vault(), mandate(max_leverage=1.2, hedge_target=1.2), market(), costs())
    assert (cut.kind, cut.urgency) == (ActionKind.REBALANCE, Urgency.HIGH)
    assert cut.perp_legs == {}
    (cut,) = decide(vault(), mandate(target_vol=0.5, hedge_target=1.0), market(), costs())
    assert (cut.kind, cut.urgency) == (ActionKind.REBALANCE, Urgency.NORMAL)
    assert cut.perp_legs == {}


def test_no_re_lever_that_its_hedge_cannot_carry() -> None:
    # Leverage 1.5 → a target near 1.98 (the design-gap cap) buys ~240 ETH, and net delta must
    # stay at 1.5 × NAV = 750 ETH: the matching short needs initial margin, and the vault has
    # no idle cash and no perp margin. The re-lever waits rather than leave delta off mandate.
    m = mandate(target_vol=1.0)
    assert decide(vault(), m, market(), costs()) == []
    # With the hedge already in place (no new short needed: hedge target 2.0 × NAV), the same
    # re-lever goes.
    acts = decide(vault(), mandate(target_vol=1.0, hedge_target=2.0), market(), costs())
    assert [a.kind for a in acts] == [ActionKind.REBALANCE]
    assert acts[0].spot_legs["ETH"] > 200.0


def test_hedge_inside_band_does_nothing() -> None:
    # 5 ETH = 10k USD off target, band 20k.
    assert decide(hedged_vault(-745.0), mandate(hedge_target=0.0), market(), costs()) == []


def test_hedge_band_widens_with_gamma_whalley_wilmott() -> None:
    # Short 2 000 ETH of 30-day ATM calls: Γ = −2000 × φ(d1)/(Sσ√T). WW half-width
    # (1.5 λ S Γ² NAV/κ)^(1/3) then exceeds the mandate's 20k band.
    t = 30 * 86_400 / SECONDS_PER_YEAR
    d1 = (0.5 * 0.25 * t) / (0.5 * math.sqrt(t))
    gamma = -2_000 * math.exp(-0.5 * d1 * d1) / math.sqrt(2 * math.pi) / (2_000 * 0.5
                                                                           * math.sqrt(t))
    ww_units = (1.5 * 0.0005 * 2_000 * gamma**2 * 1_000_000 / 4.0) ** (1 / 3)
    assert ww_units * 2_000 > 20_000
    # size the perp so the option-adjusted delta sits between the two bands: with Δ_call(ATM)
    # = N(d1), net = 750 − 2000 N(d1) + perp.
    n_d1 = 0.5 * math.erfc(-d1 / math.sqrt(2))
    gap_units = 0.5 * (20_000 / 2_000 + ww_units)
    perp = -750 + 2_000 * n_d1 + gap_units
    opts = (OptionPosition("ETH", True, 2_000.0, NOW + 30 * 86_400, -2_000.0, 100.0, 0.5),)
    m = mandate(hedge_target=0.0)
    assert decide(hedged_vault(perp, margin=400_000.0, options=opts), m, market(), costs()) == []
    far = perp + ww_units  # now outside the WW band
    (a,) = decide(hedged_vault(far, margin=400_000.0, options=opts), m, market(), costs())
    assert a.kind is ActionKind.HEDGE
    assert a.inputs["gamma.ETH"] == pytest.approx(gamma, rel=1e-9)
    assert a.inputs["band_usd.ETH"] == pytest.approx(ww_units * 2_000, rel=1e-9)
    assert a.perp_legs["ETH"] == pytest.approx(-(gap_units + ww_units), rel=1e-9)


def test_the_scenario_grid_caps_a_re_levers_leverage() -> None:
    # With no design gap, the lending stress falls to the grid's −16 %: L × 0.8 × 0.84 / (L − 1)
    # >= 1.05 → L <= 1.05 / (1.05 − 0.672) = 2.7778 (the implied-vol shock at 50 % over a day
    # and the 10 % minimum are smaller); a 1 % grid leaves it to them, a higher cap.
    m = mandate(target_vol=2.0, min_health=1.0, cppi_floor=0.0)

    def cap(grid_range: float) -> float:
        params = PolicyParams(design_gap=0.0, grid_range=grid_range)
        a = assess_batch([vault()], [m], market(), costs(), params)
        # the grid's lowest health is lending's at −range (no perps): 2.4 × (1 − range)
        assert a.grid_health[0] == pytest.approx(2.4 * (1 - grid_range))
        return float(a.lev_stress[0])

    assert cap(0.16) == pytest.approx(1.05 / (1.05 - 0.8 * 0.84), rel=1e-9)
    assert cap(0.01) > 1.05 / (1.05 - 0.8 * 0.84) + 0.1


def test_the_margin_target_carries_the_scenario_grid() -> None:
    # −500 ETH ($1M) at min health 1.0 (keep 1.10): the design rise needs 1M × 0.15 + 1.10 ×
    # 1M × 1.15 × 5 % = 213 250; the grid's +16 % at health 1.05 needs 1M × 0.16 + 1.05 × 1M ×
    # 1.16 × 5 % = 220 900, the larger, so the target (the idle cash kept back for margin, the
    # floor of a sweep, the aim of a perp cut). At min health 1.25 the design rise's 1M × 0.15 +
    # 1.35 × 1.15 × 50k = 227 625 is the larger. The grid's health: (200k − 160k) / (1.16 × 50k).
    def target(min_health: float) -> tuple[float, float]:
        a = assess_batch([hedged_vault(-500.0)], [mandate(min_health=min_health)], market(),
                         costs())
        return float(a.margin_target[0]), float(a.grid_health[0])

    assert target(1.0) == pytest.approx((220_900.0, 40_000 / 58_000), rel=1e-12)
    assert target(1.25)[0] == pytest.approx(227_625.0, rel=1e-12)


def test_hedge_that_grows_a_position_borrows_the_initial_margin_it_lacks() -> None:
    # Margin 80k against −500 ETH ($1M notional), no idle cash. The full hedge to −750 ETH
    # ($1.5M) needs initial margin with its 25 % buffer, 1.5M × 5 % × 2 × 1.25 = 187 500: the
    # perp market refuses any growth below it (PerpMarketInsufficientMargin). Equity after the
    # fee (250 ETH × 2 000 × 5 bps = 250) is 79 750, so 107 750 is borrowed: lending room down
    # to health 1.35 is 1.2M / 1.35 − 580k = 308 889. Before: no idle cash, no hedge, and the
    # excess spot was sold instead (so a vault whose perps were liquidated never re-hedged).
    acts = decide(hedged_vault(-500.0, margin=80_000.0), mandate(hedge_target=0.0), market(),
                  costs())
    (h,) = acts
    assert h.kind is ActionKind.HEDGE and h.spot_legs == {}
    assert h.inputs["hedge_scale"] == 1.0
    assert dict(h.perp_legs) == pytest.approx({"ETH": -250.0}, rel=1e-12)
    assert h.margin_usd == pytest.approx(107_750.0, rel=1e-12)
    assert h.inputs["margin_borrow_usd"] == pytest.approx(107_750.0, rel=1e-12)
    assert "$107,750 into perp margin ($107,750 of it borrowed)" in h.reason


def test_a_growing_hedge_borrows_only_down_to_the_health_a_trade_keeps() -> None:
    # −500 ETH on 100k of margin, 850k of debt: NAV 1.5M + 100k − 850k = 750k, lending health
    # 1.2M / 850k = 1.41, room down to 1.35: 1.2M / 1.35 − 850k = 38 888.9. Net delta 250 ETH
    # off a 0 ± 2 % mandate. A hedge of k × −250 ETH needs initial margin (1M + 0.5M·k) × 0.125
    # against equity 100k − 250·k (fee): 25 000 + 62 750·k <= 38 888.9 → k = 0.221337, all of
    # the room borrowed. (Target 1.717 vs 2.0 is outside its band, but the cut's benefit, 576,
    # is under its cost, 849: the hedge goes alone.)
    v = vault(debt_usdc=850_000.0, perp_margin_usd=100_000.0, nav_usd=750_000.0,
              perps=(PerpPosition("ETH", -500.0, 2_000.0, 0.0, 0.05),))
    (h,) = decide(v, mandate(hedge_target=0.0, target_vol=1.0), market(), costs())
    room = 1.2e6 / 1.35 - 850_000.0
    k = (room - 25_000.0) / 62_750.0
    assert h.kind is ActionKind.HEDGE
    assert h.inputs["hedge_scale"] == pytest.approx(k, rel=1e-6)
    assert dict(h.perp_legs) == pytest.approx({"ETH": -250.0 * k}, rel=1e-6)
    assert h.margin_usd == pytest.approx(room, rel=1e-6)
    assert h.inputs["margin_borrow_usd"] == pytest.approx(room, rel=1e-6)


def test_a_re_lever_keeps_the_idle_cash_its_own_hedge_needs_as_margin() -> None:
    # A delta-neutral vault whose perps were liquidated: 100 ETH ($200k), no debt, $800k idle,
    # NAV 1M, leverage 0.2, target 1.5 by vol. The hedge of the book at 1.5 (−750 ETH, $1.5M)
    # wants margin for the 15 % design rise at health 1.35: 1.5M × (0.15 + 1.35 × 1.15 × 5 %) =
    # 341 437.5, from idle cash; the lending equity left, 1M − 341 437.5, caps the design-gap
    # stress at 1.05 × 658 562.5 / (1M × (1.05 − 0.8 × 0.65)) = 1.304699. One call: buy to it,
    # short as much, and post the hedge's margin, N × 0.227625 + the fee N × 5 bps at
    # N = 652.35 ETH × 2 000. Before: the buy spent the idle cash, the hedge had none, so the
    # re-lever waited (the simulator's squeeze15: $850k idle at 0.12× for the whole tail).
    v = vault(assets=(eth(collateral=100.0),), debt_usdc=0.0, idle_usdc=800_000.0)
    (a,) = decide(v, mandate(hedge_target=0.0), market(), costs())
    target = 1.05 * (1e6 - 1.5e6 * 0.227625) / 530_000.0
    assert a.kind is ActionKind.REBALANCE
    assert a.inputs["target_leverage"] == pytest.approx(target, rel=1e-9)
    assert a.inputs["lev_hedge_margin"] == pytest.approx(target, rel=1e-9)
    units = target * 500.0
    assert dict(a.spot_legs) == pytest.approx({"ETH": units - 100.0}, rel=1e-9)
    assert dict(a.perp_legs) == pytest.approx({"ETH": -units}, rel=1e-9)
    n = units * 2_000.0
    assert a.margin_usd == pytest.approx(n * 0.227625 + n * 5e-4, rel=1e-9)


def test_hedge_posts_idle_cash_as_its_margin_in_the_same_call() -> None:
    # Same book with 200k idle (debt +200k keeps NAV at 1M). Full hedge to −750 ETH ($1.5M):
    # initial margin 1.5M × 0.125 = 187 500, equity after the fee 80 000 − 250 = 79 750 → hard
    # need 107 750 <= 200k, so full size. The target also covers a 15 % rise at health 1.35:
    # 1.5M × 0.15 + 1.35 × 1.5M × 1.15 × 5 % = 341 437.5 → wants 261 687.5, capped at the 200k.
    v = vault(debt_usdc=780_000.0, perp_margin_usd=80_000.0, idle_usdc=200_000.0,
              perps=(PerpPosition("ETH", -500.0, 2_000.0, 0.0, 0.05),))
    acts = decide(v, mandate(hedge_target=0.0), market(), costs())
    assert kinds(acts) == [ActionKind.HEDGE]
    assert acts[0].inputs["hedge_scale"] == 1.0
    assert dict(acts[0].perp_legs) == pytest.approx({"ETH": -250.0})
    assert acts[0].margin_usd == pytest.approx(200_000.0)
    # The book's target before the hedge (−500 ETH): 1M × 0.15 + 1.35 × 1M × 1.15 × 5 %.
    assert acts[0].inputs["margin_target_usd"] == pytest.approx(227_625.0, rel=1e-9)


def test_no_flip_flop_after_a_rebalance() -> None:
    m = mandate(target_vol=0.5, hedge_target=1.0)
    (a,) = decide(vault(), m, market(), costs())
    sold = -a.spot_legs["ETH"]
    proceeds = sold * 2_000 * (1 - 0.004)  # fee + expected slippage
    after = vault(assets=(eth(750.0 - sold),), debt_usdc=500_000.0 - proceeds,
                  nav_usd=1_000_000.0 - sold * 2_000 * 0.004)
    assert decide(after, m, market(), costs()) == []


def test_no_flip_flop_after_a_deleverage() -> None:
    m = mandate(target_vol=1.0, hedge_target=2.0)  # a mandate that wants more leverage
    v = vault(debt_usdc=1_000_000.0, nav_usd=500_000.0)
    (a,) = decide(v, m, market(), costs())
    sold = -a.spot_legs["ETH"]
    proceeds = sold * 2_000 * (1 - 0.008)
    after = vault(assets=(eth(750.0 - sold),), debt_usdc=1e6 - proceeds,
                  nav_usd=500_000.0 - sold * 2_000 * 0.008)
    again = decide(after, m, market(), costs())
    assert ActionKind.DELEVERAGE not in kinds(again)
    # the health cap (min + 0.10) sits above the deleverage target (min + 0.05): never re-lever
    for act in again:
        assert all(leg <= 0.0 for leg in act.spot_legs.values())


def test_cppi_high_water_mark_binds() -> None:
    # HWM 1.5M, floor 50 % → 750k; cushion 250k × 4 = 1.0M → leverage 1.0.
    mk = market(nav_high_water_usd={"0xV": 1_500_000.0})
    (a,) = decide(vault(), mandate(hedge_target=1.0), mk, costs())
    assert a.inputs["lev_cppi"] == pytest.approx(1.0)
    assert a.inputs["target_leverage"] == pytest.approx(1.0)


def test_kelly_cap_and_stress_cut_numbers() -> None:
    mk = market(expected_returns={"ETH": 0.10})
    a = assess_batch([vault()], [mandate()], mk, costs())
    assert float(a.lev_kelly[0]) == pytest.approx(0.5 * 0.10 / 0.25)
    assert float(a.target_leverage[0]) == pytest.approx(0.2)
    # Stress: a 50 % joint fall (policy minimum) → L <= 1.05 K / (NAV (1.05 − 0.5 × 0.8)).
    p = PolicyParams(stress_min_shock=0.5)
    a = assess_batch([vault()], [mandate(target_vol=1.0)], market(), costs(), p)
    assert float(a.lev_stress[0]) == pytest.approx(1.05 / 0.65)
    # The re-lever's hedge: at 1.6154 the vault holds 807.7 ETH against a 1.5 × NAV = 750 ETH
    # target, so it shorts 57.69 ETH ($115.4k), whose initial margin, 115.4k × 0.125 = 14 423,
    # is borrowed: the stress cap at the lending equity left, 1.05 × (1M − 14 423) / 0.65 M.
    short = (1.05 / 0.65 * 500.0 - 750.0) * 2_000.0
    assert float(a.lev_margin[0]) == pytest.approx(1.05 * (1e6 - short * 0.125) / 0.65e6)
    assert float(a.target_leverage[0]) == pytest.approx(float(a.lev_margin[0]))


def test_vol_method_is_reported_and_garch_used_with_history() -> None:
    rng = np.random.default_rng(9)
    n = 600
    ts = NOW - 60.0 - 3_600.0 * np.arange(n)[::-1]
    r = rng.standard_t(5, n - 1) * 0.5 * math.sqrt(3_600 / SECONDS_PER_YEAR) * math.sqrt(3 / 5)
    h = 1.0 + 0.5 * np.sin(np.arange(n - 1) / 40.0)  # vol clusters so GARCH is identified
    px = 2_000.0 * np.exp(np.concatenate(([0.0], np.cumsum(r * h))))
    mk = market(histories=(PriceHistory("ETH", ts, np.asarray(px / px[-1] * 2_000.0,
                                                                 dtype=np.float64)),))
    (a,) = decide(vault(), mandate(target_vol=0.2, hedge_target=0.5), mk, costs())
    assert a.inputs["vol_method.ETH"] in ("garch", "ewma")
    fc = build_forecast(mk, PolicyParams())
    assert a.inputs["vol.ETH"] == pytest.approx(fc.vols["ETH"].vol)


def test_forecast_for_another_tick_is_rejected() -> None:
    fc = build_forecast(market(now=NOW - 60), PolicyParams())
    with pytest.raises(RiskInputError, match="forecast"):
        decide(vault(), mandate(), market(), costs(), forecast=fc)


def test_actions_are_immutable_records() -> None:
    (a,) = decide(vault(), mandate(target_vol=0.5, hedge_target=1.0), market(), costs())
    with pytest.raises(TypeError):
        a.inputs["leverage"] = 0.0  # type: ignore[index]
    with pytest.raises(AttributeError):
        a.reason = "x"  # type: ignore[misc]


def _eth_history(fall_24h: float) -> PriceHistory:
    """48 hourly rounds ending at $2 000 (the vault's price) a minute before NOW: flat for a
    day, then a steady fall of ``fall_24h`` (log) over the last 24 h."""
    ts = NOW - 60.0 - 3_600.0 * np.arange(48)[::-1]
    logs = np.concatenate((np.zeros(24), np.linspace(0.0, -fall_24h, 24)))
    return PriceHistory("ETH", ts, 2_000.0 * np.exp(logs - logs[-1]))


def test_no_re_levering_while_the_market_falls() -> None:
    # Target 2.0 (10 % design gap so the stress does not cap it) against 1.5: a buy on a flat
    # tape, nothing after a 10 % fall in 24 h.
    m, p = mandate(target_vol=1.0, hedge_target=2.0), PolicyParams(design_gap=0.10)
    flat = decide(vault(), m, market(histories=(_eth_history(0.0),)), costs(), p)
    assert kinds(flat) == [ActionKind.REBALANCE] and flat[0].spot_legs["ETH"] > 0
    falling = decide(vault(), m, market(histories=(_eth_history(0.10),)), costs(), p)
    # No buy; the mandate's 2 × NAV = 1 000 ETH of delta comes from perps instead, on borrowed
    # initial margin: 250 ETH × 2 000 × 0.125 + the 250 fee = 62 750.
    (h,) = falling
    assert h.kind is ActionKind.HEDGE and h.spot_legs == {}
    assert dict(h.perp_legs) == pytest.approx({"ETH": 250.0})
    assert h.margin_usd == pytest.approx(62_750.0, rel=1e-12)


def swept_vault(margin: float) -> VaultState:
    # 750 ETH (1.5M) against 0.5M debt (lending health 2.4), short 750 ETH (net delta 0) on
    # `margin` of posted cash: NAV = 1.0M + margin.
    return vault(debt_usdc=500_000.0, perp_margin_usd=margin, nav_usd=1_000_000.0 + margin,
                 perps=(PerpPosition("ETH", -750.0, 2_000.0, 0.0, 0.05),))


#: The design gap's stressed-health cap per unit of lending equity over NAV (35 % gap, LT 0.80,
#: floor 1.05): L <= 1.05 · K / (NAV · (1.05 − 0.52)).
STRESS_SLOPE = 1.05 / (1.05 - 0.8 * 0.65)
#: A short's margin target per USD of notional: 15 % design rise + (min health 1.25 + buffer
#: 0.10) × 1.15 × 5 % maintenance.
SHORT_KEEP = 0.15 + 1.35 * 1.15 * 0.05


def _fixed_point_sweep(margin: float, lending_equity: float) -> float:
    """The sweep s that leaves exactly the margin the hedge at the leverage it allows needs
    (hedge target 0, the stress cap binding): s = margin − SHORT_KEEP · L · NAV with
    L · NAV = STRESS_SLOPE · (K + s), solved for s."""
    k = SHORT_KEEP * STRESS_SLOPE
    return (margin - k * lending_equity) / (1.0 + k)


def test_perp_profit_beyond_the_hedges_need_repays_debt_last() -> None:
    # Margin 800k, NAV 1.8M, lending equity K = 1.5M − 0.5M = 1.0M. The mandate's own leverage
    # (vol target 0.75 / 0.50 = 1.5; CPPI 2.0; max 3.0) is capped by the design gap at
    # STRESS_SLOPE × K / NAV = 1.98113 × 1.0M / 1.8M = 1.1006 — and every dollar swept into debt
    # raises K. The hedge (target 0) at that leverage is short L × NAV and keeps SHORT_KEEP
    # (0.227625) of it: s = 800k − 0.227625 × 1.98113 × (1.0M + s), so s = (800k − 450,955) /
    # 1.450955 = 240,563 (kept: 559,437, above today's short's 341,437.5). Over 5 % of NAV
    # (90k), saving 240,563 × 5 % × 7/365 = $230.7 of interest against 0.30 of gas: one REPAY,
    # HIGH (worth today's gas, it does not wait for a cheaper block), after anything else.
    m = mandate(hedge_target=0.0)
    acts = decide(swept_vault(800_000.0), m, market(risk_free_rate=0.05), costs())
    sweep = acts[-1]
    assert sweep.kind is ActionKind.REPAY and sweep.urgency is Urgency.HIGH
    assert [a.kind for a in acts].count(ActionKind.REPAY) == 1
    s = _fixed_point_sweep(800_000.0, 1_000_000.0)
    assert s == pytest.approx(240_563, abs=1.0)
    assert sweep.repay_usd == pytest.approx(s, rel=1e-9)
    assert sweep.margin_usd == pytest.approx(-s, rel=1e-9)
    assert sweep.expected_benefit_usd == pytest.approx(s * 0.05 * 7 / 365, rel=1e-9)
    assert sweep.expected_cost_usd == pytest.approx(0.3, rel=1e-12)
    # Never past the fixed point: on the book it leaves, nothing more is swept.
    after = replace(swept_vault(800_000.0 - sweep.repay_usd), debt_usdc=500_000.0 - s,
                    nav_usd=1_800_000.0)
    assert ActionKind.REPAY not in kinds(decide(after, m, market(risk_free_rate=0.05), costs()))


def test_no_sweep_when_small_free_or_not_owed() -> None:
    m, mk = mandate(hedge_target=0.0), market(risk_free_rate=0.05)
    # Margin 560k, NAV 1.56M: the fixed point keeps 0.450955 × (1.0M + s), so s = (560k −
    # 450,955) / 1.450955 = 75,154 is surplus — under 5 % of NAV (78k): left where it is.
    assert _fixed_point_sweep(560_000.0, 1_000_000.0) < 0.05 * 1_560_000.0
    assert ActionKind.REPAY not in kinds(decide(swept_vault(560_000.0), m, mk, costs()))
    # No interest to save (rate 0), or no debt: no sweep.
    assert ActionKind.REPAY not in kinds(decide(swept_vault(800_000.0), m, market(), costs()))
    no_debt = replace(swept_vault(800_000.0), debt_usdc=0.0, nav_usd=2_300_000.0)
    assert ActionKind.REPAY not in kinds(decide(no_debt, m, mk, costs()))


def test_a_sweep_goes_before_a_relever_whatever_its_size() -> None:
    # 400 ETH (800k) against 100k debt (K = 700k), short 400 ETH on 380k of margin: NAV 1.08M,
    # leverage 0.741. Vol target 1.0 / 0.5 → 2.0, so the design gap's cap binds: STRESS_SLOPE ×
    # 700k / 1.08M = 1.2841, out of its band (0.128). The re-lever's benefit (err 0.543 × NAV
    # = 586k: 4 × 7/365 / (2 × 1.08M) × 0.25 × 586k² ≈ $3,050) beats its cost (586k × 40 bps
    # + gas ≈ $2,346) and the sweep's gas. The sweep, s = (380k − 0.450955 × 700k) / 1.450955 =
    # 44,337, is under 5 % of NAV (54k) and saves $42.5 of interest — alone it would wait — but
    # before a re-lever it goes first: the re-lever, decided again once it has landed, trades
    # to the higher cap the repay allows (1.98113 × 744,337 / 1.08M = 1.3654, not 1.2841).
    v = vault(assets=(eth(400.0),), debt_usdc=100_000.0, perp_margin_usd=380_000.0,
              nav_usd=1_080_000.0, perps=(PerpPosition("ETH", -400.0, 2_000.0, 0.0, 0.05),))
    m, mk = mandate(target_vol=1.0, hedge_target=0.0), market(risk_free_rate=0.05)
    acts = decide(v, m, mk, costs())
    assert kinds(acts) == [ActionKind.REPAY, ActionKind.REBALANCE]
    s = _fixed_point_sweep(380_000.0, 700_000.0)
    assert s == pytest.approx(44_337, abs=1.0) and s < 0.05 * 1_080_000.0
    assert acts[0].repay_usd == pytest.approx(s, rel=1e-9)
    assert acts[1].inputs["target_leverage"] == pytest.approx(STRESS_SLOPE * 0.7 / 1.08, rel=1e-9)
    swept = replace(v, debt_usdc=100_000.0 - s, perp_margin_usd=380_000.0 - s)
    again = decide(swept, m, mk, costs())
    assert kinds(again) == [ActionKind.REBALANCE]
    assert again[0].inputs["target_leverage"] == pytest.approx(
        STRESS_SLOPE * (700_000.0 + s) / 1_080_000.0, rel=1e-9
    )
    # Without the re-lever (the same book at the target's leverage) the small sweep waits.
    at_target = replace(v, assets=(eth(STRESS_SLOPE * 700_000.0 / 2_000.0),),
                        debt_usdc=100_000.0 + (STRESS_SLOPE * 700_000.0 - 800_000.0))
    assert ActionKind.REPAY not in kinds(decide(at_target, m, mk, costs()))


def test_no_sweep_while_perp_health_binds() -> None:
    # 500 ETH (1.0M) against 100k debt: lending health 1.0M × 0.8 / 100k = 8.0. Short 500 ETH
    # (maintenance 50k) on 380k margin: perp health 7.6, the binding one. Target vol 0.25 →
    # the hedge at 0.5× needs 0.5 × 1.28M × 0.227625 = 145,680, under today's margin target
    # 1.0M × 0.227625 = 227,625: 152,375 is above the keep and 100k of it (the debt) would
    # repay it, 7.8 % of NAV. But the withdrawal takes perp health to 280k / 50k = 5.6: binding
    # health falls, and the vault refuses a repayDebt that does not raise it.
    v = vault(assets=(eth(500.0),), debt_usdc=100_000.0, perp_margin_usd=380_000.0,
              nav_usd=1_280_000.0, perps=(PerpPosition("ETH", -500.0, 2_000.0, 0.0, 0.05),))
    acts = decide(v, mandate(target_vol=0.25, hedge_target=0.0),
                  market(risk_free_rate=0.05), costs())
    assert ActionKind.REPAY not in kinds(acts)


def test_a_sweep_stops_where_perp_health_would_bind() -> None:
    # 750 ETH against 250k debt: lending health 1.2M / 250k = 4.8. Short 750 ETH (maintenance
    # 75k) on 600k margin: perp health 8.0. NAV 1.85M; target vol 0.25 → keep = today's margin
    # target 1.5M × 0.227625 = 341,437.5, so 258,562.5 is above it and the whole 250k debt
    # could be repaid — leaving perp health 350k / 75k = 4.67, under the 4.8 it started from.
    # The sweep stops with perp health 1 % above the lending health: 600k − 4.8 × 1.01 × 75k
    # = 236,400 (12.8 % of NAV); after it, perp health 4.848 and lending 1.2M / 13,600 = 88.2.
    v = vault(debt_usdc=250_000.0, perp_margin_usd=600_000.0, nav_usd=1_850_000.0,
              perps=(PerpPosition("ETH", -750.0, 2_000.0, 0.0, 0.05),))
    acts = decide(v, mandate(target_vol=0.25, hedge_target=0.0),
                  market(risk_free_rate=0.05), costs())
    sweep = acts[-1]
    assert sweep.kind is ActionKind.REPAY
    assert sweep.repay_usd == pytest.approx(236_400.0, rel=1e-12)
    assert sweep.margin_usd == pytest.approx(-236_400.0, rel=1e-12)
    assert (600_000.0 - sweep.repay_usd) / 75_000.0 == pytest.approx(4.8 * 1.01, rel=1e-12)


def test_a_hedge_outside_the_mandates_band_is_owed_whatever_the_gas() -> None:
    # Net delta 750 − 500 = 250 ETH = 500k, 50 % of NAV against 0 ± 2 %. At 1 USD per gas the
    # hedge's 300k gas costs $300k + 250 × 2000 × 5 bps = $300,250 against a tracking benefit
    # of 500k² × QUAD ≈ $2,397: the cost model alone would leave the vault off its mandate.
    pricey = costs(gas_price_usd_per_gas=1.0)
    (h,) = decide(hedged_vault(-500.0), mandate(hedge_target=0.0), market(), pricey)
    assert h.kind is ActionKind.HEDGE
    assert h.expected_cost_usd == pytest.approx(300_250.0, rel=1e-9)
    assert h.expected_benefit_usd == pytest.approx(500_000.0**2 * QUAD, rel=1e-9)
    assert dict(h.perp_legs) == pytest.approx({"ETH": -250.0})


def test_no_sweep_while_the_tape_moves() -> None:
    # The 240,562 sweep above goes on a flat tape; not after a 10 % fall (or rise) in 24 h:
    # a short's crash profit is its margin for the rebound.
    m, rate = mandate(hedge_target=0.0), 0.05
    flat = decide(swept_vault(800_000.0), m,
                  market(risk_free_rate=rate, histories=(_eth_history(0.0),)), costs())
    assert flat[-1].kind is ActionKind.REPAY
    assert flat[-1].repay_usd == pytest.approx(_fixed_point_sweep(800_000.0, 1e6), rel=1e-9)
    for move in (0.10, -0.10):
        moved = decide(swept_vault(800_000.0), m,
                       market(risk_free_rate=rate, histories=(_eth_history(move),)), costs())
        assert ActionKind.REPAY not in kinds(moved)


def test_off_the_mandate_with_no_margin_cash_the_excess_spot_is_sold() -> None:
    # 750 ETH long, no perps, no idle cash, no margin: net delta 750 ETH against a target of
    # 1.0 × NAV = 500 ETH (band 2 % = 10 ETH). The hedge would short 250 ETH on borrowed initial
    # margin (500k × 5 % × 2 × 1.25 = 62.5k), but at min health 2.30 a trade keeps lending
    # health at 2.40, today's: there is no room to borrow (scale 0). Instead: sell the 250 ETH
    # excess, HIGH; its cost is gas (0.70) + 500k × 40 bps = $2,000.70.
    (a,) = decide(vault(), mandate(hedge_target=1.0, min_health=2.30), market(), costs())
    assert (a.kind, a.urgency) == (ActionKind.REBALANCE, Urgency.HIGH)
    assert dict(a.spot_legs) == pytest.approx({"ETH": -250.0}, rel=1e-12)
    assert a.perp_legs == {}
    assert a.expected_cost_usd == pytest.approx(0.7 + 2_000.0, rel=1e-9)
    # Too short rather than too long: nothing is bought to fix it (that would add risk).
    assert decide(vault(), mandate(hedge_target=2.0, min_health=2.30), market(), costs()) == []
