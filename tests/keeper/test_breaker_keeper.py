"""The circuit breaker in the keeper's tick: a feed round that jumps beyond the bound opens it
for every vault holding that asset; risk-reducing actions still go, risk-increasing ones wait
for the cool-down (which actions are which: `risk_reducing_only`, tests/unit/test_breaker.py).
Each case runs the same chain state twice (snapshot and revert): with the
default bounds, and with a bound no move can reach (the breaker never opens), so the only
difference between the two is the breaker."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from keeper.breaker import BreakerBook, BreakerBounds
from keeper.devnet.market import Market
from keeper.service import KeeperService, TickReport
from tests.keeper.conftest import Env, move

RISK_REDUCING = ("deleverage", "repayDebt", "settleExpired")
NEVER_OPENS = BreakerBounds(max_jump_bps=1_000_000, max_venue_gap_bps=1_000_000)


def tick_both_ways(
    env: Env, make_service: Callable[..., KeeperService], **_: object
) -> tuple[TickReport, TickReport]:
    snap = env.chain.snapshot()
    reference = make_service(journal="reference.sqlite")
    reference.breaker = BreakerBook(NEVER_OPENS)
    reference.breaker.update(reference.read_now(), reference.symbols)  # the rounds before
    free = reference.tick()
    env.chain.revert(snap)
    gated = make_service(journal="gated.sqlite").tick()
    return free, gated


def sent(report: TickReport, vault: str) -> list[str]:
    return [o.function for o in report.outcomes if o.vault == vault and o.status == "mined"]


def test_a_gap_opens_the_breaker_and_the_deleverage_still_goes(
    env: Env,
    market: Market,
    make_service: Callable[..., KeeperService],
    caplog: pytest.LogCaptureFixture,
) -> None:
    balanced = env.dep.vaults[0]
    move(market, env, 0.65, 0.70)  # ETH −35 % in one round: beyond the 25 % bound
    free, gated = tick_both_ways(env, make_service)
    assert free.breaker == {}
    assert set(gated.breaker) == set(env.dep.vaults)
    assert "moved -35.0%" in gated.breaker[balanced]
    assert "breaker OPEN" in caplog.text
    risk = [f for f in sent(gated, balanced) if f in RISK_REDUCING]
    assert risk and risk == [f for f in sent(free, balanced) if f in RISK_REDUCING]
    for v in env.dep.vaults:  # nothing the gated keeper decided is beyond what the free one did
        kinds = [a.kind.name for a in gated.actions.get(v, [])]
        assert all(k in [a.kind.name for a in free.actions.get(v, [])] for k in kinds)
    after = env_health(env, balanced)
    assert after[0] >= after[1]  # the gated keeper still brought the vault back to safety


def env_health(env: Env, vault: str) -> tuple[int, int]:
    from keeper.chain.reader import SnapshotReader

    snap = SnapshotReader(env.w3).read([vault], int(env.w3.eth.block_number))[vault]  # type: ignore[list-item]
    return snap.health, snap.mandate.min_health
