"""The circuit breaker (`keeper.breaker`) and what it lets through (`keeper.policy`), by hand.

Prices are USD WAD integers; every bound is checked on both sides with hand-worked numbers:
a 30 % round-to-round move opens at the 25 % bound and a 20 % one does not; exactly 25 % is not
"beyond"; 2.1 % between feed and venue opens at 2 %, 2 % does not.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from keeper.breaker import COOLDOWN_S, MAX_JUMP_BPS, MAX_VENUE_GAP_BPS, BreakerBook, BreakerBounds
from keeper.chain.snapshot import AssetSnapshot, Mandate, VaultSnapshot, venue_mid_wad
from keeper.errors import ConfigError
from keeper.policy import ActionKind, Urgency, decide, risk_reducing_only
from keeper.risk.actions import Action
from keeper.risk.params import PolicyParams
from keeper.risk.types import PerpPosition

from .conftest import costs, mandate, market, vault

WAD = 10**18
NOW = 1_700_000_000
VAULT = Web3.to_checksum_address("0x" + "aa" * 20)
VAULT2 = Web3.to_checksum_address("0x" + "bb" * 20)
WETH = Web3.to_checksum_address("0x" + "11" * 20)
WBTC = Web3.to_checksum_address("0x" + "22" * 20)
ETH_FEED = Web3.to_checksum_address("0x" + "e1" * 20)
BTC_FEED = Web3.to_checksum_address("0x" + "b1" * 20)
OTHER_FEED = Web3.to_checksum_address("0x" + "0f" * 20)
SYMBOLS = {WETH: "WETH", WBTC: "WBTC"}


# ====================================================================== builders
def eth(price: int = 3_000 * WAD, round_id: int = 1, **kw: Any) -> AssetSnapshot:
    base: dict[str, Any] = dict(
        token=WETH, decimals=18, price_feed=ETH_FEED, price=price, price_updated_at=NOW,
        price_round=round_id, vol_feed=ETH_FEED, implied_vol=WAD // 2, vol_updated_at=NOW,
        collateral=WAD, idle=0, ltv=8 * WAD // 10, liquidation_threshold=85 * WAD // 100,
        perp_size=0, perp_entry_price=0, perp_pnl=0, perp_maintenance_margin=WAD // 20,
    )
    base.update(kw)
    return AssetSnapshot(**base)


def btc(price: int = 60_000 * WAD, round_id: int = 1, **kw: Any) -> AssetSnapshot:
    return replace(eth(price, round_id, **kw), token=WBTC, decimals=8, price_feed=BTC_FEED,
                   vol_feed=BTC_FEED)


def snap(*assets: AssetSnapshot, t: int = NOW, block: int = 100,
         vault_address: str = VAULT) -> VaultSnapshot:
    m = Mandate(target_vol=WAD, max_leverage=3 * WAD, min_health=13 * WAD // 10, hedge_target=0,
                hedge_band=WAD // 20, cppi_floor=WAD // 2, cppi_multiplier=3 * WAD,
                kelly_fraction=WAD // 2, max_slippage_bps=50)
    return VaultSnapshot(
        vault=Web3.to_checksum_address(vault_address), block_number=block, timestamp=t,
        total_assets=10**12, total_supply=10**12, high_water_mark=WAD, idle_usdc=0, debt=0,
        lending_health=2 * WAD, perp_margin=0, perp_account_value=0, perp_health=2 * WAD,
        health=2 * WAD, leverage=WAD, swap_fee_bps=10, perp_fee_bps=5, max_price_age=3_600,
        paused=False, last_action_at=0, mandate=m, assets=assets or (eth(),), options=(),
    )


def one(*assets: AssetSnapshot, t: int = NOW, block: int = 100) -> dict[str, VaultSnapshot]:
    """One vault read at time `t`, its feeds' latest rounds published in that block."""
    stamped = tuple(replace(a, price_updated_at=t) for a in assets or (eth(),))
    return {VAULT: snap(*stamped, t=t, block=block)}


def act(kind: ActionKind, **kw: Any) -> Action:
    return Action(kind=kind, vault=VAULT, urgency=kw.pop("urgency", Urgency.NORMAL),
                  expected_benefit_usd=1.0, expected_cost_usd=0.5, reason=f"test {kind.value}",
                  **kw)


# ====================================================================== bounds
def test_the_default_bounds_are_the_documented_ones() -> None:
    b = BreakerBounds()
    assert (b.max_jump_bps, b.max_venue_gap_bps, b.cooldown_s) == (2_500, 200, 3_600)
    assert (MAX_JUMP_BPS, MAX_VENUE_GAP_BPS, COOLDOWN_S) == (2_500, 200, 3_600)


@pytest.mark.parametrize("kw", [{"max_jump_bps": 0}, {"max_venue_gap_bps": -1},
                                {"cooldown_s": 0}, {"max_jump_bps": 0.25}])
def test_a_bound_that_is_not_a_positive_integer_is_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=next(iter(kw))):
        BreakerBounds(**kw)


# ====================================================================== jumps
def test_a_30_percent_fall_between_consecutive_rounds_opens_the_breaker() -> None:
    book = BreakerBook()
    assert book.update(one(eth(3_000 * WAD, 1)), SYMBOLS) == {VAULT: []}
    # |2 100 − 3 000| / 3 000 = 30 % > 25 %
    reasons = book.update(one(eth(2_100 * WAD, 2), t=NOW + 12), SYMBOLS)[VAULT]
    assert reasons == [
        f"WETH feed {ETH_FEED} moved -30.0% from round 1 to 2 ($3,000.00 → $2,100.00), "
        "beyond the ±25 % per-round bound"
    ]
    assert book.is_open(VAULT)


def test_a_30_percent_rise_opens_and_a_20_percent_move_does_not() -> None:
    book = BreakerBook()
    book.update(one(eth(3_000 * WAD, 1)))
    assert book.update(one(eth(3_600 * WAD, 2)))[VAULT] == []  # +20 %
    assert book.update(one(eth(2_880 * WAD, 3)))[VAULT] == []  # 3 600 → 2 880: −20 %
    (reason,) = book.update(one(eth(3_744 * WAD, 4)))[VAULT]  # 2 880 → 3 744: +30 %
    assert "moved +30.0% from round 3 to 4" in reason and "$2,880.00 → $3,744.00" in reason


def test_exactly_the_bound_is_not_beyond_it_one_wei_more_is() -> None:
    book = BreakerBook()
    book.update(one(eth(3_000 * WAD, 1)))
    assert book.update(one(eth(3_750 * WAD, 2)))[VAULT] == []  # +25 % exactly
    book = BreakerBook()
    book.update(one(eth(3_000 * WAD, 1)))
    assert len(book.update(one(eth(3_750 * WAD + 1, 2)))[VAULT]) == 1


def test_the_same_round_read_again_is_not_a_move() -> None:
    book = BreakerBook()
    book.update(one(eth(3_000 * WAD, 7)))
    assert book.update(one(eth(3_000 * WAD, 7), t=NOW + 60))[VAULT] == []


def test_rounds_a_read_skipped_are_measured_across() -> None:
    # Rounds 2–4 were never read: the move is measured from the last round seen (1), so four
    # −8 % rounds (3 000 → 2 149.1…) are one −28.4 % move.
    book = BreakerBook()
    book.update(one(eth(3_000 * WAD, 1)))
    price = 3_000 * WAD * 92**4 // 100**4
    (reason,) = book.update(one(eth(price, 5)))[VAULT]
    assert "moved -28.4% from round 1 to 5" in reason


def test_a_jump_on_a_shared_feed_opens_every_vault_on_it() -> None:
    book = BreakerBook()
    first = {VAULT: snap(eth(3_000 * WAD, 1)),
             VAULT2: snap(btc(60_000 * WAD, 1), vault_address=VAULT2)}
    book.update(first)
    both = {VAULT: snap(eth(2_000 * WAD, 2), btc(60_000 * WAD, 1)),
            VAULT2: snap(eth(2_000 * WAD, 2), vault_address=VAULT2)}
    out = book.update(both, SYMBOLS)
    assert len(out[VAULT]) == 1 and out[VAULT] == out[VAULT2]
    assert out[VAULT][0].startswith(f"WETH feed {ETH_FEED} moved -33.3%")


def test_seeding_with_the_previous_round_lets_a_first_read_see_the_jump() -> None:
    book = BreakerBook()
    book.seed({ETH_FEED: (41, 3_000 * WAD)})
    (reason,) = book.update(one(eth(2_100 * WAD, 42)))[VAULT]
    assert "from round 41 to 42" in reason
    # a seed never overrides what the book has seen itself
    book.seed({ETH_FEED: (41, 1 * WAD)})
    assert book.update(one(eth(2_100 * WAD, 42), t=NOW + 3_600))[VAULT] == []


def test_a_jump_is_timed_from_its_rounds_publication() -> None:
    # A process that starts (or a `keeper status` run) 2 h after a 30 % jump: the new price has
    # stood for longer than the cool-down, so the breaker of a keeper running all along would
    # be closed by now; one 10 minutes after it is open until an hour after the round.
    late, soon = BreakerBook(), BreakerBook()
    for book in (late, soon):
        book.seed({ETH_FEED: (1, 3_000 * WAD)})
    jumped = eth(2_100 * WAD, 2, price_updated_at=NOW)
    assert late.update({VAULT: snap(jumped, t=NOW + 7_200)})[VAULT] == []
    assert len(soon.update({VAULT: snap(jumped, t=NOW + 600)})[VAULT]) == 1
    assert soon.open_until(VAULT) == NOW + 3_600


# ====================================================================== answers <= 0
def test_a_feed_answering_zero_or_less_opens_and_its_last_positive_price_is_kept() -> None:
    book = BreakerBook()
    book.update(one(eth(3_000 * WAD, 1)))
    # the snapshot carries price 0 for an answer <= 0
    (reason,) = book.update(one(eth(0, 2)), SYMBOLS)[VAULT]
    assert reason == f"WETH feed {ETH_FEED} answered ≤ 0 in round 2"
    # back to 2 000 (round 3): measured from 3 000 (the last positive), −33.3 %
    reasons = book.update(one(eth(2_000 * WAD, 3), t=NOW + 12))[VAULT]
    assert len(reasons) == 2 and "moved -33.3% from round 1 to 3" in reasons[1]


def test_a_first_sighting_at_zero_opens_too() -> None:
    assert len(BreakerBook().update(one(eth(0, 1)))[VAULT]) == 1


# ====================================================================== closing
def test_a_jump_holds_the_breaker_open_for_the_cooldown_then_it_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    book = BreakerBook()
    book.update(one(eth(3_000 * WAD, 1), t=NOW - 12))
    with caplog.at_level(logging.INFO, logger="keeper.breaker"):
        book.update(one(eth(2_100 * WAD, 2), t=NOW, block=100))
        assert book.open_until(VAULT) == NOW + 3_600
        # later clean rounds do not close it early: 3 599 s after the jump it is still open
        assert len(book.update(one(eth(2_110 * WAD, 3), t=NOW + 3_599, block=400))[VAULT]) == 1
        assert book.update(one(eth(2_120 * WAD, 4), t=NOW + 3_600, block=401))[VAULT] == []
    assert not book.is_open(VAULT) and book.open_until(VAULT) is None
    assert book.describe(VAULT) == "breaker closed"
    opened, closed = (r for r in caplog.records if r.name == "keeper.breaker")
    assert opened.levelno == logging.WARNING
    assert opened.getMessage().startswith(
        f"vault {VAULT} block 100: breaker OPEN until t={NOW + 3_600}: {WETH} feed {ETH_FEED}"
    )
    assert closed.levelno == logging.INFO
    assert closed.getMessage() == (
        f"vault {VAULT} block 401: breaker closed (no reason in the last 3600s)"
    )


def test_a_condition_that_persists_keeps_it_open_until_a_cooldown_after_it_clears() -> None:
    book = BreakerBook(BreakerBounds(cooldown_s=600))
    for i in range(5):  # answer 0 on every read, 10 minutes apart
        assert book.is_open(VAULT) == (i > 0)
        assert len(book.update(one(eth(0, 1), t=NOW + 600 * i))[VAULT]) == 1
    book.update(one(eth(3_000 * WAD, 2), t=NOW + 2_700))  # 300 s after the last sighting
    assert book.open_until(VAULT) == NOW + 2_400 + 600
    assert book.update(one(eth(3_000 * WAD, 2), t=NOW + 3_000))[VAULT] == []


def test_a_second_jump_while_open_is_a_new_reason_and_restarts_the_cooldown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    book = BreakerBook()
    book.update(one(eth(3_000 * WAD, 1)))
    book.update(one(eth(2_000 * WAD, 2), t=NOW + 100))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keeper.breaker"):
        reasons = book.update(one(eth(3_000 * WAD, 3), t=NOW + 200))[VAULT]  # +50 %
    assert len(reasons) == 2 and book.open_until(VAULT) == NOW + 200 + 3_600
    (log,) = caplog.records
    assert "from round 2 to 3" in log.getMessage() and "from round 1 to 2" not in log.getMessage()


# ====================================================================== venue
def test_the_venue_more_than_2_percent_off_the_feed_opens_exactly_2_does_not() -> None:
    book = BreakerBook()
    # 3 060 vs 3 000: |60| / 3 000 = 2.00 %, not beyond
    assert book.update(one(eth(venue_price=3_060 * WAD, venue_feed=ETH_FEED)))[VAULT] == []
    # 2 937 vs 3 000: 2.10 %; the venue lists WETH on another feed, named in the reason
    (reason,) = book.update(
        one(eth(venue_price=2_937 * WAD, venue_feed=OTHER_FEED), t=NOW + 12), SYMBOLS
    )[VAULT]
    assert reason == (
        f"WETH: the swap venue pays $2,937.00 (the venue lists it on feed {OTHER_FEED}), "
        f"-2.1% from feed {ETH_FEED} ($3,000.00), beyond the ±2 % bound"
    )


def test_no_venue_quote_means_no_venue_check() -> None:
    assert BreakerBook().update(one(eth(venue_price=0)))[VAULT] == []


def test_venue_mid_backs_the_fee_and_impact_out_of_the_quote() -> None:
    # SwapVenue.quote(WETH, USDC, 1e18) at 3 000: value 3 000e18, impact ceil(3 000 / 5e9 × 1e4)
    # = 1 bp, fee 10 bps: net 3 000 × 9 989 / 10 000 = 2 996.7 USD = 2 996 700 000 USDC units.
    # Back out: 2 996 700 000 × 1e12 × 10 000 / 9 989 = 3 000e18 exactly (9 989 × 3 000 =
    # 29 967 000).
    assert venue_mid_wad(2_996_700_000, 6, 10, 1) == 3_000 * WAD
    # one USDC unit less: 1e12 × 10 000 / 9 989 = 1 001 101 211 332.47 wei lower, floored to
    # 1 001 101 211 333 lower (under 1e-6 USD: the precision of the venue comparison)
    assert venue_mid_wad(2_996_699_999, 6, 10, 1) == 3_000 * WAD - 1_001_101_211_333
    assert venue_mid_wad(0, 6, 10, 1) == 0
    assert venue_mid_wad(1, 6, 5_000, 5_000) == 0  # nothing left after fee and impact


# ====================================================================== what goes through
def test_held_back_are_the_risk_increasing_actions_deleverage_always_kept() -> None:
    delev = act(ActionKind.DELEVERAGE, urgency=Urgency.CRITICAL, spot_legs={"ETH": -10.0},
                perp_legs={"ETH": 5.0})
    repay = act(ActionKind.REPAY, repay_usd=1_000.0, margin_usd=-1_000.0)
    settle = act(ActionKind.SETTLE, series_id=3)
    relever = act(ActionKind.REBALANCE, urgency=Urgency.LOW, spot_legs={"ETH": 250.0})
    cut = act(ActionKind.REBALANCE, spot_legs={"ETH": -250.0, "BTC": -1.0})
    rotate = act(ActionKind.REBALANCE, spot_legs={"ETH": -250.0, "BTC": 1.0})
    # net delta +250 ETH: −250 perps bring it to 0 (kept); +250 take it to 500 (held);
    # −600 overshoot to −350, larger in size than +250 (held)
    shrink = act(ActionKind.HEDGE, perp_legs={"ETH": -250.0}, inputs={"net_delta.ETH": 250.0})
    grow = act(ActionKind.HEDGE, perp_legs={"ETH": 250.0}, inputs={"net_delta.ETH": 250.0})
    flip = act(ActionKind.HEDGE, perp_legs={"ETH": -600.0}, inputs={"net_delta.ETH": 250.0})
    unknown = act(ActionKind.HEDGE, perp_legs={"ETH": -1.0})  # no inputs: cannot tell
    actions = [relever, delev, grow, repay, cut, shrink, rotate, settle, flip, unknown]
    kept, held = risk_reducing_only(actions)
    assert kept == [delev, repay, cut, shrink, settle]
    assert held == [relever, grow, rotate, flip, unknown]


def test_a_rebalance_carrying_a_hedge_is_judged_on_the_post_rebalance_book() -> None:
    # sells 100 ETH: post-rebalance net delta 150; the hedge's −150 perps shrink it to 0.
    # Filed as the policy files a combined call: the hedge's own keys under "hedge.".
    inputs = {"hedge.net_delta.ETH": 250.0, "hedge.net_delta_post_rebalance.ETH": 150.0}
    good = act(ActionKind.REBALANCE, spot_legs={"ETH": -100.0}, perp_legs={"ETH": -150.0},
               inputs=inputs)
    # −350 perps would leave −200: larger than the 150 it starts from
    bad = act(ActionKind.REBALANCE, spot_legs={"ETH": -100.0}, perp_legs={"ETH": -350.0},
              inputs=inputs)
    assert risk_reducing_only([good, bad]) == ([good], [bad])


def test_on_the_policys_own_actions() -> None:
    # (numbers from tests/unit/test_policy.py) a re-lever buys 250 ETH: held back
    (up,) = decide(vault(), mandate(target_vol=1.0, hedge_target=2.0), market(), costs(),
                   PolicyParams(design_gap=0.10))
    # a cut to the vol target sells 250 ETH: kept
    (down,) = decide(vault(), mandate(target_vol=0.5, hedge_target=1.0), market(), costs())
    # health 1.2 < 1.25: the deleverage: kept
    (delev,) = decide(vault(debt_usdc=1_000_000.0, nav_usd=500_000.0), mandate(), market(),
                      costs())

    def hedged(perp: float, target: float) -> Action:
        v = vault(debt_usdc=700_000.0, perp_margin_usd=200_000.0,
                  perps=(PerpPosition("ETH", perp, 2_000.0, 0.0, 0.05),))
        (h,) = decide(v, mandate(hedge_target=target), market(), costs())
        assert h.kind is ActionKind.HEDGE
        return h

    # net delta 750 − 500 = 250 ETH; target 0: sell 250 perps (kept). Target 1.0 × NAV = 500
    # ETH: buy perps, |net delta| grows (held back).
    to_zero, away = hedged(-500.0, 0.0), hedged(-500.0, 1.0)
    assert dict(to_zero.perp_legs) == pytest.approx({"ETH": -250.0})
    assert away.perp_legs["ETH"] > 0
    assert (up.kind, up.spot_legs["ETH"]) == (ActionKind.REBALANCE, pytest.approx(250.0))
    assert (down.kind, down.spot_legs["ETH"]) == (ActionKind.REBALANCE, pytest.approx(-250.0))
    assert delev.kind is ActionKind.DELEVERAGE
    kept, held = risk_reducing_only([up, down, delev, to_zero, away])
    assert kept == [down, delev, to_zero] and held == [up, away]


def test_gate_passes_everything_while_closed_and_logs_what_it_holds_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    book = BreakerBook()
    relever = act(ActionKind.REBALANCE, urgency=Urgency.LOW, spot_legs={"ETH": 250.0})
    delev = act(ActionKind.DELEVERAGE, spot_legs={"ETH": -10.0})
    assert book.gate(VAULT, [relever, delev]) == [relever, delev]  # never seen: closed
    book.update(one(eth(3_000 * WAD, 1)))
    assert book.gate(VAULT, [relever, delev]) == [relever, delev]
    book.update(one(eth(2_100 * WAD, 2), block=101))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keeper.breaker"):
        assert book.gate(VAULT, [relever, delev]) == [delev]
    (log,) = caplog.records
    assert log.getMessage() == (
        f"vault {VAULT} block 101: breaker open, rebalance (LOW) held back — test rebalance"
    )
    assert book.describe(VAULT).startswith(
        f"breaker OPEN (risk-increasing actions held back) until t={NOW + 3_600} unless seen "
        f"again: {WETH} feed {ETH_FEED} moved -30.0%"
    )


def test_importing_the_breaker_loads_no_chain_library() -> None:
    code = ("import json, sys\nimport keeper.breaker\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                         capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert "keeper.breaker" in loaded
    assert [m for m in loaded if m.split(".")[0] in ("web3", "hexbytes")
            or m.startswith(("eth_", "keeper.chain"))] == []
