"""Several RPC endpoints behind one web3 provider: failover, with a chain-id check on every switch.

web3-ethereum-defi's ``FallbackProvider`` cycles to the next provider on a retryable error,
sleeps and retries inside the provider, insists that the wrapped providers' own retries are off,
and goes back to the first provider only when asked (``reset_switch``). This one keeps the
first and the third habits and changes the others, so that it composes with the keeper's own
pieces instead of duplicating them:

- **Failover picks the endpoint; the read-retry middleware re-issues.** A read is sent once, to
  the current endpoint. When it fails for a transient reason (sorted by
  :mod:`keeper.chain.rpc_errors`: a timeout, a dropped or refused connection, HTTP 5xx/429, an
  HTML page, "header not found", a rate-limit error object) the provider switches to the next
  usable endpoint and hands the failure up unchanged; the read-retry middleware
  (:mod:`keeper.chain.retry`, innermost) pauses and asks again, and that try goes to the new
  endpoint. The attempts per read stay the retry policy's, however many endpoints there are.
- **Every switch is verified.** The candidate's ``eth_chainId`` (a short-timeout probe) must
  equal the chain the keeper started on (the expected chain id, or the first endpoint's
  answer). An endpoint on another chain is taken out of rotation for good, with one log line; an
  unreachable one is skipped for this switch. No usable candidate: the current one stays.
- **Broadcasts are never silently sent twice.** A state-changing request (anything but an
  idempotent read: ``eth_sendRawTransaction`` above all) whose request may have reached a node
  is raised to the caller — the sender treats it as maybe sent and rebroadcasts the same signed
  bytes, which is idempotent — after switching, so that rebroadcast goes to the next endpoint.
  Only a request refused before it left (no connection was ever made: refused, connect timeout,
  name not resolved) is sent on to the next endpoint here, each endpoint at most once.
- **Back to the primary after a cool-down.** :data:`PRIMARY_COOLDOWN_S` after leaving the
  primary, the next request first probes it; if it answers on the right chain it is current
  again, else the cool-down starts over (one probe per cool-down, not one per request).

Bounds: a read costs at most ``RetryPolicy.attempts`` requests of its own plus, after each
failed attempt, one switch of at most N−1 ``eth_chainId`` probes (N endpoints), each at most
``probe_timeout_s`` long. A state-changing request costs at most one request that may have
reached a node, plus at most N−1 that provably did not. The cool-down adds at most one probe
per ``cooldown_s``. ``eth_chainId`` itself is answered from the verified value (web3 asks it
before every call and send; the single-endpoint path caches it the same way).

Secrets: every URL is registered for masking when the provider is built, before any request,
and endpoints are only ever named masked (``fallback 1 https://host/***``).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import requests
import urllib3.exceptions
from web3 import Web3
from web3.providers.base import BaseProvider
from web3.providers.rpc import HTTPProvider
from web3.types import RPCEndpoint, RPCResponse

from keeper.chain.retry import IDEMPOTENT_READS
from keeper.chain.rpc_errors import RpcErrorKind, RpcFault, classify, classify_error_object
from keeper.errors import ChainReadError, ConfigError
from keeper.masking import mask_rpc_url, register_secret_url

logger = logging.getLogger(__name__)

#: Seconds on a fallback before the primary is probed again: five default polls (12 s), so a
#: flapping primary is not re-tried on every tick, and a recovered one (usually the cheaper or
#: closer endpoint) gets its traffic back within about a minute.
PRIMARY_COOLDOWN_S = 60.0
#: Timeout of a switch's eth_chainId probe: a black-holed candidate costs at most this, not a
#: full request timeout, inside a tick that has a deadline.
PROBE_TIMEOUT_S = 2.0

_CHAIN_ID = RPCEndpoint("eth_chainId")
#: Transport errors that prove the request never left: no connection was ever established
#: (urllib3's NewConnectionError and NameResolutionError are ConnectTimeoutErrors).
_NEVER_SENT: tuple[type[BaseException], ...] = (
    requests.ConnectTimeout,
    urllib3.exceptions.ConnectTimeoutError,
    ConnectionRefusedError,
    socket.gaierror,
)


@dataclass(frozen=True, slots=True)
class FailoverPolicy:
    """When to go back to the primary and how long a switch may wait for a candidate."""

    cooldown_s: float = PRIMARY_COOLDOWN_S
    probe_timeout_s: float = PROBE_TIMEOUT_S
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        for name in ("cooldown_s", "probe_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ConfigError(f"failover {name}: must be a number >= 0, got {value!r}")
        if not self.probe_timeout_s > 0:
            raise ConfigError("failover probe_timeout_s: must be > 0")


@dataclass(frozen=True, slots=True, eq=False)
class Endpoint:
    """One configured RPC URL: its masked name, its request provider and its probe."""

    index: int
    #: ``primary https://host/***`` or ``fallback 2 https://host/***``: safe to log.
    name: str
    provider: HTTPProvider = field(repr=False)
    probe: HTTPProvider = field(repr=False)

    @property
    def is_primary(self) -> bool:
        return self.index == 0


@dataclass(frozen=True, slots=True)
class Probe:
    """What an endpoint's eth_chainId said: a chain id, or the fault that kept it from answering."""

    endpoint: Endpoint
    chain_id: int | None
    fault: RpcFault | None = None


def refused_before_sending(exc: BaseException) -> bool:
    """True when `exc` proves the request never reached a server (no connection was made), so
    sending it elsewhere cannot duplicate it. A connection dropped, reset or timed out while
    reading is not proof: the server may have taken the request. This only narrows what
    :func:`keeper.chain.rpc_errors.classify` already calls transient (maybe sent)."""
    seen: set[int] = set()
    stack = [exc]
    while stack and len(seen) < 16:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, _NEVER_SENT):
            return True
        # requests wraps urllib3's MaxRetryError, whose `reason` is the connection error
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)
        stack.extend(a for a in current.args if isinstance(a, BaseException))
        if current.__cause__ is not None:
            stack.append(current.__cause__)
    return False


def _http(url: str, timeout_s: float) -> HTTPProvider:
    # web3's own retries stay off: they would resend broadcasts and multiply the read retries.
    return HTTPProvider(
        url, request_kwargs={"timeout": timeout_s}, exception_retry_configuration=None
    )


def _error_fault(answer: Any, *, broadcast: bool = False) -> RpcFault | None:
    error = answer.get("error") if isinstance(answer, Mapping) else None
    return classify_error_object(error, broadcast=broadcast) if isinstance(error, Mapping) else None


class FailoverProvider(BaseProvider):
    """A synchronous web3 provider over several HTTP endpoints (see the module docstring).

    Call :meth:`open` before use (:func:`keeper.chain.connect.connect` does); a request before
    it opens on the first endpoint that answers. Thread-safe: switches happen under a lock."""

    def __init__(
        self, urls: Sequence[str], *, timeout_s: float, policy: FailoverPolicy | None = None
    ) -> None:
        super().__init__()
        if not urls:
            raise ConfigError("failover: no RPC URL given")
        for url in urls:  # before anything can send a request
            register_secret_url(url)
        if len(set(urls)) != len(urls):
            repeated = next(u for u in urls if list(urls).count(u) > 1)
            raise ConfigError(f"RPC URL {mask_rpc_url(repeated)} is listed more than once")
        self.policy = policy or FailoverPolicy()
        probe_timeout_s = min(timeout_s, self.policy.probe_timeout_s)
        self.endpoints: tuple[Endpoint, ...] = tuple(
            Endpoint(
                i,
                ("primary " if i == 0 else f"fallback {i} ") + mask_rpc_url(url),
                _http(url, timeout_s),
                _http(url, probe_timeout_s),
            )
            for i, url in enumerate(urls)
        )
        self._lock = threading.Lock()
        self._current = 0
        self._chain_id: int | None = None
        #: index -> the chain it answered: out of rotation for good.
        self._excluded: dict[int, int] = {}
        #: When the primary was left (or last probed in vain); None while it is current.
        self._left_primary_at: float | None = None

    def __repr__(self) -> str:
        return f"<FailoverProvider current={self.current.name!r} of {len(self.endpoints)}>"

    # --- state ---------------------------------------------------------------------------------

    @property
    def current(self) -> Endpoint:
        return self.endpoints[self._current]

    @property
    def chain_id(self) -> int | None:
        """The chain every endpoint in use was verified on; None before :meth:`open`."""
        return self._chain_id

    @property
    def excluded(self) -> tuple[Endpoint, ...]:
        """Endpoints taken out of rotation (they answered another chain)."""
        return tuple(self.endpoints[i] for i in sorted(self._excluded))

    def open(self, expected_chain_id: int | None = None) -> list[Probe]:
        """Probe the endpoints in order and make the first one on the right chain current: the
        expected chain, or else the first answer. A fallback on another chain is excluded; the
        primary on another chain stops the walk (a configuration error: the caller says which
        setting). Returns every probe made; :attr:`chain_id` is None if none was usable."""
        tried: list[Probe] = []
        with self._lock:
            for endpoint in self.endpoints:
                if endpoint.index in self._excluded:
                    continue
                probe = self._probe(endpoint)
                tried.append(probe)
                if probe.chain_id is None:
                    reason = probe.fault.reason if probe.fault else "no answer"
                    logger.warning("RPC %s unreachable at start (%s)", endpoint.name, reason)
                    continue
                want = probe.chain_id if expected_chain_id is None else expected_chain_id
                if probe.chain_id != want:
                    if endpoint.is_primary:
                        return tried
                    self._exclude(endpoint, probe.chain_id, want)
                    continue
                self._chain_id, self._current = want, endpoint.index
                if not endpoint.is_primary:
                    self._left_primary_at = self.policy.clock()
                    logger.warning("RPC starting on %s (chain %d)", endpoint.name, want)
                return tried
        return tried

    # --- the provider API ------------------------------------------------------------------------

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        if self._chain_id is None:
            self._open_or_raise()
        chain_id = self._chain_id
        if method == _CHAIN_ID and chain_id is not None:
            return cast(RPCResponse, {"jsonrpc": "2.0", "id": 0, "result": hex(chain_id)})
        self._maybe_back_to_primary()
        if method in IDEMPOTENT_READS:
            return self._read(method, params)
        return self._send(method, params)

    def is_connected(self, show_traceback: bool = False) -> bool:
        return bool(self.current.provider.is_connected(show_traceback))

    # --- requests --------------------------------------------------------------------------------

    def _read(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        """One try on the current endpoint; a transient failure switches, then goes up as it is
        (the read-retry middleware asks again, on the endpoint now current)."""
        endpoint = self.current
        try:
            answer = endpoint.provider.make_request(method, params)
        except Exception as exc:  # sorted by the classifier; re-raised unchanged in every case
            fault = classify(exc)
            if fault.retryable:
                self._failed(endpoint, method, fault)
            raise
        answered = _error_fault(answer)
        if answered is not None and answered.kind is RpcErrorKind.RETRYABLE_READ:
            self._failed(endpoint, method, answered)
        return answer

    def _send(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        """A state-changing request: sent on to another endpoint only when provably never sent."""
        tried: set[int] = set()
        while True:
            endpoint = self.current
            tried.add(endpoint.index)
            try:
                answer = endpoint.provider.make_request(method, params)
            except Exception as exc:  # sorted by the classifier; re-raised unless never sent
                fault = classify(exc, broadcast=True)
                if not fault.retryable:  # a definite refusal, or a bug: the caller's to handle
                    raise
                now = self._failed(endpoint, method, fault)
                if now.index not in tried and refused_before_sending(exc):
                    logger.warning(
                        "%s refused by %s before sending (%s): sending it to %s",
                        method,
                        endpoint.name,
                        fault.reason,
                        now.name,
                    )
                    continue
                raise  # maybe sent: the caller confirms and rebroadcasts (on `now`)
            answered = _error_fault(answer, broadcast=True)
            if answered is not None and answered.kind is RpcErrorKind.MAYBE_SENT:
                self._failed(endpoint, method, answered)
            return answer

    # --- switching -------------------------------------------------------------------------------

    def _open_or_raise(self) -> None:
        tried = self.open()
        if self._chain_id is None:
            reasons = "; ".join(
                f"{p.endpoint.name} ({p.fault.reason if p.fault else 'no answer'})" for p in tried
            )
            raise ChainReadError(f"no RPC endpoint answers: {reasons or 'none usable'}")

    def _rotation(self, after: int) -> Iterator[Endpoint]:
        n = len(self.endpoints)
        for step in range(1, n):
            index = (after + step) % n
            if index not in self._excluded:
                yield self.endpoints[index]

    def _failed(self, endpoint: Endpoint, method: str, fault: RpcFault) -> Endpoint:
        """`endpoint` failed transiently: switch to the next usable endpoint (verified) if it is
        still current. Returns the endpoint current afterwards."""
        with self._lock:
            if self._current != endpoint.index:  # another request switched already
                return self.current
            for candidate in self._rotation(endpoint.index):
                probe = self._probe(candidate)
                if self._usable(probe):
                    logger.warning(
                        "RPC %s failed (%s: %s): switched to %s",
                        endpoint.name,
                        method,
                        fault.reason,
                        candidate.name,
                    )
                    self._use(candidate)
                    return candidate
            if len(self.endpoints) > 1:
                logger.warning(
                    "RPC %s failed (%s: %s); no other endpoint usable: staying on it",
                    endpoint.name,
                    method,
                    fault.reason,
                )
            return endpoint

    def _maybe_back_to_primary(self) -> None:
        left = self._left_primary_at
        if left is None or self._current == 0 or 0 in self._excluded:
            return
        if self.policy.clock() - left < self.policy.cooldown_s:
            return
        with self._lock:
            left = self._left_primary_at
            now = self.policy.clock()
            if left is None or self._current == 0 or now - left < self.policy.cooldown_s:
                return  # another request did it meanwhile
            self._left_primary_at = now  # a failed probe starts the cool-down over
            primary, was = self.endpoints[0], self.current
            probe = self._probe(primary)
            if self._usable(probe):
                logger.warning(
                    "RPC back to %s after the %.0fs cool-down (was on %s)",
                    primary.name,
                    self.policy.cooldown_s,
                    was.name,
                )
                self._use(primary)
            elif 0 not in self._excluded:
                logger.info(
                    "RPC %s still unusable after the cool-down (%s): staying on %s",
                    primary.name,
                    probe.fault.reason if probe.fault else "no answer",
                    was.name,
                )

    def _use(self, endpoint: Endpoint) -> None:
        """Make `endpoint` current (under the lock, once verified)."""
        if endpoint.is_primary:
            self._left_primary_at = None
        elif self._current == 0:
            self._left_primary_at = self.policy.clock()
        self._current = endpoint.index

    def _usable(self, probe: Probe) -> bool:
        """True when the probe found the endpoint on the keeper's chain; an endpoint on another
        chain is excluded (logged once)."""
        if probe.chain_id is None:
            logger.info(
                "RPC %s unreachable on switch (%s)",
                probe.endpoint.name,
                probe.fault.reason if probe.fault else "no answer",
            )
            return False
        if self._chain_id is not None and probe.chain_id != self._chain_id:
            self._exclude(probe.endpoint, probe.chain_id, self._chain_id)
            return False
        return True

    def _exclude(self, endpoint: Endpoint, chain_id: int, want: int) -> None:
        self._excluded[endpoint.index] = chain_id
        logger.error(
            "RPC %s is on chain %d, not chain %d: taken out of rotation",
            endpoint.name,
            chain_id,
            want,
        )

    @staticmethod
    def _probe(endpoint: Endpoint) -> Probe:
        try:
            answer = endpoint.probe.make_request(_CHAIN_ID, [])
        except Exception as exc:  # sorted by the classifier; a bug is re-raised
            fault = classify(exc)
            if fault.kind is RpcErrorKind.NOT_RPC:
                raise
            return Probe(endpoint, None, fault)
        answered = _error_fault(answer)
        if answered is not None:
            return Probe(endpoint, None, answered)
        result = answer.get("result") if isinstance(answer, Mapping) else None
        try:
            chain_id = int(result, 16) if isinstance(result, str) else int(cast(Any, result))
        except (TypeError, ValueError):
            shown = f"eth_chainId answered a {type(result).__name__}, not a chain id"
            return Probe(endpoint, None, RpcFault(RpcErrorKind.RETRYABLE_READ, shown))
        return Probe(endpoint, chain_id)


def current_endpoint(w3: Web3) -> str:
    """The endpoint `w3` sends to now, masked, for logs and status: ``fallback 1
    https://host/***`` behind a :class:`FailoverProvider`, the masked URL of a plain HTTP
    provider, else the provider's class name (an in-process chain)."""
    provider = w3.provider
    if isinstance(provider, FailoverProvider):
        return provider.current.name
    uri = getattr(provider, "endpoint_uri", None)
    if isinstance(uri, str) and uri:
        return mask_rpc_url(uri)
    return type(provider).__name__


__all__ = [
    "PRIMARY_COOLDOWN_S",
    "PROBE_TIMEOUT_S",
    "Endpoint",
    "FailoverPolicy",
    "FailoverProvider",
    "Probe",
    "current_endpoint",
    "refused_before_sending",
]
