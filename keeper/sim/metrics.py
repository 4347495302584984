"""Metrics of simulated paths: pure functions of the records (`keeper.sim.records`).

Per vault and path (`vault_metrics`), then summed over vaults and paths (`combine`): counts and
money add up, `min_health` is the lowest seen, `max_drawdown` and `time_to_safe_blocks` the
worst, `sharpe` the mean. Definitions:

- hours are steps × step length; a step counts as *below min health* when the vault's health
  after every actor moved (PHASE_END) is under the mandate's minimum, and *outside the mandate*
  when leverage exceeds ``max_leverage`` or ``|net delta / NAV − hedge_target| > hedge_band``;
- a *breach* starts at the first observation (either phase) under min health and ends at the
  first later observation at or above it; ``time_to_safe_blocks`` is the longest such span in
  blocks (a breach still open at the end counts to the last observation);
- ``max_drawdown`` is the largest fall of NAV from its running peak, as a fraction of the peak;
- ``sharpe`` annualises the mean over the standard deviation of step log returns of NAV
  (zero when NAV never moves);
- ``txs`` counts transactions that reached the chain (mined or reverted on-chain);
  ``reverted_simulations`` the actions refused by `eth_call` before sending;
- ``hours_delta_outside_band``: steps with ``|net delta / NAV − hedge_target| > hedge_band``;
- ``recovery_hours`` (scenarios with one move after a lead-in): the target is the leverage at
  the end of the lead-in, but never above what the mandate's CPPI rule allows at the step
  (``multiplier × (NAV − floor × max(HWM, NAV)) / NAV``, from the vault's own high-water mark:
  a loss the move made lowers the mandate's target, and no policy may go back above it),
  judged with the keeper's rebalance band (``max(0.10, 10 % × it)``); implied vol is *back* at
  the first step from the move on where every underlying's IV is within ``IV_BACK_TOLERANCE``
  of its level at the end of the lead-in, counted no earlier than the end of the move (the first
  step of the flat tail: a cut part-way through a 48 h rally, after a lead-in with no IV
  spike, would otherwise fall after a recovery already counted at the rally's first hour);
  the metric is the hours from then to the first step
  whose leverage is inside the band (0 if it already is; ``inf`` if it never gets there; None
  when IV never comes back within the path — run a longer ``--tail-hours``). Combined as the
  worst;
- ``recovery_hours_to_target``: the same, with the policy's *own* target in place of the
  leverage held: the target leverage its decision aimed at in the last step of the lead-in
  (`VaultRun.targets` at the step before the move), capped by CPPI at each step as above, with
  the rebalance band of that capped target, and the same IV-back rule. None also when the
  policy had no target then (``hold``, ``threshold``, or a keeper tick that failed). Where the
  lead-in ends with leverage the policy was not aiming at (a seed above its own cap), this is
  the one that says whether it got back to where it wanted to be; ``recovery_hours`` stays the
  stricter reading. Combined as the worst;
- ``pre_shock_leverage`` and ``pre_shock_target`` (per vault and path only, never combined):
  the two references above, before the CPPI cap (None without a move or a target).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from keeper.risk.params import REBALANCE_BAND_ABS, REBALANCE_BAND_REL
from keeper.sim.records import PHASE_END, Bands, MarketStep, Observation, PathRun, VaultRun

SECONDS_PER_YEAR = 365 * 24 * 3600
#: Outcomes whose transaction reached the chain (gas was paid).
ON_CHAIN = ("mined", "reverted")
#: Implied vol counts as back to its pre-move level within this fraction of it.
IV_BACK_TOLERANCE = 0.05

METRIC_KEYS = (
    "liquidations",
    "liquidation_loss_usd",
    "min_health",
    "hours_below_min_health",
    "max_drawdown",
    "final_nav_usd",
    "sharpe",
    "txs",
    "gas_used",
    "gas_usd",
    "slippage_usd",
    "reverted_simulations",
    "hours_outside_mandate",
    "time_to_safe_blocks",
    "breaches",
    "hours_delta_outside_band",
    "recovery_hours",
    "recovery_hours_to_target",
)
#: How `combine` merges each metric across vaults and paths.
_SUMMED = {
    "liquidations",
    "liquidation_loss_usd",
    "hours_below_min_health",
    "final_nav_usd",
    "txs",
    "gas_used",
    "gas_usd",
    "slippage_usd",
    "reverted_simulations",
    "hours_outside_mandate",
    "breaches",
    "hours_delta_outside_band",
}
#: Combined as the worst (largest); None when no part has a value.
_WORST_OR_NONE = {"time_to_safe_blocks", "recovery_hours", "recovery_hours_to_target"}


def max_drawdown(nav: Sequence[float]) -> float:
    """Largest peak-to-trough fall of `nav` as a fraction of the peak (0 for a rising path)."""
    worst, peak = 0.0, -math.inf
    for x in nav:
        peak = max(peak, x)
        if peak > 0:
            worst = max(worst, (peak - x) / peak)
    return worst


def sharpe(nav: Sequence[float], step_s: int) -> float:
    """Annualised Sharpe ratio of step log returns (risk-free rate 0; 0 if NAV is constant or
    ever non-positive, where log returns are undefined)."""
    arr = np.asarray(nav, dtype=float)
    if arr.size < 3 or np.any(arr <= 0):
        return 0.0
    r = np.diff(np.log(arr))
    sd = float(np.std(r, ddof=1))
    if sd <= 1e-15:
        return 0.0
    return float(np.mean(r)) / sd * math.sqrt(SECONDS_PER_YEAR / step_s)


def breach_spans(blocks: Sequence[int], health: Sequence[float], min_health: float) -> list[int]:
    """Length in blocks of each span from an observation under `min_health` to the first later
    one at or above it (an unfinished span runs to the last observation)."""
    spans: list[int] = []
    start: int | None = None
    for b, h in zip(blocks, health, strict=True):
        if h < min_health and start is None:
            start = b
        elif h >= min_health and start is not None:
            spans.append(b - start)
            start = None
    if start is not None:
        spans.append(blocks[-1] - start)
    return spans


def rebalance_band(target: float) -> float:
    """The keeper's leverage no-trade half-width around `target` (`keeper.risk.params`)."""
    return max(REBALANCE_BAND_ABS, REBALANCE_BAND_REL * target)


def cppi_cap(o: Observation, bands: Bands) -> float:
    """The leverage the mandate's CPPI rule allows at observation `o` (module docstring)."""
    if math.isinf(bands.cppi_multiplier):
        return math.inf
    if o.nav_usd <= 0:
        return 0.0
    floor = bands.cppi_floor * max(o.nav_high_water_usd, o.nav_usd)
    return bands.cppi_multiplier * max(o.nav_usd - floor, 0.0) / o.nav_usd


def recovery_hours(end: Sequence[Observation], market: Sequence[MarketStep],
                   shock_step: int | None, step_s: int,
                   bands: Bands | None = None, move_end: int | None = None) -> float | None:
    """Hours from implied vol being back (and the move over: `move_end`, the first step of
    the flat tail) to leverage being back to its value at the end of the lead-in (module
    docstring); without `bands`, no CPPI cap."""
    if shock_step is None:
        return None
    lead_in = {o.step: o for o in end}.get(shock_step - 1)
    return _recovery(end, market, shock_step, step_s, bands,
                     None if lead_in is None else lead_in.leverage, move_end)


def recovery_hours_to_target(end: Sequence[Observation], market: Sequence[MarketStep],
                             shock_step: int | None, step_s: int, targets: Mapping[int, float],
                             bands: Bands | None = None,
                             move_end: int | None = None) -> float | None:
    """Hours from implied vol being back (and the move over: `move_end`) to leverage being back
    to the policy's own target at the end of the lead-in (`targets`: step → target; module
    docstring); without `bands`, no CPPI cap."""
    if shock_step is None:
        return None
    return _recovery(end, market, shock_step, step_s, bands, targets.get(shock_step - 1),
                     move_end)


def _recovery(end: Sequence[Observation], market: Sequence[MarketStep], shock_step: int,
              step_s: int, bands: Bands | None, reference: float | None,
              move_end: int | None = None) -> float | None:
    """Hours from the first step from `shock_step` (and `move_end`, when given) on with every
    IV back within `IV_BACK_TOLERANCE` of its level at the end of the lead-in, to the first
    step whose leverage is within the rebalance band of `reference` (capped by CPPI when
    `bands`)."""
    if reference is None:
        return None
    iv_at = {m.step: m.iv for m in market}
    obs_at = {o.step: o for o in end}
    before = shock_step - 1
    if before not in iv_at or before not in obs_at:
        return None
    iv0 = iv_at[before]
    back = next(
        (m.step for m in sorted(market, key=lambda m: m.step)
         if m.step >= max(shock_step, move_end or 0)
         and all(m.iv[u] <= iv0[u] * (1.0 + IV_BACK_TOLERANCE) for u in iv0)),
        None,
    )
    if back is None:
        return None

    def inside(o: Observation) -> bool:
        target = reference if bands is None else min(reference, cppi_cap(o, bands))
        return abs(o.leverage - target) <= rebalance_band(target)

    done = next((k for k in sorted(obs_at) if k >= back and inside(obs_at[k])), None)
    return math.inf if done is None else (done - back) * step_s / 3600


def vault_metrics(run: VaultRun, step_s: int, market: Sequence[MarketStep] = (),
                  shock_step: int | None = None,
                  move_end: int | None = None) -> dict[str, Any]:
    """Every metric of one vault over one path (`market`, `shock_step` and `move_end`: for
    recovery)."""
    bands = run.bands
    obs = sorted(run.observations, key=lambda o: (o.block, o.phase != "oracle"))
    end = [o for o in run.observations if o.phase == PHASE_END]
    hours = step_s / 3600
    nav = [o.nav_usd for o in end]
    below = sum(1 for o in end if o.health < bands.min_health)
    delta_off = [
        o.nav_usd > 0 and abs(o.net_delta_usd / o.nav_usd - bands.hedge_target) > bands.hedge_band
        for o in end
    ]
    outside = sum(1 for o, off in zip(end, delta_off, strict=True)
                  if off or o.leverage > bands.max_leverage)
    delta_out = sum(delta_off)
    spans = breach_spans([o.block for o in obs], [o.health for o in obs], bands.min_health)
    on_chain = [a for a in run.actions if a.status in ON_CHAIN]
    before = None if shock_step is None else {o.step: o for o in end}.get(shock_step - 1)
    return {
        "liquidations": len(run.liquidations),
        "liquidation_loss_usd": sum(x.loss_usd for x in run.liquidations),
        "min_health": min((o.health for o in obs), default=math.inf),
        "hours_below_min_health": below * hours,
        "max_drawdown": max_drawdown(nav),
        "final_nav_usd": nav[-1] if nav else 0.0,
        "sharpe": sharpe(nav, step_s),
        "txs": len(on_chain),
        "gas_used": sum(a.gas_used for a in on_chain),
        "gas_usd": sum(a.gas_usd for a in on_chain),
        "slippage_usd": sum(a.slippage_usd for a in on_chain),
        "reverted_simulations": sum(1 for a in run.actions if a.status == "simulation_reverted"),
        "hours_outside_mandate": outside * hours,
        "time_to_safe_blocks": max(spans) if spans else None,
        "breaches": len(spans),
        "hours_delta_outside_band": delta_out * hours,
        "recovery_hours": recovery_hours(end, market, shock_step, step_s, bands, move_end),
        "recovery_hours_to_target": recovery_hours_to_target(
            end, market, shock_step, step_s, run.targets, bands, move_end
        ),
        "pre_shock_leverage": before.leverage if before is not None else None,
        "pre_shock_target": run.targets.get(shock_step - 1) if shock_step is not None else None,
    }


def combine(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge metric dicts (vaults of a path, or paths): see the module docstring."""
    items = list(parts)
    out: dict[str, Any] = {}
    for key in METRIC_KEYS:
        values = [p[key] for p in items if p.get(key) is not None]
        if key in _SUMMED:
            out[key] = sum(values) if values else 0
        elif key in ("min_health",):
            out[key] = min(values, default=math.inf)
        elif key in _WORST_OR_NONE:
            out[key] = max(values) if values else None
        elif key == "max_drawdown":
            out[key] = max(values) if values else 0.0
        else:  # sharpe
            out[key] = float(np.mean(values)) if values else 0.0
    return out


def path_metrics(run: PathRun) -> dict[str, Any]:
    """One path: per vault (by name) and their combination."""
    vaults = {v.name: vault_metrics(v, run.step_s, run.market, run.shock_step, run.move_end)
              for v in run.vaults}
    return {"path": run.path, "seed": run.seed, "total": combine(vaults.values()),
            "vaults": vaults}


def build_metrics(runs: Sequence[PathRun], header: Mapping[str, Any]) -> dict[str, Any]:
    """The content of metrics.json: `header` (chain, seed, paths, …) and, per scenario, order
    and policy, the total over paths and vaults, per vault over paths, and each path."""
    results: dict[str, Any] = {}
    for run in sorted(runs, key=lambda r: (r.scenario, r.order, r.policy, r.path)):
        slot = results.setdefault(run.scenario, {}).setdefault(run.order, {}).setdefault(
            run.policy, {"paths": []}
        )
        slot["paths"].append(path_metrics(run))
    for by_order in results.values():
        for by_policy in by_order.values():
            for slot in by_policy.values():
                paths = slot["paths"]
                names = list(dict.fromkeys(n for p in paths for n in p["vaults"]))
                slot["total"] = combine(p["total"] for p in paths)
                slot["vaults"] = {
                    n: combine(p["vaults"][n] for p in paths if n in p["vaults"]) for n in names
                }
    return {**header, "version": 1, "results": results}


def json_safe(value: Any) -> Any:
    """`value` with inf/nan floats as strings ("inf", "-inf", "nan") so json.dump stays strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


__all__ = [
    "METRIC_KEYS",
    "breach_spans",
    "build_metrics",
    "combine",
    "json_safe",
    "max_drawdown",
    "path_metrics",
    "recovery_hours",
    "recovery_hours_to_target",
    "sharpe",
    "vault_metrics",
]
