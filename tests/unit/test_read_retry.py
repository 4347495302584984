"""The read-retry middleware: idempotent reads retried with bounded backoff, broadcasts never."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError
from web3.providers.base import BaseProvider
from web3.types import RPCEndpoint, RPCResponse

from keeper.chain.connect import connect
from keeper.chain.retry import (
    RETRY_MIDDLEWARE_NAME,
    RetryPolicy,
    install_read_retries,
)
from keeper.errors import ChainReadError, ConfigError
from tests.keeper.faulty_rpc import FaultyRpc

Answer = dict[str, Any] | BaseException


class Scripted(BaseProvider):
    """Answers each method from its own script (the last entry repeats); counts requests."""

    def __init__(self, **scripts: list[Answer]) -> None:
        super().__init__()
        self.scripts = scripts
        self.calls: list[str] = []

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        self.calls.append(method)
        if method == "eth_chainId" and method not in self.scripts:
            return {"jsonrpc": "2.0", "id": 1, "result": "0x7a69"}
        script = self.scripts[method]
        answer = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(answer, BaseException):
            raise answer
        return {"jsonrpc": "2.0", "id": 1, **answer}  # type: ignore[typeddict-item]

    def is_connected(self, show_traceback: bool = False) -> bool:
        return True

    def count(self, method: str) -> int:
        return self.calls.count(method)


class VirtualTime:
    def __init__(self, per_request_s: float = 0.0) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []
        self.per_request_s = per_request_s

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds

    def now(self) -> float:
        return self.t


def web3_with(provider: Scripted, time_: VirtualTime, **policy: Any) -> Web3:
    w3 = Web3(provider)
    assert install_read_retries(w3, RetryPolicy(sleep=time_.sleep, clock=time_.now, **policy))
    return w3


def dropped() -> requests.ConnectionError:
    return requests.ConnectionError("('Connection aborted.', RemoteDisconnected('Remote end'))")


def http_error(status: int, body: bytes) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    response._content = body
    return requests.HTTPError(f"{status} Error for url: http://h/v3/KEY", response=response)


BLOCK = {"result": "0x2a"}


def test_transient_failures_are_retried_with_doubling_pauses() -> None:
    provider = Scripted(eth_blockNumber=[dropped(), http_error(502, b"<html>"), BLOCK])
    time_ = VirtualTime()
    assert web3_with(provider, time_).eth.block_number == 42
    assert provider.count("eth_blockNumber") == 3
    assert time_.sleeps == [0.1, 0.2]


def test_retries_are_bounded_in_count_and_end_in_one_masked_error() -> None:
    provider = Scripted(eth_blockNumber=[dropped()])
    time_ = VirtualTime()
    with pytest.raises(ChainReadError) as info:
        web3_with(provider, time_, attempts=4).eth.block_number  # noqa: B018 - a property read
    assert provider.count("eth_blockNumber") == 4
    assert time_.sleeps == [0.1, 0.2, 0.4]
    assert info.value.retryable
    assert str(info.value).startswith("eth_blockNumber failed after 4 attempts in 0.7s:")
    assert info.value.__cause__ is None and info.value.__context__ is None  # no URL in a chain


def test_retries_are_bounded_in_total_time() -> None:
    provider = Scripted(eth_blockNumber=[dropped()])
    time_ = VirtualTime()
    w3 = web3_with(provider, time_, attempts=50, first_delay_s=1.0, max_delay_s=2.0, budget_s=5.0)
    with pytest.raises(ChainReadError):
        w3.eth.block_number  # noqa: B018
    # pauses 1, 2, 2 (5 s in all); a fourth would pass the budget
    assert time_.sleeps == [1.0, 2.0, 2.0]
    assert provider.count("eth_blockNumber") == 4


def test_a_lagging_node_answer_is_retried() -> None:
    lagging = {"error": {"code": -32000, "message": "header not found"}}
    provider = Scripted(eth_getBlockByNumber=[lagging, lagging, {"result": None}])
    w3 = web3_with(provider, VirtualTime())
    with pytest.raises(Exception) as info:  # the third answer: no such block
        w3.eth.get_block(10)
    assert type(info.value).__name__ == "BlockNotFound"
    assert provider.count("eth_getBlockByNumber") == 3


def test_final_answers_are_not_retried() -> None:
    revert = {"error": {"code": 3, "message": "execution reverted", "data": "0xdeadbeef"}}
    provider = Scripted(eth_call=[revert])
    w3 = web3_with(provider, VirtualTime())
    with pytest.raises(ContractLogicError):
        w3.eth.call({"to": Web3.to_checksum_address("0x" + "11" * 20), "data": "0x"})
    assert provider.count("eth_call") == 1


def test_a_refusing_endpoint_fails_at_once_and_is_not_retryable() -> None:
    provider = Scripted(eth_blockNumber=[http_error(401, b"Must be authenticated!")])
    with pytest.raises(ChainReadError) as info:
        web3_with(provider, VirtualTime()).eth.block_number  # noqa: B018
    assert provider.count("eth_blockNumber") == 1
    assert not info.value.retryable
    assert str(info.value) == "eth_blockNumber failed: HTTP 401"


def test_broadcasts_are_never_retried() -> None:
    provider = Scripted(eth_sendRawTransaction=[dropped()])
    w3 = web3_with(provider, VirtualTime())
    with pytest.raises(requests.ConnectionError):  # the sender sorts it: maybe sent
        w3.eth.send_raw_transaction(b"\x02\x01")
    assert provider.count("eth_sendRawTransaction") == 1


def test_a_json_rpc_error_inside_an_http_error_is_the_nodes_answer() -> None:
    body = b'{"jsonrpc":"2.0","id":7,"error":{"code":-32000,"message":"nonce too low"}}'
    provider = Scripted(eth_sendRawTransaction=[http_error(400, body)])
    w3 = web3_with(provider, VirtualTime())
    with pytest.raises(Web3RPCError) as info:
        w3.eth.send_raw_transaction(b"\x02\x01")
    assert info.value.rpc_response is not None
    assert info.value.rpc_response["error"]["message"] == "nonce too low"
    lagging = b'{"jsonrpc":"2.0","id":7,"error":{"code":-32000,"message":"header not found"}}'
    reads = Scripted(eth_blockNumber=[http_error(500, lagging), BLOCK])
    assert web3_with(reads, VirtualTime()).eth.block_number == 42
    assert reads.count("eth_blockNumber") == 2


def test_a_bug_is_not_retried_nor_wrapped() -> None:
    provider = Scripted(eth_blockNumber=[TypeError("a bug in a provider")])
    with pytest.raises(TypeError):
        web3_with(provider, VirtualTime()).eth.block_number  # noqa: B018
    assert provider.count("eth_blockNumber") == 1


def test_install_is_innermost_and_idempotent() -> None:
    w3 = Web3(Scripted(eth_blockNumber=[BLOCK]))
    assert install_read_retries(w3)
    assert not install_read_retries(w3)
    assert RETRY_MIDDLEWARE_NAME in w3.middleware_onion
    innermost = w3.middleware_onion.as_tuple_of_middleware()[-1]
    assert innermost is w3.middleware_onion[RETRY_MIDDLEWARE_NAME]


@pytest.mark.parametrize("bad", [{"attempts": 0}, {"attempts": 1.5}, {"budget_s": -1.0}])
def test_policy_is_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**bad)


# --- through connect(): the production wiring, over real HTTP ------------------------------------


@pytest.fixture
def proxy() -> Iterator[FaultyRpc]:
    with FaultyRpc(upstream=None, secret="RETRYTESTKEY123456") as rpc:
        yield rpc


def test_connect_retries_reads_but_not_broadcasts_over_http(proxy: FaultyRpc) -> None:
    time_ = VirtualTime()
    faults = iter(["drop_before", "http_502", None])
    with proxy.planned(lambda method, n: next(faults, None) if method == "eth_chainId" else None):
        w3 = connect(proxy.url, 1, timeout_s=1.0, retry=RetryPolicy(sleep=time_.sleep))
    assert proxy.injected_total("drop_before", "eth_chainId") == 1
    assert proxy.injected_total("http_502", "eth_chainId") == 1
    assert proxy.forwarded["eth_chainId"] >= 1  # the third try got through (web3's cache asks
    # the chain id once more for itself)
    with proxy.planned(lambda method, n: "drop_before"):
        with pytest.raises(requests.ConnectionError):
            w3.eth.send_raw_transaction(b"\x02\x01")
    # web3's own provider retries (5 tries, broadcasts included) are off
    assert proxy.injected_total("drop_before", "eth_sendRawTransaction") == 1


def test_connect_reports_an_unreachable_rpc_masked(proxy: FaultyRpc) -> None:
    time_ = VirtualTime()
    with proxy.planned(lambda method, n: "http_502"):
        with pytest.raises(ChainReadError) as info:
            connect(proxy.url, 1, timeout_s=1.0, retry=RetryPolicy(sleep=time_.sleep))
    text = str(info.value)
    assert "RETRYTESTKEY123456" not in text
    assert text.startswith(f"RPC http://127.0.0.1:{proxy.url.split(':')[2].split('/')[0]}/*** ")
    assert "unreachable (eth_chainId failed after 4 attempts" in text and "HTTP 502" in text
    assert proxy.injected_total("http_502", "eth_chainId") == 4
