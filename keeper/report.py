"""Readable tables for the terminal: deployments and vault snapshots."""

from __future__ import annotations

from collections.abc import Sequence

from keeper.chain.snapshot import OptionSnapshot, VaultSnapshot, wad_to_float
from keeper.devnet.deploy import Deployment

USDC_UNIT = 10**6
WAD = 10**18


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned text table (numbers right-aligned)."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def fmt(cells: Sequence[str]) -> str:
        out = []
        for cell, width in zip(cells, widths, strict=True):
            numeric = (
                cell[:1].isdigit() or cell[:1] in "-+$" or cell.endswith("%") or cell.endswith("x")
            )
            out.append(cell.rjust(width) if numeric else cell.ljust(width))
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(headers), rule, *(fmt(r) for r in rows)])


def usd(units: int, decimals: int = 6) -> str:
    return f"${units / 10**decimals:,.2f}"


def ratio(value: int) -> str:
    f = wad_to_float(value)
    return "inf" if f == float("inf") else f"{f:.3f}"


def deployment_table(dep: Deployment) -> str:
    rows = [[name, addr] for name, addr in dep.contracts.items()]
    rows += [[f"vault[{i}]", v] for i, v in enumerate(dep.vaults)]
    rows += [[f"role:{role}", addr] for role, addr in dep.accounts.items()]
    return f"chain {dep.chain_id}, block {dep.block}\n" + table(["contract", "address"], rows)


def _locked(o: OptionSnapshot, symbols: dict[str, str], decimals: dict[str, int]) -> str:
    """What a written series locks: underlying tokens for a call (still the vault's, hedged as
    delta one), USDC for a put; "-" for a long position."""
    if o.collateral == 0:
        return "-"
    if o.is_call:
        sym = symbols.get(o.underlying, o.underlying[:10])
        return f"{o.collateral / 10 ** decimals.get(o.underlying, 18):,.4f} {sym}"
    return usd(o.collateral)


def snapshot_table(name: str, snap: VaultSnapshot, symbols: dict[str, str]) -> str:
    m = snap.mandate
    lines = [
        f"{name}  {snap.vault}  (block {snap.block_number}{', PAUSED' if snap.paused else ''})",
        table(
            [
                "NAV",
                "idle USDC",
                "debt",
                "lending health",
                "perp health",
                "health",
                "leverage",
                "min health",
                "max lev",
            ],
            [
                [
                    usd(snap.total_assets),
                    usd(snap.idle_usdc),
                    usd(snap.debt),
                    ratio(snap.lending_health),
                    ratio(snap.perp_health),
                    ratio(snap.health),
                    ratio(snap.leverage) + "x",
                    ratio(m.min_health),
                    ratio(m.max_leverage) + "x",
                ]
            ],
        ),
    ]
    asset_rows = []
    for a in snap.assets:
        sym = symbols.get(a.token, a.token[:10])
        asset_rows.append(
            [
                sym,
                f"{a.price / WAD:,.2f}",
                f"{a.collateral / 10**a.decimals:,.4f}",
                f"{a.perp_size / WAD:+,.4f}",
                usd(a.perp_pnl),
                f"{a.implied_vol / WAD:.0%}",
            ]
        )
    lines.append(
        table(["asset", "price", "collateral", "perp size", "perp pnl", "impl vol"], asset_rows)
    )
    if snap.options:
        decimals = {str(a.token): a.decimals for a in snap.assets}
        opt_rows = [
            [
                str(o.series_id),
                symbols.get(o.underlying, o.underlying[:10]),
                "call" if o.is_call else "put",
                f"{o.strike / WAD:,.0f}",
                f"{o.size / WAD:+,.4f}",
                f"{o.mark / WAD:,.2f}",
                _locked(o, symbols, decimals),
            ]
            for o in snap.options
        ]
        lines.append(
            table(["series", "underlying", "type", "strike", "size", "mark", "locked"], opt_rows)
        )
    lines.append(
        f"mandate: target vol {m.target_vol / WAD:.0%}, hedge target {m.hedge_target / WAD:+.0%} "
        f"± {m.hedge_band / WAD:.0%} of NAV, "
        f"CPPI floor {m.cppi_floor / WAD:.0%} x{m.cppi_multiplier / WAD:g}, "
        f"Kelly {m.kelly_fraction / WAD:g}, max slippage {m.max_slippage_bps} bps"
    )
    return "\n".join(lines)
