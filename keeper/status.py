"""`keeper status`: each configured vault's health, leverage, greeks and mandate, read live."""

from __future__ import annotations

from keeper.chain.convert import to_vault_state
from keeper.chain.snapshot import VaultSnapshot
from keeper.inputs import RISK_FREE_RATE
from keeper.report import WAD, ratio, snapshot_table, table, usd
from keeper.risk.health import portfolio_greeks
from keeper.service import KeeperService


def greeks_table(snap: VaultSnapshot, symbols: dict[str, str]) -> str:
    state = to_vault_state(snap, symbols)  # type: ignore[arg-type]
    greeks = portfolio_greeks(state, snap.timestamp, RISK_FREE_RATE)
    rows = []
    for a in state.assets:
        g = greeks[a.symbol]
        rows.append(
            [
                a.symbol,
                f"{g.delta:+,.4f}",
                f"${g.delta * a.price_usd:+,.0f}",
                f"{g.gamma:+.6f}",
                f"${g.vega:+,.0f}",
                f"${g.theta / 365:+,.0f}",
            ]
        )
    return table(
        ["underlying", "delta (units)", "delta (USD)", "gamma", "vega /1.00", "theta /day"], rows
    )


def status_text(service: KeeperService) -> str:
    snaps = service.read_now()
    symbols: dict[str, str] = {str(k): v for k, v in service.symbols.items()}
    parts = []
    for vault, snap in snaps.items():
        name = next((n for n in (symbols.get(vault),) if n), "RiskVault")
        parts.append(snapshot_table(name, snap, symbols))
        parts.append(greeks_table(snap, symbols))
        # The mark is WAD USDC units per share unit (shares carry the vault's decimals offset):
        # shown as the NAV it implies for today's supply, which needs no share decimals.
        hwm_nav = snap.high_water_mark * snap.total_supply // WAD
        parts.append(
            f"high-water mark NAV {usd(hwm_nav)}; last keeper action at {snap.last_action_at}; "
            f"health {ratio(snap.health)} vs minimum {ratio(snap.mandate.min_health)}; "
            f"NAV {usd(snap.total_assets)}"
        )
        parts.append("")
    missing = [v for v in service.vaults if v not in snaps]
    if missing:
        parts.append("could not read: " + ", ".join(missing))
    return "\n".join(parts).rstrip()
