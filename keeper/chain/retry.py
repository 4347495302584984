"""Retries with exponential backoff for idempotent reads, as the innermost web3 middleware.

The idea is web3-ethereum-defi's retry middleware: a read that failed for a transient reason (a
timeout, a dropped connection, HTTP 5xx/429, an HTML page, "header not found" from a node
behind the others) is simply asked again after a growing pause. Here the sorting is
:mod:`keeper.chain.rpc_errors`'s, the count *and* the total time are bounded (a tick has a
deadline), the sleep and clock are injectable, and what is still failing at the end becomes
one masked :class:`ChainReadError` — a KeeperError, so the tick's failure boundary logs it in
one line instead of a traceback quoting the URL.

Only the methods in :data:`IDEMPOTENT_READS` are retried. ``eth_sendRawTransaction`` never is:
whether a broadcast that failed was taken is the sender's question (maybe sent → confirm).
For every method, an HTTP error whose body is a JSON-RPC error object is handed to web3 as the
answer, so the caller sees the node's own error (a revert, "nonce too low") and not "HTTP 400".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import requests
from web3 import Web3
from web3.middleware.base import Web3Middleware
from web3.types import MakeRequestFn, RPCEndpoint, RPCResponse

from keeper.chain.rpc_errors import RpcErrorKind, RpcFault, classify, classify_error_object
from keeper.errors import ChainReadError, ConfigError

logger = logging.getLogger(__name__)

#: Read-only methods whose repetition cannot change chain state: safe to ask again.
IDEMPOTENT_READS: frozenset[str] = frozenset(
    {
        "eth_call",
        "eth_estimateGas",
        "eth_blockNumber",
        "eth_getBlockByNumber",
        "eth_getBlockByHash",
        "eth_feeHistory",
        "eth_maxPriorityFeePerGas",
        "eth_gasPrice",
        "eth_getTransactionCount",
        "eth_getTransactionReceipt",
        "eth_getTransactionByHash",
        "eth_getBalance",
        "eth_getCode",
        "eth_getStorageAt",
        "eth_getLogs",
        "eth_chainId",
        "eth_accounts",
        "net_version",
        "web3_clientVersion",
    }
)
#: The middleware's name in the onion (installing twice is a no-op).
RETRY_MIDDLEWARE_NAME = "keeper_read_retry"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard an idempotent read is retried: delays double from `first_delay_s` up to
    `max_delay_s`; at most `attempts` tries, and none starts once `budget_s` seconds have
    passed since the first (one more request timeout may follow)."""

    #: Tries in all, the first one included.
    attempts: int = 4
    first_delay_s: float = 0.1
    max_delay_s: float = 2.0
    #: Against a tick deadline of ~10 s: room for the retries and one last slow answer.
    budget_s: float = 5.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ConfigError(f"retry attempts: must be an int, got {self.attempts!r}")
        if self.attempts < 1:
            raise ConfigError(f"retry attempts: must be >= 1, got {self.attempts}")
        for name in ("first_delay_s", "max_delay_s", "budget_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value >= 0:
                raise ConfigError(f"retry {name}: must be a number >= 0, got {value!r}")

    def delays(self) -> Iterator[float]:
        """The pauses before the 2nd, 3rd, ... try."""
        delay = self.first_delay_s
        for _ in range(self.attempts - 1):
            yield min(delay, self.max_delay_s)
            delay *= 2


def _json_rpc_answer(exc: BaseException) -> RPCResponse | None:
    """The JSON-RPC answer inside an HTTP error (a gateway that sends node errors as 4xx/5xx),
    or None."""
    if not isinstance(exc, requests.HTTPError) or exc.response is None:
        return None
    try:
        decoded = exc.response.json()
    except ValueError:
        return None
    if not isinstance(decoded, dict) or not isinstance(decoded.get("error"), dict):
        return None
    decoded.setdefault("jsonrpc", "2.0")
    decoded.setdefault("id", None)  # JSON-RPC allows a null id on errors; web3 accepts it
    return cast(RPCResponse, decoded)


class ReadRetryMiddleware(Web3Middleware):
    """Retries idempotent reads by :attr:`policy` (see the module docstring)."""

    policy: RetryPolicy = RetryPolicy()

    def wrap_make_request(self, make_request: MakeRequestFn) -> MakeRequestFn:
        def middleware(method: RPCEndpoint, params: Any) -> RPCResponse:
            if method in IDEMPOTENT_READS:
                return self._read(make_request, method, params)
            try:
                return make_request(method, params)
            except requests.HTTPError as exc:
                answer = _json_rpc_answer(exc)
                if answer is None:
                    raise
                return answer

        return middleware

    def _read(self, make_request: MakeRequestFn, method: RPCEndpoint, params: Any) -> RPCResponse:
        policy = self.policy
        started = policy.clock()
        delays = policy.delays()
        attempt = 0
        while True:
            attempt += 1
            result = _try_once(make_request, method, params)
            if not isinstance(result, RpcFault):
                return result
            elapsed = policy.clock() - started
            delay = next(delays, None)
            if delay is None or elapsed + delay > policy.budget_s:
                raise ChainReadError(
                    f"{method} failed after {attempt} attempt{'s' if attempt > 1 else ''} "
                    f"in {elapsed:.1f}s: {result.reason}",
                    retryable=True,
                )
            logger.info(
                "%s: %s; retry %d of %d in %.2fs",
                method,
                result.reason,
                attempt,
                policy.attempts - 1,
                delay,
            )
            policy.sleep(delay)


def _try_once(
    make_request: MakeRequestFn, method: RPCEndpoint, params: Any
) -> RPCResponse | RpcFault:
    """One request: the answer to hand to web3, or the transient fault worth another try.
    A final failure raises (a masked ChainReadError; a bug as it is)."""
    try:
        answer = make_request(method, params)
    except Exception as exc:  # sorted by the classifier; a bug is re-raised
        http_answer = _json_rpc_answer(exc)
        if http_answer is None:
            fault = classify(exc)
            if fault.kind is RpcErrorKind.NOT_RPC:
                raise
            if not fault.retryable:
                raise ChainReadError(f"{method} failed: {fault.reason}", retryable=False) from None
            return fault
        answer = http_answer
    error = answer.get("error") if isinstance(answer, Mapping) else None
    if isinstance(error, Mapping):
        fault = classify_error_object(error)
        if fault.kind is RpcErrorKind.RETRYABLE_READ:
            return fault
    return answer  # web3 raises what an error answer means (a revert, not found, ...)


def read_retry_middleware(policy: RetryPolicy) -> type[ReadRetryMiddleware]:
    """A ReadRetryMiddleware class bound to `policy` (web3 instantiates middleware itself)."""
    return cast(
        type[ReadRetryMiddleware],
        type("ReadRetryMiddleware", (ReadRetryMiddleware,), {"policy": policy}),
    )


def install_read_retries(w3: Web3, policy: RetryPolicy | None = None) -> bool:
    """Put the read-retry middleware innermost in `w3`'s onion (each retry is one raw request);
    False if it is there already. Turn off the provider's own retries where it has them
    (:func:`keeper.chain.connect.connect` does): they would multiply the tries and also resend
    broadcasts."""
    if RETRY_MIDDLEWARE_NAME in w3.middleware_onion:
        return False
    middleware = read_retry_middleware(policy or RetryPolicy())
    w3.middleware_onion.inject(middleware, name=RETRY_MIDDLEWARE_NAME, layer=0)
    return True


__all__ = [
    "IDEMPOTENT_READS",
    "RETRY_MIDDLEWARE_NAME",
    "ReadRetryMiddleware",
    "RetryPolicy",
    "install_read_retries",
    "read_retry_middleware",
]
