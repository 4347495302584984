"""JSON-RPC batches: several reads in one HTTP round trip, the ordinary path behind them.

A no-action tick needs the head, the fee inputs and every Multicall3 chunk. One by one that is
``3 + ⌈vaults / 50⌉`` round trips (23 at 1,000 vaults); as two batches it is two: the head with
``eth_feeHistory`` and ``eth_maxPriorityFeePerGas``, then every ``eth_call`` pinned to that head.

:func:`post` only ever *adds* answers. Each request of a batch comes back either as an
:class:`Answer` (the node's ``result``) or as None, and None always means "ask the ordinary
way": the caller sends that one request through web3 as it did before batching — the read
retries (:mod:`keeper.chain.retry`), the failover (:mod:`keeper.chain.failover`) and the error
classification (:mod:`keeper.chain.rpc_errors`) all apply to it unchanged. So a request the
node answered with an error in the batch is re-sent alone, and fails (or succeeds) exactly as
it would have without batching: an element's error is never interpreted here.

When the batch as a whole fails:

- transiently (a timeout, a dropped connection, HTTP 5xx/429, an HTML page, a "header not
  found" answer): every request is None this time; the next call batches again;
- definitely — the provider has no batch support (the in-process chain), the node answers
  with one error object or an HTTP 4xx, the answers cannot be matched to the requests, or
  every request is refused: batching is turned off for that provider, with one log line,
  and from then on :func:`post` answers None at once, without a request.

web3's own ``w3.batch_requests()`` (web3 7/8) is not used: it needs a ``JSONBaseProvider``
(the failover provider is not one), and one failing element raises for the whole batch. Here
the batch goes straight to the HTTP provider in use — behind a
:class:`~keeper.chain.failover.FailoverProvider`, the primary's; while a fallback is current,
requests go one by one, so that the provider's cool-down probe back to the primary rides on
them. Nothing here logs a URL unmasked (:func:`keeper.chain.failover.current_endpoint`), nor
an exception's own text (the classifier's reasons are masked).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from web3 import Web3
from web3.providers.base import BaseProvider, JSONBaseProvider
from web3.types import RPCEndpoint

from keeper.chain.failover import FailoverProvider, current_endpoint
from keeper.chain.rpc_errors import RpcErrorKind, RpcFault, classify, classify_error_object
from keeper.masking import mask_text

logger = logging.getLogger(__name__)

#: Requests per HTTP batch: hosted providers cap batches (Alchemy at 1,000, others at 100 or
#: less); 100 carries a no-action tick of ~4,900 vaults in one post.
MAX_BATCH_REQUESTS = 100
#: Exceptions web3's batch decoding raises on answers that are not a list of responses
#: (it sorts them by ``response["id"]``): a node mangling batches, not a bug of ours.
_MALFORMED = (AttributeError, KeyError, TypeError, ValueError)

#: Providers batching is off for → why (learnt once per provider; a provider object per
#: endpoint, so one endpoint refusing batches does not turn them off for another).
_REFUSED: weakref.WeakKeyDictionary[BaseProvider, str] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class Answer:
    """A request of a batch the node answered: its JSON ``result``, as sent (hex strings)."""

    result: Any


def refused(provider: BaseProvider) -> str | None:
    """Why batching is off for `provider`, or None while it is on."""
    return _REFUSED.get(provider)


def turn_off(provider: BaseProvider, reason: str) -> None:
    """Send `provider`'s requests one by one from now on (what a refused batch does; the
    benchmark's sequential baseline too)."""
    _REFUSED[provider] = reason


def post(w3: Web3, requests: Sequence[tuple[str, list[Any]]]) -> list[Answer | None]:
    """`requests` (method, params) in as few HTTP round trips as the node allows: one per
    :data:`MAX_BATCH_REQUESTS`. One answer per request, in order; None where the caller must
    send that request the ordinary way (see the module docstring). A single request is never
    batched: alone, the ordinary path costs the same round trip and keeps its retries."""
    if len(requests) < 2:
        return [None] * len(requests)
    target = _target(w3)
    if target is None:
        return [None] * len(requests)
    out: list[Answer | None] = []
    for i in range(0, len(requests), MAX_BATCH_REQUESTS):
        part = requests[i : i + MAX_BATCH_REQUESTS]
        if refused(target) is not None:  # the part before was refused
            out += [None] * len(part)
        else:
            out += _post(w3, target, part)
    return out


def _target(w3: Web3) -> JSONBaseProvider | None:
    """The provider a batch goes to, or None: requests go one by one."""
    provider = w3.provider
    if isinstance(provider, FailoverProvider):
        if provider.chain_id is None or not provider.current.is_primary:
            return None  # not opened yet, or on a fallback: the ordinary path switches back
        provider = provider.current.provider
    if refused(provider) is not None:
        return None
    if not isinstance(provider, JSONBaseProvider):
        _refuse(w3, provider, f"{type(provider).__name__} does not batch")
        return None
    return provider


def _refuse(w3: Web3, provider: BaseProvider, reason: str) -> None:
    turn_off(provider, reason)
    logger.warning(
        "JSON-RPC batches off for %s (%s): reads go one request at a time from now on",
        current_endpoint(w3),
        mask_text(reason),
    )


def _post(
    w3: Web3, target: JSONBaseProvider, requests: Sequence[tuple[str, list[Any]]]
) -> list[Answer | None]:
    n = len(requests)
    none: list[Answer | None] = [None] * n
    try:
        response = target.make_batch_request([(RPCEndpoint(m), p) for m, p in requests])
    except NotImplementedError:
        _refuse(w3, target, f"{type(target).__name__} does not batch")
        return none
    except _MALFORMED as exc:
        _refuse(w3, target, f"malformed batch answer ({type(exc).__name__})")
        return none
    except Exception as exc:  # sorted by the classifier; a bug is re-raised
        fault = classify(exc)
        if fault.kind is RpcErrorKind.NOT_RPC:
            raise
        _failed(w3, target, n, fault)
        return none
    if not isinstance(response, list):
        error = response.get("error") if isinstance(response, Mapping) else None
        if not isinstance(error, Mapping):
            _refuse(w3, target, "batch answered with neither a list nor an error")
            return none
        _failed(w3, target, n, classify_error_object(error))
        return none
    ids = [r.get("id") if isinstance(r, Mapping) else None for r in response]
    if len(response) != n or None in ids or len(set(map(str, ids))) != n:
        _refuse(w3, target, f"{len(response)} answers to a batch of {n} (ids {_short_ids(ids)})")
        return none
    out: list[Answer | None] = []
    errors: list[Mapping[str, Any]] = []
    for r in response:
        error = r.get("error")
        if error is None and "result" in r:
            out.append(Answer(r["result"]))
            continue
        out.append(None)
        errors.append(error if isinstance(error, Mapping) else {"message": "no result"})
    if len(errors) == n and all(
        classify_error_object(e).kind is RpcErrorKind.DEFINITE_REFUSAL for e in errors
    ):
        _refuse(w3, target, f"every request refused ({classify_error_object(errors[0]).reason})")
    return out


def _failed(w3: Web3, target: JSONBaseProvider, n: int, fault: RpcFault) -> None:
    """The batch as a whole failed: this time only when transient, for good when not."""
    if fault.retryable:
        logger.info("JSON-RPC batch of %d failed (%s): sent one by one this time", n, fault.reason)
    else:
        _refuse(w3, target, f"batch refused: {fault.reason}")


def _short_ids(ids: list[Any]) -> str:
    shown = ", ".join(str(i) for i in ids[:4])
    return shown + (", …" if len(ids) > 4 else "")


def hex_int(answer: Answer | None) -> int | None:
    """A quantity answer (``"0x1b4"``) as an int, as web3 would return it; None when there is
    none or it is not a hex quantity (then the caller asks the ordinary way)."""
    if answer is None or not isinstance(answer.result, str):
        return None
    try:
        return int(answer.result, 16)
    except ValueError:
        return None


__all__ = ["MAX_BATCH_REQUESTS", "Answer", "hex_int", "post", "refused", "turn_off"]
