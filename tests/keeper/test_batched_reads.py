"""A no-action tick on anvil in two HTTP round trips, counted at the HTTP session: the head
with the fee inputs, then every Multicall3 chunk at that head — and the same snapshots, fee
inputs and decisions as the same keeper reading one request at a time. Behind a gateway that
refuses batches the keeper notices once (one masked log line), reads one by one, and sees the
same snapshots; a batch lost in transit is read one by one that tick only."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from web3 import Web3
from web3.providers.rpc import HTTPProvider
from web3.types import RPCEndpoint

from keeper.chain import batch
from keeper.chain.connect import connect
from keeper.chain.reader import SnapshotReader
from keeper.chain.retry import RetryPolicy, install_read_retries
from keeper.devnet.service import build_local_service
from keeper.service import KeeperService, TickReport
from keeper.tx.fees import FeeAnswers, fee_requests, fetch_fee_inputs
from tests.keeper.conftest import Env, FakeClock
from tests.keeper.faulty_rpc import FaultyRpc

SECRET = "BATCHKEY5e6f7a8b"
#: A tick's first round trip: the head and the fee inputs.
HEAD_BATCH = ["eth_blockNumber", "eth_feeHistory", "eth_maxPriorityFeePerGas"]


class CountingSession(requests.Session):
    """Every HTTP POST a provider makes, as the list of JSON-RPC methods it carried."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False
        self.posts: list[list[str]] = []

    def post(self, url: Any, data: Any = None, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        body = json.loads(data)
        methods = [r["method"] for r in body] if isinstance(body, list) else [body["method"]]
        self.posts.append(methods)
        return super().post(url, data=data, **kwargs)


def counted_web3(url: str) -> tuple[Web3, CountingSession]:
    """An HTTP Web3 as `connect` builds it (eth_chainId cached, read retries), on a counter."""
    session = CountingSession()
    provider = HTTPProvider(
        url,
        session=session,
        exception_retry_configuration=None,
        cache_allowed_requests=True,
        cacheable_requests={RPCEndpoint("eth_chainId")},
    )
    w3 = Web3(provider)
    install_read_retries(w3)
    return w3, session


def keeper(
    env: Env, w3: Web3, clock: FakeClock, journal: Path, chunk_size: int = 1
) -> KeeperService:
    """A real keeper on `w3`; `chunk_size` 1 gives the two vaults a Multicall3 chunk each, so
    that the second round trip carries several eth_calls, as a big fleet's does."""
    built = build_local_service(w3, env.dep, journal, clock)
    service = KeeperService(
        w3,
        built.vaults,
        SnapshotReader(w3, chunk_size=chunk_size),
        built.sender,
        built.journal,
        built.clock,
        built.max_staleness_s,
        built.tick_deadline_s,
        built.expected_chain_id,
    )
    service.start()
    service.tick()  # the first tick bootstraps each feed's history: not a steady tick
    return service


def same_reading(a: TickReport, b: TickReport) -> None:
    assert a.error is None and b.error is None
    assert a.block == b.block
    assert a.snapshots == b.snapshots  # every field, the venue quotes included
    assert a.actions == b.actions
    assert all(actions == [] for actions in a.actions.values())  # a no-action tick


@pytest.fixture
def counted(anvil_env: Env) -> Iterator[tuple[Web3, CountingSession]]:
    yield counted_web3(str(anvil_env.w3.provider.endpoint_uri))  # type: ignore[attr-defined]


def test_a_no_action_tick_takes_two_round_trips_and_reads_the_same_values(
    anvil_env: Env,
    counted: tuple[Web3, CountingSession],
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    env, (w3, session) = anvil_env, counted
    w3_seq, session_seq = counted_web3(str(env.w3.provider.endpoint_uri))  # type: ignore[attr-defined]
    batch.turn_off(w3_seq.provider, "test: the keeper as it read before batching")
    batched = keeper(env, w3, clock, tmp_path / "batched.sqlite")
    one_by_one = keeper(env, w3_seq, clock, tmp_path / "sequential.sqlite")

    session.posts.clear()
    session_seq.posts.clear()
    report = batched.tick()
    reference = one_by_one.tick()

    assert len(session.posts) <= 2
    assert session.posts == [HEAD_BATCH, ["eth_call", "eth_call"]]
    # Before: one round trip per request, the same five requests.
    assert session_seq.posts == [[m] for m in HEAD_BATCH[:1] + ["eth_call"] * 2 + HEAD_BATCH[1:]]
    same_reading(report, reference)
    assert report.eth_calls == reference.eth_calls == 2

    # The fee inputs the costs used: from the batch, equal to the one-by-one read.
    history, priority = batch.post(w3, fee_requests())
    assert fetch_fee_inputs(w3, answers=FeeAnswers(history, priority)) == fetch_fee_inputs(w3_seq)
    batched.journal.close()
    one_by_one.journal.close()


def test_the_default_chunking_reads_two_vaults_in_two_round_trips(
    anvil_env: Env, counted: tuple[Web3, CountingSession], clock: FakeClock, tmp_path: Path
) -> None:
    w3, session = counted
    service = keeper(anvil_env, w3, clock, tmp_path / "journal.sqlite", chunk_size=50)
    session.posts.clear()
    report = service.tick()
    assert report.error is None
    # One chunk: a batch of one is the ordinary request (same round trip, its own retries).
    assert session.posts == [HEAD_BATCH, ["eth_call"]]
    service.journal.close()


class NoBatchGateway(FaultyRpc):
    """A gateway that answers every batch with one JSON-RPC error object, as hosted providers
    without batch support do; single requests are forwarded."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream, secret=SECRET)
        self.batches = 0

    def _forward(self, body: bytes) -> bytes:
        if isinstance(json.loads(body), list):
            self.batches += 1
            error = {"code": -32600, "message": "batch requests are not supported"}
            return json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode()
        return super()._forward(body)


def test_a_gateway_refusing_batches_is_noticed_once_and_read_one_by_one(
    anvil_env: Env,
    counted: tuple[Web3, CountingSession],
    clock: FakeClock,
    tmp_path: Path,
    captured_logs: io.StringIO,
) -> None:
    env, (w3, _) = anvil_env, counted
    direct = keeper(env, w3, clock, tmp_path / "direct.sqlite")
    upstream = str(env.w3.provider.endpoint_uri)  # type: ignore[attr-defined]
    with NoBatchGateway(upstream) as gateway:
        proxied = connect(gateway.url, 31337, retry=RetryPolicy(sleep=clock.sleep, clock=clock.now))
        refusing = keeper(env, proxied, clock, tmp_path / "refused.sqlite")
        assert gateway.batches == 1  # the first tick's head batch: refused, noticed
        reports = [(refusing.tick(), direct.tick()) for _ in range(2)]
        assert gateway.batches == 1  # never a batch again
        before = sum(gateway.received.values())
        refusing.tick()
        # One by one, as before batching: head, two chunks, fee history, priority fee.
        assert sum(gateway.received.values()) - before == 5
    for fallback, reference in reports:
        same_reading(fallback, reference)
    logs = captured_logs.getvalue()
    lines = [line for line in logs.splitlines() if "JSON-RPC batches off" in line]
    assert len(lines) == 1, lines
    assert "node error -32600: batch requests are not supported" in lines[0]
    assert "127.0.0.1" in lines[0] and SECRET not in logs
    direct.journal.close()
    refusing.journal.close()


def test_a_batch_lost_in_transit_is_read_one_by_one_that_tick_only(
    anvil_env: Env, counted: tuple[Web3, CountingSession], clock: FakeClock, tmp_path: Path
) -> None:
    env, (w3, _) = anvil_env, counted
    direct = keeper(env, w3, clock, tmp_path / "direct.sqlite")
    upstream = str(env.w3.provider.endpoint_uri)  # type: ignore[attr-defined]
    with FaultyRpc(upstream, secret=SECRET) as gateway:
        proxied = connect(gateway.url, 31337, retry=RetryPolicy(sleep=clock.sleep, clock=clock.now))
        service = keeper(env, proxied, clock, tmp_path / "flaky.sqlite")
        lost = {"drop_after", "http_502"}  # the head batch, then the chunks' batch
        with gateway.planned(lambda method, n: lost.pop() if method == "batch" and lost else None):
            flaky, reference = service.tick(), direct.tick()
        same_reading(flaky, reference)
        assert gateway.injected_total() == 2
        assert batch.refused(proxied.provider) is None  # transient: batching stays on
        before = gateway.received["batch"]
        steady, reference = service.tick(), direct.tick()
        same_reading(steady, reference)
        assert gateway.received["batch"] - before == 2  # both round trips batched again
    direct.journal.close()
    service.journal.close()
