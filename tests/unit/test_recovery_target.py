"""Recovery to the policy's own pre-move target, and how that target is recorded: numbers worked
out by hand in the comments."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
from web3 import Web3

from keeper.policy import assess_batch, decide_batch, observing_decisions
from keeper.risk.assess import Assessment
from keeper.service import TickReport
from keeper.sim.metrics import (
    build_metrics,
    combine,
    path_metrics,
    recovery_hours,
    recovery_hours_to_target,
)
from keeper.sim.policies import HoldPolicy, KeeperPolicy, ThresholdPolicy
from keeper.sim.records import PHASE_END, Bands, MarketStep, Observation, PathRun, VaultRun

from .conftest import costs, mandate, market, vault

BANDS = Bands(min_health=1.3, max_leverage=2.5, hedge_target=0.3, hedge_band=0.05)
CPPI = Bands(1.3, 2.5, 0.3, 0.05, cppi_floor=0.8, cppi_multiplier=5.0)
#: Steps 1..10; the move is step 3, so the lead-in ends at step 2 (ETH IV 0.60). IV 0.62 at
#: step 6 is within 5 % of 0.60 (<= 0.63): IV is back at step 6.
MARKET = [MarketStep(k, 1000 + k, {"ETH": 1.0}, {"ETH": iv, "BTC": 0.5}, 10.0)
          for k, iv in enumerate([0.6, 0.6, 0.9, 0.8, 0.7, 0.62, 0.6, 0.6, 0.6, 0.6], start=1)]
SHOCK = 3
#: The seed holds 1.44× before the move, above the 1.18× the keeper aims at; after the move
#: it sits at 0.9×, re-levers to 1.10× at step 8 and 1.18× at step 9.
LEVERAGE = [1.44, 1.44, 0.9, 0.9, 0.9, 0.9, 1.05, 1.10, 1.18, 1.18]
TARGETS = {1: 1.18, 2: 1.18, 3: 0.7, 8: 1.18}


def end_obs(levs: list[float], navs: list[float] | None = None) -> list[Observation]:
    navs = navs or [100.0] * len(levs)
    return [Observation(k, PHASE_END, k, 1000 + k, nav, 2.0, 2.0, math.inf, lev, 0.3 * nav,
                        0.0, 0.0, nav_high_water_usd=100.0)
            for k, (lev, nav) in enumerate(zip(levs, navs, strict=True), start=1)]


def test_held_leverage_never_comes_back_but_the_own_target_is_reached() -> None:
    end = end_obs(LEVERAGE)
    # Held: 1.44 ± max(0.10, 0.144) needs leverage >= 1.296; the path tops out at 1.18: inf.
    assert recovery_hours(end, MARKET, SHOCK, 3600) == math.inf
    # Own target at step 2: 1.18 ± max(0.10, 0.118), so leverage >= 1.062. From step 6 (IV
    # back): 0.9 and 1.05 (0.13 off) are out, 1.10 at step 8 (0.08 off) is in: 8 − 6 = 2 h.
    assert recovery_hours_to_target(end, MARKET, SHOCK, 3600, TARGETS) == 2.0
    # Half-hour steps halve it; the target of other steps (3: 0.7, after the move) plays no part.
    assert recovery_hours_to_target(end, MARKET, SHOCK, 1800, TARGETS) == 1.0
    assert recovery_hours_to_target(end, MARKET, SHOCK, 3600, {**TARGETS, 3: 5.0}) == 2.0


def test_recovery_counts_from_the_end_of_the_move_not_from_its_first_hour() -> None:
    # A rally: IV never leaves 0.60, so IV is "back" at the move's first step (3). The vault
    # holds 1.44 through step 5, is cut to 0.63 at step 6 (part-way up) and stays there; the
    # move ends at step 8 (the first flat step). Counted from step 3 the held leverage is
    # inside 1.44 ± 0.144 at once: 0 h, and the cut never shows. Counted from the move's end,
    # 0.63 is out for good: inf; a vault back at 1.40 by step 9 recovers in 9 − 8 = 1 h.
    calm = [replace(m, iv={**m.iv, "ETH": 0.6}) for m in MARKET]
    cut = end_obs([1.44] * 5 + [0.63] * 5)
    assert recovery_hours(cut, calm, SHOCK, 3600) == 0.0
    assert recovery_hours(cut, calm, SHOCK, 3600, move_end=8) == math.inf
    back = end_obs([1.44] * 5 + [0.63] * 3 + [1.40] * 2)
    assert recovery_hours(back, calm, SHOCK, 3600, move_end=8) == 1.0
    # The later of the two: with IV back only at step 6 (MARKET), a move that ended at step 4
    # counts from 6, as before.
    assert recovery_hours_to_target(end_obs(LEVERAGE), MARKET, SHOCK, 3600, TARGETS,
                                    move_end=4) == 2.0


def test_no_target_at_the_end_of_the_lead_in_is_no_figure() -> None:
    end = end_obs(LEVERAGE)
    # hold and threshold record none; a keeper tick that failed at step 2 neither (step 1's
    # target is not taken in its place).
    assert recovery_hours_to_target(end, MARKET, SHOCK, 3600, {}) is None
    assert recovery_hours_to_target(end, MARKET, SHOCK, 3600, {1: 1.18}) is None
    # No single move (gbm), or IV never back (0.64 > 0.63): None, as for recovery_hours.
    assert recovery_hours_to_target(end, MARKET, None, 3600, TARGETS) is None
    high = [replace(m, iv={**m.iv, "ETH": 0.64}) if m.step >= SHOCK else m for m in MARKET]
    assert recovery_hours_to_target(end, high, SHOCK, 3600, TARGETS) is None
    # Already inside when IV is back (1.2 is 0.02 off): 0; never: inf — also for a vault that
    # sits at its 1.44 all along (0.26 off its own target, so it never got where it aimed).
    inside = end_obs([1.44, 1.44, 0.9, 0.9, 0.9, *[1.2] * 5])
    assert recovery_hours_to_target(inside, MARKET, SHOCK, 3600, TARGETS) == 0.0
    stuck = end_obs([1.44, 1.44, *[0.9] * 8])
    assert recovery_hours_to_target(stuck, MARKET, SHOCK, 3600, TARGETS) == math.inf
    still = end_obs([1.44] * 10)
    assert recovery_hours_to_target(still, MARKET, SHOCK, 3600, TARGETS) == math.inf
    assert recovery_hours(still, MARKET, SHOCK, 3600) == 0.0


def test_the_own_target_is_capped_by_the_mandates_cppi() -> None:
    # CPPI floor 80 % of the HWM (100), multiplier 5. The move takes NAV to 96: cap
    # 5 × (96 − 80) / 96 = 0.8333 < 1.18, band max(0.10, 0.083) = 0.10: 0.9 is 0.067 off —
    # inside from the step IV is back (6): 0 h. Uncapped, the same path takes 2 h (above).
    end = end_obs(LEVERAGE, [100.0, 100.0, *[96.0] * 8])
    assert recovery_hours_to_target(end, MARKET, SHOCK, 3600, TARGETS, CPPI) == 0.0
    assert recovery_hours_to_target(end, MARKET, SHOCK, 3600, TARGETS) == 2.0
    # NAV 90: cap 5 × 10 / 90 = 0.5556, band 0.10: 0.9 is 0.34 off and so is every later
    # leverage (1.05, 1.10, 1.18): inf.
    low = end_obs(LEVERAGE, [100.0, 100.0, *[90.0] * 8])
    assert recovery_hours_to_target(low, MARKET, SHOCK, 3600, TARGETS, CPPI) == math.inf


def test_vault_metrics_report_both_references_and_combine_the_worst() -> None:
    keeper = VaultRun("Balanced", "0x1", BANDS, end_obs(LEVERAGE), targets=dict(TARGETS))
    hold = VaultRun("Balanced", "0x1", BANDS, end_obs(LEVERAGE))  # no targets: an old record
    run = PathRun("gap35", 0, 0, "keeper", "keeper-first", 3600, 1.0, list(MARKET), [keeper],
                  shock_step=SHOCK)
    m = path_metrics(run)["vaults"]["Balanced"]
    assert m["recovery_hours"] == math.inf and m["recovery_hours_to_target"] == 2.0
    assert m["pre_shock_leverage"] == 1.44 and m["pre_shock_target"] == 1.18
    h = path_metrics(replace(run, policy="hold", vaults=[hold]))["vaults"]["Balanced"]
    assert h["recovery_hours_to_target"] is None and h["pre_shock_target"] is None
    assert h["pre_shock_leverage"] == 1.44
    # Over paths: the worst (inf beats 2), None when no path has one; the references are per
    # path only.
    both = combine([m, {**m, "recovery_hours_to_target": 7.0}])
    assert both["recovery_hours_to_target"] == 7.0 and "pre_shock_target" not in both
    assert combine([h, h])["recovery_hours_to_target"] is None
    out = build_metrics([run], {})
    assert out["results"]["gap35"]["keeper-first"]["keeper"]["total"][
        "recovery_hours_to_target"] == 2.0


# --- what the keeper policy records ------------------------------------------------------
A = Web3.to_checksum_address("0x" + "11" * 20)
B = Web3.to_checksum_address("0x" + "22" * 20)


def test_observing_a_decision_changes_nothing_and_sees_its_target() -> None:
    # Vault A: target vol 0.5 / implied 0.5 → target 1.0 < leverage 1.5: a rebalance whose
    # inputs say 1.0. Vault B: the default mandate, target exactly 1.5, inside its band.
    states = [vault(address=A), vault(address=B)]
    mandates = [mandate(target_vol=0.5, hedge_target=1.0), mandate()]
    plain = decide_batch(states, mandates, market(), costs())
    seen: list[tuple[tuple[str, ...], list[float]]] = []
    with observing_decisions(lambda a, g: seen.append((a.book.addresses,
                                                       a.target_leverage.tolist()))):
        watched = decide_batch(states, mandates, market(), costs())
    assert watched == plain
    assert plain[1] == [] and plain[0][0].inputs["target_leverage"] == pytest.approx(1.0)
    assert seen[0][0] == (A, B)
    assert seen[0][1] == pytest.approx([1.0, 1.5])
    assert seen[0][1] == assess_batch(states, mandates, market(), costs()).target_leverage.tolist()
    # Outside the block nobody is told.
    decide_batch(states, mandates, market(), costs())
    assert len(seen) == 1


class _Service:
    """A tick that decides twice, as the waves do after an action mined: the first is the
    step's decision."""

    def tick(self) -> TickReport:
        decide_batch([vault(address=A), vault(address=B)],
                     [mandate(target_vol=0.5, hedge_target=1.0), mandate()], market(), costs())
        decide_batch([vault(address=A)], [mandate(target_vol=0.6)], market(), costs())
        return TickReport(block=1)


class _FailingService:
    def tick(self) -> TickReport:
        return TickReport(block=-1, error="node down")


def test_the_keeper_policy_records_the_first_target_of_each_tick() -> None:
    policy = KeeperPolicy(cast(Any, _Service()), cast(Any, None))
    assert policy.act(5, 2_000.0) == {}
    assert dict(policy.targets()) == pytest.approx({A: 1.0, B: 1.5})
    # A tick that fails before deciding leaves no target for its step.
    policy.service = cast(Any, _FailingService())
    policy.act(6, 2_000.0)
    assert dict(policy.targets()) == {}
    # Policies without a leverage target.
    assert HoldPolicy().targets() == {}
    assert ThresholdPolicy(cast(Any, None), cast(Any, None)).targets() == {}


def test_a_non_finite_target_is_not_recorded() -> None:
    policy = KeeperPolicy(cast(Any, None), cast(Any, None))
    fake = SimpleNamespace(book=SimpleNamespace(addresses=(A, B)),
                           target_leverage=np.array([math.nan, 1.2]))
    policy._seen(cast(Assessment, fake), cast(Any, None))
    assert dict(policy.targets()) == {B: 1.2}
