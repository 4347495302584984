"""Stuck transactions, fee caps and restarts: anvil with automine off (the sender waits on a
FakeClock whose sleep decides when a block is mined)."""

from __future__ import annotations

from collections.abc import Callable

from keeper.devnet.market import Market
from keeper.service import KeeperService
from keeper.tx.sender import Outcome
from tests.keeper.conftest import Env, FakeClock, move

GWEI = 10**9
#: What the crash below makes the keeper send (the short perps' surplus margin repays debt).
RISK_REDUCING = ("deleverage", "repayDebt")


def fee_steps(service: KeeperService, vault: str) -> list[tuple[int, int]]:
    (intent,) = [i for i in service.journal.recent_intents(vault=vault) if i.kind in RISK_REDUCING]
    return [(t.max_fee_per_gas, t.max_priority_fee_per_gas) for t in intent.transactions]


def settle_in_later_ticks(
    service: KeeperService,
    clock: FakeClock,
    vault: str,
    function: str,
    between: Callable[[FakeClock], None] | None = None,
    ticks: int = 12,
) -> tuple[Outcome, list[Outcome]]:
    """Tick (the scheduler's interval passing between ticks, `between` run after each) until
    `vault`'s transaction in flight ends; its outcome and every outcome of those ticks. While it
    is in flight the vault gets nothing new; once it ends it comes first in its tick."""
    every: list[Outcome] = []
    for _ in range(ticks):
        clock.t += service.tick_deadline_s
        later = service.tick()
        every.extend(later.outcomes)
        if between is not None:
            between(clock)
        mine = [o for o in later.outcomes if o.vault == vault]
        if not mine or mine[0].status == "pending":
            assert mine == [] or [o.status for o in mine] == ["pending"]
            continue
        assert mine[0].function == function and mine[0].tx_hash is not None
        return mine[0], every
    raise AssertionError(f"{function} of {vault} still in flight after {ticks} ticks")


def test_stuck_transaction_is_replaced_with_bumped_fees_under_the_cap(
    anvil_env: Env, market: Market, clock: FakeClock, make_service: Callable[..., KeeperService]
) -> None:
    env, balanced = anvil_env, anvil_env.dep.vaults[0]
    service = make_service(TX_TIMEOUT="10", MAX_REPLACEMENTS="5", FEE_BUMP_PERCENT="12.5")
    move(market, env, 0.65, 0.70)
    env.rpc("evm_setAutomine", False)
    start_nonce = env.nonce("latest")
    replaced = {"n": 0}

    def mine_after_two_replacements(c: FakeClock) -> None:
        steps = (
            fee_steps(service, balanced) if service.journal.recent_intents(vault=balanced) else []
        )
        if len(steps) >= 3:  # the original and two replacements are out: let a block in
            env.rpc("evm_mine")
        replaced["n"] = max(replaced["n"], len(steps) - 1)

    clock.on_sleep = mine_after_two_replacements
    report = service.tick()
    # Two timeouts (20 s) do not fit in one tick (deadline 0.8 × the poll interval): the tick
    # ends with the transaction in flight, and the next ticks go on with its replacements.
    (first,) = [o for o in report.outcomes if o.vault == balanced]
    assert first.status == "pending" and service.tick_deadline_s < 20
    outcome, every = settle_in_later_ticks(
        service, clock, balanced, first.function, mine_after_two_replacements
    )
    every[:0] = report.outcomes
    assert outcome is not None
    assert outcome.status == "mined" and outcome.replacements == 2
    steps = fee_steps(service, balanced)
    assert len(steps) == 3
    cap = service.sender.fee_policy.cap_for(report.actions[balanced][0].urgency)
    for (fee0, tip0), (fee1, tip1) in zip(steps, steps[1:], strict=False):
        assert fee1 * 1000 >= fee0 * 1125 and tip1 * 1000 >= tip0 * 1125  # ≥ 12.5 % each
        assert fee1 <= cap
    # One nonce per mined action (the other vault's trades, and the vault's own follow-up once
    # it was free); the two replacements consumed none.
    mined_actions = [o for o in every if o.status == "mined"]
    assert env.nonce("latest") == start_nonce + len(mined_actions)
    mined = env.w3.eth.get_transaction(outcome.tx_hash)  # type: ignore[arg-type]
    assert mined["maxFeePerGas"] == steps[-1][0]
    (intent,) = [
        i for i in service.journal.recent_intents(vault=balanced) if i.kind in RISK_REDUCING
    ]
    assert [t.status for t in intent.transactions] == ["replaced", "replaced", "mined"]


def test_replacement_stops_at_the_fee_cap(
    anvil_env: Env, market: Market, clock: FakeClock, make_service: Callable[..., KeeperService]
) -> None:
    env, balanced = anvil_env, anvil_env.dep.vaults[0]
    cap_gwei = 5
    caps = {f"MAX_FEE_GWEI_{u}": str(cap_gwei) for u in ("LOW", "NORMAL", "HIGH", "CRITICAL")}
    service = make_service(
        TX_TIMEOUT="5", MAX_REPLACEMENTS="50", ACCEPTABLE_BASE_FEE_GWEI="2", **caps
    )
    move(market, env, 0.65, 0.70)
    env.rpc("evm_setAutomine", False)
    report = service.tick()
    (first,) = [o for o in report.outcomes if o.vault == balanced]
    assert first.status == "pending"  # the bumps to the cap take more than one tick
    outcome, _ = settle_in_later_ticks(service, clock, balanced, first.function)
    assert outcome.status == "timeout"
    assert "fee cap reached" in (outcome.error or "")
    steps = fee_steps(service, balanced)
    assert 2 <= len(steps) < 50  # it bumped, and stopped because of the cap, not the limit
    assert all(fee <= cap_gwei * GWEI and tip <= fee for fee, tip in steps)
    # The last affordable bump was taken before giving up: one more would pass the cap.
    assert steps[-1][0] * 1125 > cap_gwei * GWEI * 1000
    # Out of replacements it stays in flight, polled every tick (before, only a restart settled
    # it and the vault got nothing meanwhile): once a block comes, the next tick records it.
    nonce = env.w3.eth.get_transaction(outcome.tx_hash)["nonce"]  # type: ignore[arg-type]
    env.rpc("evm_mine")
    settled, _ = settle_in_later_ticks(service, clock, balanced, first.function)
    assert settled.status == "mined" and settled.tx_hash == outcome.tx_hash
    (repay,) = [i for i in service.journal.recent_intents(vault=balanced) if i.nonce == nonce]
    assert repay.status == "mined" and repay.kind == first.function


def test_restart_with_a_transaction_in_flight_never_sends_twice(
    anvil_env: Env, market: Market, clock: FakeClock, make_service: Callable[..., KeeperService]
) -> None:
    env, balanced = anvil_env, anvil_env.dep.vaults[0]
    first = make_service(TX_TIMEOUT="5", MAX_REPLACEMENTS="0")
    move(market, env, 0.65, 0.70)
    env.rpc("evm_setAutomine", False)
    start_nonce = env.nonce("latest")
    report = first.tick()
    sent = [o for o in report.outcomes if o.vault == balanced]
    assert [o.status for o in sent] == ["timeout"]  # in flight, not mined
    pending_nonce = env.nonce("pending")

    # While it is in flight, another tick decides again but sends nothing for that vault.
    again = first.tick()
    assert [o for o in again.outcomes if o.vault == balanced] == []
    assert env.nonce("pending") == pending_nonce
    first.journal.close()  # the process dies here

    # A new process on the same journal reconciles before anything else: it rebroadcasts the
    # same signed transaction and waits for it; a block gets mined while it waits.
    clock.on_sleep = lambda c: env.rpc("evm_mine")
    second = make_service(TX_TIMEOUT="5", MAX_REPLACEMENTS="0", start=False)
    reconciled = second.start()
    in_flight = {(o.vault, "mined", o.tx_hash) for o in report.outcomes if o.status == "timeout"}
    assert (balanced, "mined", sent[0].tx_hash) in in_flight
    assert {(o.vault, o.status, o.tx_hash) for o in reconciled} == in_flight
    env.rpc("evm_setAutomine", True)
    # One nonce per action ever signed: nothing was sent twice.
    assert env.nonce("latest") == start_nonce + len(in_flight)
    after = second.read_now()[balanced]
    assert after.health >= after.mandate.min_health
    follow_up = second.tick()
    urgent = ("DELEVERAGE", "REPAY")
    assert [a for a in follow_up.actions.get(balanced, []) if a.kind.name in urgent] == []


def test_first_actions_of_every_vault_share_one_block(
    anvil_env: Env, market: Market, clock: FakeClock, make_service: Callable[..., KeeperService]
) -> None:
    env = anvil_env
    service = make_service(TX_TIMEOUT="30")
    move(market, env, 0.65, 0.70)  # both vaults need to act
    env.rpc("evm_setAutomine", False)
    clock.on_sleep = lambda c: env.rpc("evm_mine")
    report = service.tick()
    first = {}
    for o in report.outcomes:
        first.setdefault(o.vault, o)
    assert set(first) == set(env.dep.vaults)
    blocks = {
        int(env.w3.eth.get_transaction_receipt(o.tx_hash)["blockNumber"])  # type: ignore[arg-type]
        for o in first.values()
    }
    # Submitted together (consecutive nonces), awaited together: one block carries both.
    assert len(blocks) == 1
    # The second action of a vault waits for its first: it lands in a later block.
    later = [o for o in report.outcomes if o not in first.values()]
    for o in later:
        block = int(env.w3.eth.get_transaction_receipt(o.tx_hash)["blockNumber"])  # type: ignore[arg-type]
        assert block > next(iter(blocks))


def test_a_nonce_gap_left_open_for_a_whole_tick_is_filled_with_a_no_op(
    anvil_env: Env, market: Market, clock: FakeClock, make_service: Callable[..., KeeperService]
) -> None:
    env, balanced = anvil_env, anvil_env.dep.vaults[0]
    service = make_service(TX_TIMEOUT="5")
    nonces = service.sender.nonces
    assert nonces is not None
    start = env.nonce("latest")
    hole = nonces.allocate()  # taken, never broadcast: what a send that died before it leaves
    move(market, env, 0.65, 0.70)
    first = service.tick()  # every action goes out above the hole and waits behind it
    assert {o.status for o in first.outcomes} == {"pending"}
    assert env.nonce("latest") == start
    assert nonces.release(hole) and nonces.gaps == frozenset({hole})
    ticks = [service.tick() for _ in range(3)]
    fills = [i for i in service.journal.recent_intents(limit=100) if i.kind == "fill_nonce_gap"]
    assert [(i.nonce, i.status) for i in fills] == [(hole, "mined")]
    filled_in = next(
        n for n, t in enumerate(ticks) if any(o.function == "fill_nonce_gap" for o in t.outcomes)
    )
    assert filled_in == 1  # open at the end of one whole tick, filled in the next
    intents = service.journal.recent_intents(limit=100)
    assert all(i.status == "mined" for i in intents), [(i.kind, i.status) for i in intents]
    assert env.nonce("latest") == start + len(intents) == env.nonce("pending")
    risk = [i for i in intents if i.vault == balanced and i.kind in RISK_REDUCING]
    assert len(risk) == 1
