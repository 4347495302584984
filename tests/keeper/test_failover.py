"""The keeper on several RPC endpoints, on anvil: the primary dies mid-run and the keeper goes on
through a fallback, its action landing exactly once; a fallback on another chain is refused on
the switch; the keeper is back on the primary after the cool-down; no URL's secret is logged.

Three loopback proxies (`faulty_rpc.FaultyRpc`), each with an API key in its path:

- the primary, in front of the test's anvil;
- fallback 1, in front of a second anvil on chain 4242 (a URL that leads to the wrong chain);
- fallback 2, in front of the test's anvil (another provider of the same chain).

The keeper is connected the production way (`connect` with `fallback_urls`: masking registered
for every URL, read retries on, failover under them) and runs its production tick on a
FakeClock: no test sleeps, and the cool-down is crossed by moving the clock.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from keeper.chain.connect import connect, current_endpoint
from keeper.chain.failover import FailoverPolicy
from keeper.chain.retry import RetryPolicy
from keeper.devnet.anvil import Anvil
from keeper.devnet.market import Market
from keeper.devnet.service import build_local_service
from keeper.service import KeeperService
from tests.keeper.conftest import Env, FakeClock, move
from tests.keeper.faulty_rpc import FaultyRpc

SECRETS = ("PRIMARYKEY7f3a9c21", "WRONGCHAINKEY88e1d0", "FALLBACKKEY5b6c7d8e")
OTHER_CHAIN_ID = 4242
#: What the crash below makes the keeper send for the balanced vault (as in test_transactions).
RISK_REDUCING = ("deleverage", "repayDebt")
BROADCAST = "eth_sendRawTransaction"
#: Virtual seconds on a fallback before the primary is tried again, in these tests.
COOLDOWN_S = 300.0


class SuddenDeath:
    """The primary's plan: healthy until its first broadcast, which reaches the node and whose
    answer is lost (maybe sent); from then on every request is dropped unanswered."""

    def __init__(self) -> None:
        self.dead = False

    def __call__(self, method: str, n: int) -> str | None:
        if self.dead:
            return "drop_before"
        if method == BROADCAST:
            self.dead = True
            return "drop_after"
        return None


@pytest.fixture
def endpoints(anvil_env: Env) -> Iterator[tuple[FaultyRpc, FaultyRpc, FaultyRpc]]:
    upstream = str(anvil_env.w3.provider.endpoint_uri)  # type: ignore[attr-defined]
    with ExitStack() as stack:
        other = Anvil("--chain-id", str(OTHER_CHAIN_ID))
        stack.enter_context(other)
        primary = stack.enter_context(FaultyRpc(upstream, secret=SECRETS[0]))
        wrong = stack.enter_context(FaultyRpc(other.url, secret=SECRETS[1]))
        fallback = stack.enter_context(FaultyRpc(upstream, secret=SECRETS[2]))
        yield primary, wrong, fallback


def secret_count(text: str) -> int:
    return sum(text.lower().count(s.lower()) for s in SECRETS)


def keeper_on(
    env: Env, endpoints: tuple[FaultyRpc, ...], clock: FakeClock, tmp_path: Path
) -> KeeperService:
    primary, *fallbacks = endpoints
    w3 = connect(
        primary.url,
        31337,
        timeout_s=5.0,
        retry=RetryPolicy(sleep=clock.sleep, clock=clock.now),
        fallback_urls=[f.url for f in fallbacks],
        failover=FailoverPolicy(cooldown_s=COOLDOWN_S, clock=clock.now),
    )
    service = build_local_service(w3, env.dep, tmp_path / "journal.sqlite", clock, TX_TIMEOUT="5")
    service.start()
    return service


def assert_landed_once(env: Env, service: KeeperService, start_nonce: int) -> None:
    """One risk-reducing intent for the balanced vault, mined; every intent mined; each took
    one nonce and nothing else was sent; no nonce gap."""
    intents = service.journal.recent_intents(limit=500)
    assert intents and [i.status for i in intents] == ["mined"] * len(intents)
    balanced = env.dep.vaults[0]
    assert len([i for i in intents if i.vault == balanced and i.kind in RISK_REDUCING]) == 1
    assert env.nonce("latest") == start_nonce + len(intents)
    assert env.nonce("pending") == env.nonce("latest")
    assert service.journal.unfinished_intents() == []


def test_primary_dies_mid_tick_the_action_lands_once_and_the_keeper_comes_back(
    anvil_env: Env,
    market: Market,
    clock: FakeClock,
    tmp_path: Path,
    endpoints: tuple[FaultyRpc, FaultyRpc, FaultyRpc],
    captured_logs: io.StringIO,
) -> None:
    env = anvil_env
    primary, wrong, fallback = endpoints
    service = keeper_on(env, endpoints, clock, tmp_path)
    w3 = service.w3
    start_nonce = env.nonce("latest")
    assert service.tick().error is None
    assert current_endpoint(w3).startswith("primary ") and fallback.requests == 0

    # The crash; the primary's node takes the first broadcast, then the primary is gone.
    death = SuddenDeath()
    primary.plan = death
    died_at = clock.t
    move(market, env, 0.65, 0.70)
    report = service.tick()
    assert report.error is None, report.error
    assert death.dead and primary.forwarded[BROADCAST] == 1  # that one reached the node ...
    assert primary.injected_total("drop_after", BROADCAST) == 1  # ... its answer was lost
    assert current_endpoint(w3).startswith("fallback 2 ")
    assert fallback.received[BROADCAST] >= 1  # the rebroadcast(s) of the same bytes
    # The wrong-chain fallback was asked its chain id once, on the switch, and nothing else.
    assert (wrong.requests, wrong.received["eth_chainId"]) == (1, 1)
    assert_landed_once(env, service, start_nonce)
    after = service.read_now()[env.dep.vaults[0]]
    assert after.health >= after.mandate.min_health

    # Dead for real (refused connections): reads go on through the fallback.
    primary.stop()
    reads_before = fallback.received["eth_blockNumber"]
    move(market, env, 0.66, 0.70, hours=0.5)
    assert service.tick().error is None
    assert fallback.received["eth_blockNumber"] > reads_before

    # Back up, but within the cool-down: the keeper stays where it is.
    primary.plan = lambda method, n: None
    primary.restart()
    assert clock.t - died_at < COOLDOWN_S  # the premise of the next check
    seen = primary.requests
    assert service.tick().error is None
    assert primary.requests == seen and current_endpoint(w3).startswith("fallback 2 ")

    # After the cool-down: verified (its chain id) and used again.
    clock.t += COOLDOWN_S
    fallback_seen = fallback.requests
    assert service.tick().error is None
    assert current_endpoint(w3).startswith("primary ")
    assert primary.received["eth_chainId"] >= 1 and primary.received["eth_blockNumber"] >= 1
    assert fallback.requests == fallback_seen
    assert wrong.requests == 1  # out of rotation for good
    assert_landed_once(env, service, start_nonce)
    service.journal.close()

    logs = captured_logs.getvalue()
    excluded = [line for line in logs.splitlines() if "taken out of rotation" in line]
    assert len(excluded) == 1
    wrong_port = wrong.url.split(":")[2].split("/")[0]
    assert (
        f"RPC fallback 1 http://127.0.0.1:{wrong_port}/*** is on chain {OTHER_CHAIN_ID}, "
        "not chain 31337: taken out of rotation"
    ) in excluded[0]
    assert "switched to fallback 2 http://127.0.0.1:" in logs
    assert "maybe sent" in logs and "back to primary http://127.0.0.1:" in logs
    assert "Making request HTTP. URI: http://127.0.0.1:" in logs  # web3's URL lines are there
    assert secret_count(logs) == 0
    journal_bytes = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert len(journal_bytes) > 0 and secret_count(journal_bytes.decode("latin-1")) == 0


def test_primary_stopped_between_ticks_the_action_goes_through_the_fallback_once(
    anvil_env: Env,
    market: Market,
    clock: FakeClock,
    tmp_path: Path,
    endpoints: tuple[FaultyRpc, FaultyRpc, FaultyRpc],
    captured_logs: io.StringIO,
) -> None:
    env = anvil_env
    primary, _, fallback = endpoints
    service = keeper_on(env, (primary, fallback), clock, tmp_path)
    start_nonce = env.nonce("latest")
    primary.stop()
    move(market, env, 0.65, 0.70)
    report = service.tick()
    assert report.error is None, report.error
    assert current_endpoint(service.w3).startswith("fallback 1 ")
    assert fallback.received[BROADCAST] == len(report.outcomes) > 0  # each sent once, no doubt
    assert all(o.status == "mined" for o in report.outcomes)
    assert_landed_once(env, service, start_nonce)
    service.journal.close()
    logs = captured_logs.getvalue()
    assert "maybe sent" not in logs
    assert secret_count(logs) == 0
