"""`keeper demo`: the whole keeper on an embedded chain against a scripted market.

Deploys the bundled market and two seeded vaults, warms the feeds up with a few days of hourly
prices (so the volatility models have history), then drives a rally, a crash and a volatility
spike, running one keeper tick after each step and printing what it saw and did.
"""

from __future__ import annotations

import logging
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

from keeper.chain.convert import to_vault_state
from keeper.chain.snapshot import VaultSnapshot
from keeper.devnet.deploy import (
    deploy_everything,
)
from keeper.devnet.local import local_chain
from keeper.devnet.market import Market
from keeper.devnet.service import build_local_service
from keeper.devnet.tester import in_process_web3
from keeper.inputs import RISK_FREE_RATE
from keeper.report import ratio, table
from keeper.risk.health import net_delta
from keeper.service import KeeperService, TickReport

logger = logging.getLogger(__name__)

#: Hourly warm-up rounds pushed before the script: enough returns for EWMA (GARCH needs more).
WARMUP_ROUNDS = 48



@dataclass(frozen=True, slots=True)
class Step:
    label: str
    hours: float
    eth_move: float  # multiplicative move of the ETH price
    btc_move: float
    eth_iv: float
    btc_iv: float


SCRIPT: tuple[Step, ...] = (
    Step("calm", 4, 1.004, 1.002, 0.60, 0.50),
    Step("rally", 4, 1.07, 1.05, 0.58, 0.48),
    Step("rally", 4, 1.06, 1.04, 0.57, 0.47),
    Step("rally top", 4, 1.03, 1.02, 0.60, 0.50),
    Step("crash", 2, 0.78, 0.82, 0.95, 0.80),
    Step("crash", 2, 0.90, 0.92, 1.10, 0.90),
    Step("vol spike", 2, 1.00, 1.00, 1.40, 1.10),
    Step("aftershock", 4, 0.96, 0.97, 1.20, 0.95),
    Step("recovery", 8, 1.05, 1.04, 0.90, 0.75),
    Step("recovery", 8, 1.03, 1.02, 0.75, 0.60),
)


def _row(
    step: int,
    label: str,
    market: Market,
    name: str,
    snap: VaultSnapshot,
    service: KeeperService,
    report: TickReport,
) -> list[str]:
    state = to_vault_state(snap, service.symbols)
    deltas = net_delta(state, snap.timestamp, RISK_FREE_RATE)
    delta_usd = sum(deltas[a.symbol] * a.price_usd for a in state.assets)
    acted = [o for o in report.outcomes if o.vault == snap.vault]
    decided = report.actions.get(snap.vault, [])
    if acted:
        what = ", ".join(f"{o.function}:{o.status}" for o in acted)
    elif snap.vault in report.stale:
        what = "stale feed: none"
    elif decided:
        what = "decided, not sent"
    else:
        what = "-"
    return [
        str(step),
        label,
        f"{market.spot['ETH']:,.0f}",
        f"{market.spot['BTC']:,.0f}",
        name,
        f"${snap.total_assets / 1e6:,.0f}",
        ratio(snap.health),
        ratio(snap.leverage) + "x",
        f"${delta_usd:+,.0f}",
        what,
    ]


#: Column widths of the live table (rows are printed as they happen, so widths are fixed).
LIVE_WIDTHS = (4, 10, 7, 7, 8, 11, 7, 8, 11, 0)


def _live(cells: list[str]) -> str:
    out = []
    for cell, width in zip(cells, LIVE_WIDTHS, strict=True):
        numeric = cell[:1].isdigit() or cell[:1] in "-+$"
        out.append(cell if not width else cell.rjust(width) if numeric else cell.ljust(width))
    return "  ".join(out)


def run_demo(steps: int = 0, seed: int = 7) -> int:
    rng = random.Random(seed)
    print("Deploying the bundled market and two seeded vaults on the in-process chain…", flush=True)
    w3 = in_process_web3()
    dep = deploy_everything(w3)
    chain = local_chain(w3)
    market = Market(w3, chain, dep)
    print(f"Warming the feeds up with {WARMUP_ROUNDS} hourly rounds…", flush=True)
    market.warm_up(WARMUP_ROUNDS, rng)
    names = {v: ("Balanced" if i == 0 else "DN-carry") for i, v in enumerate(dep.vaults)}
    headers = [
        "step",
        "market",
        "ETH",
        "BTC",
        "vault",
        "NAV",
        "health",
        "leverage",
        "net delta",
        "keeper action",
    ]
    print(_live(headers))
    print(_live(["-" * w for w in LIVE_WIDTHS]))
    with tempfile.TemporaryDirectory() as tmp:
        service = build_local_service(w3, dep, Path(tmp) / "journal.sqlite")
        service.start()
        rows: list[list[str]] = []
        min_health = {v: float("inf") for v in dep.vaults}
        gas_used = 0
        sent = 0
        script = SCRIPT[:steps] if steps else SCRIPT
        for i, step in enumerate(
            (Step("start", 0, 1, 1, market.iv["ETH"], market.iv["BTC"]), *script)
        ):
            if step.hours:
                market.advance(step.hours)
            market.spot["ETH"] *= step.eth_move
            market.spot["BTC"] *= step.btc_move
            market.iv["ETH"], market.iv["BTC"] = step.eth_iv, step.btc_iv
            market.push()
            report = service.tick()
            after = service.read_now()
            for o in report.outcomes:
                sent += o.status == "mined"
                gas_used += o.gas_used or 0
            for v in dep.vaults:
                snap = after.get(v) or report.snapshots[v]
                min_health[v] = min(min_health[v], snap.health / 1e18)
                rows.append(_row(i, step.label, market, names[v], snap, service, report))
                print(_live(rows[-1]), flush=True)
        service.journal.close()
    print()
    print("Summary")
    final = {v: service.reader.read([v], int(w3.eth.block_number))[v] for v in dep.vaults}
    print(
        table(
            [
                "vault",
                "final NAV",
                "final health",
                "lowest health",
                "min allowed",
                "final leverage",
            ],
            [
                [
                    names[v],
                    f"${final[v].total_assets / 1e6:,.0f}",
                    ratio(final[v].health),
                    f"{min_health[v]:.3f}",
                    ratio(final[v].mandate.min_health),
                    ratio(final[v].leverage) + "x",
                ]
                for v in dep.vaults
            ],
        )
    )
    print(f"{sent} keeper transactions mined, {gas_used:,} gas in total")
    return 0
