"""JSON-RPC batches (keeper.chain.batch) against a scripted node: what a batch answers is read
exactly as web3 would have read it one by one, an element's error is the single request's
error, and a node refusing batches is noticed once and then never sent a batch again."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import requests
from web3 import Web3
from web3.providers.base import BaseProvider, JSONBaseProvider
from web3.types import RPCEndpoint, RPCResponse

from keeper.chain import batch
from keeper.chain.reader import SnapshotReader
from keeper.chain.retry import RetryPolicy, install_read_retries
from keeper.errors import ChainReadError
from keeper.tx.fees import FeeAnswers, fee_requests, fetch_fee_inputs

#: aggregate3's answer for two calls: (true, 0x2a) and (false, 0x) — any valid ABI will do.
AGGREGATE_ANSWER = (
    "0x" + Web3().codec.encode(["(bool,bytes)[]"], [[(True, b"*"), (False, b"")]]).hex()
)
FEE_HISTORY = {
    "oldestBlock": "0x1d",
    "baseFeePerGas": [
        "0x3b9aca00",
        "0x3b9aca07",
        "0x3b9ac9f1",
        "0x3b9ac9ff",
        "0x3b9aca11",
        "0x3b9aca3c",
    ],
    "gasUsedRatio": [0.5, 0.51, 0.49, 0.5, 0.52],
    "reward": [["0x0"], ["0x5f5e100"], ["0x77359400"], ["0x3b9aca00"], ["0x0"]],
}

Reply = Callable[[str, list[Any]], dict[str, Any]]


def node_reply(method: str, params: list[Any]) -> dict[str, Any]:
    results = {
        "eth_chainId": "0x7a69",
        "eth_blockNumber": "0x21",
        "eth_feeHistory": FEE_HISTORY,
        "eth_maxPriorityFeePerGas": "0x3b9aca00",
        "eth_call": AGGREGATE_ANSWER,
    }
    return {"result": results[method]}


class ScriptedNode(JSONBaseProvider):
    """Answers singles with `reply`, batches with `batch_reply` (default: `reply` per element,
    ids in order); counts what it was sent."""

    def __init__(self, reply: Reply = node_reply, batch_reply: Callable[..., Any] | None = None):
        super().__init__()
        self.reply = reply
        self.batch_reply = batch_reply
        self.singles: Counter[str] = Counter()
        self.batches: list[list[str]] = []

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        self.singles[method] += 1
        return {"jsonrpc": "2.0", "id": 1, **self.reply(method, list(params))}  # type: ignore[typeddict-item]

    def make_batch_request(self, requests: list[tuple[RPCEndpoint, Any]]) -> Any:
        self.batches.append([m for m, _ in requests])
        if self.batch_reply is not None:
            return self.batch_reply(requests)
        return [
            {"jsonrpc": "2.0", "id": i, **self.reply(m, list(p))}
            for i, (m, p) in enumerate(requests)
        ]


def web3_on(node: BaseProvider) -> Web3:
    w3 = Web3(node)
    install_read_retries(w3, RetryPolicy(sleep=lambda s: None))
    return w3


def reader_calls() -> list[list[tuple[str, bytes]]]:
    target = "0x" + "11" * 20
    return [[(target, b"\x01"), (target, b"\x02")], [(target, b"\x03"), (target, b"\x04")]]


def test_two_chunks_ride_in_one_batch_and_decode_as_one_by_one() -> None:
    batched, single = ScriptedNode(), ScriptedNode()
    w3_batched, w3_single = web3_on(batched), web3_on(single)
    batch.turn_off(single, "test: one by one")
    got = SnapshotReader(w3_batched).aggregate_many(reader_calls(), 33)
    want = SnapshotReader(w3_single).aggregate_many(reader_calls(), 33)
    assert got == want == [[(True, b"*"), (False, b"")]] * 2
    assert batched.batches == [["eth_call", "eth_call"]] and batched.singles["eth_call"] == 0
    assert single.batches == [] and single.singles["eth_call"] == 2


def test_fee_inputs_from_a_batch_equal_web3s_own_read() -> None:
    node = ScriptedNode()
    w3 = web3_on(node)
    history, priority = batch.post(w3, fee_requests())
    from_batch = fetch_fee_inputs(w3, answers=FeeAnswers(history, priority))
    assert node.singles["eth_feeHistory"] == 0 and node.singles["eth_maxPriorityFeePerGas"] == 0
    one_by_one = fetch_fee_inputs(w3)
    assert from_batch == one_by_one
    # Hand-read from FEE_HISTORY: the 6th base fee is the next block's; the non-zero rewards.
    assert from_batch.base_fee == 0x3B9ACA3C
    assert from_batch.priority_samples == (0, 100_000_000, 2_000_000_000, 1_000_000_000, 0)
    assert from_batch.fallback_priority == 1_000_000_000
    assert from_batch.block == 0x1D + 4


@pytest.mark.parametrize(
    "error",
    [
        {"code": -32000, "message": "header not found"},  # transient: retried, then given up
        {"code": 3, "message": "execution reverted", "data": "0x"},  # an answer: not retried
        {"code": -32602, "message": "invalid argument 1: hex string without 0x prefix"},
    ],
)
def test_an_elements_error_is_the_single_requests_error(error: dict[str, Any]) -> None:
    """The node fails every eth_call with `error`, in a batch and alone: the read raises the
    very ChainReadError (text and retryability) it raises with batching off."""

    def reply(method: str, params: list[Any]) -> dict[str, Any]:
        return {"error": error} if method == "eth_call" else node_reply(method, params)

    outcomes = []
    for on in (True, False):
        node = ScriptedNode(reply)
        if not on:
            batch.turn_off(node, "test: one by one")
        with pytest.raises(ChainReadError) as caught:
            SnapshotReader(web3_on(node)).aggregate_many(reader_calls(), 33)
        outcomes.append((str(caught.value), caught.value.retryable, node.singles["eth_call"]))
        assert len(node.batches) == (1 if on else 0)
    assert outcomes[0] == outcomes[1]
    retried = error["code"] == -32000
    assert outcomes[0][2] == (4 if retried else 1)  # the first call's attempts; then it raised


def test_one_failed_element_is_asked_again_alone_and_the_rest_is_used() -> None:
    def batch_reply(requests: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i, (m, p) in enumerate(requests):
            part = (
                {"error": {"code": -32000, "message": "header not found"}}
                if i == 1
                else node_reply(m, p)
            )
            out.append({"jsonrpc": "2.0", "id": i, **part})
        return out

    node = ScriptedNode(batch_reply=batch_reply)
    got = SnapshotReader(web3_on(node)).aggregate_many(reader_calls(), 33)
    assert got == [[(True, b"*"), (False, b"")]] * 2
    assert node.singles["eth_call"] == 1  # only the failed element, alone
    assert batch.refused(node) is None  # one element's error says nothing about batches


def refusal(requests: list[tuple[str, Any]]) -> dict[str, Any]:
    error = {"code": -32600, "message": "batch requests are not supported"}
    return {"jsonrpc": "2.0", "id": None, "error": error}


def every_element_refused(requests: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    error = {"code": -32601, "message": "the method batch does not exist/is not available"}
    return [{"jsonrpc": "2.0", "id": i, "error": error} for i in range(len(requests))]


def too_few_answers(requests: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    return [{"jsonrpc": "2.0", "id": 0, "result": "0x21"}]


def http_413(requests: list[tuple[str, Any]]) -> Any:
    response = requests_response(413, b"Request Entity Too Large")
    raise requests.HTTPError("413 Client Error", response=response)


def requests_response(status: int, body: bytes) -> requests.Response:
    response = requests.Response()
    response.status_code, response._content = status, body
    return response


@pytest.mark.parametrize("batch_reply", [refusal, every_element_refused, too_few_answers, http_413])
def test_a_refused_batch_turns_batching_off_once_with_one_log_line(
    batch_reply: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    node = ScriptedNode(batch_reply=batch_reply)
    w3 = web3_on(node)
    reader = SnapshotReader(w3)
    with caplog.at_level(logging.INFO, logger="keeper.chain.batch"):
        first = reader.aggregate_many(reader_calls(), 33)
        second = reader.aggregate_many(reader_calls(), 33)
    assert first == second == [[(True, b"*"), (False, b"")]] * 2
    assert len(node.batches) == 1  # detected once: the second read sent no batch
    assert node.singles["eth_call"] == 4  # both reads one by one
    assert batch.refused(node) is not None
    lines = [r.getMessage() for r in caplog.records if "batches off" in r.getMessage()]
    assert len(lines) == 1


@pytest.mark.parametrize(
    "failure",
    [
        requests.ConnectionError("connection reset by peer"),
        requests.HTTPError("502", response=requests_response(502, b"<html>bad gateway</html>")),
    ],
)
def test_a_transient_batch_failure_reads_one_by_one_this_time_only(failure: Exception) -> None:
    fail = [True]

    def batch_reply(requests: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        if fail.pop() if fail else False:
            raise failure
        return [
            {"jsonrpc": "2.0", "id": i, **node_reply(m, p)} for i, (m, p) in enumerate(requests)
        ]

    node = ScriptedNode(batch_reply=batch_reply)
    reader = SnapshotReader(web3_on(node))
    assert reader.aggregate_many(reader_calls(), 33) == reader.aggregate_many(reader_calls(), 33)
    assert len(node.batches) == 2  # batched again after the failure
    assert node.singles["eth_call"] == 2  # the failed batch's two calls, one by one
    assert batch.refused(node) is None


def test_a_provider_without_batches_is_read_one_by_one() -> None:
    class Plain(BaseProvider):
        def __init__(self) -> None:
            super().__init__()
            self.sent: Counter[str] = Counter()

        def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
            self.sent[method] += 1
            return {"jsonrpc": "2.0", "id": 1, **node_reply(method, list(params))}  # type: ignore[typeddict-item]

    plain = Plain()
    got = SnapshotReader(web3_on(plain)).aggregate_many(reader_calls(), 33)
    assert got == [[(True, b"*"), (False, b"")]] * 2
    assert plain.sent["eth_call"] == 2
    assert batch.refused(plain) == "Plain does not batch"


def test_a_single_request_is_never_batched_and_big_ones_are_split() -> None:
    node = ScriptedNode()
    w3 = web3_on(node)
    assert batch.post(w3, [("eth_blockNumber", [])]) == [None]
    assert node.batches == []
    n = batch.MAX_BATCH_REQUESTS + 3
    answers = batch.post(w3, [("eth_blockNumber", [])] * n)
    assert [len(b) for b in node.batches] == [batch.MAX_BATCH_REQUESTS, 3]
    assert [batch.hex_int(a) for a in answers] == [0x21] * n
