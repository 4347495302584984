"""Operator notifications through apprise, received by a real HTTP server on a free loopback
port (``json://127.0.0.1:PORT/...`` posts apprise's JSON): the body of each event, the events a
tick report holds, secrets in the URLs masked in logs and messages, a dead or silent URL that
neither raises nor blocks the caller, rate limiting, and queue overflow counted."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from web3 import Web3

from keeper.errors import ConfigError
from keeper.logs import SecretFilter
from keeper.masking import mask_text
from keeper.notify import Notifier, register_notify_url
from keeper.service import TickReport
from keeper.tx.sender import Outcome
from tests.webhook import WAIT_S, Hook

VAULT_A = Web3.to_checksum_address("0x" + "a1" * 20)
VAULT_B = Web3.to_checksum_address("0x" + "b2" * 20)
VAULT_C = Web3.to_checksum_address("0x" + "c3" * 20)
SIGNER = Web3.to_checksum_address("0x" + "5e" * 20)
TX_1, TX_2 = "0x" + "aa" * 32, "0x" + "bb" * 32
WAD = 10**18


# ---------------------------------------------------------------------------------- helpers
@pytest.fixture
def dead_port() -> int:
    """A loopback port nothing listens on (bound, read, closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class StepClock:
    t: float = 1_800_000_000.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@dataclass
class Made:
    notifiers: list[Notifier] = field(default_factory=list)


@pytest.fixture
def make(clock: StepClock) -> Iterator[Callable[..., Notifier]]:
    made = Made()

    def build(urls: list[str], **kw: Any) -> Notifier:
        kw.setdefault("clock", clock)
        n = Notifier(urls, **kw)
        made.notifiers.append(n)
        return n

    yield build
    for n in made.notifiers:
        n.close(timeout_s=WAIT_S)


def notify_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "keeper.notify"]


# ---------------------------------------------------------------------------------- events
def test_each_event_posts_its_title_message_and_type(
    hook: Hook, make: Callable[..., Notifier]
) -> None:
    n = make([hook.url()])
    assert n.deleverage_sent(VAULT_A, "deleverage", TX_1, 1234, 1.05)
    assert n.action_failed(VAULT_A, "hedge", "reverted", "VaultSlippage(100, 90)")
    assert n.vault_halted(VAULT_B, "3 failed ticks in a row; last read: snapshot() reverted")
    assert n.lease_lost("keeper-2")
    assert n.gas_balance_low(SIGNER, 5 * 10**16, 10**17)
    assert n.flush(WAIT_S)
    got = hook.take(5)
    assert {path for path, _, _ in got} == {"/hook"}
    assert [{k: b[k] for k in ("title", "message", "type")} for _, _, b in got] == [
        {
            "title": f"keeper: deleverage sent for vault {VAULT_A}",
            "message": f"vault {VAULT_A}: deleverage mined in block 1234, tx {TX_1}; "
            "health before 1.050.",
            "type": "warning",
        },
        {
            "title": f"keeper: hedge reverted for vault {VAULT_A}",
            "message": f"vault {VAULT_A}: hedge ended reverted: VaultSlippage(100, 90).",
            "type": "failure",
        },
        {
            "title": f"keeper: vault {VAULT_B} halted",
            "message": f"vault {VAULT_B} halted: 3 failed ticks in a row; last read: "
            "snapshot() reverted. No action for it until the keeper is restarted.",
            "type": "failure",
        },
        {
            "title": "keeper: lease lost",
            "message": "this keeper lost its lease; now held by keeper-2.",
            "type": "warning",
        },
        {
            "title": f"keeper: gas balance low for {SIGNER}",
            "message": f"signer {SIGNER} holds 0.05 ETH, below the minimum 0.1 ETH; fund it.",
            "type": "warning",
        },
    ]
    assert n.stats.sent == 5 and n.stats.failed == 0


def test_from_tick_picks_deleverages_failures_and_new_halts(
    hook: Hook, make: Callable[..., Notifier]
) -> None:
    n = make([hook.url()], origin="keeper@31337")
    report = TickReport(block=100)
    report.snapshots = {VAULT_A: SimpleNamespace(health=WAD * 5 // 4)}  # type: ignore[dict-item]
    report.outcomes = [
        Outcome("mined", VAULT_A, "deleverage", TX_1, details={"block": 101}),
        Outcome("mined", VAULT_B, "repayDebt", TX_2, details={"block": 102}),  # no snapshot
        Outcome("mined", VAULT_A, "rebalance", TX_2, details={"block": 101}),
        Outcome("dry_run", VAULT_A, "deleverage"),
        Outcome("deferred", VAULT_A, "hedge"),
        Outcome("pending", VAULT_A, "hedge", TX_2),
        Outcome("failed", VAULT_A, "hedge", error="fee cap too low"),
        Outcome("reverted", VAULT_A, "rebalance", TX_2, error="VaultHealthTooLow"),
        Outcome("simulation_reverted", VAULT_B, "deleverage", error="VaultPaused()"),
        Outcome("timeout", VAULT_B, "hedge", TX_2, error="not mined after 3 replacements"),
    ]
    report.faults = {VAULT_B: "read: StaleDataError: snapshot() reverted"}
    halted = {VAULT_B: "3 failed ticks in a row", VAULT_C: "halted an hour ago"}
    assert n.from_tick(report, halted) == 7
    assert n.flush(WAIT_S)
    got = {b["title"]: b for b in hook.bodies(7)}
    assert sorted(got) == sorted(
        [
            f"keeper@31337: deleverage sent for vault {VAULT_A}",
            f"keeper@31337: repayDebt sent for vault {VAULT_B}",
            f"keeper@31337: hedge failed for vault {VAULT_A}",
            f"keeper@31337: rebalance reverted for vault {VAULT_A}",
            f"keeper@31337: deleverage simulation_reverted for vault {VAULT_B}",
            f"keeper@31337: hedge timeout for vault {VAULT_B}",
            f"keeper@31337: vault {VAULT_B} halted",
        ]
    )
    assert got[f"keeper@31337: deleverage sent for vault {VAULT_A}"]["message"] == (
        f"vault {VAULT_A}: deleverage mined in block 101, tx {TX_1}; health before 1.250."
    )
    assert got[f"keeper@31337: repayDebt sent for vault {VAULT_B}"]["message"].endswith(
        "health before unknown."
    )
    assert "VaultHealthTooLow" in got[f"keeper@31337: rebalance reverted for vault {VAULT_A}"][
        "message"
    ]


# ---------------------------------------------------------------------------------- secrets
USER_SECRET = "pw-USERSECRET-91"
PATH_SECRET = "PATHSECRET0123456789abcdef"
QUERY_SECRET = "QUERYSECRET-4f5e6d"
HEADER_SECRET = "HEADERSECRET-77aa"
SECRETS = (USER_SECRET, PATH_SECRET, QUERY_SECRET, HEADER_SECRET)


def secret_url(hook_or_port: Hook | int) -> str:
    port = hook_or_port.port if isinstance(hook_or_port, Hook) else hook_or_port
    return (
        f"json://ops:{USER_SECRET}@127.0.0.1:{port}/hook/{PATH_SECRET}"
        f"?-token={QUERY_SECRET}&+X-Api-Key={HEADER_SECRET}"
    )


def test_secrets_in_urls_reach_the_server_but_no_log_line_or_message(
    hook: Hook, dead_port: int, make: Callable[..., Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="apprise")  # apprise logs the URLs it loads
    caplog.set_level(logging.DEBUG, logger="keeper")
    n = make([secret_url(hook), secret_url(dead_port)])
    assert n.urls == [
        f"#1 json://***@127.0.0.1:{hook.port}/***",
        f"#2 json://***@127.0.0.1:{dead_port}/***",
    ]
    # An error text that quotes the webhook, as an HTTP library's message would.
    leak = f"POST {secret_url(hook)} failed; token {QUERY_SECRET} rejected"
    assert n.action_failed(VAULT_A, "hedge", "failed", leak)
    assert n.flush(WAIT_S)
    ((path, headers, body),) = hook.take(1)
    # The secrets did their job: the request carried them where the URL put them...
    assert path == f"/hook/{PATH_SECRET}?token={QUERY_SECRET}"
    assert headers["X-Api-Key"] == HEADER_SECRET
    assert headers["Authorization"].startswith("Basic ")
    # ...and the message itself holds none of them.
    assert body["message"].startswith(f"vault {VAULT_A}: hedge ended failed: POST ")
    assert "***" in body["message"]
    assert n.stats.sent == 1 and n.stats.failed == 1  # the dead URL's failure was logged
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Loaded JSON URL" in logged and "failed" in logged
    assert [r.getMessage() for r in notify_records(caplog)][0].startswith(
        f"notification 'keeper: hedge failed for vault {VAULT_A}' to "
        f"#2 json://***@127.0.0.1:{dead_port}/*** failed: failure"
    )
    for secret in SECRETS:
        assert secret not in logged
        assert secret not in json.dumps(body)


def test_the_logging_pipeline_masks_even_urllib3s_request_lines(
    hook: Hook, make: Callable[..., Notifier]
) -> None:
    """What `keeper run` does (keeper.logs: a SecretFilter on the handler), with every library
    at DEBUG: urllib3 writes the request path with the token in it; the line goes out masked."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(SecretFilter())
    root, urllib3 = logging.getLogger(), logging.getLogger("urllib3")
    levels = root.level, urllib3.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    urllib3.setLevel(logging.DEBUG)
    try:
        n = make([secret_url(hook)])
        assert n.vault_halted(VAULT_A, "test")
        assert n.flush(WAIT_S)
        hook.take(1)
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        urllib3.setLevel(levels[1])
    out = stream.getvalue()
    assert '"POST ***?token=*** HTTP/1.1" 200' in out  # urllib3's line, masked
    for secret in SECRETS:
        assert secret not in out


@pytest.mark.parametrize(
    ("url", "tokens"),
    [
        (
            "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#ops-alerts",
            ["T1JJ3T3L2", "A1BRTD4JD", "TIiajkdnlazkcOXrIdevi7FQ"],
        ),
        ("tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/-1001234567", ["123456789",
         "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "-1001234567"]),
        ("discord://112233445566778899/AbCdEfGhIjKlMnOpQrStUvWx", ["112233445566778899",
         "AbCdEfGhIjKlMnOpQrStUvWx"]),
        ("pagerduty://integrationKey9876@apiKey12345678/", ["integrationKey9876",
         "apiKey12345678"]),
        ("mailto://alerts:Sm7pPassw0rd@mail.example.com?to=ops@example.com", ["Sm7pPassw0rd"]),
    ],
)
def test_service_urls_have_their_tokens_registered(url: str, tokens: list[str]) -> None:
    """The tokens of service URLs sit where an http URL has its host (slack, discord, tgram,
    pagerduty): registered too, so the URL or any token alone is masked wherever it appears."""
    register_notify_url(url)
    text = mask_text(f"could not post to {url}: {' '.join(tokens)} refused")
    for token in tokens:
        assert token not in text


def test_a_service_url_is_shown_without_its_tokens(make: Callable[..., Notifier]) -> None:
    n = make(["tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/-1001234567"])
    assert n.urls == ["#1 tgram://***"]


def test_an_unknown_url_is_a_config_error_naming_the_entry_not_its_secret() -> None:
    with pytest.raises(ConfigError) as err:
        Notifier(["json://127.0.0.1:9/ok", "nosuchservice://SECRETTOKEN-0123456789/x"])
    assert str(err.value).startswith(
        "KEEPER_NOTIFY_URLS: entry 2 (#2 nosuchservice://***) is not a notification URL"
    )
    assert "SECRETTOKEN-0123456789" not in str(err.value)


# ---------------------------------------------------------------------------------- failure
def test_a_dead_url_never_raises_and_is_logged_once_per_interval(
    dead_port: int,
    make: Callable[..., Notifier],
    clock: StepClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="keeper")
    n = make([f"json://127.0.0.1:{dead_port}/hook"], min_interval_s=300)
    assert n.vault_halted(VAULT_A, "why")
    assert n.flush(WAIT_S)
    assert n.vault_halted(VAULT_B, "why")  # another event: sent, fails, not logged again
    assert n.flush(WAIT_S)
    assert n.stats.failed == 2
    assert len(notify_records(caplog)) == 1
    clock.t += 301
    assert n.vault_halted(VAULT_C, "why")
    assert n.flush(WAIT_S)
    lines = [r.getMessage() for r in notify_records(caplog)]
    assert len(lines) == 2
    assert f"#1 json://127.0.0.1:{dead_port}/*** failed: failure" in lines[0]
    assert "1 more failed since the last report" in lines[1]
    assert all(r.levelno == logging.WARNING for r in notify_records(caplog))


def test_a_silent_server_does_not_block_the_caller(
    hook: Hook, make: Callable[..., Notifier]
) -> None:
    """The server takes the request and holds it: the event call has returned while the send
    is still waiting for the answer."""
    hook.gate.clear()
    n = make([hook.url()], send_timeout_s=WAIT_S)
    assert n.vault_halted(VAULT_A, "why")  # returned...
    assert hook.arrived.wait(WAIT_S)  # ...and the server holds the request
    assert not hook.answered.is_set()
    assert (n.stats.sent, n.stats.failed) == (0, 0)  # the send is still in flight
    hook.gate.set()
    assert n.flush(WAIT_S)
    assert hook.answered.is_set()
    assert (n.stats.sent, n.stats.failed) == (1, 0)


def test_a_send_gives_up_at_its_timeout(hook: Hook, make: Callable[..., Notifier]) -> None:
    """A server that never answers: the background send fails at its timeout (a failure,
    counted), and the sender goes on with the next notice."""
    hook.gate.clear()
    n = make([hook.url()], send_timeout_s=0.5)
    assert n.vault_halted(VAULT_A, "why")
    assert n.flush(3.0)  # apprise's own socket timeouts are 4 s: ours bounded it
    assert not hook.answered.is_set()  # it gave up; the server never answered
    assert (n.stats.sent, n.stats.failed) == (0, 1)


# ---------------------------------------------------------------------------------- limits
def test_repeats_of_one_event_are_sent_once_per_interval(
    hook: Hook, make: Callable[..., Notifier], clock: StepClock
) -> None:
    n = make([hook.url()], min_interval_s=60)
    assert n.vault_halted(VAULT_A, "first")
    assert not n.vault_halted(VAULT_A, "again")  # same key: suppressed
    assert n.vault_halted(VAULT_B, "other vault")  # another key
    clock.t += 59.9
    assert not n.vault_halted(VAULT_A, "still")
    clock.t += 0.2
    assert n.vault_halted(VAULT_A, "after the interval")
    assert n.flush(WAIT_S)
    assert [b["message"].split(": ", 1)[1] for b in hook.bodies(3)] == [
        "first. No action for it until the keeper is restarted.",
        "other vault. No action for it until the keeper is restarted.",
        "after the interval. No action for it until the keeper is restarted.",
    ]
    assert hook.requests.empty()
    assert (n.stats.queued, n.stats.suppressed) == (3, 2)


def test_a_full_queue_drops_and_counts(
    hook: Hook, make: Callable[..., Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="keeper")
    hook.gate.clear()
    n = make([hook.url()], queue_size=3, send_timeout_s=WAIT_S)
    assert n.lease_lost("first")
    assert hook.arrived.wait(WAIT_S)  # the sender holds it: the queue is empty
    vaults = [Web3.to_checksum_address(f"0x{i:040x}") for i in range(1, 6)]
    assert [n.vault_halted(v, "why") for v in vaults] == [True, True, True, False, False]
    assert (n.stats.queued, n.stats.dropped) == (4, 2)
    assert [r.getMessage() for r in notify_records(caplog)] == [
        f"notification queue full (3 waiting): dropped 'keeper: vault {vaults[3]} halted'; "
        "1 dropped since start"
    ]  # the second drop, within the interval, is counted, not logged
    hook.gate.set()
    assert n.flush(WAIT_S)
    titles = [b["title"] for b in hook.bodies(4)]
    assert titles == ["keeper: lease lost"] + [f"keeper: vault {v} halted" for v in vaults[:3]]
    assert n.stats.sent == 4


def test_without_urls_nothing_is_sent_and_no_thread_starts(make: Callable[..., Notifier]) -> None:
    before = threading.active_count()
    n = make([])
    assert not n.enabled
    assert not n.vault_halted(VAULT_A, "why")
    assert n.flush(0.1)
    assert threading.active_count() == before
