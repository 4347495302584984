"""Every RPC and node error, sorted once.

A request can fail in three ways — it never got an answer (timeout, dropped connection), it got
a non-answer (HTTP 5xx/429, an HTML page, garbled JSON), or the node answered with a JSON-RPC
error object — and what that means depends on the request. For an idempotent read every
transient failure is simply worth another try. For ``eth_sendRawTransaction`` the question is
whether the node took the transaction, and only a definite refusal answers it: a timeout or a
dropped connection *after the request left* means "maybe sent" — keep the nonce, confirm,
rebroadcast (web3-ethereum-defi's ``confirmation.py`` works the same way).

| failure (examples)                                      | read             | broadcast        |
|---------------------------------------------------------|------------------|------------------|
| timeout, dropped/refused connection, HTTP 5xx/408/429,  | RETRYABLE_READ   | MAYBE_SENT       |
| HTML or garbled answer, "header not found", -32005 ...  |                  |                  |
| "already known", "transaction already imported" ...     | DEFINITE_REFUSAL | ALREADY_KNOWN    |
| "nonce too low", "OldNonce", NONCE_TOO_LOW ...          | DEFINITE_REFUSAL | NONCE_TOO_LOW    |
| insufficient funds, wrong chain id, underpriced, fee    | DEFINITE_REFUSAL | DEFINITE_REFUSAL |
| cap, intrinsic gas, block gas limit, HTTP 4xx, -32602 . |                  |                  |
| execution reverted (code 3, ContractLogicError)         | REVERTED         | DEFINITE_REFUSAL |
| an error object nothing above matches                   | UNKNOWN          | UNKNOWN          |
| not an RPC error at all (TypeError, a KeeperError, ...) | NOT_RPC          | NOT_RPC          |

Phrases are matched on a normalised message (lower case, ``snake_case`` and ``CamelCase`` split
into words), so geth's "nonce too low", nethermind's "OldNonce" and besu's "NONCE_TOO_LOW" meet
the same phrase. Message phrases come before codes: anvil answers both "nonce too low" and
"transaction already imported" with -32003 ("transaction rejected").

Every reason this module writes is masked (:func:`keeper.masking.mask_text`) and short; the
exception's own text (requests quotes the full URL) is never pasted whole.
"""

from __future__ import annotations

import enum
import http.client
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
import urllib3.exceptions
from web3.exceptions import (
    BadResponseFormat,
    BlockNotFound,
    ContractLogicError,
    ProviderConnectionError,
    RequestTimedOut,
    TimeExhausted,
    TooManyRequests,
    Web3RPCError,
)

from keeper.errors import ChainReadError, KeeperError
from keeper.masking import mask_text

try:  # aiohttp comes with web3 (its async provider); the keeper itself is synchronous
    import aiohttp

    _AIOHTTP_TIMEOUTS: tuple[type[BaseException], ...] = (aiohttp.ServerTimeoutError,)
    _AIOHTTP_CONNECTION: tuple[type[BaseException], ...] = (
        aiohttp.ClientConnectionError,
        aiohttp.ClientPayloadError,
    )
    _AIOHTTP_STATUS: tuple[type[BaseException], ...] = (aiohttp.ClientResponseError,)
except ImportError:  # pragma: no cover - web3 depends on it
    _AIOHTTP_TIMEOUTS = _AIOHTTP_CONNECTION = _AIOHTTP_STATUS = ()

#: Characters of a node's message kept in a reason (the rest is noise in a log line).
REASON_MAX_CHARS = 160
#: JSON-RPC codes that are a definite answer about the request itself (EIP-1474 and JSON-RPC
#: 2.0): parse error, invalid request, method not found, invalid params, transaction rejected,
#: method not supported, transaction cost exceeds the gas limit.
REFUSAL_CODES = frozenset({-32700, -32600, -32601, -32602, -32003, -32004, -32010})
#: JSON-RPC codes of a node that could not answer now: internal error, resource not found (a
#: lagging node asked for a block it lacks), resource unavailable, limit exceeded (rate limit).
TRANSIENT_CODES = frozenset({-32603, -32001, -32002, -32005})
#: The code geth and anvil give a revert with data.
REVERT_CODE = 3
#: HTTP statuses that mean "not now": request timeout, rate limited, and every 5xx.
TRANSIENT_HTTP = frozenset({408, 425, 429})

ALREADY_KNOWN_PHRASES = (
    "already known",  # geth, erigon, reth; besu TRANSACTION_ALREADY_KNOWN; nethermind AlreadyKnown
    "known transaction",  # besu, older geth
    "already imported",  # anvil: "transaction already imported"
    "already in mempool",
    "already in the pool",
)
NONCE_TOO_LOW_PHRASES = (
    "nonce too low",  # geth, anvil, erigon, reth; besu NONCE_TOO_LOW
    "nonce is too low",
    "old nonce",  # nethermind "OldNonce, Current nonce: 5, nonce of rejected tx: 4"
    "nonce has already been used",
)
REVERT_PHRASES = (
    "execution reverted",
    "reverted",
    "vm exception",
    "invalid opcode",
    "out of gas",
    "gas required exceeds allowance",  # geth's estimateGas when every gas limit fails
)
REFUSAL_PHRASES = (
    # money
    "insufficient funds",  # geth "... for gas * price + value", anvil, nethermind InsufficientFunds
    "insufficient balance",
    "upfront cost exceeds",  # besu
    "not enough funds",
    # chain
    "chain id",  # "invalid chain id for signer" (geth, anvil), besu WRONG_CHAIN_ID
    "chainid",
    "wrong chain",
    "invalid sender",  # geth, when the signature is for another chain
    "replay-protected",  # geth: only replay-protected (EIP-155) transactions allowed over RPC
    "replay protected",
    # fees
    "underpriced",  # "replacement transaction underpriced", "transaction underpriced"
    "fee too low",  # nethermind FeeTooLow, FeeTooLowToCompete
    "less than block base fee",  # geth, anvil: "max fee per gas less than block base fee"
    "below current base fee",  # besu GAS_PRICE_BELOW_CURRENT_BASE_FEE
    "gas price too low",
    "gas price below",
    "max priority fee per gas higher than max fee per gas",
    "tip higher than fee cap",
    "priority fee per gas exceeds max fee per gas",
    "exceeds the configured cap",  # geth: tx fee (X ether) exceeds the configured cap
    "fee cap exceeded",  # besu "Transaction fee cap exceeded"
    "feecap exceeded",  # besu TX_FEECAP_EXCEEDED
    "replacement not allowed",
    "could not replace",
    # gas
    "intrinsic gas",  # "intrinsic gas too low"; anvil "intrinsic gas too high -- tx.gas_limit >"
    "exceeds block gas limit",  # geth; besu EXCEEDS_BLOCK_GAS_LIMIT
    "block gas limit",
    "gas limit exceeded",  # nethermind GasLimitExceeded
    "gas limit reached",
    "exceeds per transaction gas limit",
    # the pool, the nonce, the encoding
    "nonce too high",
    "nonce gap",  # nethermind NonceGap
    "incorrect nonce",
    "future transaction tries to replace pending",
    "account limit exceeded",
    "txpool is full",
    "transaction pool is full",
    "pool disabled",
    "oversized data",
    "transaction type not supported",
    "tx type not supported",
    "invalid signature",
    "failed to decode",
    "rlp:",  # geth: "rlp: expected input list for types.LegacyTx"
    "invalid transaction",
    "does not exist/is not available",  # geth: the method eth_x does not exist/is not available
    "method not found",
    "unauthorized",
    "forbidden",
)
TRANSIENT_PHRASES = (
    # a node behind the others (a pinned block it has not imported yet)
    "header not found",
    "missing trie node",
    "unknown block",
    "block not found",
    "block out of range",  # anvil: "BlockOutOfRangeError: block height is 1 but requested was 2"
    "not available yet",
    "state is not available",
    "world state not available",  # besu CHAIN_HEAD_WORLD_STATE_NOT_AVAILABLE
    "syncing",
    # a provider shedding load
    "rate limit",
    "too many requests",
    "limit exceeded",  # -32005 "limit exceeded", "daily request count exceeded"
    "request count exceeded",
    "capacity",
    "overloaded",
    "busy",
    # a gateway or node that could not answer now
    "timeout",
    "timed out",
    "deadline exceeded",
    "internal error",
    "upstream",
    "bad gateway",
    "service unavailable",
    "temporarily unavailable",
    "try again",
    "please retry",
    "connection reset",
    "connection refused",
    "no backend",
    "backend unavailable",
)


class RpcErrorKind(enum.Enum):
    """What a failed request means for its caller (see the module table)."""

    #: The node refused the request; the same request gets the same answer. A broadcast
    #: refused so was not taken: its nonce is free again.
    DEFINITE_REFUSAL = "definite_refusal"
    #: A broadcast whose fate is unknown: keep its nonce, confirm, rebroadcast.
    MAYBE_SENT = "maybe_sent"
    #: The node already has this exact transaction: it was sent.
    ALREADY_KNOWN = "already_known"
    #: The nonce is used: by our own transaction (look for its receipt) or by another one.
    NONCE_TOO_LOW = "nonce_too_low"
    #: An idempotent read that may succeed if tried again.
    RETRYABLE_READ = "retryable_read"
    #: The node ran the call and it reverted: an answer, not a fault.
    REVERTED = "reverted"
    #: An RPC error nothing here recognises: a read stops (not retried); a broadcast is
    #: treated as maybe sent (doubt is not failure) and logged as an error.
    UNKNOWN = "unknown"
    #: Not an RPC or node error (a bug, or a KeeperError that says what happened): re-raise.
    NOT_RPC = "not_rpc"


#: Kinds a caller may retry (a read) or must confirm before giving up (a broadcast).
_RETRYABLE_KINDS = frozenset({RpcErrorKind.RETRYABLE_READ, RpcErrorKind.MAYBE_SENT})


@dataclass(frozen=True, slots=True)
class RpcFault:
    """One classified failure: its kind, a short masked reason, and the JSON-RPC error code or
    HTTP status when there was one."""

    kind: RpcErrorKind
    reason: str
    code: int | None = None

    @property
    def retryable(self) -> bool:
        return self.kind in _RETRYABLE_KINDS


# --- pure parts ----------------------------------------------------------------------------------


def normalise(message: str) -> str:
    """`message` in lower case with CamelCase and snake_case split into words: "OldNonce" →
    "old nonce", "NONCE_TOO_LOW" → "nonce too low"."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", message)
    return spaced.replace("_", " ").lower()


def _has(text: str, phrases: tuple[str, ...]) -> bool:
    return any(p in text for p in phrases)


def is_nonce_too_low(message: str) -> bool:
    """True when a node's error `message` says the nonce was already used."""
    return _has(normalise(message), NONCE_TOO_LOW_PHRASES)


def _short(text: str) -> str:
    one_line = " ".join(mask_text(text).split())
    if len(one_line) > REASON_MAX_CHARS:
        return one_line[: REASON_MAX_CHARS - 1] + "…"
    return one_line


def _transient(broadcast: bool) -> RpcErrorKind:
    return RpcErrorKind.MAYBE_SENT if broadcast else RpcErrorKind.RETRYABLE_READ


def classify_error_object(error: Mapping[str, Any], *, broadcast: bool = False) -> RpcFault:
    """Sort a JSON-RPC error object (``{"code": -32000, "message": "...", "data": ...}``)."""
    raw_code = error.get("code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    message = str(error.get("message") or "")
    reason = f"node error {code}: {_short(message)}" if code is not None else _short(message)
    text = normalise(message)
    if _has(text, ALREADY_KNOWN_PHRASES):
        kind = RpcErrorKind.ALREADY_KNOWN if broadcast else RpcErrorKind.DEFINITE_REFUSAL
    elif _has(text, NONCE_TOO_LOW_PHRASES):
        kind = RpcErrorKind.NONCE_TOO_LOW if broadcast else RpcErrorKind.DEFINITE_REFUSAL
    elif code == REVERT_CODE or _has(text, REVERT_PHRASES):
        kind = RpcErrorKind.DEFINITE_REFUSAL if broadcast else RpcErrorKind.REVERTED
    elif _has(text, REFUSAL_PHRASES):
        kind = RpcErrorKind.DEFINITE_REFUSAL
    elif _has(text, TRANSIENT_PHRASES) or code in TRANSIENT_CODES:
        kind = _transient(broadcast)
    elif code in REFUSAL_CODES:
        kind = RpcErrorKind.DEFINITE_REFUSAL
    else:
        kind = RpcErrorKind.UNKNOWN
    return RpcFault(kind, reason, code)


def classify_http_status(
    status: int, body: str | bytes | None = None, *, broadcast: bool = False
) -> RpcFault:
    """Sort an HTTP error answer. A JSON-RPC error object in the body decides (some gateways
    send node errors with a 4xx/5xx status); else 5xx/408/429 are transient, other 4xx final."""
    error = json_rpc_error(body)
    if error is not None:
        fault = classify_error_object(error, broadcast=broadcast)
        return RpcFault(fault.kind, f"HTTP {status}, {fault.reason}", fault.code)
    shown = f"HTTP {status}" + (" (HTML page)" if _looks_like_html(body) else "")
    if status >= 500 or status in TRANSIENT_HTTP:
        return RpcFault(_transient(broadcast), shown, status)
    return RpcFault(RpcErrorKind.DEFINITE_REFUSAL, shown, status)


def json_rpc_error(body: str | bytes | None) -> Mapping[str, Any] | None:
    """The ``error`` object of a JSON-RPC answer in `body`; None if there is none."""
    if not body:
        return None
    try:
        decoded = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), dict):
        error: Mapping[str, Any] = decoded["error"]
        return error
    return None


def _looks_like_html(body: str | bytes | None) -> bool:
    if not body:
        return False
    head = (body[:200].decode(errors="replace") if isinstance(body, bytes) else body[:200]).lower()
    return "<html" in head or "<!doctype" in head or "<head" in head or "<body" in head


# --- exceptions --------------------------------------------------------------------------------


def _innermost(exc: BaseException) -> BaseException:
    """The root cause of a transport error: requests wraps urllib3's MaxRetryError, which holds
    a `reason` (ProtocolError), whose arguments hold the socket error (RemoteDisconnected)."""
    current = exc
    for _ in range(8):
        reason = getattr(current, "reason", None)
        nested = [a for a in current.args if isinstance(a, BaseException)]
        following = (
            reason
            if isinstance(reason, BaseException)
            else nested[-1]
            if nested
            else current.__cause__
        )
        if following is None or following is current:
            break
        current = following
    return current


def _transport_reason(label: str, exc: BaseException) -> str:
    inner = _innermost(exc)
    text = _short(str(inner))
    return f"{label}: {type(inner).__name__}" + (f": {text}" if text else "")


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(
        exc,
        (
            requests.Timeout,
            urllib3.exceptions.TimeoutError,
            TimeoutError,
            RequestTimedOut,
            TimeExhausted,
            *_AIOHTTP_TIMEOUTS,
        ),
    )


def classify(exc: BaseException, *, broadcast: bool = False) -> RpcFault:
    """Sort any exception a web3 request can raise; `broadcast` for ``eth_sendRawTransaction``
    (see the module table). Never raises."""
    if isinstance(exc, ChainReadError):  # already sorted (the read-retry middleware)
        kind = _transient(broadcast) if exc.retryable else RpcErrorKind.DEFINITE_REFUSAL
        return RpcFault(kind, str(exc))
    if isinstance(exc, KeeperError):
        return RpcFault(RpcErrorKind.NOT_RPC, str(exc))
    if isinstance(exc, ContractLogicError):
        kind = RpcErrorKind.DEFINITE_REFUSAL if broadcast else RpcErrorKind.REVERTED
        return RpcFault(kind, f"reverted: {_short(str(exc.message or 'execution reverted'))}")
    if isinstance(exc, Web3RPCError):
        rpc_response = exc.rpc_response
        error = rpc_response.get("error") if isinstance(rpc_response, Mapping) else None
        if isinstance(error, Mapping):
            return classify_error_object(error, broadcast=broadcast)
        if isinstance(exc, RequestTimedOut):
            return RpcFault(_transient(broadcast), "node timed out")
        if isinstance(exc, BlockNotFound):  # a lagging node asked for a block it lacks
            return RpcFault(_transient(broadcast), f"block not found: {_short(exc.message)}")
        return classify_error_object({"message": exc.message}, broadcast=broadcast)
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        http_response = exc.response
        return classify_http_status(
            int(http_response.status_code), http_response.content, broadcast=broadcast
        )
    if _AIOHTTP_STATUS and isinstance(exc, _AIOHTTP_STATUS):
        return classify_http_status(int(getattr(exc, "status", 0) or 0), broadcast=broadcast)
    if _is_timeout(exc):
        return RpcFault(_transient(broadcast), _transport_reason("timeout", exc))
    if isinstance(
        exc,
        (
            requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
            http.client.HTTPException,
            urllib3.exceptions.HTTPError,
            ProviderConnectionError,
            ConnectionError,
            *_AIOHTTP_CONNECTION,
        ),
    ):
        return RpcFault(_transient(broadcast), _transport_reason("connection failed", exc))
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError, BadResponseFormat)):
        html = _looks_like_html(str(exc).removeprefix("Could not decode "))
        what = "HTML page" if html else f"malformed answer ({type(exc).__name__})"
        return RpcFault(_transient(broadcast), f"not a JSON-RPC answer: {what}")
    if isinstance(exc, TooManyRequests):
        return RpcFault(_transient(broadcast), "rate limited")
    if isinstance(exc, requests.RequestException):  # bad URL, too many redirects, ...
        return RpcFault(RpcErrorKind.DEFINITE_REFUSAL, _transport_reason("request failed", exc))
    if isinstance(exc, OSError):  # socket errors that are not ConnectionError (EHOSTUNREACH ...)
        return RpcFault(_transient(broadcast), _transport_reason("network error", exc))
    return RpcFault(RpcErrorKind.NOT_RPC, f"{type(exc).__name__}: {_short(str(exc))}")


def read_failure(exc: BaseException, what: str) -> ChainReadError:
    """The ChainReadError for a failed read of `what` ("fee history", "receipt of 0x…"), with
    a masked reason and ``retryable`` set by the classification. A read that *reverted* is not
    a transport failure and comes back the same way, not retryable. A bug (NOT_RPC) is
    re-raised as it is: it must stop the process, not be logged as a chain hiccup."""
    if isinstance(exc, ChainReadError):  # sorted already (the read-retry middleware)
        return ChainReadError(f"{what}: {exc}", retryable=exc.retryable)
    fault = classify(exc)
    if fault.kind is RpcErrorKind.NOT_RPC:
        raise exc
    return ChainReadError(f"{what} failed: {fault.reason}", retryable=fault.retryable)


__all__ = [
    "ALREADY_KNOWN_PHRASES",
    "NONCE_TOO_LOW_PHRASES",
    "REFUSAL_PHRASES",
    "TRANSIENT_PHRASES",
    "RpcErrorKind",
    "RpcFault",
    "classify",
    "classify_error_object",
    "classify_http_status",
    "is_nonce_too_low",
    "json_rpc_error",
    "normalise",
    "read_failure",
]
