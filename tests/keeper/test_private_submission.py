"""Private submission against a local "private relay" (issue 10): a loopback JSON-RPC server
that answers ``eth_sendRawTransaction`` with the transaction's hash and either swallows it (a
relay that silently drops) or forwards it to anvil (a relay that lands it). The public node is
a :class:`FaultyRpc` proxy in front of anvil that injects nothing: it counts what the keeper
broadcasts publicly.

The non-urgent action is the carry vault's re-levering rebalance a day after an 8 % fall, its
urgency set to NORMAL (the policy makes it HIGH because it also fixes the hedge; which urgency an
action gets is the policy's business, where it goes is this module's). It follows, in the same
tick, the sweep of its short hedge's profit into debt (a REPAY, HIGH: public, one broadcast),
and is decided again on the read after that lands. The urgent one is the balanced vault's
deleverage after a crash.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from eth_utils import keccak
from web3 import Web3
from web3.exceptions import TransactionNotFound

import keeper.service as service_module
from keeper.chain.abi import load_artifact
from keeper.chain.connect import connect
from keeper.chain.retry import RetryPolicy
from keeper.devnet.market import Market
from keeper.devnet.service import build_local_service
from keeper.risk.actions import ActionKind, Urgency
from keeper.service import KeeperService, TickReport
from keeper.tx.core import GAP_FILL_KIND, Outcome
from keeper.tx.private import DEFAULT_PRIVATE_DROP_BLOCKS
from tests.keeper.conftest import Env, FakeClock, move
from tests.keeper.faulty_rpc import FaultyRpc

#: The relay URL's secrets: an API key in the path and a token in the query.
RELAY_KEY, RELAY_TOKEN = "RELAYPATHKEY42", "RELAYQUERYTOKEN7"
PUBLIC_SECRET = "PUBLICKEY123"
SECRETS = (RELAY_KEY, RELAY_TOKEN, PUBLIC_SECRET)
RISK_REDUCING = ("deleverage", "repayDebt")


class LocalRelay:
    """A private relay on loopback: `swallow` (answer the hash, keep nothing) or `forward`
    (hand it to anvil). Every raw transaction it was given is kept in `raw`, in order."""

    def __init__(self, upstream: str, mode: str = "swallow") -> None:
        self.upstream, self.mode = upstream, mode
        self.raw: list[str] = []
        self.path = f"/fast/{RELAY_KEY}?token={RELAY_TOKEN}"
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=lambda: self._server.serve_forever(poll_interval=0.05), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    @property
    def hashes(self) -> list[str]:
        return ["0x" + keccak(bytes.fromhex(r[2:])).hex() for r in self.raw]

    def __enter__(self) -> LocalRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, body: bytes) -> bytes:
        request = json.loads(body)
        method, params, rid = request["method"], request.get("params", []), request.get("id")
        if method == "eth_sendRawTransaction":
            self.raw.append(params[0])
            if self.mode == "forward":
                answer = requests.post(
                    self.upstream,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=10,
                )
                return bytes(answer.content)
            result: Any = "0x" + keccak(bytes.fromhex(params[0][2:])).hex()
        elif method == "eth_chainId":
            result = hex(31337)
        else:
            error = {"code": -32601, "message": f"method {method} not supported"}
            return json.dumps({"jsonrpc": "2.0", "id": rid, "error": error}).encode()
        return json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                return

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, out = (200, relay._answer(body)) if self.path == relay.path else (404, b"")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        return Handler


@pytest.fixture
def non_urgent_rebalance(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every REBALANCE the policy decides is NORMAL (see the module docstring)."""
    real = service_module.decide_batch

    def decide(*args: Any, **kwargs: Any) -> Any:
        return [
            [
                replace(a, urgency=Urgency.NORMAL) if a.kind is ActionKind.REBALANCE else a
                for a in acts
            ]
            for acts in real(*args, **kwargs)
        ]

    monkeypatch.setattr(service_module, "decide_batch", decide)


@pytest.fixture
def public(anvil_env: Env) -> Iterator[FaultyRpc]:
    upstream = str(anvil_env.w3.provider.endpoint_uri)  # type: ignore[attr-defined]
    with FaultyRpc(upstream, secret=PUBLIC_SECRET) as proxy:
        yield proxy


@pytest.fixture
def relay_for(anvil_env: Env) -> Iterator[Callable[[str], LocalRelay]]:
    upstream = str(anvil_env.w3.provider.endpoint_uri)  # type: ignore[attr-defined]
    started: list[LocalRelay] = []

    def start(mode: str) -> LocalRelay:
        relay = LocalRelay(upstream, mode).__enter__()
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.__exit__()


def keeper_on(
    env: Env, public: FaultyRpc, clock: FakeClock, tmp_path: Path, **settings: str
) -> KeeperService:
    retry = RetryPolicy(sleep=clock.sleep, clock=clock.now)
    w3 = connect(public.url, 31337, timeout_s=5.0, retry=retry)
    service = build_local_service(w3, env.dep, tmp_path / "journal.sqlite", clock, **settings)
    service.start()
    return service


def releverage_due(market: Market, env: Env) -> None:
    """An 8 % fall, then a flat day: the carry vault re-levers (a rebalance that buys)."""
    move(market, env, 0.92, 0.92)
    move(market, env, 0.92, 0.92, hours=25.0)


def public_broadcasts(public: FaultyRpc) -> int:
    return public.received["eth_sendRawTransaction"]


def relever(report: TickReport, carry: str) -> Outcome:
    """The carry vault's outcomes in the re-lever tick: the sweep went first, publicly (HIGH),
    and was mined; the re-lever after it is returned."""
    outcomes = [o for o in report.outcomes if o.vault == carry]
    assert [o.function for o in outcomes] == ["repayDebt", "rebalance"]
    assert outcomes[0].status == "mined"
    return outcomes[1]


def assert_no_gap(env: Env, service: KeeperService, start_nonce: int) -> None:
    """Every intent ended; the chain's nonce count is the journal's included intents."""
    intents = service.journal.recent_intents(limit=500)
    assert service.journal.unfinished_intents() == []
    included = [i for i in intents if i.status in ("mined", "reverted")]
    assert env.nonce("latest") == start_nonce + len(included)
    assert env.nonce("pending") == env.nonce("latest")


def assert_no_secret(logs: str, tmp_path: Path) -> None:
    journal = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert journal
    for secret in SECRETS:
        assert secret.lower() not in logs.lower(), secret
        assert secret.lower() not in journal.decode("latin-1").lower(), secret


def the_rebalance(service: KeeperService, vault: str) -> Any:
    (intent,) = [i for i in service.journal.recent_intents(vault=vault) if i.kind == "rebalance"]
    return intent


@pytest.mark.usefixtures("non_urgent_rebalance")
def test_a_non_urgent_action_goes_to_the_relay_not_the_public_node_and_lands(
    anvil_env: Env,
    market: Market,
    clock: FakeClock,
    tmp_path: Path,
    public: FaultyRpc,
    relay_for: Callable[[str], LocalRelay],
    captured_logs: io.StringIO,
) -> None:
    env, carry = anvil_env, anvil_env.dep.vaults[1]
    relay = relay_for("forward")
    service = keeper_on(env, public, clock, tmp_path, PRIVATE_RPC_URL=relay.url)
    start_nonce = env.nonce("latest")
    releverage_due(market, env)
    report = service.tick()
    sweep, rebalance = report.actions[carry]
    assert (sweep.kind, sweep.urgency) == (ActionKind.REPAY, Urgency.HIGH)
    assert (rebalance.kind, rebalance.urgency) == (ActionKind.REBALANCE, Urgency.NORMAL)
    done = relever(report, carry)
    assert done.status == "mined"
    assert relay.hashes == [done.tx_hash]  # the relay had it ...
    assert public_broadcasts(public) == 1  # ... and the public node only the sweep
    intent = the_rebalance(service, carry)
    assert intent.status == "mined" and len(intent.transactions) == 1
    assert_no_gap(env, service, start_nonce)
    service.journal.close()
    logs = captured_logs.getvalue()
    assert "sent privately to http://127.0.0.1:" in logs and "/***" in logs
    assert_no_secret(logs, tmp_path)


@pytest.mark.usefixtures("non_urgent_rebalance")
def test_a_swallowed_action_goes_public_after_the_drop_window_and_lands_once(
    anvil_env: Env,
    market: Market,
    clock: FakeClock,
    tmp_path: Path,
    public: FaultyRpc,
    relay_for: Callable[[str], LocalRelay],
    captured_logs: io.StringIO,
) -> None:
    env, carry, balanced = anvil_env, anvil_env.dep.vaults[1], anvil_env.dep.vaults[0]
    relay = relay_for("swallow")
    service = keeper_on(env, public, clock, tmp_path, PRIVATE_RPC_URL=relay.url)
    start_nonce = env.nonce("latest")
    releverage_due(market, env)
    sent = relever(service.tick(), carry)
    assert sent.status == "pending" and sent.details["private_from"] is not None
    sent_at = int(sent.details["private_from"])
    assert relay.hashes == [sent.tx_hash] and public_broadcasts(public) == 1  # the sweep
    assert env.nonce("pending") == start_nonce + 1  # nobody public has it: the nonce is "open"

    # One block less than the window: still only the relay's; the vault gets nothing new.
    env.chain.mine(DEFAULT_PRIVATE_DROP_BLOCKS - 1 - (env.w3.eth.block_number - sent_at))
    clock.t += service.tick_deadline_s
    waiting = service.tick()
    assert env.w3.eth.block_number == sent_at + DEFAULT_PRIVATE_DROP_BLOCKS - 1
    assert [o for o in waiting.outcomes if o.vault == carry] == []
    assert public_broadcasts(public) == 1

    # The window is over: dropped, still wanted, the same signed bytes go public and land.
    env.chain.mine(1)
    clock.t += service.tick_deadline_s
    service.tick()  # the fallback's broadcast (anvil mines it at once) ...
    assert public_broadcasts(public) == 2
    receipt = env.w3.eth.get_transaction_receipt(sent.tx_hash)  # type: ignore[arg-type]
    assert receipt["blockNumber"] - sent_at == DEFAULT_PRIVATE_DROP_BLOCKS + 1
    clock.t += service.tick_deadline_s
    recorded = service.tick()  # ... whose receipt the next tick records, like any resumed one
    (landed,) = [o for o in recorded.outcomes if o.vault == carry and o.function == "rebalance"]
    assert landed.status == "mined" and landed.tx_hash == sent.tx_hash
    assert int(landed.details["block"]) == receipt["blockNumber"]
    assert public_broadcasts(public) == 2  # the same bytes, once
    intent = the_rebalance(service, carry)
    assert [t.status for t in intent.transactions] == ["mined"]  # once: one transaction
    assert relay.raw == [env.w3.eth.get_raw_transaction(sent.tx_hash).to_0x_hex()]  # type: ignore[arg-type]

    # Later actions land: a crash's deleverage (urgent: public), on the next nonce.
    move(market, env, 0.65, 0.70)
    clock.t += service.tick_deadline_s
    crash = service.tick()
    rescue = [o for o in crash.outcomes if o.vault == balanced and o.function in RISK_REDUCING]
    assert rescue and all(o.status == "mined" for o in rescue)
    assert relay.raw == [relay.raw[0]]  # the relay got nothing more
    assert_no_gap(env, service, start_nonce)
    service.journal.close()
    logs = captured_logs.getvalue()
    assert "dropped by the private relay" in logs and "still wanted" in logs
    assert_no_secret(logs, tmp_path)


def test_an_urgent_action_never_goes_private(
    anvil_env: Env,
    market: Market,
    clock: FakeClock,
    tmp_path: Path,
    public: FaultyRpc,
    relay_for: Callable[[str], LocalRelay],
) -> None:
    env, balanced = anvil_env, anvil_env.dep.vaults[0]
    relay = relay_for("forward")  # it would land them too: only where they went tells
    service = keeper_on(env, public, clock, tmp_path, PRIVATE_RPC_URL=relay.url)
    start_nonce = env.nonce("latest")
    move(market, env, 0.65, 0.70)
    report = service.tick()
    urgent = [a for acts in report.actions.values() for a in acts]
    assert urgent and all(a.urgency >= Urgency.HIGH for a in urgent)
    mined = [o for o in report.outcomes if o.status == "mined"]
    assert any(o.vault == balanced and o.function in RISK_REDUCING for o in mined)
    assert relay.raw == []
    assert public_broadcasts(public) == len(mined)
    assert_no_gap(env, service, start_nonce)


@pytest.mark.usefixtures("non_urgent_rebalance")
def test_an_urgent_action_behind_a_private_one_takes_its_nonce_at_once(
    anvil_env: Env,
    market: Market,
    clock: FakeClock,
    tmp_path: Path,
    public: FaultyRpc,
    relay_for: Callable[[str], LocalRelay],
) -> None:
    """The swallowed rebalance holds the nonce below the deleverage. Before the deleverage is
    broadcast, that nonce is made public: here by the no-op, since after the 20 % fall the
    rebalance no longer simulates (its perp limit price is out of the market) and, sent as it
    was, would revert on chain. The deleverage waits no drop window. (A private one that still
    simulates goes public as its own bytes: the drop test below takes that path.)"""
    env, carry, balanced = anvil_env, anvil_env.dep.vaults[1], anvil_env.dep.vaults[0]
    relay = relay_for("swallow")
    service = keeper_on(env, public, clock, tmp_path, PRIVATE_RPC_URL=relay.url)
    start_nonce = env.nonce("latest")
    releverage_due(market, env)
    sent = relever(service.tick(), carry)
    assert sent.status == "pending"
    nonce, head = int(sent.details["nonce"]), env.w3.eth.block_number
    move(market, env, 0.80, 0.80, hours=0.01)  # a fall: the balanced vault must deleverage
    clock.t += service.tick_deadline_s
    crash = service.tick()
    rescue = [o for o in crash.outcomes if o.vault == balanced and o.function in RISK_REDUCING]
    assert rescue and rescue[0].status == "mined"
    assert env.w3.eth.block_number - head < DEFAULT_PRIVATE_DROP_BLOCKS  # no window waited
    assert env.w3.eth.get_transaction(rescue[0].tx_hash)["nonce"] > nonce  # type: ignore[arg-type]
    clock.t += service.tick_deadline_s
    later = service.tick()  # what ended outside the wave is reported by the next tick
    (settled,) = [o for o in later.outcomes if o.vault == carry and o.function == "rebalance"]
    rebalance = the_rebalance(service, carry)
    no_ops = [i for i in service.journal.recent_intents(limit=500) if i.kind == GAP_FILL_KIND]
    assert settled.status == "failed" and "PerpMarketLimitPrice" in (settled.error or "")
    assert rebalance.status == "dropped"
    assert [(i.nonce, i.status) for i in no_ops] == [(nonce, "mined")]
    with pytest.raises(TransactionNotFound):
        env.w3.eth.get_transaction(sent.tx_hash)  # type: ignore[arg-type]
    # The crash tick's own non-urgent rebalance (the balanced vault's, private below the next
    # urgent send) still simulated: the same bytes the relay got went public and were mined.
    later_private = relay.hashes[1:]
    assert relay.hashes[0] == sent.tx_hash and later_private
    for tx_hash in later_private:
        assert env.w3.eth.get_transaction_receipt(tx_hash)["status"] == 1  # type: ignore[arg-type]
    assert_no_gap(env, service, start_nonce)


@pytest.mark.usefixtures("non_urgent_rebalance")
def test_a_dropped_action_no_longer_wanted_has_its_nonce_burned_by_the_no_op(
    anvil_env: Env,
    market: Market,
    clock: FakeClock,
    tmp_path: Path,
    public: FaultyRpc,
    relay_for: Callable[[str], LocalRelay],
    captured_logs: io.StringIO,
) -> None:
    env, carry, balanced = anvil_env, anvil_env.dep.vaults[1], anvil_env.dep.vaults[0]
    relay = relay_for("swallow")
    drop_blocks = 5
    service = keeper_on(
        env,
        public,
        clock,
        tmp_path,
        PRIVATE_RPC_URL=relay.url,
        PRIVATE_DROP_BLOCKS=str(drop_blocks),
    )
    start_nonce = env.nonce("latest")
    releverage_due(market, env)
    sent = relever(service.tick(), carry)
    assert sent.status == "pending"
    nonce = int(sent.details["nonce"])
    # Meanwhile the guardian pauses the vault: a re-levering rebalance now reverts.
    vault = env.w3.eth.contract(
        address=Web3.to_checksum_address(carry), abi=load_artifact("RiskVault").abi
    )
    vault.functions.pause().transact({"from": env.dep.accounts["guardian"]})
    env.chain.mine(drop_blocks)
    clock.t += service.tick_deadline_s
    report = service.tick()
    (dropped,) = [o for o in report.outcomes if o.vault == carry and o.function == "rebalance"]
    assert dropped.status == "failed" and dropped.details["dropped"] is True
    assert "VaultPausedRiskIncrease" in (dropped.error or "")
    intent = the_rebalance(service, carry)
    assert intent.status == "dropped" and [t.status for t in intent.transactions] == ["dropped"]
    (no_op,) = [i for i in service.journal.recent_intents(limit=500) if i.kind == GAP_FILL_KIND]
    assert no_op.nonce == nonce and no_op.status == "sent"  # journaled, then broadcast
    clock.t += service.tick_deadline_s
    recorded = service.tick()  # its receipt, like any resumed flight's, in the next tick
    assert [(o.status, o.tx_hash) for o in recorded.outcomes if o.function == GAP_FILL_KIND] == [
        ("mined", no_op.transactions[0].tx_hash)
    ]
    mined = env.w3.eth.get_transaction(no_op.transactions[0].tx_hash)  # type: ignore[arg-type]
    assert mined["to"] == mined["from"] == env.keeper and mined["value"] == 0
    assert mined["nonce"] == nonce
    assert public_broadcasts(public) == 2  # the sweep, the no-op; never the dropped bytes

    # Nothing is stuck above it: the crash's deleverage (pause never blocks it) lands next.
    move(market, env, 0.65, 0.70)
    clock.t += service.tick_deadline_s
    crash = service.tick()
    rescue = [o for o in crash.outcomes if o.vault == balanced and o.function in RISK_REDUCING]
    assert rescue and all(o.status == "mined" for o in rescue)
    assert_no_gap(env, service, start_nonce)
    service.journal.close()
    assert_no_secret(captured_logs.getvalue(), tmp_path)


@pytest.mark.usefixtures("non_urgent_rebalance")
def test_after_a_restart_a_private_action_goes_back_to_the_relay_not_public(
    anvil_env: Env,
    market: Market,
    clock: FakeClock,
    tmp_path: Path,
    public: FaultyRpc,
    relay_for: Callable[[str], LocalRelay],
) -> None:
    env, carry = anvil_env, anvil_env.dep.vaults[1]
    relay = relay_for("swallow")
    first = keeper_on(env, public, clock, tmp_path, PRIVATE_RPC_URL=relay.url)
    releverage_due(market, env)
    sent = relever(first.tick(), carry)
    assert sent.status == "pending" and relay.hashes == [sent.tx_hash]
    first.journal.close()  # the process dies with it in flight

    relay.mode = "forward"  # the relay lands what it is given from now on
    second = keeper_on(env, public, clock, tmp_path, PRIVATE_RPC_URL=relay.url)  # reconciles
    assert relay.hashes == [sent.tx_hash, sent.tx_hash]  # rebroadcast to the relay ...
    assert public_broadcasts(public) == 1  # ... never to the public node (it had the sweep)
    rebalance = the_rebalance(second, carry)
    assert rebalance.status == "mined" and [t.tx_hash for t in rebalance.transactions] == [
        sent.tx_hash
    ]
