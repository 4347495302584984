"""The keeper's Prometheus endpoint, scraped over HTTP on a free loopback port: what each tick
report puts in the exposition, /healthz and /readyz with an injected clock, a real tick on the
in-process chain, and every metric the alert rules use being one the keeper exports."""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from eth_typing import ChecksumAddress
from prometheus_client.parser import text_string_to_metric_families
from web3 import Web3

from keeper.chain.convert import to_vault_state
from keeper.chain.snapshot import UINT256_MAX, AssetSnapshot, Mandate, VaultSnapshot
from keeper.health import DEFAULT_HOST, MetricsServer
from keeper.inputs import RISK_FREE_RATE
from keeper.journal import Journal
from keeper.metrics import KeeperMetrics
from keeper.risk.actions import Action, ActionKind, Urgency
from keeper.risk.health import net_delta
from keeper.service import KeeperService, TickReport
from keeper.tx.fees import FeeCapTooLow
from keeper.tx.sender import Outcome
from tests.keeper import conftest as keeper_fixtures
from tests.keeper.conftest import Env, FakeClock, move

# The keeper suite's chain fixtures (tester and anvil), used by name below.
env_session = keeper_fixtures.env_session
env = keeper_fixtures.env
clock = keeper_fixtures.clock
market = keeper_fixtures.market
make_service = keeper_fixtures.make_service

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "ops" / "alerts.yml"
WAD = 10**18
GWEI = 10**9
VAULT_A = Web3.to_checksum_address("0x" + "a1" * 20)
VAULT_B = Web3.to_checksum_address("0x" + "b2" * 20)
WETH = Web3.to_checksum_address("0x" + "e7" * 20)
FEED = Web3.to_checksum_address("0x" + "f0" * 20)
TX_1, TX_2 = "0x" + "aa" * 32, "0x" + "bb" * 32

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# ---------------------------------------------------------------------------------- helpers
def get(url: str, method: str = "GET") -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), dict(err.headers)


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(server: MetricsServer) -> Samples:
    status, text, headers = get(server.url + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


class WallClock:
    """Epoch seconds the test moves by hand."""

    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class FakeNonces:
    in_flight: frozenset[int] = frozenset()


@dataclass
class FakeSender:
    in_flight: dict[int, str] = field(default_factory=dict)
    nonces: FakeNonces | None = field(default_factory=FakeNonces)
    seen_block: int = 0


@dataclass
class FakeService:
    """The state `KeeperService` exposes after a tick (see `keeper.metrics.ServiceView`)."""

    journal: Journal
    vaults: list[ChecksumAddress] = field(default_factory=lambda: [VAULT_A, VAULT_B])
    halted: dict[ChecksumAddress, str] = field(default_factory=dict)
    failures: dict[ChecksumAddress, int] = field(default_factory=dict)
    head_stalled_since: float | None = None
    symbols: dict[ChecksumAddress, str] = field(default_factory=lambda: {WETH: "WETH"})
    sender: FakeSender = field(default_factory=FakeSender)
    last_block: int = 0


def snapshot(
    vault: ChecksumAddress,
    block: int,
    health: int,
    min_health: int,
    leverage: int,
    nav_usdc_units: int,
) -> VaultSnapshot:
    """A vault holding 2 WETH of collateral at $3,000 and a 1.5 WETH short perp."""
    weth = AssetSnapshot(
        token=WETH,
        decimals=18,
        price_feed=FEED,
        price=3_000 * WAD,
        price_updated_at=1_700_000_000,
        price_round=1,
        vol_feed=FEED,
        implied_vol=WAD // 2,
        vol_updated_at=1_700_000_000,
        collateral=2 * WAD,
        idle=0,
        ltv=75 * WAD // 100,
        liquidation_threshold=80 * WAD // 100,
        perp_size=-3 * WAD // 2,
        perp_entry_price=3_000 * WAD,
        perp_pnl=0,
        perp_maintenance_margin=5 * WAD // 100,
    )
    mandate = Mandate(
        target_vol=WAD // 5,
        max_leverage=3 * WAD,
        min_health=min_health,
        hedge_target=0,
        hedge_band=WAD // 10,
        cppi_floor=WAD // 2,
        cppi_multiplier=3 * WAD,
        kelly_fraction=WAD // 2,
        max_slippage_bps=50,
    )
    return VaultSnapshot(
        vault=vault,
        block_number=block,
        timestamp=1_700_000_100,
        total_assets=nav_usdc_units,
        total_supply=nav_usdc_units * 10**6,
        high_water_mark=WAD,
        idle_usdc=0,
        debt=1_000 * 10**6,
        lending_health=health,
        perp_margin=2_000 * 10**6,
        perp_account_value=2_000 * 10**6,
        perp_health=UINT256_MAX,
        health=health,
        leverage=leverage,
        swap_fee_bps=30,
        perp_fee_bps=5,
        max_price_age=3_600,
        paused=False,
        last_action_at=0,
        mandate=mandate,
        assets=(weth,),
        options=(),
    )


def action(kind: ActionKind, vault: str, urgency: Urgency) -> Action:
    return Action(kind, vault, urgency, 100.0, 5.0, f"test {kind.value}")


@pytest.fixture
def serving() -> Iterator[Callable[[KeeperMetrics], MetricsServer]]:
    servers: list[MetricsServer] = []

    def start(metrics: KeeperMetrics) -> MetricsServer:
        servers.append(metrics.serve(0))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture
def journal_clock() -> WallClock:
    return WallClock(1_000.0)


@pytest.fixture
def journal(journal_clock: WallClock) -> Iterator[Journal]:
    j = Journal(":memory:", clock=journal_clock)
    yield j
    j.close()


def journal_replaced_then_mined(j: Journal, clock: WallClock) -> None:
    """A deleverage of VAULT_A: first signed at t=990, replaced at 1000, the replacement mined
    (seen at t=1011) using 448,709 gas at 30 gwei."""
    clock.t = 990.0
    intent = j.record_intent(VAULT_A, "deleverage", VAULT_A, b"\x01")
    j.attach_nonce(intent, 7)
    j.record_transaction(intent, TX_1, 7, 40 * GWEI, 2 * GWEI, 600_000, b"\x02")
    clock.t = 1_000.0
    j.record_transaction(intent, TX_2, 7, 45 * GWEI, 3 * GWEI, 600_000, b"\x03")
    clock.t = 1_011.0
    j.mark_transaction(TX_2, "mined", 102, 448_709, 30 * GWEI)


def drive(metrics: KeeperMetrics, service: FakeService, clock: WallClock) -> None:
    """Three ticks and a skipped one, touching every metric family.

    1. block 100: A (health 1.05 < min 1.10) decides a CRITICAL deleverage, still pending
       after one replacement; B (no debt: infinite health) has its breaker open.
    2. block 103: A's deleverage mined (two replacements in all); B's HIGH hedge refused by
       the fee cap, its NORMAL rebalance deferred, and B failed to build this tick.
    3. an error tick; then one skipped (the previous still running).
    """
    service.last_block = 101
    service.sender = FakeSender({1: VAULT_A}, FakeNonces(frozenset({7, 8})))
    clock.t = 1_000.0
    metrics.observe_tick(
        TickReport(
            block=100,
            snapshots={
                VAULT_A: snapshot(
                    VAULT_A, 100, 105 * WAD // 100, 110 * WAD // 100, 2 * WAD, 1_234_567_890_000
                ),
                VAULT_B: snapshot(VAULT_B, 100, UINT256_MAX, 120 * WAD // 100, WAD, 5 * 10**12),
            },
            actions={
                VAULT_A: [action(ActionKind.DELEVERAGE, VAULT_A, Urgency.CRITICAL)],
                VAULT_B: [],
            },
            outcomes=[Outcome("pending", VAULT_A, "deleverage", TX_1, replacements=1)],
            breaker={VAULT_B: "breaker OPEN"},
            seconds=2.5,
        ),
        service,
    )
    service.last_block = 104
    service.sender = FakeSender({}, FakeNonces(frozenset()))
    service.failures = {VAULT_B: 2}
    clock.t = 1_012.0
    metrics.observe_tick(
        TickReport(
            block=103,
            snapshots={
                VAULT_A: snapshot(
                    VAULT_A, 103, 107 * WAD // 100, 110 * WAD // 100, 2 * WAD, 1_234_567_890_000
                ),
            },
            actions={
                VAULT_A: [action(ActionKind.DELEVERAGE, VAULT_A, Urgency.CRITICAL)],
                VAULT_B: [
                    action(ActionKind.HEDGE, VAULT_B, Urgency.HIGH),
                    action(ActionKind.REBALANCE, VAULT_B, Urgency.NORMAL),
                ],
            },
            outcomes=[
                Outcome("mined", VAULT_A, "deleverage", TX_2, gas_used=448_709, replacements=2),
                Outcome(
                    "failed",
                    VAULT_B,
                    "hedge",
                    error=str(FeeCapTooLow(Urgency.HIGH, 60 * GWEI, 50 * GWEI, GWEI)),
                ),
                Outcome("deferred", VAULT_B, "rebalance", details={"base_fee": 80 * GWEI}),
            ],
            faults={VAULT_B: "build: ValueError: no leg"},
            seconds=7.0,
        ),
        service,
    )
    clock.t = 1_024.0
    metrics.observe_tick(TickReport(block=-1, error="no vault could be read", seconds=0.3), service)
    metrics.observe_tick(TickReport(block=-1, error="overlap"), service)


# ---------------------------------------------------------------------------------- tests
def test_ticks_vaults_and_actions_in_the_exposition(
    serving: Callable[[KeeperMetrics], MetricsServer],
    journal: Journal,
    journal_clock: WallClock,
) -> None:
    clock = WallClock(990.0)
    metrics = KeeperMetrics(interval_s=12, clock=clock, min_gas_balance_wei=10**17)
    service = FakeService(journal)
    journal_replaced_then_mined(journal, journal_clock)
    server = serving(metrics)
    assert server.host == DEFAULT_HOST == "127.0.0.1"
    before = scrape(server)
    assert math.isnan(value(before, "keeper_signer_balance_wei"))
    assert value(before, "keeper_last_successful_tick_timestamp_seconds") == 990.0
    metrics.observe_started(service)
    drive(metrics, service, clock)
    metrics.observe_balance(3 * 10**17)
    s = scrape(server)

    # Ticks: two ok, one error, one skipped; the histogram holds the three that ran.
    assert value(s, "keeper_ticks_total", result="ok") == 2
    assert value(s, "keeper_ticks_total", result="error") == 1
    assert value(s, "keeper_ticks_total", result="skipped") == 1
    assert value(s, "keeper_tick_duration_seconds_count") == 3
    assert value(s, "keeper_tick_duration_seconds_sum") == pytest.approx(9.8)
    assert value(s, "keeper_tick_duration_seconds_bucket", le="5.0") == 2  # 0.3 s and 2.5 s
    assert value(s, "keeper_consecutive_failed_ticks") == 1
    assert value(s, "keeper_last_tick_timestamp_seconds") == 1_024.0
    assert value(s, "keeper_last_successful_tick_timestamp_seconds") == 1_012.0
    assert value(s, "keeper_tick_interval_seconds") == 12
    assert value(s, "keeper_ready") == 1
    # Chain: newest block seen 104, the last good tick read at 103.
    assert value(s, "keeper_head_block_number") == 104
    assert value(s, "keeper_tick_block_number") == 103
    assert value(s, "keeper_block_lag_blocks") == 1
    assert value(s, "keeper_head_stalled") == 0

    # Vaults: WAD → ratios; NAV in USDC units → USD; the contract's "infinite" is +Inf.
    assert value(s, "keeper_vault_health_ratio", vault=VAULT_A) == 1.07
    assert value(s, "keeper_vault_health_ratio", vault=VAULT_B) == math.inf
    assert value(s, "keeper_vault_min_health_ratio", vault=VAULT_A) == 1.1
    assert value(s, "keeper_vault_leverage_ratio", vault=VAULT_A) == 2.0
    assert value(s, "keeper_vault_max_leverage_ratio", vault=VAULT_A) == 3.0
    assert value(s, "keeper_vault_nav_usd", vault=VAULT_A) == 1_234_567.89
    assert value(s, "keeper_vault_nav_usd", vault=VAULT_B) == 5_000_000.0
    # 2 WETH collateral − 1.5 short perp = 0.5 WETH, × $3,000.
    assert value(s, "keeper_vault_net_delta", vault=VAULT_A, underlying="WETH") == 0.5
    assert value(s, "keeper_vault_net_delta_usd", vault=VAULT_A) == 1_500.0
    # First read below its minimum at block 100, still below at 103.
    assert value(s, "keeper_vault_below_min_health_blocks", vault=VAULT_A) == 3
    assert value(s, "keeper_vault_below_min_health_blocks", vault=VAULT_B) == 0
    assert value(s, "keeper_vault_snapshot_block_number", vault=VAULT_B) == 100
    assert value(s, "keeper_vault_breaker_open", vault=VAULT_B) == 1
    assert value(s, "keeper_vault_breaker_open", vault=VAULT_A) == 0
    assert value(s, "keeper_vault_feeds_stale", vault=VAULT_A) == 0
    assert value(s, "keeper_vault_consecutive_failures", vault=VAULT_B) == 2
    assert value(s, "keeper_vault_faults_total", vault=VAULT_B, stage="build") == 1
    assert value(s, "keeper_vaults") == 2
    assert value(s, "keeper_halted_vaults") == 0
    assert value(s, "keeper_vault_halted", vault=VAULT_A) == 0

    # Actions: the deleverage decided twice (A was busy at the second tick), sent once,
    # replaced twice in all, mined once; its gas and fee (448,709 × 30 gwei) from the journal.
    dl = {"kind": "deleverage", "urgency": "critical"}
    assert value(s, "keeper_actions_decided_total", **dl) == 2
    assert value(s, "keeper_actions_sent_total", **dl) == 1
    assert value(s, "keeper_tx_replacements_total", **dl) == 2
    assert value(s, "keeper_action_outcomes_total", status="mined", **dl) == 1
    assert value(s, "keeper_tx_gas_used_total", **dl) == 448_709
    assert value(s, "keeper_tx_fees_wei_total", **dl) == 448_709 * 30 * GWEI
    # First signed at 990, receipt recorded at 1011: 21 s, in the (15, 30] bucket.
    assert value(s, "keeper_tx_confirmation_seconds_count") == 1
    assert value(s, "keeper_tx_confirmation_seconds_sum") == 21.0
    assert value(s, "keeper_tx_confirmation_seconds_bucket", le="15.0") == 0
    assert value(s, "keeper_tx_confirmation_seconds_bucket", le="30.0") == 1
    hedge = {"kind": "hedge", "urgency": "high"}
    assert value(s, "keeper_action_outcomes_total", status="failed", **hedge) == 1
    assert value(s, "keeper_tx_fee_cap_reached_total", **hedge) == 1
    assert value(s, "keeper_actions_sent_total", **hedge) == 0
    assert (
        value(
            s, "keeper_action_outcomes_total", kind="rebalance", urgency="normal", status="deferred"
        )
        == 1
    )
    assert value(s, "keeper_tx_fee_cap_reached_total", **dl) == 0
    # Nothing left in flight; the balance as observed, the minimum as configured.
    assert value(s, "keeper_pending_transactions") == 0
    assert value(s, "keeper_lowest_pending_nonce") == -1
    assert value(s, "keeper_signer_balance_wei") == 3 * 10**17
    assert value(s, "keeper_signer_min_balance_wei") == 10**17
    # Runtime metrics of the process come along.
    assert value(s, "process_start_time_seconds") > 0


def test_pending_transactions_and_the_lowest_nonce(
    serving: Callable[[KeeperMetrics], MetricsServer], journal: Journal
) -> None:
    metrics = KeeperMetrics(interval_s=12, clock=WallClock(), runtime_collectors=False)
    service = FakeService(
        journal, sender=FakeSender({3: VAULT_A, 4: VAULT_B}, FakeNonces(frozenset({9, 8})))
    )
    service.head_stalled_since = 1_799_999_000.0
    metrics.observe_tick(TickReport(block=50), service)
    metrics.observe_head(57)
    s = scrape(serving(metrics))
    assert value(s, "keeper_pending_transactions") == 2
    assert value(s, "keeper_lowest_pending_nonce") == 8
    assert value(s, "keeper_head_stalled") == 1
    assert value(s, "keeper_head_block_number") == 57
    assert value(s, "keeper_block_lag_blocks") == 7
    assert ("process_start_time_seconds", frozenset()) not in s


def test_fee_cap_stops_are_told_apart_from_other_timeouts(
    serving: Callable[[KeeperMetrics], MetricsServer],
) -> None:
    """The sender's words for a flight it stops replacing (`Confirming._timed_out`)."""
    metrics = KeeperMetrics(interval_s=12, clock=WallClock(), runtime_collectors=False)

    def timed_out(vault: str, why: str) -> Outcome:
        return Outcome(
            "timeout",
            vault,
            "deleverage",
            TX_2,
            replacements=4,
            error=f"vault {vault}: deleverage {TX_2} not mined after 4 replacements ({why}); "
            "left pending, polled every tick",
        )

    metrics.observe_outcome(Outcome("pending", VAULT_A, "deleverage", TX_1), Urgency.CRITICAL)
    metrics.observe_outcome(timed_out(VAULT_A, "fee cap reached"), None)
    metrics.observe_outcome(Outcome("pending", VAULT_B, "deleverage", TX_1), Urgency.HIGH)
    metrics.observe_outcome(timed_out(VAULT_B, "replacement limit reached"), None)
    # A transaction an earlier process sent, mined after a restart: not sent by this one.
    metrics.observe_outcome(
        Outcome("mined", VAULT_B, "repayDebt", TX_1, gas_used=100_000), None, resumed=True
    )
    s = scrape(serving(metrics))
    critical = {"kind": "deleverage", "urgency": "critical"}
    high = {"kind": "deleverage", "urgency": "high"}
    assert value(s, "keeper_tx_fee_cap_reached_total", **critical) == 1
    assert value(s, "keeper_tx_fee_cap_reached_total", **high) == 0
    assert value(s, "keeper_action_outcomes_total", status="timeout", **critical) == 1
    assert value(s, "keeper_action_outcomes_total", status="timeout", **high) == 1
    assert value(s, "keeper_tx_replacements_total", **critical) == 4
    assert value(s, "keeper_actions_sent_total", **critical) == 1
    unknown = {"kind": "repay", "urgency": "unknown"}
    assert value(s, "keeper_action_outcomes_total", status="mined", **unknown) == 1
    assert value(s, "keeper_tx_gas_used_total", **unknown) == 100_000
    assert ("keeper_actions_sent_total", frozenset(unknown.items())) not in s
    # No journal, no price: gas counted, fees not guessed.
    assert ("keeper_tx_fees_wei_total", frozenset(unknown.items())) not in s


def test_healthz_turns_503_after_three_intervals_without_a_good_tick(
    serving: Callable[[KeeperMetrics], MetricsServer], journal: Journal
) -> None:
    clock = WallClock(5_000.0)
    metrics = KeeperMetrics(interval_s=10, clock=clock, runtime_collectors=False)
    service = FakeService(journal)
    server = serving(metrics)

    def probe(path: str) -> tuple[int, str]:
        status, body, _ = get(server.url + path)
        return status, body

    # Not started yet: not ready; alive (a start gets the same grace as a tick).
    assert probe("/readyz") == (503, probe("/readyz")[1])
    assert '"reason": "starting"' in probe("/readyz")[1]
    assert probe("/healthz")[0] == 200
    metrics.observe_started(service)
    assert probe("/readyz")[0] == 200
    clock.t = 5_030.0  # exactly 3 × 10 s: still alive
    assert probe("/healthz")[0] == 200
    clock.t = 5_030.5
    status, body = probe("/healthz")
    assert status == 503
    assert "30s since start, and no tick has completed (limit 30s = 3 intervals of 10s)" in body
    metrics.observe_tick(TickReport(block=10), service)  # a good tick at 5030.5
    assert probe("/healthz")[0] == 200
    clock.t = 5_055.0
    metrics.observe_tick(TickReport(block=-1, error="rpc down"), service)  # failed: no help
    assert probe("/healthz")[0] == 200
    clock.t = 5_061.0
    status, body = probe("/healthz")
    assert status == 503 and "since the last good tick" in body
    assert '"last_good_tick_age_seconds": 30.5' in body
    metrics.observe_tick(TickReport(block=11), service)
    assert probe("/healthz")[0] == 200
    # Every vault halted: the process runs but keeps nothing.
    service.halted = {VAULT_A: "3 failed ticks", VAULT_B: "3 failed ticks"}
    metrics.observe_tick(TickReport(block=12), service)
    status, body = probe("/healthz")
    assert status == 503 and "all 2 vaults are halted" in body
    service.halted = {VAULT_A: "3 failed ticks"}
    metrics.observe_tick(TickReport(block=13), service)
    assert probe("/healthz")[0] == 200
    assert probe("/readyz")[0] == 200


def test_routes_methods_and_head(
    serving: Callable[[KeeperMetrics], MetricsServer],
) -> None:
    server = serving(KeeperMetrics(interval_s=10, clock=WallClock(), runtime_collectors=False))
    assert get(server.url + "/nothing")[0] == 404
    assert get(server.url + "/metrics", method="POST")[0] == 405
    status, body, headers = get(server.url + "/healthz", method="HEAD")
    assert (status, body) == (200, "")
    assert headers["Content-Type"] == "application/json"


def test_a_real_crash_tick_on_the_in_process_chain(
    env: Env,
    market: Any,
    make_service: Callable[..., KeeperService],
    clock: FakeClock,
    serving: Callable[[KeeperMetrics], MetricsServer],
) -> None:
    balanced = env.dep.vaults[0]
    service = make_service(start=False)
    metrics = KeeperMetrics(interval_s=12, clock=clock.now, runtime_collectors=False)
    metrics.observe_started(service, service.start())
    move(market, env, 0.65, 0.70)  # the crash of test_cycle: a repay restores min health
    report = service.tick()
    assert report.error is None
    metrics.observe_tick(report, service)
    s = scrape(serving(metrics))

    (decided,) = report.actions[balanced]
    (outcome,) = [o for o in report.outcomes if o.vault == balanced]
    assert decided.kind is ActionKind.REPAY and outcome.status == "mined"
    assert outcome.gas_used is not None and outcome.tx_hash is not None
    labels = {"kind": "repay", "urgency": decided.urgency.name.lower()}
    assert value(s, "keeper_actions_decided_total", **labels) == 1
    assert value(s, "keeper_actions_sent_total", **labels) == 1
    assert value(s, "keeper_action_outcomes_total", status="mined", **labels) == 1
    assert value(s, "keeper_tx_gas_used_total", **labels) == outcome.gas_used
    receipt = env.w3.eth.get_transaction_receipt(outcome.tx_hash)  # type: ignore[arg-type]
    assert receipt["gasUsed"] == outcome.gas_used
    paid = outcome.gas_used * int(receipt["effectiveGasPrice"])
    assert paid > 0
    assert value(s, "keeper_tx_fees_wei_total", **labels) == paid
    landed = [o for o in report.outcomes if o.status in ("mined", "reverted")]
    assert value(s, "keeper_tx_confirmation_seconds_count") == len(landed)
    assert value(s, "keeper_tx_gas_used_total", kind="repay", urgency="low") == 0

    snap = report.snapshots[balanced]
    assert value(s, "keeper_vault_health_ratio", vault=balanced) == snap.health / WAD
    assert value(s, "keeper_vault_min_health_ratio", vault=balanced) == (
        snap.mandate.min_health / WAD
    )
    assert snap.health < snap.mandate.min_health
    assert value(s, "keeper_vault_below_min_health_blocks", vault=balanced) == 0  # first read
    assert value(s, "keeper_vault_leverage_ratio", vault=balanced) == snap.leverage / WAD
    assert value(s, "keeper_vault_nav_usd", vault=balanced) == snap.total_assets / 10**6
    expected = net_delta(to_vault_state(snap, service.symbols), snap.timestamp, RISK_FREE_RATE)
    assert expected  # the vault holds risk
    for underlying, delta in expected.items():
        got = value(s, "keeper_vault_net_delta", vault=balanced, underlying=underlying)
        assert got == pytest.approx(delta, rel=1e-12)
    assert value(s, "keeper_vaults") == len(env.dep.vaults)
    assert value(s, "keeper_tick_block_number") == report.block
    # The actions mined after the read: the newest block seen is the last receipt's.
    newest = max(
        int(env.w3.eth.get_transaction_receipt(o.tx_hash)["blockNumber"])  # type: ignore[arg-type]
        for o in landed
    )
    assert value(s, "keeper_head_block_number") == newest > report.block
    assert value(s, "keeper_block_lag_blocks") == newest - report.block
    assert value(s, "keeper_pending_transactions") == 0
    assert value(s, "keeper_lowest_pending_nonce") == -1
    assert value(s, "keeper_ticks_total", result="ok") == 1
    assert value(s, "keeper_ready") == 1


# ---------------------------------------------------------------------------------- rules
#: PromQL words that are not metric names.
PROMQL_WORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}


def alert_exprs(path: Path) -> dict[str, str]:
    """Alert name → its expr (one line, or a folded `>-` block), read from our rules file."""
    lines = path.read_text().splitlines()
    exprs: dict[str, str] = {}
    name = None
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("- alert:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("expr:"):
            text = line[len("expr:") :].strip()
            if text in (">-", ">", "|", "|-"):
                indent = len(lines[i]) - len(lines[i].lstrip())
                parts = []
                while i + 1 < len(lines) and (
                    len(lines[i + 1]) - len(lines[i + 1].lstrip()) > indent
                ):
                    i += 1
                    parts.append(lines[i].strip())
                text = " ".join(parts)
            assert name is not None and name not in exprs
            exprs[name] = text
        i += 1
    return exprs


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers left once strings, label
    matchers, ranges and grouping lists are removed, that are not function calls."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = m.group(0)
        following = text[m.end() :].lstrip()[:1]
        if following == "(" or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def test_every_metric_in_the_alert_rules_is_exported(
    serving: Callable[[KeeperMetrics], MetricsServer],
    journal: Journal,
    journal_clock: WallClock,
) -> None:
    exprs = alert_exprs(ALERTS)
    assert len(exprs) == ALERTS.read_text().count("- alert:") == 12
    metrics = KeeperMetrics(interval_s=12, clock=WallClock(990.0), min_gas_balance_wei=1)
    service = FakeService(journal)
    journal_replaced_then_mined(journal, journal_clock)
    metrics.observe_started(service)
    service.halted = {VAULT_B: "halted"}
    drive(metrics, service, WallClock(1_000.0))
    exported = {name for name, _ in scrape(serving(metrics))}
    used: dict[str, set[str]] = {alert: metric_names(e) for alert, e in exprs.items()}
    assert all(used.values()), used
    # `up` is Prometheus's own, for every target.
    missing = {
        a: names - exported - {"up"} for a, names in used.items() if names - exported - {"up"}
    }
    assert missing == {}
    assert {
        "keeper_vault_halted",
        "keeper_action_outcomes_total",
        "keeper_signer_balance_wei",
        "keeper_lowest_pending_nonce",
    } <= set().union(*used.values())


def test_metric_name_extraction_sees_through_promql() -> None:
    expr = (
        'sum by (job, instance, kind) (increase(keeper_action_outcomes_total{kind=~"a|b",'
        ' status="x"}[15m])) > 0 and on(instance) time() - keeper_x_seconds > 3 * keeper_y'
    )
    assert metric_names(expr) == {"keeper_action_outcomes_total", "keeper_x_seconds", "keeper_y"}


def test_a_standby_replica_is_alive_not_ready_and_names_the_leader(
    serving: Callable[[KeeperMetrics], MetricsServer], journal: Journal
) -> None:
    from keeper.journal import LeaseRecord

    clock = WallClock(7_000.0)
    metrics = KeeperMetrics(interval_s=10, clock=clock, runtime_collectors=False)
    server = serving(metrics)
    other = LeaseRecord("leader", "replica-a", 4, 6_990.0, 6_999.0, 7_009.0, 7_000.0)
    clock.t = 7_100.0  # long past 3 intervals: a standby that keeps trying is alive
    metrics.observe_standby(other)
    status, body, _ = get(server.url + "/readyz")
    assert status == 503 and "standby (leader: replica-a)" in body
    assert get(server.url + "/healthz")[0] == 200
    clock.t = 7_131.0  # no attempt for 31 s (the database unreachable): not alive any more
    assert get(server.url + "/healthz")[0] == 503
    page = get(server.url + "/metrics")[1]
    assert 'keeper_lease_holder{holder="replica-a"} 1.0' in page
    assert "keeper_lease_held 0.0" in page and "keeper_lease_epoch 4.0" in page
    mine = LeaseRecord("leader", "replica-b", 5, 7_131.0, 7_131.0, 7_141.0, 7_131.0)
    metrics.observe_lease(True, mine)
    assert get(server.url + "/readyz")[0] == 503  # took the lease, not reconciled yet
    metrics.observe_started(FakeService(journal))
    assert get(server.url + "/readyz")[0] == 200
    page = get(server.url + "/metrics")[1]
    assert "keeper_lease_held 1.0" in page and "keeper_lease_epoch 5.0" in page
    assert 'holder="replica-a"' not in page
    assert 'keeper_lease_holder{holder="replica-b"} 1.0' in page
    metrics.observe_lease(False, None)  # lost
    assert "keeper_lease_held 0.0" in get(server.url + "/metrics")[1]
    assert get(server.url + "/metrics")[1].count("keeper_lease_holder{") == 0
