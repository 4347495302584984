"""A portfolio-margin style scenario grid, after Deribit's: the vault's whole book revalued under
a grid of underlying price moves × implied-vol moves, plus an extended table of larger moves.

The grid: price moves evenly spaced over ``±price_range`` (Deribit's: ±16 % in 9 buckets, one of
them 0), each with implied vol up, the same and down. The vol move is relative and larger for
short expiries, as Deribit's: ``s(T) = vol_shift × (30 days / T)^vol_power`` (0.45 and 0.30),
capped at ``max_vol_shift`` so that vol down stays positive, and the option is repriced at
``σ × (1 ± s(T))``. The extended table: larger price moves (−66 %, −33 %, +50 %, +100 %) with vol
up only. Deribit takes a fraction of the extended table's P&L and dampens it; here it is reported
in full and kept apart from the grid's worst case.

Every underlying moves by the same fraction together (correlations pushed to one, as the
lending stress does: the venues net collateral across assets). A scenario's P&L is the move of
spot (collateral and idle tokens), perps (size × price × move), options (Black–Scholes at the
moved spot and vol less Black–Scholes today, so the move is measured against the same model)
and the tokens written calls lock (delta one); USDC and debt do not move. Health after each
scenario: lending = Σ collateral × moved price × liquidation threshold / debt; perps = (margin +
upnl + size × price × move) / maintenance at the moved price; ``inf`` where nothing is owed.
Options are in neither venue's margin (they move NAV, not health). Time does not pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from keeper.errors import RiskInputError
from keeper.risk.greeks import black_scholes
from keeper.risk.params import GRID_RANGE
from keeper.risk.types import SECONDS_PER_YEAR, VaultState
from keeper.risk.validation import finite, in_range

#: Deribit's reference expiry for the vol move.
VOL_SHIFT_REFERENCE_S: int = 30 * 86_400
#: The shortest expiry the vol move is scaled to (a series expiring in an hour would otherwise
#: move without bound).
MIN_VOL_SHIFT_EXPIRY_S: int = 86_400

VOL_UP, VOL_SAME, VOL_DOWN = "up", "same", "down"


@dataclass(frozen=True, slots=True)
class GridSpec:
    """The scenario grid's parameters (defaults: Deribit's published portfolio-margin table)."""

    price_range: float = GRID_RANGE  # the policy's gate uses the same grid
    buckets: int = 9
    vol_shift: float = 0.45
    vol_power: float = 0.30
    max_vol_shift: float = 0.90
    extended_moves: tuple[float, ...] = (-0.66, -0.33, 0.50, 1.00)

    def __post_init__(self) -> None:
        in_range("price_range", self.price_range, 1e-6, 0.99)
        if self.buckets < 3 or self.buckets % 2 == 0:
            raise RiskInputError(f"buckets: need an odd number >= 3 (one at 0), got {self.buckets}")
        in_range("vol_shift", self.vol_shift, 0.0, 10.0)
        in_range("vol_power", self.vol_power, 0.0, 2.0)
        in_range("max_vol_shift", self.max_vol_shift, 0.0, 0.99)
        for m in self.extended_moves:
            if finite("extended_moves", m) <= -1.0:
                raise RiskInputError(f"extended_moves: a move must be > -100 %, got {m:.0%}")

    def price_moves(self) -> np.ndarray:
        return np.linspace(-self.price_range, self.price_range, self.buckets)


@dataclass(frozen=True, slots=True)
class Scenario:
    """One revalued scenario."""

    price_move: float
    vol: str
    extended: bool
    pnl_usd: float
    lending_health: float
    perp_health: float

    @property
    def binding_health(self) -> float:
        return min(self.lending_health, self.perp_health)


@dataclass(frozen=True, slots=True)
class GridReport:
    """Every scenario of the grid and the extended table, and their worst cases."""

    scenarios: tuple[Scenario, ...]

    def _worst(self, extended: bool) -> Scenario:
        return min((s for s in self.scenarios if s.extended == extended), key=lambda s: s.pnl_usd)

    @property
    def worst(self) -> Scenario:
        """The grid's largest loss (Deribit's maintenance margin, before contingencies)."""
        return self._worst(False)

    @property
    def worst_extended(self) -> Scenario | None:
        return self._worst(True) if any(s.extended for s in self.scenarios) else None

    @property
    def weakest(self) -> Scenario:
        """The scenario (grid or extended) with the lowest binding health."""
        return min(self.scenarios, key=lambda s: s.binding_health)


def vol_shift(spec: GridSpec, t_years: np.ndarray) -> np.ndarray:
    """The relative implied-vol move per expiry: ``vol_shift × (30 d / T)^vol_power``, T at
    least a day, at most ``max_vol_shift``."""
    t_s = np.maximum(np.asarray(t_years, dtype=float) * SECONDS_PER_YEAR, MIN_VOL_SHIFT_EXPIRY_S)
    raw = spec.vol_shift * (VOL_SHIFT_REFERENCE_S / t_s) ** spec.vol_power
    return np.minimum(raw, spec.max_vol_shift)


def venue_health_after_move(
    lt_value: ArrayLike, debt: ArrayLike, perp_equity: ArrayLike, perp_notional: ArrayLike,
    maintenance: ArrayLike, moves: ArrayLike,
) -> tuple[np.ndarray, np.ndarray]:
    """(lending, perp) health after every underlying moves by each of ``moves`` together:
    arrays of shape (V, K) for (V,) inputs and (K,) moves (or (K,) for scalars).

    ``lt_value`` is Σ collateral × price × liquidation threshold, ``perp_notional`` the signed
    Σ size × price, ``maintenance`` Σ |size| × price × maintenance fraction. Lending:
    lt_value × (1 + m) / debt; perps: max(equity + notional × m, 0) / (maintenance × (1 + m))
    (an account cannot owe more than it holds); ``inf`` where nothing is owed.
    """
    m = np.asarray(moves, dtype=float)
    col = (slice(None), None) if np.ndim(lt_value) else ()
    lt, dbt = np.asarray(lt_value, dtype=float)[col], np.asarray(debt, dtype=float)[col]
    eq, n = np.asarray(perp_equity, dtype=float)[col], np.asarray(perp_notional, dtype=float)[col]
    mm = np.asarray(maintenance, dtype=float)[col]
    with np.errstate(divide="ignore", invalid="ignore"):
        lending = np.where(dbt > 0, lt * (1.0 + m) / np.where(dbt > 0, dbt, 1.0), math.inf)
        perp = np.where(
            mm > 0, np.maximum(eq + n * m, 0.0) / np.where(mm > 0, mm * (1.0 + m), 1.0), math.inf
        )
    return lending, perp


def grid_binding_health(
    lt_value: ArrayLike, debt: ArrayLike, perp_equity: ArrayLike, perp_notional: ArrayLike,
    maintenance: ArrayLike, price_range: float,
) -> np.ndarray:
    """(V,) the lowest binding health over the grid's price moves (vol moves do not change
    either venue's health). Both venues' health is monotone in the move — lending rises with
    it, perp health's derivative (notional − equity) / (maintenance (1 + m)²) keeps one sign —
    so the lowest is at −range or +range and only those two are evaluated."""
    ends = np.array([-price_range, price_range])
    lending, perp = venue_health_after_move(
        lt_value, debt, perp_equity, perp_notional, maintenance, ends
    )
    return np.asarray(np.minimum(lending, perp).min(axis=-1))


def scenario_grid(
    state: VaultState, now: int, rate: float, spec: GridSpec | None = None
) -> GridReport:
    """The vault revalued on the grid and the extended table (see the module docstring)."""
    spec = spec or GridSpec()
    grid = [(float(m), v, False) for m in spec.price_moves() for v in (VOL_UP, VOL_SAME, VOL_DOWN)]
    grid += [(float(m), VOL_UP, True) for m in spec.extended_moves]
    moves = np.array([g[0] for g in grid])
    vol_sign = np.array([{VOL_UP: 1.0, VOL_SAME: 0.0, VOL_DOWN: -1.0}[g[1]] for g in grid])

    # Linear book, per scenario: USD delta one (spot, idle, perps, locked tokens) × the move.
    price = {a.symbol: a.price_usd for a in state.assets}
    delta_one = sum((a.collateral + a.idle) * a.price_usd for a in state.assets)
    delta_one += sum(p.size * price[p.underlying] for p in state.perps)
    delta_one += sum(o.locked_underlying * price[o.underlying] for o in state.options)
    pnl = delta_one * moves

    if state.options:
        opts = state.options
        spot = np.array([price[o.underlying] for o in opts])
        t = np.array([(o.expiry - now) / SECONDS_PER_YEAR for o in opts])
        iv = np.array([o.implied_vol for o in opts])
        call = np.array([o.is_call for o in opts])
        strike = np.array([o.strike for o in opts])
        size = np.array([o.size for o in opts])
        base = black_scholes(spot, strike, t, rate, iv, call).price
        shifted_vol = iv[None, :] * (1.0 + vol_sign[:, None] * vol_shift(spec, t)[None, :])
        moved = black_scholes(
            spot[None, :] * (1.0 + moves[:, None]), strike, t, rate, shifted_vol, call
        ).price
        pnl = pnl + ((moved - base[None, :]) * size[None, :]).sum(axis=1)

    weighted = sum(a.collateral * a.price_usd * a.liquidation_threshold for a in state.assets)
    equity = state.perp_margin_usd + sum(p.unrealized_pnl_usd for p in state.perps)
    perp_notional = sum(p.size * price[p.underlying] for p in state.perps)
    maintenance = sum(
        abs(p.size) * price[p.underlying] * p.maintenance_fraction for p in state.perps
    )
    lending, perp = venue_health_after_move(
        weighted, state.debt_usdc, equity, perp_notional, maintenance, moves
    )
    return GridReport(
        tuple(
            Scenario(m, v, ext, p, lh, ph)
            for (m, v, ext), p, lh, ph in zip(
                grid, pnl.tolist(), lending.tolist(), perp.tolist(), strict=True
            )
        )
    )
