"""Read → decide → act against real contracts, on the in-process chain and on anvil."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from web3.logs import EventLogErrorFlags

import keeper.service as service_module
from keeper.chain.abi import load_artifact
from keeper.chain.convert import to_mandate, to_vault_state
from keeper.devnet.market import Market
from keeper.inputs import RISK_FREE_RATE
from keeper.risk.actions import ActionKind
from keeper.risk.health import net_delta
from keeper.service import KeeperService
from keeper.tx import fees as fees_module
from tests.keeper.conftest import Env, move

WAD = 10**18


def kinds(report, vault: str) -> list[ActionKind]:  # type: ignore[no-untyped-def]
    return [a.kind for a in report.actions.get(vault, [])]


def test_vaults_inside_their_mandate_get_no_action(
    env: Env, make_service: Callable[..., KeeperService]
) -> None:
    nonce = env.nonce()
    report = make_service().tick()
    assert report.error is None
    assert set(report.snapshots) == set(env.dep.vaults)
    assert all(actions == [] for actions in report.actions.values())
    assert report.outcomes == []
    assert env.nonce() == nonce


def test_reads_every_vault_in_one_multicall(
    env: Env, make_service: Callable[..., KeeperService]
) -> None:
    service = make_service()
    report = service.tick()
    # One aggregate3 for the two snapshots (+ none for metadata, learnt at start), and
    # possibly one for new feed rounds.
    assert 1 <= report.eth_calls <= 2
    snap = report.snapshots[env.dep.vaults[0]]
    assert snap.block_number == report.block


def test_crash_deleverage_restores_min_health(
    env: Env, market: Market, make_service: Callable[..., KeeperService]
) -> None:
    balanced = env.dep.vaults[0]
    service = make_service()
    move(market, env, 0.65, 0.70)
    report = service.tick()
    before = report.snapshots[balanced]
    assert before.health < before.mandate.min_health  # the crash put it under its minimum
    # The short perps gained in the crash: their surplus margin repays the debt, nothing is
    # sold (the cheapest lever; before, the keeper sold collateral at the venue's fee).
    assert kinds(report, balanced) == [ActionKind.REPAY]
    (outcome,) = [o for o in report.outcomes if o.vault == balanced]
    assert outcome.function == "repayDebt" and outcome.status == "mined"
    after = service.read_now()[balanced]
    assert after.health >= after.mandate.min_health
    assert after.debt < before.debt
    assert [a.collateral for a in after.assets] == [a.collateral for a in before.assets]
    assert after.perp_margin < before.perp_margin  # the surplus came out of perp margin
    # The vault's own event carries the before/after health the contract measured.
    vault = env.w3.eth.contract(address=balanced, abi=load_artifact("RiskVault").abi)
    receipt = env.w3.eth.get_transaction_receipt(outcome.tx_hash)  # type: ignore[arg-type]
    (event,) = vault.events.KeeperAction().process_receipt(
        receipt, errors=EventLogErrorFlags.Discard
    )
    # Mined one block after the read: one more second of interest moves health in the 9th digit.
    assert event["args"]["healthBefore"] == pytest.approx(before.health, rel=1e-6)
    assert event["args"]["healthAfter"] == pytest.approx(after.health, rel=1e-6)
    # Journal: decision, intent and transaction recorded as mined.
    (intent,) = [
        i for i in service.journal.recent_intents(vault=balanced) if i.kind == "repayDebt"
    ]
    assert intent.status == "mined" and len(intent.transactions) == 1


def test_releverage_only_when_the_benefit_beats_gas(
    env: Env,
    market: Market,
    make_service: Callable[..., KeeperService],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    carry = env.dep.vaults[1]
    move(market, env, 0.92, 0.92)  # spot falls, the short perps gain: leverage drops below band
    # Right after an 8 % fall the keeper does not re-lever (the market is falling) ...
    falling = make_service(journal="falling.sqlite").tick()
    assert ActionKind.REBALANCE not in kinds(falling, carry)
    # ... a day of flat prices later, it may.
    move(market, env, 0.92, 0.92, hours=25.0)
    same_state = env.chain.snapshot()
    before = make_service(journal="before.sqlite").read_now()[carry]
    cheap = make_service(journal="cheap.sqlite").tick()
    rebalance = next(a for a in cheap.actions[carry] if a.kind is ActionKind.REBALANCE)
    assert rebalance.expected_benefit_usd > rebalance.expected_cost_usd
    assert any(qty > 0 for qty in rebalance.spot_legs.values())  # it buys: re-levering
    # The hedge's profit above what the hedge at the re-levered book needs repays debt first,
    # and the re-lever is decided again on the read after it lands.
    done = [(o.function, o.status) for o in cheap.outcomes if o.vault == carry]
    assert done == [("repayDebt", "mined"), ("rebalance", "mined")]
    after = make_service(journal="cheap2.sqlite").read_now()[carry]
    assert after.leverage > before.leverage

    # The same state at a 500 gwei base fee: 700k gas × 500 gwei × ~$2,760 ≈ $966 > the benefit.
    env.chain.revert(same_state)
    real = fees_module.fetch_fee_inputs

    def expensive(w3, *args, **kwargs):  # type: ignore[no-untyped-def]
        i = real(w3, *args, **kwargs)
        return fees_module.FeeInputs(500 * 10**9, i.priority_samples, i.fallback_priority, i.block)

    monkeypatch.setattr(service_module, "fetch_fee_inputs", expensive)
    pricey = make_service(journal="pricey.sqlite").tick()
    assert pricey.snapshots[carry].leverage == before.leverage
    assert ActionKind.REBALANCE not in kinds(pricey, carry)
    assert [o for o in pricey.outcomes if o.function == "rebalance"] == []


def test_option_trade_drifts_delta_and_the_keeper_hedges(
    env: Env, make_service: Callable[..., KeeperService]
) -> None:
    balanced = env.dep.vaults[0]
    vault = env.w3.eth.contract(address=balanced, abi=load_artifact("RiskVault").abi)
    options = env.w3.eth.contract(
        address=env.dep.contracts["OptionMarket"], abi=load_artifact("OptionMarket").abi
    )
    usdc = env.w3.eth.contract(
        address=env.dep.contracts["USDC"], abi=load_artifact("TestToken").abi
    )
    depositor, admin = env.dep.accounts["depositor"], env.dep.accounts["admin"]
    # New money comes in and the strategist spends it on protective puts: leverage stays in its
    # band, but delta drifts far from the +30 % target.
    deposit = 40_000 * 10**6
    usdc.functions.mint(depositor, deposit).transact({"from": admin})
    usdc.functions.approve(balanced, deposit).transact({"from": depositor})
    vault.functions.deposit(deposit, depositor).transact({"from": depositor})
    put = env.dep.series["ETH-P-2700"]
    size = 400 * WAD
    premium = options.functions.quote(put, size).call()
    tx = vault.functions.tradeOption(put, size, premium * 101 // 100).transact(
        {"from": env.dep.accounts["strategist"]}
    )
    assert env.w3.eth.wait_for_transaction_receipt(tx)["status"] == 1

    service = make_service()
    report = service.tick()
    assert ActionKind.HEDGE in kinds(report, balanced)
    assert any(
        o.vault == balanced and o.function == "hedge" and o.status == "mined"
        for o in report.outcomes
    )
    after = service.read_now()[balanced]
    state = to_vault_state(after, service.symbols)
    mandate = to_mandate(after)
    eth_delta_usd = (
        net_delta(state, after.timestamp, RISK_FREE_RATE)["WETH"] * state.asset("WETH").price_usd
    )
    before_state = to_vault_state(report.snapshots[balanced], service.symbols)
    before_usd = (
        net_delta(before_state, after.timestamp, RISK_FREE_RATE)["WETH"]
        * state.asset("WETH").price_usd
    )
    # The long puts pushed ETH delta far below its share of the +30 % target; the hedge bought
    # perps back towards it (within the mandate's band of 5 % of NAV).
    assert before_usd < eth_delta_usd
    assert mandate.hedge_band == pytest.approx(0.05)
    # Hysteresis: the next tick on the hedged book does not trade again.
    assert ActionKind.HEDGE not in kinds(service.tick(), balanced)


def test_stale_feeds_mean_no_action(
    env: Env,
    market: Market,
    make_service: Callable[..., KeeperService],
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = make_service()
    move(market, env, 0.65, 0.70)  # a crash that would need a deleverage…
    env.chain.increase_time(2 * 3_600)  # …but the feeds then go silent for two hours
    nonce = env.nonce()
    with caplog.at_level(logging.WARNING, logger="keeper"):
        report = service.tick()
    assert set(report.stale) == set(env.dep.vaults)
    assert report.outcomes == []
    assert all(actions == [] for actions in report.actions.values())
    assert env.nonce() == nonce
    assert "no action this tick" in caplog.text


def test_reverting_simulation_sends_nothing(
    env: Env,
    market: Market,
    make_service: Callable[..., KeeperService],
    caplog: pytest.LogCaptureFixture,
) -> None:
    balanced = env.dep.vaults[0]
    for address in env.dep.vaults:  # the keeper loses its role; it does not know yet
        vault = env.w3.eth.contract(address=address, abi=load_artifact("RiskVault").abi)
        role = vault.functions.KEEPER_ROLE().call()
        vault.functions.revokeRole(role, env.keeper).transact({"from": env.dep.accounts["admin"]})
    service = make_service()
    move(market, env, 0.65, 0.70)
    nonce = env.nonce()
    with caplog.at_level(logging.WARNING, logger="keeper.tx.sender"):
        report = service.tick()
    (outcome,) = [o for o in report.outcomes if o.vault == balanced]
    assert outcome.status == "simulation_reverted"
    assert outcome.error is not None and outcome.error.startswith(
        "AccessControlUnauthorizedAccount("
    )
    assert env.keeper.lower() in outcome.error.lower()
    assert env.nonce() == nonce  # nothing was signed or sent
    lines = [r.getMessage() for r in caplog.records if "simulation reverted" in r.getMessage()]
    assert len([line for line in lines if balanced in line]) == 1
    (intent,) = service.journal.recent_intents(vault=balanced)
    assert intent.status == "failed" and intent.transactions == ()


def test_views_never_panic_when_a_call_runs_before_the_last_accrual(anvil_env: Env) -> None:
    # Found by the cycle benchmark: after a burst of blocks, anvil ran eth_call at a timestamp
    # before the pool's and perp market's last accrual; `block.timestamp - last` underflowed and
    # snapshot() itself reverted with Panic(0x11). Such a call must see "no time passed".
    env = anvil_env
    vault = env.w3.eth.contract(address=env.dep.vaults[0], abi=load_artifact("RiskVault").abi)
    earlier = int(env.w3.eth.get_block("latest")["timestamp"]) - 30
    data = vault.encode_abi("snapshot", [])
    at_earlier = env.rpc(
        "eth_call", {"to": vault.address, "data": data}, "latest", {}, {"time": hex(earlier)}
    )
    assert "error" not in at_earlier  # type: ignore[operator]
    now = env.rpc("eth_call", {"to": vault.address, "data": data}, "latest")
    raw_then = bytes.fromhex(at_earlier["result"][2:])  # type: ignore[index]
    raw_now = bytes.fromhex(now["result"][2:])  # type: ignore[index]
    assert len(raw_then) == len(raw_now)
