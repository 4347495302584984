"""`bench.py sim`: keeper-in-the-loop simulation speed, per worker, on anvil and on the in-process
chain, next to the raw rate of the same chain for "push the feeds and mine a block" measured in
the same run, and where the time of a step goes (chain, read, decide, send).

The path is the first N steps of `bleed60` (a slow crash with rising vol: the keeper acts now
and then, as in a real run), policy `keeper`, order `keeper-first`. Timings are wall-clock on a
shared machine: the ratios are the point.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from keeper.sim.runner import World, open_world, run_path
from keeper.sim.scenarios import ScenarioPath, get_scenario

#: Default path lengths: anvil answers ~3× faster per transaction than py-evm.
DEFAULT_STEPS = {"anvil": 300, "tester": 60}


def first_steps(path: ScenarioPath, n: int) -> ScenarioPath:
    n = min(n, path.n_steps)
    return dataclasses.replace(
        path,
        spot={u: a[: n + 1] for u, a in path.spot.items()},
        iv={u: a[: n + 1] for u, a in path.iv.items()},
        base_fee_gwei=path.base_fee_gwei[: n + 1],
        tail_start=min(path.tail_start, n + 1),
    )


def raw_rate(world: World, path: ScenarioPath) -> float:
    """Steps/s of the driver alone: mine the step's block, push every feed, anchor the fee."""
    world.reset()
    started = time.perf_counter()
    for k in range(1, path.n_steps + 1):
        ts = world.start_ts + k * path.step_s
        spot = {u: world.spot0[u] * float(path.spot[u][k]) for u in path.spot}
        iv = {u: float(path.iv[u][k]) for u in path.iv}
        world.driver.push(ts, spot, iv)
        world.driver.anchor_base_fee(float(path.base_fee_gwei[k]))
    return path.n_steps / (time.perf_counter() - started)


def run_sim_bench(args: argparse.Namespace) -> int:
    print("| chain | steps | raw push+mine steps/s | keeper-in-loop steps/s | ratio | "
          "1,000 steps | chain | read | decide | send |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind in args.chains.split(","):
        n = args.steps or DEFAULT_STEPS[kind]
        with open_world(kind) as world:
            path = first_steps(get_scenario("bleed60").generate(0, 0, start_iv=world.iv0), n)
            raw = raw_rate(world, path)
            run = run_path(world, path, "keeper", "keeper-first", 0)
        t = run.timings
        loop = path.n_steps / t["total"]
        share = {k: t.get(k, 0.0) / t["total"] for k in ("chain", "read", "decide", "send")}
        print(f"| {kind} | {path.n_steps} | {raw:.1f} | {loop:.1f} | {raw / loop:.1f}× | "
              f"{1000 / loop:.0f} s | " + " | ".join(f"{share[k]:.0%}" for k in share) + " |")
    return 0


def add_sim(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sim", help="simulation steps/s with the keeper in the loop vs raw chain")
    p.add_argument("--chains", default="anvil,tester", help="comma-separated: anvil, tester")
    p.add_argument("--steps", type=int, default=0,
                   help="path length (default 300 on anvil, 60 in-process)")
    p.set_defaults(func=run_sim_bench)
