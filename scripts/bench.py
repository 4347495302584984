#!/usr/bin/env python3
"""Benchmarks of the keeper, by subcommand (no timed assertions anywhere; this only reports).

    python scripts/bench.py risk [--options N] [--vaults N] [--repeat N]

``risk``: Black–Scholes greeks for N options, vectorised vs a plain per-element Python loop
(``math`` module, same formulas) on a slice, extrapolated per element; then one full
assess-and-decide pass over N vaults × 3 underlyings × 10 options, the vectorised batch vs
calling ``decide`` per vault. Add a subcommand by writing ``_add_<name>(subparsers)``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

# Small arrays, many calls: BLAS thread pools only add wake-up latency on a 2-core box.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from keeper.policy import Action, decide, decide_batch  # noqa: E402
from keeper.risk.forecast import build_forecast  # noqa: E402
from keeper.risk.greeks import black_scholes  # noqa: E402
from keeper.risk.health import nav_from_positions  # noqa: E402
from keeper.risk.params import PolicyParams  # noqa: E402
from keeper.risk.types import (  # noqa: E402
    SECONDS_PER_YEAR,
    AssetState,
    Costs,
    Mandate,
    MarketView,
    OptionPosition,
    PerpPosition,
    PriceHistory,
    VaultState,
)

#: Start of the synthetic clock (unix s); any fixed value works.
NOW_S: int = 1_700_000_000
UNDERLYINGS: tuple[tuple[str, float, float], ...] = (
    ("ETH", 3_000.0, 0.70), ("BTC", 60_000.0, 0.55), ("SOL", 150.0, 0.95),
)


def _best_of(fn: Callable[[], object], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _bs_loop(s: Sequence[float], k: Sequence[float], t: Sequence[float], r: float,
             v: Sequence[float], call: Sequence[bool]) -> list[tuple[float, ...]]:
    """The same Black–Scholes formulas, one option at a time with the math module."""
    out: list[tuple[float, ...]] = []
    for si, ki, ti, vi, ci in zip(s, k, t, v, call, strict=True):
        sq = math.sqrt(ti)
        d1 = (math.log(si / ki) + (r + 0.5 * vi * vi) * ti) / (vi * sq)
        d2 = d1 - vi * sq
        nd1 = 0.5 * math.erfc(-d1 / math.sqrt(2.0))
        nd2 = 0.5 * math.erfc(-d2 / math.sqrt(2.0))
        pdf = math.exp(-0.5 * d1 * d1) / math.sqrt(2.0 * math.pi)
        dk = ki * math.exp(-r * ti)
        call_px = si * nd1 - dk * nd2
        decay = -si * pdf * vi / (2.0 * sq)
        if ci:
            out.append((call_px, nd1, pdf / (si * vi * sq), si * pdf * sq, decay - r * dk * nd2))
        else:
            out.append((call_px - si + dk, nd1 - 1.0, pdf / (si * vi * sq), si * pdf * sq,
                        decay + r * dk * (1.0 - nd2)))
    return out


def _synthetic_market(rng: np.random.Generator, n_points: int) -> MarketView:
    hist = []
    for i, (name, s0, vol) in enumerate(UNDERLYINGS):
        steps = rng.uniform(1_800.0, 5_400.0, n_points - 1)  # irregular feed rounds
        ts = NOW_S - 60.0 - np.concatenate(([0.0], np.cumsum(steps)))[::-1]
        r = rng.standard_t(4, n_points - 1) * vol * np.sqrt(steps / SECONDS_PER_YEAR / 2.0)
        px = s0 * np.exp(np.concatenate(([0.0], np.cumsum(r))) - np.sum(r) * (i == 0) * 0)
        hist.append(PriceHistory(name, ts, px / px[-1] * s0))
    return MarketView(now=NOW_S, risk_free_rate=0.04, histories=tuple(hist),
                      max_staleness_s=3_600, expected_returns={})


def _synthetic_vaults(rng: np.random.Generator, n_vaults: int
                      ) -> tuple[list[VaultState], list[Mandate]]:
    states, mandates = [], []
    for v in range(n_vaults):
        lev = rng.uniform(0.3, 2.4)
        nav0 = rng.uniform(1e5, 1e7)
        w = rng.dirichlet(np.ones(len(UNDERLYINGS)))
        assets, perps, options = [], [], []
        for (name, s0, vol), wi in zip(UNDERLYINGS, w, strict=True):
            coll = lev * nav0 * wi / s0
            assets.append(AssetState(name, coll, 0.0, s0, NOW_S - 30, 0.80, 0.75, vol, NOW_S - 30))
            hedge = -coll * rng.uniform(0.8, 1.2)
            perps.append(PerpPosition(name, hedge, s0, 0.0, 0.05))
            for _ in range(10 // len(UNDERLYINGS) + (1 if name == "ETH" else 0)):
                strike = s0 * rng.uniform(0.7, 1.3)
                options.append(OptionPosition(
                    name, bool(rng.integers(2)), strike, NOW_S + int(rng.uniform(1, 90) * 86_400),
                    float(rng.normal(0, 0.05 * coll + 1e-9)), 0.0, vol))
        debt = (lev - 1.0) * nav0 if lev > 1.0 else 0.0
        idle = (1.0 - lev) * nav0 if lev < 1.0 else 0.0
        margin = 0.1 * nav0 * lev
        draft = VaultState(f"0x{v:040x}", 1, NOW_S, 1.0, idle, debt, margin, tuple(assets),
                           tuple(perps), tuple(options[:10]))
        states.append(VaultState(draft.address, 1, NOW_S, max(nav_from_positions(draft), 0.0),
                                 idle, debt, margin, draft.assets, draft.perps, draft.options))
        mandates.append(Mandate(target_vol=float(rng.uniform(0.3, 0.9)), max_leverage=3.0,
                                min_health=1.25, hedge_target=0.0, hedge_band=0.02,
                                cppi_floor=0.7, cppi_multiplier=4.0, kelly_fraction=0.5,
                                max_slippage_bps=50))
    return states, mandates


def _settle(states: list[VaultState], decided: list[list[Action]], keep_out: float,
            rng: np.random.Generator) -> list[VaultState]:
    """The fleet one tick later: most vaults executed last tick's actions (no fees), a fraction
    ``keep_out`` did not and still needs them."""
    out = []
    for st, acts in zip(states, decided, strict=True):
        if not acts or rng.random() < keep_out:
            out.append(st)
            continue
        spot: dict[str, float] = {}
        perp: dict[str, float] = {}
        for a in acts:
            for k, x in a.spot_legs.items():
                spot[k] = spot.get(k, 0.0) + x
            for k, x in a.perp_legs.items():
                perp[k] = perp.get(k, 0.0) + x
        # Buys spend idle USDC first, then borrow; sale proceeds repay debt, then sit idle
        # (PolicyParams.fund_buys_from_idle).
        flow = sum(x * st.asset(k).price_usd for k, x in spot.items())
        from_idle = min(st.idle_usdc, max(flow, 0.0))
        debt = st.debt_usdc + flow - from_idle
        idle = st.idle_usdc - from_idle + max(-debt, 0.0)
        assets = tuple(replace(a, collateral=max(a.collateral + spot.get(a.symbol, 0.0), 0.0))
                       for a in st.assets)
        perps = tuple(replace(p, size=p.size + perp.get(p.underlying, 0.0)) for p in st.perps)
        out.append(replace(st, assets=assets, perps=perps, debt_usdc=max(debt, 0.0),
                           idle_usdc=idle))
    return out


def _table(rows: list[tuple[str, str, str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for n, row in enumerate(rows):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def run_risk(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    n = args.options
    s = rng.uniform(50.0, 150.0, n)
    k = rng.uniform(50.0, 150.0, n)
    t = rng.uniform(0.02, 2.0, n)
    v = rng.uniform(0.1, 1.2, n)
    call = rng.integers(0, 2, n).astype(bool)
    vec = _best_of(lambda: black_scholes(s, k, t, 0.03, v, call), args.repeat)
    m = min(n, args.loop_slice)
    sl, kl, tl, vl, cl = (a[:m].tolist() for a in (s, k, t, v, call))
    loop = _best_of(lambda: _bs_loop(sl, kl, tl, 0.03, vl, cl), 1) / m * n

    market = _synthetic_market(rng, args.history)
    costs = Costs(gas_price_usd_per_gas=2e-6, swap_fee_bps=30.0, swap_slippage_bps=10.0,
                  perp_fee_bps=5.0)
    params = PolicyParams()
    forecast = build_forecast(market, params)
    t_fc = _best_of(lambda: build_forecast(market, params), args.repeat)
    raw_states, mandates = _synthetic_vaults(rng, args.vaults)
    first = decide_batch(raw_states, mandates, market, costs, params, forecast)
    settled = _settle(raw_states, first, args.out_of_band, rng)

    def run(states: list[VaultState]) -> tuple[float, float, bool, dict[str, int]]:
        out: list[list[Action]] = []

        def batch() -> None:
            out[:] = decide_batch(states, mandates, market, costs, params, forecast)

        t_batch = _best_of(batch, args.repeat)
        t0 = time.perf_counter()
        loop_out = [decide(st, md, market, costs, params, forecast)
                    for st, md in zip(states, mandates, strict=True)]
        t_loop = time.perf_counter() - t0
        same = ([[(a.kind, a.spot_legs, a.perp_legs) for a in acts] for acts in loop_out]
                == [[(a.kind, a.spot_legs, a.perp_legs) for a in acts] for acts in out])
        kinds: dict[str, int] = {}
        for acts in out:
            for a in acts:
                kinds[a.kind.value] = kinds.get(a.kind.value, 0) + 1
        return t_batch, t_loop, same, kinds

    t_set, t_set_loop, same_set, kinds_set = run(settled)
    t_all, t_all_loop, same_all, kinds_all = run(raw_states)

    print(f"risk benchmark (numpy {np.__version__}, {os.cpu_count()} cpu, best of "
          f"{args.repeat})\n")
    _table([
        ("greeks (price, delta, gamma, vega, theta)", "time", "throughput"),
        (f"vectorised, {n:,} options", f"{vec * 1e3:.1f} ms", f"{n / vec / 1e6:.2f} M/s"),
        (f"python loop, {m:,} options → ×{n // m}", f"{loop * 1e3:.0f} ms",
         f"{n / loop / 1e6:.3f} M/s"),
        ("speed-up", f"{loop / vec:.0f}×", ""),
    ])
    print()
    nv = len(raw_states)

    def counts(k: dict[str, int]) -> str:
        return ", ".join(f"{v} {n}" for n, v in sorted(k.items())) or "none"

    _table([
        (f"assess + decide, {nv:,} vaults × 3 underlyings × 10 options", "time", "per vault"),
        ("market forecast (GARCH, t-fit, correlation; once per tick)", f"{t_fc * 1e3:.1f} ms",
         ""),
        (f"settled fleet ({counts(kinds_set)})", "", ""),
        ("  batch decide_batch()", f"{t_set * 1e3:.1f} ms", f"{t_set / nv * 1e6:.1f} µs"),
        ("  per-vault decide() loop", f"{t_set_loop * 1e3:.0f} ms",
         f"{t_set_loop / nv * 1e6:.0f} µs"),
        ("  speed-up", f"{t_set_loop / t_set:.0f}×", ""),
        ("  forecast + batch (one whole tick)", f"{(t_fc + t_set) * 1e3:.1f} ms", ""),
        (f"worst case, every vault acts ({counts(kinds_all)})", "", ""),
        ("  batch decide_batch()", f"{t_all * 1e3:.1f} ms", f"{t_all / nv * 1e6:.1f} µs"),
        ("  per-vault decide() loop", f"{t_all_loop * 1e3:.0f} ms",
         f"{t_all_loop / nv * 1e6:.0f} µs"),
        ("  speed-up", f"{t_all_loop / t_all:.0f}×", ""),
    ])
    same = same_set and same_all
    print(f"\nbatch actions == per-vault actions: {same}")
    return 0 if same else 1


def _add_risk(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("risk", help="greeks throughput and the many-vault decision pass")
    p.add_argument("--options", type=int, default=1_000_000)
    p.add_argument("--loop-slice", type=int, default=50_000)
    p.add_argument("--vaults", type=int, default=1_000)
    p.add_argument("--history", type=int, default=1_000, help="feed rounds per underlying")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out-of-band", type=float, default=0.05,
                   help="fraction of the settled fleet still needing last tick's action")
    p.set_defaults(func=run_risk)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_risk(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
