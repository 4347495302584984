"""The vectorised many-vault path gives exactly the per-vault actions and numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from keeper.policy import Action, ActionKind, decide, decide_batch
from keeper.risk.forecast import build_forecast
from keeper.risk.params import PolicyParams
from keeper.risk.types import AssetState, Mandate, OptionPosition, PerpPosition, VaultState

from .conftest import NOW, costs, eth, gbm_history, mandate, market, vault


def btc(coll: float, **kw: object) -> AssetState:
    base: dict[str, object] = dict(symbol="BTC", collateral=coll, idle=0.1, price_usd=60_000.0,
                                   price_updated_at=NOW - 30, liquidation_threshold=0.75,
                                   ltv=0.70, implied_vol=0.45, implied_vol_updated_at=NOW - 30)
    base.update(kw)
    return AssetState(**base)  # type: ignore[arg-type]


def sol(coll: float) -> AssetState:
    return AssetState("SOL", coll, 0.0, 150.0, NOW - 30, 0.65, 0.6, 0.9, NOW - 30)


def fleet() -> tuple[list[VaultState], list[Mandate]]:
    rng = np.random.default_rng(17)
    states, mandates = [], []
    for i in range(24):
        lev = 0.5 + 0.1 * i
        kind = i % 4
        if kind == 0:
            assets: tuple[AssetState, ...] = (eth(lev * 1e6 / 2_000),)
        elif kind == 1:
            assets = (eth(lev * 6e5 / 2_000), btc(lev * 4e5 / 60_000))
        elif kind == 2:
            assets = (eth(lev * 4e5 / 2_000), btc(lev * 3e5 / 60_000), sol(lev * 3e5 / 150))
        else:
            assets = (btc(lev * 1e6 / 60_000), sol(0.0))
        perps = tuple(PerpPosition(a.symbol, -a.collateral * rng.uniform(0.5, 1.1), a.price_usd,
                                   float(rng.normal(0, 1e3)), 0.05)
                      for a in assets if rng.random() < 0.7)
        options = tuple(
            OptionPosition(a.symbol, bool(rng.integers(2)), a.price_usd * rng.uniform(0.8, 1.2),
                           NOW + int(rng.uniform(-2, 60) * 86_400), float(rng.normal(0, 20)),
                           10.0, a.implied_vol)
            for a in assets for _ in range(int(rng.integers(0, 4))))
        value = sum(a.collateral * a.price_usd for a in assets)
        debt = max(value - 1e6, 0.0) + (4e5 if i % 7 == 3 else 0.0)  # some unhealthy vaults
        states.append(vault(address=f"0x{i:02d}", assets=assets, perps=perps, options=options,
                            debt_usdc=debt, perp_margin_usd=1e5 if i % 5 else 2e4,
                            nav_usd=value - debt + 1e5, paused=(i == 5)))
        mandates.append(mandate(target_vol=0.3 + 0.05 * (i % 9), hedge_target=0.1 * (i % 3),
                                cppi_floor=0.6, max_slippage_bps=40 + i))
    # a stale one
    states[7] = vault(address="0x07", assets=(eth(600.0, price_updated_at=NOW - 10_000),))
    return states, mandates


def _same(a: Action, b: Action) -> None:
    assert (a.kind, a.vault, a.urgency, a.reason) == (b.kind, b.vault, b.urgency, b.reason)
    assert a.expected_benefit_usd == pytest.approx(b.expected_benefit_usd, rel=1e-9, abs=1e-9)
    assert a.expected_cost_usd == pytest.approx(b.expected_cost_usd, rel=1e-9, abs=1e-9)
    assert dict(a.spot_legs) == pytest.approx(dict(b.spot_legs), rel=1e-9, abs=1e-12)
    assert dict(a.perp_legs) == pytest.approx(dict(b.perp_legs), rel=1e-9, abs=1e-12)
    assert a.inputs.keys() == b.inputs.keys()
    for key, value in a.inputs.items():
        other = b.inputs[key]
        if isinstance(value, str) or (isinstance(value, float) and math.isinf(value)):
            assert value == other, key
        else:
            assert value == pytest.approx(other, rel=1e-9, abs=1e-12), key


def test_batch_equals_per_vault_loop() -> None:
    states, mandates = fleet()
    mk = market(histories=(gbm_history("ETH", 400, 0.7, seed=1, s0=2_000.0),
                           gbm_history("BTC", 400, 0.5, seed=2, s0=60_000.0)))
    c = costs()
    params = PolicyParams()
    fc = build_forecast(mk, params)
    batch = decide_batch(states, mandates, mk, c, params, fc)
    loop = [decide(s, m, mk, c, params, fc) for s, m in zip(states, mandates, strict=True)]
    assert len(batch) == len(loop) == len(states)
    seen: set[ActionKind] = set()
    for got, want in zip(batch, loop, strict=True):
        assert [a.kind for a in got] == [a.kind for a in want]
        for a, b in zip(got, want, strict=True):
            _same(a, b)
            seen.add(a.kind)
    # the fleet exercises every branch, so the comparison is not vacuous
    assert seen == {ActionKind.DELEVERAGE, ActionKind.REBALANCE, ActionKind.HEDGE}
    assert batch[7] == [] and all(a.kind is ActionKind.DELEVERAGE for a in batch[5])


def test_empty_batch() -> None:
    assert decide_batch([], [], market(), costs()) == []
