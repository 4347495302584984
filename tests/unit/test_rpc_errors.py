"""The one RPC error classifier, fed what web3 really raises.

Node errors are produced by web3 itself (a canned provider answers the JSON-RPC error object,
web3 turns it into its exception), with the texts geth, anvil, erigon, nethermind, besu and
reth send; transport errors come from a real HTTPProvider talking to a loopback server that
drops, delays, 502s or answers HTML — the requests exceptions are the ones web3 raises, URL
included, and no reason the classifier writes may repeat the URL's secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError, Web3RPCError
from web3.providers.base import BaseProvider
from web3.providers.rpc import HTTPProvider
from web3.types import RPCEndpoint, RPCResponse

from keeper.chain.rpc_errors import (
    RpcErrorKind,
    classify,
    classify_error_object,
    classify_http_status,
    is_nonce_too_low,
    normalise,
    read_failure,
)
from keeper.errors import ChainReadError, ConfigError
from keeper.journal import JournalError
from tests.keeper.faulty_rpc import FaultyRpc

K = RpcErrorKind
#: Not registered with the masker on purpose: the reasons must be clean without its help.
UNIT_SECRET = "UNITSECRETKEY987654"


class Canned(BaseProvider):
    """Answers every request with one JSON-RPC error (or raises one exception); eth_chainId
    (which web3's validation asks first) with anvil's chain id."""

    def __init__(self, answer: dict[str, Any] | BaseException) -> None:
        super().__init__()
        self.answer = answer

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        if method == "eth_chainId":
            return {"jsonrpc": "2.0", "id": 1, "result": "0x7a69"}
        if isinstance(self.answer, BaseException):
            raise self.answer
        return {"jsonrpc": "2.0", "id": 1, "error": self.answer}  # type: ignore[typeddict-item]

    def is_connected(self, show_traceback: bool = False) -> bool:
        return True


def raised_by_broadcast(error: dict[str, Any]) -> BaseException:
    w3 = Web3(Canned(error))
    with pytest.raises(Exception) as info:
        w3.eth.send_raw_transaction(b"\x02\x01")
    return info.value


def raised_by_call(error: dict[str, Any]) -> BaseException:
    w3 = Web3(Canned(error))
    with pytest.raises(Exception) as info:
        w3.eth.call({"to": Web3.to_checksum_address("0x" + "11" * 20), "data": "0x"})
    return info.value


#: (client, code, message, kind for a broadcast). Anvil's are copied from anvil 1.7.1 answers.
BROADCAST_ANSWERS = [
    ("anvil", -32003, "transaction already imported", K.ALREADY_KNOWN),
    ("anvil", -32003, "nonce too low", K.NONCE_TOO_LOW),
    ("anvil", -32003, "Insufficient funds for gas * price + value", K.DEFINITE_REFUSAL),
    ("anvil", -32003, "invalid chain id for signer", K.DEFINITE_REFUSAL),
    ("anvil", -32003, "max fee per gas less than block base fee", K.DEFINITE_REFUSAL),
    ("anvil", -32000, "intrinsic gas too low", K.DEFINITE_REFUSAL),
    (
        "anvil",
        -32000,
        "intrinsic gas too high -- tx.gas_limit > env.block.gas_limit",
        K.DEFINITE_REFUSAL,
    ),
    ("anvil", -32602, "Failed to decode transaction", K.DEFINITE_REFUSAL),
    ("geth", -32000, "already known", K.ALREADY_KNOWN),
    ("geth", -32000, "nonce too low: address 0xAbC, tx: 5 state: 7", K.NONCE_TOO_LOW),
    ("geth", -32000, "replacement transaction underpriced", K.DEFINITE_REFUSAL),
    ("geth", -32000, "transaction underpriced: tip needed 1, tip permitted 0", K.DEFINITE_REFUSAL),
    (
        "geth",
        -32000,
        "insufficient funds for gas * price + value: address 0xAbC have 0 want 21000",
        K.DEFINITE_REFUSAL,
    ),
    ("geth", -32000, "invalid sender", K.DEFINITE_REFUSAL),
    (
        "geth",
        -32000,
        "tx fee (1.50 ether) exceeds the configured cap (1.00 ether)",
        K.DEFINITE_REFUSAL,
    ),
    ("geth", -32000, "exceeds block gas limit", K.DEFINITE_REFUSAL),
    ("geth", -32000, "txpool is full", K.DEFINITE_REFUSAL),
    ("geth", -32000, "nonce too high", K.DEFINITE_REFUSAL),
    (
        "geth",
        -32000,
        "only replay-protected (EIP-155) transactions allowed over RPC",
        K.DEFINITE_REFUSAL,
    ),
    (
        "erigon",
        -32000,
        "fee cap less than block base fee: address 0xAbC, gasFeeCap: 1 baseFee: 7",
        K.DEFINITE_REFUSAL,
    ),
    ("nethermind", -32010, "AlreadyKnown", K.ALREADY_KNOWN),
    ("nethermind", -32010, "OldNonce, Current nonce: 5, nonce of rejected tx: 4", K.NONCE_TOO_LOW),
    (
        "nethermind",
        -32010,
        "InsufficientFunds, Account balance: 0, cumulative cost: 21000",
        K.DEFINITE_REFUSAL,
    ),
    ("nethermind", -32010, "FeeTooLow, MaxFeePerGas too low.", K.DEFINITE_REFUSAL),
    ("nethermind", -32010, "FeeTooLowToCompete", K.DEFINITE_REFUSAL),
    ("nethermind", -32010, "NonceGap, Future nonce.", K.DEFINITE_REFUSAL),
    ("besu", -32000, "Known transaction", K.ALREADY_KNOWN),
    ("besu", -32001, "Nonce too low", K.NONCE_TOO_LOW),
    ("besu", -32000, "NONCE_TOO_LOW", K.NONCE_TOO_LOW),
    ("besu", -32000, "TRANSACTION_ALREADY_KNOWN", K.ALREADY_KNOWN),
    ("besu", -32000, "Replacement transaction underpriced", K.DEFINITE_REFUSAL),
    ("besu", -32004, "Upfront cost exceeds account balance", K.DEFINITE_REFUSAL),
    ("besu", -32000, "Wrong chainId", K.DEFINITE_REFUSAL),
    ("besu", -32000, "Transaction fee cap exceeded", K.DEFINITE_REFUSAL),
    ("besu", -32000, "Intrinsic gas exceeds gas limit", K.DEFINITE_REFUSAL),
    (
        "reth",
        -32003,
        "insufficient funds for gas * price + value: have 0 want 1",
        K.DEFINITE_REFUSAL,
    ),
    # not an answer about the transaction: the node or its gateway could not answer now
    ("infura", -32005, "daily request count exceeded, request rate limited", K.MAYBE_SENT),
    ("infura", -32603, "Internal error", K.MAYBE_SENT),
    ("geth", -32000, "request timed out", K.MAYBE_SENT),
    ("gateway", -32000, "upstream connect error or disconnect/reset before headers", K.MAYBE_SENT),
    # nothing recognisable: a broadcast in doubt is kept (and logged as an error by the sender)
    ("someone", -32000, "something odd happened", K.UNKNOWN),
]


@pytest.mark.parametrize(
    "client, code, message, kind",
    BROADCAST_ANSWERS,
    ids=[f"{a[0]}:{a[2][:30]}" for a in BROADCAST_ANSWERS],
)
def test_broadcast_answers_as_web3_raises_them(
    client: str, code: int, message: str, kind: RpcErrorKind
) -> None:
    exc = raised_by_broadcast({"code": code, "message": message})
    assert isinstance(exc, Web3RPCError)
    fault = classify(exc, broadcast=True)
    assert fault.kind is kind, (client, message)
    assert fault.code == code
    assert message[:20] in fault.reason


@pytest.mark.parametrize(
    "code, message, kind",
    [
        (-32000, "header not found", K.RETRYABLE_READ),  # geth on a block it has not imported
        (-32000, "missing trie node 4d6f (path ) state 0xab is not available", K.RETRYABLE_READ),
        (
            -32602,
            "BlockOutOfRangeError: block height is 1 but requested was 1000000",
            K.RETRYABLE_READ,
        ),
        (-32005, "limit exceeded", K.RETRYABLE_READ),
        (-32603, "Internal error", K.RETRYABLE_READ),
        (-32001, "resource not found", K.RETRYABLE_READ),
        (-32601, "the method eth_foo does not exist/is not available", K.DEFINITE_REFUSAL),
        (
            -32602,
            "invalid argument 0: hex string has length 3, want 40 for common.Address",
            K.DEFINITE_REFUSAL,
        ),
        (-32000, "something odd happened", K.UNKNOWN),
    ],
)
def test_read_answers(code: int, message: str, kind: RpcErrorKind) -> None:
    exc = raised_by_call({"code": code, "message": message})
    assert classify(exc).kind is kind
    assert classify_error_object({"code": code, "message": message}).kind is kind


def test_reverts_are_answers_not_faults() -> None:
    custom = raised_by_call({"code": 3, "message": "execution reverted", "data": "0xdeadbeef"})
    assert isinstance(custom, ContractCustomError)
    assert classify(custom).kind is K.REVERTED
    plain = raised_by_call({"code": -32000, "message": "execution reverted"})
    assert isinstance(plain, ContractLogicError)
    assert classify(plain).kind is K.REVERTED
    # A revert said in answer to a broadcast would be a refusal (nodes do not simulate there).
    assert classify(plain, broadcast=True).kind is K.DEFINITE_REFUSAL
    # geth's estimateGas when no gas limit works
    fault = classify_error_object(
        {"code": -32000, "message": "gas required exceeds allowance (30)"}
    )
    assert fault.kind is K.REVERTED


# --- transport: a real HTTPProvider against a misbehaving loopback server ----------------------


@pytest.fixture(scope="module")
def server() -> Iterator[FaultyRpc]:
    with FaultyRpc(upstream=None, secret=UNIT_SECRET, delay_s=1.0) as rpc:
        yield rpc


def failure_from(url: str, timeout_s: float = 0.3) -> BaseException:
    w3 = Web3(
        HTTPProvider(url, request_kwargs={"timeout": timeout_s}, exception_retry_configuration=None)
    )
    with pytest.raises(Exception) as info:
        w3.eth.get_balance(Web3.to_checksum_address("0x" + "22" * 20))
    return info.value


@pytest.mark.parametrize(
    "fault, raised, label, quotes_url",
    [
        ("drop_before", requests.ConnectionError, "connection failed: RemoteDisconnected", False),
        ("drop_after", requests.ConnectionError, "connection failed: RemoteDisconnected", False),
        ("http_502", requests.HTTPError, "HTTP 502 (HTML page)", True),
        ("http_502_after", requests.HTTPError, "HTTP 502 (HTML page)", True),
        ("http_429", requests.HTTPError, "HTTP 429", True),
        ("html", ValueError, "not a JSON-RPC answer: HTML page", False),
        ("delay", requests.Timeout, "timeout: TimeoutError: timed out", False),
        ("header_not_found", Web3RPCError, "node error -32000: header not found", False),
    ],
)
def test_transport_failures_are_retryable_reads_and_maybe_sent_broadcasts(
    server: FaultyRpc, fault: str, raised: type[BaseException], label: str, quotes_url: bool
) -> None:
    with server.planned(lambda method, n: fault):
        exc = failure_from(server.url)
    assert isinstance(exc, raised)
    read, sent = classify(exc), classify(exc, broadcast=True)
    assert read.kind is K.RETRYABLE_READ and read.retryable
    assert sent.kind is K.MAYBE_SENT and sent.retryable
    assert read.reason.startswith(label)
    assert UNIT_SECRET not in read.reason and UNIT_SECRET not in sent.reason
    assert (UNIT_SECRET in str(exc)) is quotes_url  # what the old code pasted into messages


def test_refused_connection_is_transient() -> None:
    exc = failure_from(f"http://127.0.0.1:1/v3/{UNIT_SECRET}")
    assert isinstance(exc, requests.ConnectionError)
    fault = classify(exc)
    assert fault.kind is K.RETRYABLE_READ
    assert fault.reason.startswith("connection failed: ConnectionRefusedError")
    assert UNIT_SECRET not in fault.reason and UNIT_SECRET in str(exc)


def test_http_status_without_and_with_a_json_rpc_body() -> None:
    assert classify_http_status(503).kind is K.RETRYABLE_READ
    assert classify_http_status(408, broadcast=True).kind is K.MAYBE_SENT
    assert (
        classify_http_status(401).kind is K.DEFINITE_REFUSAL
    )  # a wrong API key: not now, not later
    assert classify_http_status(404, broadcast=True).kind is K.DEFINITE_REFUSAL
    body = b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"nonce too low"}}'
    fault = classify_http_status(400, body, broadcast=True)
    assert fault.kind is K.NONCE_TOO_LOW and fault.reason.startswith("HTTP 400, node error")
    assert classify_http_status(500, b"<!DOCTYPE html><html>oops</html>").reason == (
        "HTTP 500 (HTML page)"
    )


def test_not_rpc_errors_are_left_to_the_caller() -> None:
    for exc in (TypeError("bad operand"), KeyError("x"), JournalError("disk"), ConfigError("x")):
        assert classify(exc).kind is K.NOT_RPC
        assert classify(exc, broadcast=True).kind is K.NOT_RPC


def test_an_already_sorted_read_error_keeps_its_verdict() -> None:
    assert classify(ChainReadError("x failed", retryable=True)).kind is K.RETRYABLE_READ
    assert classify(ChainReadError("x", retryable=True), broadcast=True).kind is K.MAYBE_SENT
    assert classify(ChainReadError("x", retryable=False)).kind is K.DEFINITE_REFUSAL


def test_read_failure_builds_masked_errors_and_reraises_bugs(server: FaultyRpc) -> None:
    with server.planned(lambda method, n: "drop_before"):
        exc = failure_from(server.url)
    failure = read_failure(exc, "balance")
    assert isinstance(failure, ChainReadError) and failure.retryable
    assert str(failure).startswith("balance failed: connection failed: RemoteDisconnected")
    refused = read_failure(raised_by_call({"code": -32601, "message": "method not found"}), "x")
    assert not refused.retryable
    bug = TypeError("a bug")
    with pytest.raises(TypeError):
        read_failure(bug, "x")


def test_normalise_and_nonce_phrases() -> None:
    assert normalise("OldNonce") == "old nonce"
    assert normalise("NONCE_TOO_LOW") == "nonce too low"
    assert normalise("FeeTooLowToCompete") == "fee too low to compete"
    assert is_nonce_too_low("OldNonce, Current nonce: 5")
    assert not is_nonce_too_low("nonce too high")
