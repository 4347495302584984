"""The keeper behind an RPC that fails mid-run, on anvil: the action lands exactly once and the
URL's API key appears in no log line and nowhere in the journal file.

The RPC URL is ``http://127.0.0.1:PORT/v3/SECRETKEY123`` (a hosted provider's shape: the key in
the path), served by a loopback proxy in front of anvil (`faulty_rpc.FaultyRpc`). The keeper is
connected the production way (`connect`: masking registered, read retries on, web3's own
retries off) and started while the proxy is healthy; then the market crashes and the proxy
starts failing. A third of the reads are dropped, 502'd, answered with HTML, "header not found"
or 429. The first tick's two actions go out in one wave (automine on):

1. the balanced vault's repayment is forwarded and its reply dropped — the node took it, so it
   is "maybe sent" — and the next four receipt reads fail too, so confirmation rebroadcasts it
   and anvil answers "nonce too low": the sender finds its own receipt and records it mined;
2. the other vault's hedge is dropped before forwarding — the node never saw it — and its
   rebroadcast is forwarded and answered 502: it lands on that rebroadcast.

Then one tick runs in a full outage (a gateway answering 502 for everything), and one where
the gateway fails right after the tick has read its block. Logging is at DEBUG, web3 and
urllib3 included — the loudest quoters of URLs — so the scan covers everything they could
write.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from keeper.chain.connect import connect
from keeper.chain.retry import RetryPolicy
from keeper.devnet.market import Market
from keeper.devnet.service import build_local_service
from keeper.service import KeeperService
from tests.keeper.conftest import Env, FakeClock, move
from tests.keeper.faulty_rpc import FaultyRpc

SECRET = "SECRETKEY123"
#: What the crash below makes the keeper send for the balanced vault (as in test_transactions).
RISK_REDUCING = ("deleverage", "repayDebt")
#: Faults for a read, in turn, on every third request while flaky.
READ_FAULTS = ("drop_before", "http_502", "html", "header_not_found", "drop_after", "http_429")
#: Faults for the 1st, 2nd, 3rd ... broadcast while flaky (then none): see the module docstring.
BROADCAST_FAULTS = ("drop_after", "drop_before", None, "http_502_after")
#: Receipt reads failed after the first broadcast: the read-retry middleware's four attempts.
RECEIPT_BLACKOUT = 4


class Weather:
    """The proxy's plan: 'clear', 'flaky', 'outage' or 'outage_mid' (`clear_left` requests
    answered, then 502s)."""

    def __init__(self) -> None:
        self.mode = "clear"
        self.reads = 0
        self.broadcasts = 0
        self.blackout = 0
        self.clear_left = 0

    def __call__(self, method: str, n: int) -> str | None:
        if self.mode == "clear":
            return None
        if self.mode == "outage":
            return "http_502"  # a gateway in front of a node that is down
        if self.mode == "outage_mid":  # the tick reads its block, then the gateway fails
            self.clear_left -= 1
            return None if self.clear_left >= 0 else "http_502"
        if method == "eth_sendRawTransaction":
            self.broadcasts += 1
            i = self.broadcasts - 1
            if i == 0:
                self.blackout = RECEIPT_BLACKOUT
            return BROADCAST_FAULTS[i] if i < len(BROADCAST_FAULTS) else None
        if method == "eth_getTransactionReceipt" and self.blackout > 0:
            self.blackout -= 1
            return "http_502"
        self.reads += 1
        if self.reads % 3 == 1:
            return READ_FAULTS[(self.reads // 3) % len(READ_FAULTS)]
        return None


def secret_count(text: str) -> int:
    return text.lower().count(SECRET.lower())


def test_flaky_rpc_mid_run_lands_the_action_once_and_leaks_no_secret(
    anvil_env: Env,
    market: Market,
    clock: FakeClock,
    tmp_path: Path,
    captured_logs: io.StringIO,
) -> None:
    env, balanced = anvil_env, anvil_env.dep.vaults[0]
    upstream = str(env.w3.provider.endpoint_uri)  # type: ignore[attr-defined]
    weather = Weather()
    with FaultyRpc(upstream, secret=SECRET) as proxy, proxy.planned(weather):
        assert SECRET in proxy.url
        retry = RetryPolicy(sleep=clock.sleep, clock=clock.now)
        w3 = connect(proxy.url, 31337, timeout_s=5.0, retry=retry)
        journal = tmp_path / "journal.sqlite"
        service = build_local_service(w3, env.dep, journal, clock, TX_TIMEOUT="5")
        service.start()
        start_nonce = env.nonce("latest")

        move(market, env, 0.65, 0.70)  # the crash: the balanced vault must deleverage
        reports = []
        for mode in ("flaky", "outage", "outage_mid", "flaky", "flaky"):
            weather.mode, weather.clear_left = mode, 2
            reports.append(service.tick())  # a non-KeeperError here would fail the test
        weather.mode = "clear"

        # The faults happened, each kind of them.
        for fault in READ_FAULTS:
            assert proxy.injected_total(fault) > 0, fault
        assert proxy.injected_total("drop_after", "eth_sendRawTransaction") == 1
        assert proxy.injected_total("drop_before", "eth_sendRawTransaction") == 1
        assert proxy.injected_total("http_502_after", "eth_sendRawTransaction") == 1
        assert proxy.injected_total("http_502", "eth_getTransactionReceipt") >= RECEIPT_BLACKOUT
        assert weather.broadcasts >= len(BROADCAST_FAULTS)
        # The outage tick failed in one masked line; the flaky ones did not fail at all.
        assert [r.error is None for r in reports] == [True, False, False, True, True]
        assert "eth_blockNumber failed after 4 attempts in 0.7s" in (reports[1].error or "")
        assert "failed after 4 attempts in 0.7s: HTTP 502 (HTML page)" in (reports[2].error or "")

        # Exactly once: one risk-reducing intent for the vault, mined; every intent ended mined
        # (the maybe-sent ones included), each consumed one nonce, nothing else was sent.
        intents = service.journal.recent_intents(limit=500)
        landed = [i for i in intents if i.status == "mined"]
        assert [i.status for i in intents] == ["mined"] * len(intents)
        risk = [i for i in landed if i.vault == balanced and i.kind in RISK_REDUCING]
        assert len(risk) == 1
        assert env.nonce("latest") == start_nonce + len(landed)
        assert env.nonce("pending") == env.nonce("latest")  # no nonce gap
        assert service.journal.unfinished_intents() == []
        after = service.read_now()[balanced]
        assert after.health >= after.mandate.min_health
        service.journal.close()

    logs = captured_logs.getvalue()
    assert "maybe sent" in logs and "retry 1 of 3" in logs  # the log saw the faults ...
    assert "used (node error -32003: nonce too low) by our own repayDebt" in logs
    assert "Making request HTTP. URI: http://127.0.0.1:" in logs  # ... and web3's URL lines
    assert secret_count(logs) == 0
    journal_bytes = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert len(journal_bytes) > 0
    assert secret_count(journal_bytes.decode("latin-1")) == 0


def test_proxy_refuses_a_url_without_the_key(anvil_env: Env) -> None:
    """The fault test's RPC really needs the secret path (the scan above is not vacuous)."""
    import requests

    upstream = str(anvil_env.w3.provider.endpoint_uri)  # type: ignore[attr-defined]
    with FaultyRpc(upstream, secret=SECRET) as proxy:
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
        wrong = proxy.url.replace(SECRET, "WRONG")
        assert requests.post(wrong, json=body, timeout=5).status_code == 404
        assert requests.post(proxy.url, json=body, timeout=5).json()["result"] == "0x7a69"


def test_a_nonce_taken_by_another_transaction_is_dropped_then_the_action_lands_once(
    anvil_env: Env, market: Market, clock: FakeClock, make_service: Callable[..., KeeperService]
) -> None:
    env, balanced = anvil_env, anvil_env.dep.vaults[0]
    service = make_service(TX_TIMEOUT="5")
    nonces = service.sender.nonces
    assert nonces is not None and nonces.next_nonce is not None
    start = env.nonce("latest")
    # Another process with the same key takes the nonce this keeper will hand out next.
    env.w3.eth.send_transaction(
        {"from": env.keeper, "to": env.keeper, "value": 0, "nonce": nonces.next_nonce}
    )
    move(market, env, 0.65, 0.70)
    first = service.tick()
    dropped = [o for o in first.outcomes if "used by another transaction" in (o.error or "")]
    assert len(dropped) == 1 and dropped[0].status == "failed"
    (intent,) = [i for i in service.journal.recent_intents() if i.status == "dropped"]
    assert [t.status for t in intent.transactions] == ["dropped"]
    assert intent.nonce == start
    for _ in range(3):  # the dropped action is decided again, on fresh state, and sent once
        service.tick()
    intents = service.journal.recent_intents(limit=100)
    mined = [i for i in intents if i.status == "mined"]
    assert {i.status for i in intents} == {"mined", "dropped"}
    assert len([i for i in mined if i.vault == balanced and i.kind in RISK_REDUCING]) == 1
    assert env.nonce("latest") == start + 1 + len(mined)  # the other's, then one per action
    assert env.nonce("pending") == env.nonce("latest")


def test_a_definite_refusal_frees_the_nonce_and_a_later_tick_sends_again(
    anvil_env: Env, market: Market, clock: FakeClock, make_service: Callable[..., KeeperService]
) -> None:
    env, balanced = anvil_env, anvil_env.dep.vaults[0]
    service = make_service(TX_TIMEOUT="5")
    start = env.nonce("latest")
    funds = env.w3.eth.get_balance(env.keeper)  # type: ignore[arg-type]
    env.rpc("anvil_setBalance", env.keeper, hex(10**9))  # not enough for any gas
    move(market, env, 0.65, 0.70)
    first = service.tick()
    refused = [o for o in first.outcomes if (o.error or "").startswith("broadcast refused")]
    assert refused and all(o.status == "failed" for o in refused)
    assert "insufficient funds" in (refused[0].error or "").lower()
    assert env.nonce("pending") == start  # nothing was taken ...
    assert service.sender.nonces is not None and service.sender.nonces.next_nonce == start
    env.rpc("anvil_setBalance", env.keeper, hex(funds))  # ... and the nonce is handed out again
    for _ in range(3):
        service.tick()
    mined = [i for i in service.journal.recent_intents(limit=100) if i.status == "mined"]
    assert len([i for i in mined if i.vault == balanced and i.kind in RISK_REDUCING]) == 1
    assert env.nonce("latest") == start + len(mined)
    assert env.nonce("pending") == env.nonce("latest")
