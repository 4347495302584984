"""Each policy on a short gap and a short rally through the real contracts on anvil; the
metrics are checked against what the pool's parameters and the records imply on their own."""

from __future__ import annotations

import pytest

from keeper.devnet.deploy import COLLATERAL_PARAMS
from keeper.sim.metrics import path_metrics
from keeper.sim.records import PHASE_END, PHASE_ORACLE, PathRun, VaultRun
from keeper.sim.runner import World, run_path
from keeper.sim.scenarios import get_scenario

WAD = 10**18
#: The pool's liquidation bonuses (ETH 5 %, BTC 6 %), as deployed.
BONUSES = sorted(bonus / WAD for _ltv, _lt, bonus in COLLATERAL_PARAMS.values())


def short(name: str, scale: float = 0.1, tail: int = 2):  # type: ignore[no-untyped-def]
    return get_scenario(name).generate(0, 0, time_scale=scale, tail_hours=tail)


def balanced(run: PathRun) -> VaultRun:
    return next(v for v in run.vaults if v.name.startswith("Balanced"))


def test_hold_is_liquidated_on_gap50_and_loses_the_bonus(world: World) -> None:
    path = short("gap50")
    run = run_path(world, path, "hold", "liquidator-first", 0)
    vault = balanced(run)
    lending = [x for x in vault.liquidations if x.venue == "lending"]
    assert lending, "a 50 % gap must liquidate the unmanaged Balanced vault"
    for rec in lending:
        # Seized value = repaid × (1 + bonus): the loss is the bonus of the collateral taken.
        assert min(abs(rec.loss_usd / rec.repaid_usd - b) for b in BONUSES) < 1e-4
    step = lending[0].step
    at = {o.phase: o for o in vault.observations if o.step == step}
    lost = sum(x.loss_usd for x in vault.liquidations if x.step == step)
    # NAV falls by exactly what the liquidator took (plus seconds of interest).
    assert at[PHASE_ORACLE].nav_usd - at[PHASE_END].nav_usd == pytest.approx(lost, rel=1e-3)
    m = path_metrics(run)["vaults"][vault.name]
    assert m["liquidations"] == len(vault.liquidations)
    assert m["liquidation_loss_usd"] == pytest.approx(sum(x.loss_usd for x in vault.liquidations))
    assert m["txs"] == 0 and m["gas_used"] == 0


def test_keeper_first_keeper_is_safe_within_one_tick(world: World) -> None:
    run = run_path(world, short("gap50"), "keeper", "keeper-first", 0)
    vault = balanced(run)
    m = path_metrics(run)["vaults"][vault.name]
    assert m["breaches"] >= 1
    assert m["liquidations"] == 0
    assert m["time_to_safe_blocks"] is not None
    assert m["time_to_safe_blocks"] <= run.blocks_per_step
    assert any(a.function == "deleverage" and a.status == "mined" for a in vault.actions)


def test_liquidator_first_wins_the_one_block_gap(world: World) -> None:
    run = run_path(world, short("gap50"), "keeper", "liquidator-first", 0)
    assert balanced(run).liquidations, "the liquidator moves first after the oracle update"


@pytest.mark.parametrize("policy", ["hold", "threshold", "keeper"])
def test_rally(world: World, policy: str) -> None:
    path = short("rally", scale=0.2)
    run = run_path(world, path, policy, "keeper-first", 0)
    assert [m.step for m in run.market] == list(range(1, path.n_steps + 1))
    eth = [m.spot["ETH"] for m in run.market]
    assert max(eth) / world.spot0["ETH"] == pytest.approx(max(path.spot["ETH"]), rel=1e-9)
    metrics = path_metrics(run)["total"]
    actions = [a for v in run.vaults for a in v.actions]
    mined = [a for a in actions if a.status in ("mined", "reverted")]
    assert metrics["txs"] == len(mined)
    assert metrics["gas_used"] == sum(a.gas_used for a in mined)
    # Gas in USD is gas × effective price × the ETH price at its step.
    eth_at = {m.step: m.spot["ETH"] for m in run.market}
    expected = sum(a.gas_used * a.gas_price_wei / 1e18 * eth_at[a.step] for a in mined)
    assert metrics["gas_usd"] == pytest.approx(expected)
    for a in mined:  # every policy pays at least the path's base fee for its step
        assert a.gas_price_wei >= path.base_fee_gwei[a.step] * 1e9 * 0.99
    if policy == "hold":
        assert actions == [] and metrics["gas_usd"] == 0
    if policy == "threshold":
        assert {a.function for a in actions} <= {"deleverage", "rebalance"}
    # Short perp hedges lose margin in a rally: perp health falls from where it started.
    perp = [o.perp_health for o in balanced(run).observations if o.phase == PHASE_END]
    if policy == "hold":
        assert min(perp) < perp[0]


def test_a_vault_whose_shorts_a_gap_up_liquidated_re_hedges_and_keeps_its_leverage(
        world: World) -> None:
    # squeeze15 with the liquidator first: the Delta-Neutral vault's shorts cannot survive
    # +15 % in one block (perp equity $209k against the $222.7k it needs). The keeper, in the
    # same step, restores the hedge on borrowed margin instead of selling the spot it hedged.
    # Before d373b63 it sold down to 0.12x (the re-lever's buys would have spent the margin its
    # hedge needed) and stayed there.
    run = run_path(world, short("squeeze15", tail=3), "keeper", "liquidator-first", 0)
    vault = next(v for v in run.vaults if v.name.startswith("Delta-Neutral"))
    perp = [x for x in vault.liquidations if x.venue == "perp"]
    assert perp, "a one-block +15 % gap liquidates the shorts when the liquidator moves first"
    gap_step = perp[0].step
    ends = [o for o in vault.observations if o.phase == PHASE_END]
    before = next(o for o in ends if o.step == gap_step - 1)
    for o in ends:
        if o.step >= gap_step:
            assert o.leverage > 0.9 * before.leverage, (o.step, o.leverage, before.leverage)
            assert abs(o.net_delta_usd) <= 0.02 * o.nav_usd, (o.step, o.net_delta_usd)
    assert not [a for a in vault.actions if a.status == "simulation_reverted"]


def test_in_process_chain_runs_the_keeper_too() -> None:
    """Without anvil the simulator falls back to the in-process chain (one block per
    transaction there): the keeper still deleverages the gap in its own step."""
    from keeper.sim.runner import open_world

    with open_world("tester") as tester:
        run = run_path(tester, short("gap50", scale=0.05, tail=1), "keeper", "keeper-first", 0)
    vault = balanced(run)
    assert vault.liquidations == []
    assert any(a.function == "deleverage" and a.status == "mined" for a in vault.actions)
