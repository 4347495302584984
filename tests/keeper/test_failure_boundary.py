"""The failure boundary: one bad vault never stops the others, a vault that keeps failing is
halted (and said so in the journal, for `keeper status`), a bug stops the scheduler with exit
code 1, and too many failed ticks in a row stop it with exit code 3."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from web3.contract import Contract

from keeper.chain.abi import load_artifact
from keeper.devnet.market import Market
from keeper.errors import ChainReadError
from keeper.journal import IntentRecord
from keeper.scheduler import EXIT_BUG, EXIT_FAILING, KeeperLoop, run_scheduler
from keeper.service import HALT_AFTER, KeeperService
from tests.keeper.conftest import Env, move

RISK_REDUCING = ("deleverage", "repayDebt")


def deploy(env: Env, name: str, *args: object) -> Contract:
    art = load_artifact(name)
    factory = env.w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    tx = factory.constructor(*args).transact({"from": env.dep.accounts["admin"]})
    address = env.w3.eth.wait_for_transaction_receipt(tx)["contractAddress"]
    return env.w3.eth.contract(address=address, abi=art.abi)


def list_asset_with_a_zero_feed(env: Env, vault: str) -> Contract:
    """The admin lists a new asset on one vault whose price feed answers 0 (a feed not yet
    live): only that vault's snapshot carries the bad price. Returns the feed."""
    admin = env.dep.accounts["admin"]
    token = deploy(env, "TestToken", "Solana", "SOL", 9, admin)
    feed = deploy(env, "PriceFeed", 8, "SOL / USD", 0, admin)
    vol = deploy(env, "PriceFeed", 8, "SOL implied vol", 80_000_000, admin)
    riskvault = env.w3.eth.contract(address=vault, abi=load_artifact("RiskVault").abi)
    tx = riskvault.functions.addAsset(token.address, feed.address, vol.address).transact(
        {"from": admin}
    )
    assert env.w3.eth.wait_for_transaction_receipt(tx)["status"] == 1
    return feed


def test_a_vault_whose_feed_answers_zero_is_skipped_and_halted_the_others_go_on(
    env: Env, market: Market, make_service: Callable[..., KeeperService]
) -> None:
    balanced, neutral = env.dep.vaults[0], env.dep.vaults[1]
    service = make_service()
    move(market, env, 0.65, 0.70)  # the crash: the balanced vault must reduce risk
    list_asset_with_a_zero_feed(env, neutral)  # a feed answering ≤ 0, for one vault only

    first = service.tick()
    assert first.error is None
    assert neutral in first.faults and balanced not in first.faults
    landed = [o for o in first.outcomes if o.vault == balanced and o.status == "mined"]
    assert any(o.function in RISK_REDUCING for o in landed)  # the healthy vault was kept
    after = service.read_now()[balanced]
    assert after.health >= after.mandate.min_health

    for _ in range(HALT_AFTER - 1):
        assert neutral in service.tick().faults
    assert neutral in service.halted and balanced not in service.halted
    (fault,) = service.journal.vault_faults()
    assert (fault.vault, fault.halted, fault.consecutive_failures) == (neutral, True, HALT_AFTER)
    assert fault.last_error is not None
    # Halted: read, but not decided (so not counted again) until the keeper restarts.
    later = service.tick()
    assert neutral not in later.actions and neutral not in later.faults


def test_a_vault_that_recovers_before_the_halt_is_counted_from_zero_again(
    env: Env, market: Market, make_service: Callable[..., KeeperService]
) -> None:
    neutral = env.dep.vaults[1]
    service = make_service()
    move(market, env, 1.0, 1.0)
    feed = list_asset_with_a_zero_feed(env, neutral)
    service.tick()
    assert service.failures[neutral] == 1
    tx = feed.functions.updateAnswer(150 * 10**8).transact({"from": market.admin})
    env.w3.eth.wait_for_transaction_receipt(tx)  # the feed goes live: $150
    assert neutral not in service.tick().faults
    assert neutral not in service.failures and neutral not in service.halted
    (fault,) = service.journal.vault_faults()
    assert (fault.consecutive_failures, fault.halted) == (0, False)


class Boom(RuntimeError):
    pass


def run_with_timeout(service: KeeperService, **kwargs: int) -> int:
    """`run_scheduler` in a thread (it installs signal handlers only in the main thread) with
    a 30 s bound; its exit code."""
    result: dict[str, int] = {}
    thread = threading.Thread(
        target=lambda: result.update(code=run_scheduler(service, 0.05, **kwargs))
    )
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the scheduler did not stop"
    return result["code"]


def failing_ticks(
    service: KeeperService, raise_on: Callable[[int], BaseException | None]
) -> dict[str, int]:
    """Make the n-th tick (1-based) raise `raise_on(n)` when that is not None; the others run
    for real. Returns the call counter."""
    calls = {"n": 0}
    real = service._tick

    def patched(*args: object) -> None:
        calls["n"] += 1
        exc = raise_on(calls["n"])
        if exc is not None:
            raise exc
        real(*args)  # type: ignore[arg-type]

    service._tick = patched  # type: ignore[method-assign]
    return calls


def test_a_bug_in_a_tick_stops_the_scheduler_with_exit_code_1(
    env: Env,
    make_service: Callable[..., KeeperService],
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = make_service()
    calls = failing_ticks(service, lambda n: Boom("a bug") if n == 2 else None)
    assert run_with_timeout(service) == EXIT_BUG == 1
    assert calls["n"] == 2  # no tick after the bug
    assert "tick raised Boom: a bug; stopping with exit code 1" in caplog.text


def test_too_many_failed_ticks_in_a_row_stop_it_with_exit_code_3(
    env: Env,
    make_service: Callable[..., KeeperService],
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = make_service()
    # One failure, a good tick (the count restarts), then only failures.
    calls = failing_ticks(
        service, lambda n: ChainReadError("RPC down") if n == 1 or n >= 3 else None
    )
    assert run_with_timeout(service, max_consecutive_failures=4) == EXIT_FAILING == 3
    assert calls["n"] == 6  # 1 failed, 1 good (the count restarts), then 4 failed
    assert "4 ticks in a row failed (last: RPC down); stopping with exit code 3" in caplog.text


def test_a_new_head_brings_the_next_tick_forward_and_a_stalled_head_is_noticed(
    anvil_env: Env,
    market: Market,
    make_service: Callable[..., KeeperService],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Interval 600 s: only the head poll can make the keeper act within the 20 s bound."""
    env, balanced = anvil_env, anvil_env.dep.vaults[0]
    service = make_service()
    loop = KeeperLoop(service, 600.0, head_poll_s=0.1, head_stall_s=0.5)
    thread = threading.Thread(target=loop.run)
    thread.start()
    try:
        assert wait_for(lambda: service.last_block > 0)  # the first tick, at start
        assert wait_for(lambda: service.head_stalled_since is not None)  # no block since
        assert "head stalled: block" in caplog.text
        move(market, env, 0.65, 0.70)  # the crash: new blocks with the oracle rounds
        assert wait_for(
            lambda: any(i.status == "mined" for i in risk_intents(service, balanced)), 20.0
        )
        assert service.head_stalled_since is None and "head moving again" in caplog.text
    finally:
        loop.stop()
        thread.join(30)
    assert not thread.is_alive()


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def risk_intents(service: KeeperService, vault: str) -> list[IntentRecord]:
    return [i for i in service.journal.recent_intents(vault=vault) if i.kind in RISK_REDUCING]
