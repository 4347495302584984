"""`keeper status`: each configured vault's health, leverage, greeks and mandate, read live; and,
from the keeper's journal (read-only), its last tick, the vaults it halted or that are failing,
and the transactions it has in flight; on PostgreSQL also who leads, for every chain."""

from __future__ import annotations

import math
import time

from keeper.chain.convert import to_vault_state
from keeper.inputs import RISK_FREE_RATE
from keeper.journal import Journal
from keeper.journal_db import describe, list_chain_schemas, schema_for
from keeper.lease import LEASE_NAME
from keeper.report import WAD, ratio, snapshot_table, table, usd
from keeper.risk.health import portfolio_greeks
from keeper.risk.scenarios import GridSpec, Scenario, scenario_grid
from keeper.risk.types import VaultState
from keeper.service import KeeperService


def greeks_table(state: VaultState) -> str:
    greeks = portfolio_greeks(state, state.timestamp, RISK_FREE_RATE)
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


def _at(s: Scenario) -> str:
    return f"{s.price_move:+.0%}, vol {s.vol}"


def _h(health: float) -> str:
    return "inf" if math.isinf(health) else f"{health:.3f}"


def grid_text(state: VaultState) -> str:
    """The portfolio-margin scenario grid (`keeper.risk.scenarios`): the grid's largest loss,
    the lowest health on it, and the extended table's (USD rounded to the dollar)."""
    spec = GridSpec()
    report = scenario_grid(state, state.timestamp, RISK_FREE_RATE, spec)
    worst = report.worst
    share = f" ({-worst.pnl_usd / state.nav_usd:.1%} of NAV)" if state.nav_usd > 0 else ""
    weakest = min((s for s in report.scenarios if not s.extended), key=lambda s: s.binding_health)
    ext = "; ".join(
        f"{s.price_move:+.0%}: ${s.pnl_usd:+,.0f}, health {_h(s.binding_health)}"
        for s in report.scenarios
        if s.extended
    )
    return (
        f"scenario grid (±{spec.price_range:.0%} in {spec.buckets} moves × vol up/same/down, "
        f"every underlying together): worst loss ${-worst.pnl_usd:,.0f}{share} at {_at(worst)}; "
        f"lowest health lending {_h(weakest.lending_health)}, perps {_h(weakest.perp_health)} "
        f"at {_at(weakest)}\nextended table (vol up): {ext}"
    )


def status_text(service: KeeperService) -> str:
    snaps = service.read_now()
    if snaps:
        block = next(iter(snaps.values())).block_number
        service.breaker.seed(service.reader.previous_rounds(snaps.values(), block))
        service.breaker.update(snaps, service.symbols)
    symbols: dict[str, str] = {str(k): v for k, v in service.symbols.items()}
    parts = []
    for vault, snap in snaps.items():
        name = next((n for n in (symbols.get(vault),) if n), "RiskVault")
        parts.append(snapshot_table(name, snap, symbols))
        state = to_vault_state(snap, symbols)  # type: ignore[arg-type]
        parts.append(greeks_table(state))
        parts.append(grid_text(state))
        # The mark is WAD USDC units per share unit (shares carry the vault's decimals offset):
        # shown as the NAV it implies for today's supply, which needs no share decimals.
        hwm_nav = snap.high_water_mark * snap.total_supply // WAD
        parts.append(
            f"high-water mark NAV {usd(hwm_nav)}; last keeper action at {snap.last_action_at}; "
            f"health {ratio(snap.health)} vs minimum {ratio(snap.mandate.min_health)}; "
            f"NAV {usd(snap.total_assets)}; {service.breaker.describe(vault)}"
        )
        parts.append("")
    missing = [v for v in service.vaults if v not in snaps]
    if missing:
        parts.append("could not read: " + ", ".join(missing))
    return "\n".join(parts).rstrip()


def leader_line(journal: Journal) -> str | None:
    """Who leads (replicas on PostgreSQL), by the database's clock; None where no replica ever
    took the lease (a single keeper on SQLite)."""
    lease = journal.lease(LEASE_NAME)
    if lease is None:
        return None
    left = lease.expires_at - lease.db_now
    if left > 0:
        return f"leader: {lease.holder} (term {lease.epoch}), lease expires in {left:,.1f} s"
    return (
        f"leader: none — the lease of {lease.holder} (term {lease.epoch}) expired "
        f"{-left:,.0f} s ago"
    )


def every_chain_text(url: str, now: float | None = None) -> str:
    """`keeper status --journal-only` on PostgreSQL: every chain's journal on that server —
    leader, last tick, halted vaults, transactions in flight — from the journal alone."""
    chains = list_chain_schemas(url)
    if not chains:
        return f"journal {describe(url)}: no chain has a journal there yet"
    parts = []
    for chain_id in chains:
        with Journal(url, chain_id=chain_id, read_only=True) as journal:
            parts.append(f"chain {chain_id} (schema {schema_for(chain_id)}):")
            parts.append(journal_text(journal, now))
        parts.append("")
    return "\n".join(parts).rstrip()


def journal_text(journal: Journal, now: float | None = None) -> str:
    """What the running keeper recorded: last tick, halted and failing vaults, transactions in
    flight (nonce, kind, last hash, fees, age)."""
    now = time.time() if now is None else now
    parts = []
    leader = leader_line(journal)
    if leader is not None:
        parts.append(leader)
    last = journal.last_tick()
    if last is None:
        parts.append("journal: no tick yet")
    else:
        age = now - (last.finished_at or last.started_at)
        error = f" ({last.error})" if last.error else ""
        parts.append(f"last tick: block {last.block}, {last.status}{error}, {age:,.0f} s ago")
    faults = [f for f in journal.vault_faults() if f.halted or f.consecutive_failures]
    if faults:
        parts.append(
            table(
                ["vault", "state", "failed ticks", "last error"],
                [
                    [
                        f.vault,
                        "HALTED" if f.halted else "failing",
                        str(f.consecutive_failures),
                        f.last_error or "",
                    ]
                    for f in faults
                ],
            )
        )
    else:
        parts.append("no vault halted or failing")
    flying = journal.unfinished_intents()
    if flying:
        rows = []
        for i in flying:
            last_tx = i.transactions[-1] if i.transactions else None
            rows.append(
                [
                    i.vault,
                    i.kind,
                    "-" if i.nonce is None else str(i.nonce),
                    last_tx.tx_hash if last_tx else "(not signed)",
                    f"{last_tx.max_fee_per_gas / 1e9:,.3f}" if last_tx else "",
                    str(max(0, len(i.transactions) - 1)),
                    f"{now - i.created_at:,.0f}",
                ]
            )
        parts.append(
            table(
                ["vault", "action", "nonce", "last tx", "max fee gwei", "replacements", "age s"],
                rows,
            )
        )
    else:
        parts.append("no transaction in flight")
    return "\n".join(parts)
