"""Many vaults packed into arrays (vault × underlying, vault × option) for vectorised assessment.

The universe of underlyings is the sorted union over the vaults; a vault without an underlying
has zeros there and ``has`` False. Options are padded to the largest count with size 0 (a
padded option contributes nothing). Packing is plain Python over the dataclasses, done once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from keeper.errors import RiskInputError
from keeper.risk.types import Mandate, VaultState
from keeper.risk.validation import BoolArray, FloatArray, IntArray

logger = logging.getLogger(__name__)

#: Fields of `Mandate` carried as per-vault arrays.
MANDATE_FIELDS: tuple[str, ...] = (
    "target_vol",
    "max_leverage",
    "min_health",
    "hedge_target",
    "hedge_band",
    "cppi_floor",
    "cppi_multiplier",
    "kelly_fraction",
    "max_slippage_bps",
)
_ASSET_FIELDS = (
    "price_usd",
    "price_updated_at",
    "collateral",
    "idle",
    "liquidation_threshold",
    "ltv",
    "implied_vol",
    "implied_vol_updated_at",
)
_PERP_FIELDS = ("size", "unrealized_pnl_usd", "maintenance_fraction")
_OPTION_FIELDS = ("expiry", "strike", "size", "implied_vol", "is_call", "locked_underlying")
_VAULT_FIELDS = ("perp_margin_usd", "debt_usdc", "idle_usdc", "nav_usd")


@dataclass(frozen=True, slots=True)
class Book:
    """Vault states and mandates as arrays; V vaults, U underlyings, O option slots."""

    addresses: tuple[str, ...]
    blocks: tuple[int, ...]
    underlyings: tuple[str, ...]
    has: BoolArray
    price: FloatArray
    price_at: FloatArray
    coll: FloatArray
    idle: FloatArray
    lt: FloatArray
    ltv: FloatArray
    iv: FloatArray
    iv_at: FloatArray
    perp_size: FloatArray
    perp_upnl: FloatArray
    #: Maintenance fraction per (vault, underlying); NaN where the vault has no position.
    perp_mm: FloatArray
    margin: FloatArray
    debt: FloatArray
    idle_usdc: FloatArray
    nav: FloatArray
    paused: BoolArray
    opt_u: IntArray
    opt_call: BoolArray
    opt_strike: FloatArray
    opt_expiry: FloatArray
    opt_size: FloatArray
    opt_iv: FloatArray
    #: Underlying tokens a written call locks (delta one each, in NAV at spot); 0 elsewhere.
    opt_locked: FloatArray
    #: Mandate field name → (V,) array.
    mandate: dict[str, FloatArray]

    @property
    def n_vaults(self) -> int:
        """V."""
        return len(self.addresses)


def pack(states: Sequence[VaultState], mandates: Sequence[Mandate]) -> Book:
    """Pack vaults and their mandates (same order, same length) into a `Book`."""
    if len(states) != len(mandates):
        raise RiskInputError(
            f"states ({len(states)}) and mandates ({len(mandates)}): lengths differ"
        )
    names = sorted({a.symbol for s in states for a in s.assets})
    col = {n: j for j, n in enumerate(names)}
    n_v, n_u = len(states), len(names)
    n_o = max((len(s.options) for s in states), default=0)

    # One C-level pass (fromiter over attrgetter) per column: per-item numpy writes or arrays of
    # tuples are several times slower, and packing is the batch path's largest cost.
    assets = [a for s in states for a in s.assets]
    a_idx = [v * n_u + col[a.symbol] for v, s in enumerate(states) for a in s.assets]
    perps = [p for s in states for p in s.perps]
    p_idx = [v * n_u + col[p.underlying] for v, s in enumerate(states) for p in s.perps]
    opts = [o for s in states for o in s.options]
    o_idx = [v * n_o + k for v, s in enumerate(states) for k in range(len(s.options))]

    def table(
        items: Sequence[object],
        idx: list[int],
        names: tuple[str, ...],
        size: int,
        fill: tuple[float, ...],
    ) -> FloatArray:
        out = np.empty((len(names), size))
        out[:] = np.asarray(fill)[:, None]
        if items:
            at = np.asarray(idx, dtype=np.intp)
            for c, name in enumerate(names):
                out[c, at] = np.fromiter(
                    map(attrgetter(name), items), dtype=np.float64, count=len(at)
                )
        return out

    asset_rows = table(assets, a_idx, _ASSET_FIELDS, n_v * n_u, (0.0,) * 8).reshape(8, n_v, n_u)
    has_flat = np.zeros(n_v * n_u, dtype=bool)
    has_flat[a_idx] = True
    has = has_flat.reshape(n_v, n_u)
    perp_rows = table(perps, p_idx, _PERP_FIELDS, n_v * n_u, (0.0, 0.0, np.nan))
    perp_rows = perp_rows.reshape(3, n_v, n_u)
    # Padded option slots: strike 1 (must be > 0), size 0, expired: they contribute nothing.
    opt_rows = table(opts, o_idx, _OPTION_FIELDS, n_v * n_o, (0.0, 1.0, 0.0, 0.0, 0.0, 0.0))
    opt_rows = opt_rows.reshape(6, n_v, n_o)
    opt_u = np.zeros(n_v * n_o, dtype=np.int64)
    opt_u[o_idx] = [col[o.underlying] for o in opts]
    vault_rows = table(states, list(range(n_v)), _VAULT_FIELDS, n_v, (0.0,) * 4)
    m = table(mandates, list(range(n_v)), MANDATE_FIELDS, n_v, (0.0,) * len(MANDATE_FIELDS))
    price = asset_rows[0]
    # Absent assets get price 1 so that divisions stay finite; every use is masked by `has`.
    price = np.where(has, price, 1.0)
    return Book(
        addresses=tuple(s.address for s in states),
        blocks=tuple(s.block for s in states),
        underlyings=tuple(names),
        has=has,
        price=price,
        price_at=asset_rows[1],
        coll=asset_rows[2],
        idle=asset_rows[3],
        lt=asset_rows[4],
        ltv=asset_rows[5],
        iv=asset_rows[6],
        iv_at=asset_rows[7],
        perp_size=perp_rows[0],
        perp_upnl=perp_rows[1],
        perp_mm=perp_rows[2],
        margin=vault_rows[0],
        debt=vault_rows[1],
        idle_usdc=vault_rows[2],
        nav=vault_rows[3],
        paused=np.array([s.paused for s in states], dtype=bool),
        opt_u=opt_u.reshape(n_v, n_o),
        opt_call=opt_rows[4] > 0.5,
        opt_strike=opt_rows[1],
        opt_expiry=opt_rows[0],
        opt_size=opt_rows[2],
        opt_iv=opt_rows[3],
        opt_locked=opt_rows[5],
        mandate={f: m[i] for i, f in enumerate(MANDATE_FIELDS)},
    )
