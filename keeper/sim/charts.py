"""PNG charts of simulated paths: the market of a path and, per vault, what each policy did.

matplotlib is imported inside the drawing functions so that importing the report stays cheap.
Figures are built as plain `Figure` objects on an Agg canvas, never through pyplot: no GUI
backend, no global figure registry to leak, nothing that changes the process-wide backend.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from keeper.sim.records import PHASE_END, Bands, Observation, PathRun, VaultRun

#: Fixed colours for the policies the simulator knows, so a policy looks the same in every figure.
KNOWN_COLOURS = {"hold": "#7f7f7f", "threshold": "#ff7f0e", "keeper": "#1f77b4"}
#: Colours handed out, in order, to any other policy name.
EXTRA_COLOURS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
#: Marker shape per vault function; anything else gets a diamond.
ACTION_MARKERS = {"deleverage": "v", "rebalance": "o", "hedge": "s"}
OTHER_MARKER = "D"
#: Attempts that reached the chain (or its simulation) and failed: drawn as hollow markers.
FAILED_STATUSES = frozenset({"reverted", "simulation_reverted", "failed", "timeout"})
#: Health above this many times the vault's min_health (or an infinite health) is drawn at the cap;
#: the interesting region is near the line, and a single inf would otherwise flatten the panel.
HEALTH_CAP_MULTIPLE = 2.5
HEALTH_CAP_FLOOR = 3.0
SECONDS_PER_HOUR = 3600.0
FIGURE_DPI = 100


def policy_colours(policies: Sequence[str]) -> dict[str, str]:
    """A colour per policy: the known ones fixed, the others by their position in `policies`."""
    colours: dict[str, str] = {}
    extra = 0
    for name in policies:
        if name in colours:
            continue
        if name in KNOWN_COLOURS:
            colours[name] = KNOWN_COLOURS[name]
        else:
            colours[name] = EXTRA_COLOURS[extra % len(EXTRA_COLOURS)]
            extra += 1
    return colours


def health_cap(bands: Bands) -> float:
    """The display ceiling of the health panel."""
    floor = bands.min_health * HEALTH_CAP_MULTIPLE if math.isfinite(bands.min_health) else 0.0
    return max(HEALTH_CAP_FLOOR, floor)


def _new_figure(rows: int, height_in: float) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, height_in), dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("hours since start of path")
    return fig, list(axes)


def draw_market(path: Path, run: PathRun) -> None:
    """Spot (normalised to 100 at the start, start price in the legend), implied vol, base fee."""
    fig, (ax_spot, ax_iv, ax_fee) = _new_figure(3, 8.0)
    steps = run.market
    t0 = steps[0].timestamp if steps else 0
    hours = [(m.timestamp - t0) / SECONDS_PER_HOUR for m in steps]
    symbols = sorted({s for m in steps for s in m.spot} | {s for m in steps for s in m.iv})
    for symbol in symbols:
        spots = [m.spot.get(symbol, math.nan) for m in steps]
        start = next((p for p in spots if math.isfinite(p) and p > 0), math.nan)
        if math.isfinite(start):
            ax_spot.plot(
                hours, [100.0 * p / start for p in spots], label=f"{symbol} (start ${start:,.0f})"
            )
        ivs = [100.0 * m.iv[symbol] if symbol in m.iv else math.nan for m in steps]
        if any(math.isfinite(v) for v in ivs):
            ax_iv.plot(hours, ivs, label=symbol)
    ax_fee.plot(hours, [m.base_fee_gwei for m in steps], color="#444444")
    ax_spot.axhline(100.0, color="black", linewidth=0.6, alpha=0.5)
    ax_spot.set_ylabel("spot (start = 100)")
    ax_iv.set_ylabel("implied vol (%)")
    ax_fee.set_ylabel("base fee (gwei)")
    for ax in (ax_spot, ax_iv):
        if ax.get_lines():
            ax.legend(loc="best", fontsize="small")
    if not steps:
        ax_spot.text(0.5, 0.5, "no market steps recorded", ha="center", transform=ax_spot.transAxes)
    fig.suptitle(f"market: {run.scenario}, path {run.path} (seed {run.seed})")
    fig.savefig(path, format="png")


def _end_observations(vault: VaultRun) -> list[Observation]:
    return sorted((o for o in vault.observations if o.phase == PHASE_END), key=lambda o: o.step)


def _at_step(observations: Sequence[Observation], steps: Sequence[int], step: int) -> Observation:
    """The end-of-step observation of `step`, else the last one before it, else the first."""
    i = bisect_right(steps, step) - 1
    return observations[max(i, 0)]


def _series(obs: Observation, cap: float) -> tuple[float, float, float, float]:
    health = obs.health if obs.health == obs.health else math.nan
    delta = obs.net_delta_usd / obs.nav_usd if obs.nav_usd > 0 else math.nan
    return min(health, cap), obs.leverage, delta, obs.nav_usd


def _draw_policy(
    axes: Sequence[Any], run: PathRun, vault: VaultRun, colour: str, t0: int, cap: float
) -> None:
    observations = _end_observations(vault)
    if not observations:
        return
    steps = [o.step for o in observations]
    hours = [(o.timestamp - t0) / SECONDS_PER_HOUR for o in observations]
    values = [_series(o, cap) for o in observations]
    for panel, ax in enumerate(axes):
        ax.plot(hours, [v[panel] for v in values], color=colour, linewidth=1.4, label=run.policy)

    def mark(step: int, marker: str, **style: Any) -> None:
        obs = _at_step(observations, steps, step)
        x = (obs.timestamp - t0) / SECONDS_PER_HOUR
        for panel, y in enumerate(_series(obs, cap)):
            if math.isfinite(y):
                axes[panel].scatter([x], [y], marker=marker, zorder=3, **style)

    for action in vault.actions:
        marker = ACTION_MARKERS.get(action.function, OTHER_MARKER)
        if action.status == "mined":
            mark(action.step, marker, s=36, color=colour, edgecolors="black", linewidths=0.5)
        elif action.status in FAILED_STATUSES:
            mark(action.step, marker, s=36, facecolors="none", edgecolors=colour, linewidths=1.2)
    for liquidation in vault.liquidations:
        mark(liquidation.step, "X", s=90, color="red", edgecolors="black", linewidths=0.5)


def _legend_handles(runs: Sequence[PathRun], colours: Mapping[str, str]) -> list[Any]:
    from matplotlib.lines import Line2D

    handles: list[Any] = [
        Line2D([], [], color=colours.get(r.policy, "black"), label=r.policy) for r in runs
    ]
    for function, marker in ACTION_MARKERS.items():
        handles.append(
            Line2D(
                [],
                [],
                marker=marker,
                linestyle="none",
                color="#555555",
                label=f"{function} (mined)",
            )
        )
    handles.append(
        Line2D(
            [],
            [],
            marker="o",
            linestyle="none",
            markerfacecolor="none",
            color="#555555",
            label="failed attempt (hollow)",
        )
    )
    handles.append(
        Line2D(
            [],
            [],
            marker="X",
            linestyle="none",
            color="red",
            markersize=9,
            markeredgecolor="black",
            label="liquidation",
        )
    )
    return handles


def find_vault(run: PathRun, name: str) -> VaultRun | None:
    """The vault called `name` in `run`, if it has one."""
    return next((v for v in run.vaults if v.name == name), None)


def draw_vault(
    path: Path, runs: Sequence[PathRun], vault_name: str, colours: Mapping[str, str]
) -> None:
    """Health, leverage, net delta / NAV and NAV of one vault, one line per policy (one run each).

    Bands come from the first run that has the vault; every policy reads the same mandate.
    """
    fig, axes = _new_figure(4, 12.0)
    ax_health, ax_lev, ax_delta, ax_nav = axes
    present = [(run, v) for run in runs if (v := find_vault(run, vault_name)) is not None]
    starts = [m.timestamp for run, _ in present for m in run.market[:1]]
    starts += [o.timestamp for _, v in present for o in v.observations[:1]]
    t0 = min(starts, default=0)
    if present:
        bands = present[0][1].bands
        cap = health_cap(bands)
        ax_health.axhline(bands.min_health, color="red", linestyle="--", linewidth=1.0)
        ax_lev.axhline(bands.max_leverage, color="red", linestyle="--", linewidth=1.0)
        low, high = bands.hedge_target - bands.hedge_band, bands.hedge_target + bands.hedge_band
        ax_delta.axhspan(low, high, color="#2ca02c", alpha=0.12)
        ax_delta.axhline(bands.hedge_target, color="#2ca02c", linestyle=":", linewidth=1.0)
        ax_health.set_ylabel(f"health (min {bands.min_health:.2f}, shown up to {cap:.1f})")
        ax_lev.set_ylabel(f"leverage (max {bands.max_leverage:.2f})")
        ax_delta.set_ylabel(f"net delta / NAV ({bands.hedge_target:+.2f} ± {bands.hedge_band:.2f})")
        for run, vault in present:
            _draw_policy(axes, run, vault, colours.get(run.policy, "black"), t0, cap)
    else:
        ax_health.text(
            0.5, 0.5, "no runs recorded this vault", ha="center", transform=ax_health.transAxes
        )
    ax_nav.set_ylabel("NAV (USD)")
    ax_nav.yaxis.set_major_formatter(_usd_formatter())
    handles = _legend_handles([r for r, _ in present], colours)
    fig.legend(handles=handles, loc="outside upper center", ncol=4, fontsize="small")
    first = runs[0] if runs else None
    if first is not None:
        # On the top panel, not the figure: the legend takes the figure's top margin.
        ax_health.set_title(f"{vault_name}: {first.scenario}, {first.order}, path {first.path}")
    fig.savefig(path, format="png")


def _usd_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _pos: f"${value:,.0f}")
