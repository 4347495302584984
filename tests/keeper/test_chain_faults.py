"""What the chain itself does wrong, on anvil: a reorg that drops a mined action, and a node
behind a load balancer whose backends lag (half the `eth_blockNumber` answers two blocks old).

Reorgs are made with anvil's `evm_snapshot` / `evm_revert`: the blocks after the snapshot,
with our mined transactions, are gone and no node knows those transactions any more. Nothing
here sleeps: time is the FakeClock.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from keeper.chain.connect import connect
from keeper.chain.retry import RetryPolicy
from keeper.clock import SystemClock
from keeper.devnet.market import Market
from keeper.devnet.service import build_local_service
from keeper.journal import IntentRecord, Journal
from keeper.scheduler import KeeperLoop
from keeper.service import KeeperService
from tests.keeper.conftest import Env, FakeClock, move
from tests.keeper.faulty_rpc import FaultyRpc

#: What the crash below makes the keeper send for the balanced vault (as in test_transactions).
RISK_REDUCING = ("deleverage", "repayDebt")
#: Blocks a lagging backend is behind, and every how many head reads it answers.
LAG_BLOCKS, LAG_EVERY = 2, 2
TICKS = 6


def risk_intents(service: KeeperService, vault: str) -> list[IntentRecord]:
    intents = service.journal.recent_intents(vault=vault, limit=500)
    return sorted((i for i in intents if i.kind in RISK_REDUCING), key=lambda i: i.id)


def test_a_reorg_that_drops_a_mined_action_is_decided_again_not_resent(
    anvil_env: Env, market: Market, make_service: Callable[..., KeeperService]
) -> None:
    env, balanced = anvil_env, anvil_env.dep.vaults[0]
    service = make_service()
    move(market, env, 0.65, 0.70)  # the crash: the balanced vault must reduce risk
    before = service.read_now()[balanced]
    assert before.health < before.mandate.min_health
    fork = env.rpc("evm_snapshot")["result"]  # type: ignore[index]
    start_nonce = env.nonce("latest")

    first = service.tick()
    (dropped,) = risk_intents(service, balanced)
    assert dropped.status == "mined"
    mined_before = [o for o in first.outcomes if o.status == "mined"]
    assert env.nonce("latest") == start_nonce + len(mined_before)

    assert env.rpc("evm_revert", fork)["result"] is True  # type: ignore[index]
    assert env.nonce("latest") == start_nonce  # the chain forgot every action of that tick
    again = service.tick()

    # The dropped intent is recorded as dropped, with why; the vault was decided again from the
    # new chain and its action took the freed nonce: the old one and the new can never both land.
    intents = risk_intents(service, balanced)
    assert [i.status for i in intents] == ["dropped", "mined"]
    assert intents[0].id == dropped.id and "reorged away" in str(intents[0].outcome)
    assert intents[1].nonce == dropped.nonce
    assert all(t.status == "dropped" for t in intents[0].transactions)
    later = service.tick()  # and the head it now reads is the new chain's, not the old one's
    assert later.block >= again.block and later.error is None
    mined_after = [o for o in again.outcomes + later.outcomes if o.status == "mined"]
    assert env.nonce("latest") == start_nonce + len(mined_after)  # no nonce gap
    assert env.nonce("pending") == env.nonce("latest")
    assert service.journal.unfinished_intents() == []
    after = service.read_now()[balanced]
    assert after.health >= after.mandate.min_health


def test_a_reorg_while_the_keeper_was_down_is_found_at_the_next_start(
    anvil_env: Env, market: Market, make_service: Callable[..., KeeperService]
) -> None:
    env, balanced = anvil_env, anvil_env.dep.vaults[0]
    first = make_service()
    move(market, env, 0.65, 0.70)
    fork = env.rpc("evm_snapshot")["result"]  # type: ignore[index]
    start_nonce = env.nonce("latest")
    first.tick()
    first.journal.close()  # the process stops; the chain reorgs while it is down
    env.rpc("evm_revert", fork)

    second = make_service()  # same journal file: it says mined, the chain says otherwise
    report = second.tick()
    intents = risk_intents(second, balanced)
    assert [i.status for i in intents] == ["dropped", "mined"]
    assert intents[1].nonce == intents[0].nonce
    mined = [o for o in report.outcomes if o.status == "mined"]
    assert env.nonce("latest") == start_nonce + len(mined)
    assert env.nonce("pending") == env.nonce("latest")
    after = second.read_now()[balanced]
    assert after.health >= after.mandate.min_health


class LaggingRpc(FaultyRpc):
    """Every `LAG_EVERY`-th `eth_blockNumber` is answered by a backend `LAG_BLOCKS` behind."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream, secret="LAGKEY")
        self.heads = 0
        self.lagged = 0

    def _forward(self, body: bytes) -> bytes:
        answer = super()._forward(body)
        request = json.loads(body)
        if isinstance(request, list):  # a JSON-RPC batch (the tick's head rides in one)
            heads = {r.get("id") for r in request if r.get("method") == "eth_blockNumber"}
            replies = [self._lag(r) if r.get("id") in heads else r for r in json.loads(answer)]
            return json.dumps(replies).encode()
        if isinstance(request, dict) and request.get("method") == "eth_blockNumber":
            return json.dumps(self._lag(json.loads(answer))).encode()
        return answer

    def _lag(self, reply: dict[str, Any]) -> dict[str, Any]:
        self.heads += 1
        if self.heads % LAG_EVERY == 0 and "result" in reply:
            head = int(reply["result"], 16)
            if head >= LAG_BLOCKS:
                self.lagged += 1
                reply["result"] = hex(head - LAG_BLOCKS)
        return reply


def mined_actions(service: KeeperService) -> Counter[tuple[str, str]]:
    return Counter(
        (i.vault, i.kind) for i in service.journal.recent_intents(limit=500) if i.status == "mined"
    )


def test_a_lagging_node_never_makes_the_keeper_act_twice(
    anvil_env: Env, market: Market, clock: FakeClock, tmp_path: Path
) -> None:
    """The same crash and the same ticks, once against the node itself and once behind a
    balancer whose every other head answer is two blocks old: the same actions land. (Before,
    a fresh read at a lagging head did not see the action just mined, and it was sent again.)"""
    env = anvil_env
    move(market, env, 0.65, 0.70)
    fork = env.rpc("evm_snapshot")["result"]  # type: ignore[index]

    def run(w3_url: str | None, journal: str) -> tuple[Counter[tuple[str, str]], int]:
        w3 = (
            env.w3
            if w3_url is None
            else connect(w3_url, 31337, retry=RetryPolicy(sleep=clock.sleep, clock=clock.now))
        )
        service = build_local_service(w3, env.dep, tmp_path / journal, clock)
        service.start()
        start_nonce = env.nonce("latest")
        for _ in range(TICKS):
            report = service.tick()
            assert report.error is None, report.error
            clock.t += 12
        actions = mined_actions(service)
        assert service.journal.unfinished_intents() == []
        assert env.nonce("latest") == start_nonce + sum(actions.values())
        service.journal.close()
        return actions, env.nonce("latest") - start_nonce

    reference, sent_direct = run(None, "direct.sqlite")
    env.rpc("evm_revert", fork)
    with LaggingRpc(str(env.w3.provider.endpoint_uri)) as proxy:  # type: ignore[attr-defined]
        lagged, sent_lagged = run(proxy.url, "lagged.sqlite")
        assert proxy.lagged >= TICKS // 2  # the lag was there, tick after tick
    assert any(kind in RISK_REDUCING for _, kind in reference)
    assert lagged == reference and sent_lagged == sent_direct


#: The node outage of the chaos suite, seconds (wall clock: the keeper's real loop runs).
OUTAGE_S = 20.0


def test_the_node_down_for_20_s_and_back_the_deleverage_lands_once(
    anvil_env: Env, market: Market, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The keeper's real loop (1 s interval, head polled every 0.25 s) behind a proxy whose
    connections all drop for 20 s, from just before the crash: every tick of the outage fails
    in one line, the loop goes on (its failure budget is larger than the outage), and the
    deleverage lands once the node is back — once, with no traceback and no secret logged."""
    env, balanced = anvil_env, anvil_env.dep.vaults[0]
    down = {"on": False}
    with FaultyRpc(str(env.w3.provider.endpoint_uri), secret="OUTAGEKEY") as proxy:  # type: ignore[attr-defined]
        proxy.plan = lambda method, n: "drop_before" if down["on"] else None
        w3 = connect(proxy.url, 31337)
        service = build_local_service(w3, env.dep, tmp_path / "journal.sqlite", SystemClock())
        service.start()
        start_nonce = env.nonce("latest")
        loop = KeeperLoop(service, 1.0, max_consecutive_failures=120, head_poll_s=0.25)
        thread = threading.Thread(target=loop.run)
        thread.start()
        try:
            down["on"] = True
            move(market, env, 0.65, 0.70)  # the crash, while the keeper cannot see it
            time.sleep(OUTAGE_S)
            assert thread.is_alive() and risk_intents(service, balanced) == []
            failed_during = proxy.injected_total("drop_before")
            down["on"] = False
            back = time.monotonic()
            while time.monotonic() - back < 30 and not any(
                i.status == "mined" for i in risk_intents(service, balanced)
            ):
                time.sleep(0.1)
            recovery_s = time.monotonic() - back
            print(f"deleverage mined {recovery_s:.1f} s after the node came back")
        finally:
            loop.stop()
            thread.join(30)
        assert not thread.is_alive()
    assert failed_during > 10  # the outage was real, tick after tick
    journal = Journal(tmp_path / "journal.sqlite")  # the loop closed the service's own
    risk = [i for i in journal.recent_intents(vault=balanced) if i.kind in RISK_REDUCING]
    assert [i.status for i in risk] == ["mined"], f"not landed {recovery_s:.1f}s after"
    intents = journal.recent_intents(limit=500)
    on_chain = [i for i in intents if i.status in ("mined", "reverted")]
    assert env.nonce("latest") == start_nonce + len(on_chain)
    assert env.nonce("pending") == env.nonce("latest")
    journal.close()
    assert "Traceback" not in caplog.text and "OUTAGEKEY" not in caplog.text
    assert "tick at block" in caplog.text and "failed" in caplog.text
