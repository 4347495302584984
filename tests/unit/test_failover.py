"""RPC failover over real loopback HTTP: which endpoint each request goes to, the chain-id check
on every switch, the cool-down back to the primary, broadcasts never resent when they may have
reached a node, and the attempts per read bounded by the retry policy alone.

Every endpoint is a `FaultyRpc` stub without upstream (it answers ``eth_chainId`` with its own
chain id and everything else with ``"0x1"``); retry pauses and the cool-down run on virtual time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from web3 import Web3
from web3.exceptions import ContractLogicError

from keeper.chain.connect import connect
from keeper.chain.failover import (
    PRIMARY_COOLDOWN_S,
    FailoverPolicy,
    FailoverProvider,
    current_endpoint,
    refused_before_sending,
)
from keeper.chain.retry import RetryPolicy
from keeper.errors import ChainReadError, ConfigError
from keeper.masking import mask_text
from tests.keeper.faulty_rpc import FaultyRpc

SECRETS = ("PRIMARYSECRET0001", "FALLBACKSECRET002", "FALLBACKSECRET003")
FAILOVER_LOGGER = "keeper.chain.failover"
BROADCAST = "eth_sendRawTransaction"


class VirtualTime:
    def __init__(self) -> None:
        self.t = 1_000.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds

    def now(self) -> float:
        return self.t


@pytest.fixture
def time_() -> VirtualTime:
    return VirtualTime()


@pytest.fixture
def stubs() -> Iterator[list[FaultyRpc]]:
    """Three endpoints on chain 1: the primary and two fallbacks."""
    rpcs = [FaultyRpc(upstream=None, secret=s, delay_s=0.6).start() for s in SECRETS]
    yield rpcs
    for rpc in rpcs:
        rpc.stop()


def port(rpc: FaultyRpc) -> str:
    return rpc.url.split(":")[2].split("/")[0]


def open_w3(
    time_: VirtualTime, primary: FaultyRpc, *fallbacks: FaultyRpc, timeout_s: float = 1.0, **kw: Any
) -> Web3:
    return connect(
        primary.url,
        1,
        timeout_s=timeout_s,
        retry=RetryPolicy(sleep=time_.sleep, clock=time_.now),
        fallback_urls=[f.url for f in fallbacks],
        failover=FailoverPolicy(clock=time_.now),
        **kw,
    )


def always(fault: str | None, only: str | None = None) -> Any:
    return lambda method, n: fault if only is None or method == only else None


def failover_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == FAILOVER_LOGGER]


def no_secret(text: str) -> bool:
    return not any(s.lower() in text.lower() for s in SECRETS)


# --- reads ---------------------------------------------------------------------------------------


def test_a_read_fails_over_and_the_retry_goes_to_the_fallback(
    stubs: list[FaultyRpc], time_: VirtualTime
) -> None:
    primary, fallback, _ = stubs
    w3 = open_w3(time_, primary, fallback)
    assert current_endpoint(w3) == f"primary http://127.0.0.1:{port(primary)}/***"
    with primary.planned(always("drop_before")):
        assert w3.eth.block_number == 1
        assert primary.received["eth_blockNumber"] == 1  # the failure ...
        assert fallback.received["eth_chainId"] == 1  # ... the switch's probe ...
        assert fallback.received["eth_blockNumber"] == 1  # ... and the retry, on the fallback
        assert time_.sleeps == [0.1]  # one retry pause, no sleep inside the failover
        assert current_endpoint(w3) == f"fallback 1 http://127.0.0.1:{port(fallback)}/***"
        assert w3.eth.block_number == 1  # the next read goes straight to the fallback
    assert primary.received["eth_blockNumber"] == 1
    assert fallback.received["eth_blockNumber"] == 2


@pytest.mark.parametrize("fault", ["http_502", "html", "http_429", "header_not_found"])
def test_a_transient_answer_switches_too(
    stubs: list[FaultyRpc], time_: VirtualTime, fault: str
) -> None:
    primary, fallback, _ = stubs
    w3 = open_w3(time_, primary, fallback)
    with primary.planned(always(fault)):
        assert w3.eth.block_number == 1
    assert (primary.received["eth_blockNumber"], fallback.received["eth_blockNumber"]) == (1, 1)
    assert current_endpoint(w3).startswith("fallback 1 ")


def test_a_final_answer_does_not_switch(stubs: list[FaultyRpc], time_: VirtualTime) -> None:
    primary, fallback, _ = stubs
    w3 = open_w3(time_, primary, fallback)
    to = Web3.to_checksum_address("0x" + "11" * 20)
    with primary.planned(always("reverted")), pytest.raises(ContractLogicError):
        w3.eth.call({"to": to, "data": "0x"})
    assert primary.received["eth_call"] == 1  # a revert is an answer: not retried ...
    assert fallback.requests == 0  # ... and no reason to leave the primary
    assert current_endpoint(w3).startswith("primary ")


def test_attempts_per_read_are_the_retry_policys_whatever_the_endpoints(
    stubs: list[FaultyRpc], time_: VirtualTime
) -> None:
    w3 = open_w3(time_, *stubs)
    for rpc in stubs:  # every endpoint fails the read (its chain id probe still answers)
        rpc.plan = always("http_502", only="eth_blockNumber")
    with pytest.raises(ChainReadError, match="eth_blockNumber failed after 4 attempts"):
        w3.eth.block_number  # noqa: B018 - the property is the request
    reads = [rpc.received["eth_blockNumber"] for rpc in stubs]
    assert reads == [2, 1, 1]  # 4 = RetryPolicy.attempts, round the rotation
    probes = sum(rpc.received["eth_chainId"] for rpc in stubs) - 1  # less connect's
    assert probes == 4  # one switch per failed attempt, each found its first candidate
    assert time_.sleeps == [0.1, 0.2, 0.4]


# --- the chain-id check on every switch ----------------------------------------------------------


def test_an_endpoint_on_another_chain_is_refused_on_switch_once(
    stubs: list[FaultyRpc], time_: VirtualTime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=FAILOVER_LOGGER)
    primary, wrong, good = stubs
    w3 = open_w3(time_, primary, wrong, good)
    wrong.chain_id = 5  # its URL now leads to another chain (a load balancer's mistake)
    with primary.planned(always("http_502")):
        assert w3.eth.block_number == 1
    assert current_endpoint(w3).startswith("fallback 2 ")
    assert (wrong.received["eth_chainId"], wrong.received["eth_blockNumber"]) == (1, 0)
    provider = w3.provider
    assert isinstance(provider, FailoverProvider)
    assert [e.name for e in provider.excluded] == [f"fallback 1 http://127.0.0.1:{port(wrong)}/***"]
    with good.planned(always("http_502")):  # the next switch skips it: back round to the primary
        assert w3.eth.block_number == 1
    assert current_endpoint(w3).startswith("primary ")
    assert wrong.received["eth_chainId"] == 1
    excluded = [line for line in failover_lines(caplog) if "taken out of rotation" in line]
    assert excluded == [
        f"RPC fallback 1 http://127.0.0.1:{port(wrong)}/*** is on chain 5, not chain 1: "
        "taken out of rotation"
    ]
    assert all(no_secret(line) for line in failover_lines(caplog))


def test_no_usable_candidate_keeps_the_current_endpoint(
    stubs: list[FaultyRpc], time_: VirtualTime
) -> None:
    primary, fallback, _ = stubs
    w3 = open_w3(time_, primary, fallback)
    fallback.stop()
    with primary.planned(always("http_502", only="eth_blockNumber")):
        with pytest.raises(ChainReadError, match="after 4 attempts"):
            w3.eth.block_number  # noqa: B018
    assert primary.received["eth_blockNumber"] == 4
    assert current_endpoint(w3).startswith("primary ")


# --- back to the primary -------------------------------------------------------------------------


def test_back_to_the_primary_after_the_cool_down(
    stubs: list[FaultyRpc], time_: VirtualTime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=FAILOVER_LOGGER)
    primary, fallback, _ = stubs
    w3 = open_w3(time_, primary, fallback)
    primary.stop()
    assert w3.eth.block_number == 1
    assert current_endpoint(w3).startswith("fallback 1 ")
    left_at, seen = time_.t, primary.requests
    primary.restart()  # healthy again, but the cool-down has not passed
    time_.t = left_at + PRIMARY_COOLDOWN_S - 1
    assert w3.eth.block_number == 1
    assert primary.requests == seen and current_endpoint(w3).startswith("fallback 1 ")
    time_.t = left_at + PRIMARY_COOLDOWN_S
    assert w3.eth.block_number == 1
    assert current_endpoint(w3).startswith("primary ")
    assert (primary.received["eth_chainId"], primary.received["eth_blockNumber"]) == (2, 1)
    assert any("back to primary" in line for line in failover_lines(caplog))


def test_a_primary_still_down_after_the_cool_down_is_probed_once_per_cool_down(
    stubs: list[FaultyRpc], time_: VirtualTime
) -> None:
    primary, fallback, _ = stubs
    w3 = open_w3(time_, primary, fallback)
    with primary.planned(always("http_502")):
        assert w3.eth.block_number == 1
        time_.t += PRIMARY_COOLDOWN_S
        for _ in range(3):
            assert w3.eth.block_number == 1
        assert primary.received["eth_chainId"] == 2  # connect's, then one probe
        time_.t += PRIMARY_COOLDOWN_S
        assert w3.eth.block_number == 1
        assert primary.received["eth_chainId"] == 3
    assert current_endpoint(w3).startswith("fallback 1 ")
    assert fallback.received["eth_blockNumber"] == 5


# --- broadcasts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "raised"),
    [
        ("drop_after", requests.ConnectionError),  # the node took it; the answer was lost
        ("drop_before", requests.ConnectionError),  # the request had left: nobody can tell
        ("http_502_after", requests.HTTPError),
        ("delay", requests.Timeout),
    ],
)
def test_a_broadcast_that_may_have_reached_a_node_is_raised_not_resent(
    stubs: list[FaultyRpc], time_: VirtualTime, fault: str, raised: type[BaseException]
) -> None:
    primary, fallback, _ = stubs
    w3 = open_w3(time_, primary, fallback, timeout_s=0.3)
    with primary.planned(always(fault, only=BROADCAST)), pytest.raises(raised):
        w3.eth.send_raw_transaction(b"\x02\x01")
    assert primary.received[BROADCAST] == 1
    assert fallback.received[BROADCAST] == 0  # never sent twice by the provider
    assert time_.sleeps == []  # nor retried by the middleware
    # ... but the switch happened: the sender's rebroadcast of the same bytes goes to the fallback
    assert current_endpoint(w3).startswith("fallback 1 ")
    assert w3.eth.send_raw_transaction(b"\x02\x01") == b"\x01"
    assert (primary.received[BROADCAST], fallback.received[BROADCAST]) == (1, 1)


def test_a_broadcast_refused_before_it_left_goes_to_the_next_endpoint(
    stubs: list[FaultyRpc], time_: VirtualTime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=FAILOVER_LOGGER)
    primary, fallback, spare = stubs
    w3 = open_w3(time_, primary, fallback, spare)
    primary.stop()  # connection refused: the request never left
    assert w3.eth.send_raw_transaction(b"\x02\x01") == b"\x01"
    assert fallback.received[BROADCAST] == 1 and spare.received[BROADCAST] == 0
    assert any("refused by primary" in line for line in failover_lines(caplog))
    assert all(no_secret(line) for line in failover_lines(caplog))
    fallback.stop()
    spare.stop()
    with pytest.raises(requests.ConnectionError):  # every endpoint refused: each tried once
        w3.eth.send_raw_transaction(b"\x02\x01")


def test_refused_before_sending_tells_a_refused_connection_from_a_dropped_one(
    stubs: list[FaultyRpc],
) -> None:
    primary = stubs[0]
    body = {"jsonrpc": "2.0", "id": 1, "method": BROADCAST, "params": ["0x0201"]}
    with primary.planned(always("drop_after")), pytest.raises(requests.ConnectionError) as dropped:
        requests.post(primary.url, json=body, timeout=2)
    assert not refused_before_sending(dropped.value)
    primary.stop()
    with pytest.raises(requests.ConnectionError) as refused:
        requests.post(primary.url, json=body, timeout=2)
    assert refused_before_sending(refused.value)
    assert not refused_before_sending(requests.ReadTimeout("read timed out"))
    assert refused_before_sending(requests.ConnectTimeout("connect timed out"))


# --- connect() -----------------------------------------------------------------------------------


def test_connect_checks_the_primary_chain_and_answers_the_chain_id_from_memory(
    stubs: list[FaultyRpc], time_: VirtualTime
) -> None:
    primary, fallback, _ = stubs
    primary.chain_id = 5
    with pytest.raises(ChainReadError) as info:
        open_w3(time_, primary, fallback, chain_id_setting="KEEPER_CHAIN_ID")
    assert str(info.value) == (
        f"KEEPER_CHAIN_ID: expected chain 1, but RPC http://127.0.0.1:{port(primary)}/*** is on "
        "chain 5"
    )
    assert not info.value.retryable
    assert fallback.requests == 0  # a misconfigured primary is not papered over by a fallback
    primary.chain_id = 1
    w3 = open_w3(time_, primary, fallback)
    before = primary.received["eth_chainId"]
    assert [w3.eth.chain_id, w3.eth.chain_id] == [1, 1]
    assert primary.received["eth_chainId"] == before  # verified once, then answered locally


def test_connect_starts_on_a_fallback_while_the_primary_is_down(
    stubs: list[FaultyRpc], time_: VirtualTime
) -> None:
    primary, fallback, _ = stubs
    primary.stop()
    w3 = open_w3(time_, primary, fallback)
    assert current_endpoint(w3).startswith("fallback 1 ")
    primary.restart()
    time_.t += PRIMARY_COOLDOWN_S
    assert w3.eth.block_number == 1
    assert current_endpoint(w3).startswith("primary ")


def test_connect_fails_in_one_masked_line_when_no_endpoint_answers(
    stubs: list[FaultyRpc], time_: VirtualTime
) -> None:
    primary, fallback, other = stubs
    other.chain_id = 7
    primary.stop()
    with fallback.planned(always("http_502")), pytest.raises(ChainReadError) as info:
        open_w3(time_, primary, fallback, other, url_setting="KEEPER_RPC_URL")
    text = str(info.value)
    assert text.startswith("KEEPER_RPC_URL: no RPC endpoint reachable on chain 1: primary http")
    assert f"fallback 1 http://127.0.0.1:{port(fallback)}/*** (HTTP 502 (HTML page))" in text
    assert f"fallback 2 http://127.0.0.1:{port(other)}/*** (on chain 7)" in text
    assert info.value.retryable and no_secret(text)


def test_every_url_secret_is_registered_before_anything_is_sent(stubs: list[FaultyRpc]) -> None:
    fallback_url = stubs[1].url.replace(SECRETS[1], "LATEFALLBACKKEY0009")
    with pytest.raises(ChainReadError, match="is not an http"):
        connect("ftp://nowhere.invalid/x", fallback_urls=[fallback_url])
    assert "LATEFALLBACKKEY0009" not in mask_text(f"GET {fallback_url} failed")
    with pytest.raises(ChainReadError) as info:
        connect(stubs[0].url, fallback_urls=["ws://h/v3/WSKEY000000111"], fallback_setting="X")
    assert str(info.value) == "X: fallback RPC URL ws://h/*** is not an http(s) URL"
    with pytest.raises(ConfigError, match="listed more than once"):
        connect(stubs[0].url, fallback_urls=[stubs[0].url])
    assert stubs[0].requests == 0


def test_current_endpoint_without_failover_is_the_masked_url(stubs: list[FaultyRpc]) -> None:
    w3 = connect(stubs[0].url, 1, timeout_s=1.0)
    assert current_endpoint(w3) == f"http://127.0.0.1:{port(stubs[0])}/***"


@pytest.mark.parametrize(
    "bad", [{"cooldown_s": -1}, {"probe_timeout_s": 0}, {"cooldown_s": True}, {"cooldown_s": "1"}]
)
def test_failover_policy_is_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        FailoverPolicy(**bad)
