"""Liveness and readiness of the keeper process, and the one HTTP server that serves them with
the Prometheus metrics (off unless the composition root calls :func:`serve`).

- ``/healthz`` (liveness, for a supervisor that restarts the process): 200 while ticks
  complete; 503 when the last good tick — one that ended without an error — is older than
  ``STALE_INTERVALS`` tick intervals (measured from when the state was created while no tick
  has completed yet, so a start gets the same grace), or when every watched vault is halted
  (the process runs but keeps nothing: only a restart clears a halt).
- ``/readyz`` (readiness, for a load balancer or a standby replica): 200 once the service has
  started — chain and vaults checked, journal reconciled — and the server answers; 503 before,
  and 503 on a standby replica (it does not hold the leader lease). A standby's ``/healthz``
  answers 200 while it keeps trying for the lease (each attempt counts as a good tick).
- ``/metrics``: the registry in the Prometheus text format (prometheus-client's WSGI app).

Loopback by default: the endpoint has no authentication, and what it shows (vault addresses,
balances, positions) is for the operator's own Prometheus only.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app

from keeper.errors import ConfigError

logger = logging.getLogger(__name__)

#: Missed intervals before /healthz answers 503: one slow tick (a confirmation wait up to the
#: tick deadline) or one failed read must not restart the process; three in a row is a keeper
#: that has stopped keeping.
STALE_INTERVALS = 3
#: Loopback only unless the operator names another address: the endpoint is unauthenticated.
DEFAULT_HOST = "127.0.0.1"
#: Seconds `MetricsServer.close` waits for the serving thread.
CLOSE_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """One probe's answer: healthy or not, and why (the response body says it too)."""

    ok: bool
    reason: str
    details: dict[str, Any]

    @property
    def http_status(self) -> str:
        return "200 OK" if self.ok else "503 Service Unavailable"


class HealthState:
    """What the probes answer from; written by the tick thread, read by the server's threads."""

    def __init__(
        self,
        interval_s: float,
        clock: Callable[[], float] = time.time,
        stale_intervals: int = STALE_INTERVALS,
    ) -> None:
        if not interval_s > 0:
            raise ConfigError(f"health: tick interval must be > 0 s, got {interval_s!r}")
        if stale_intervals < 1:
            raise ConfigError(f"health: stale_intervals must be >= 1, got {stale_intervals!r}")
        self.interval_s = float(interval_s)
        self.stale_intervals = stale_intervals
        self._clock = clock
        self._lock = threading.Lock()
        self._created_at = clock()
        self._started = False
        self._last_good: float | None = None
        self._watched = 0
        self._halted = 0
        #: None: not a replica; else the current leader's name while this one stands by.
        self._standby_for: str | None = None

    @property
    def stale_after_s(self) -> float:
        """Seconds without a good tick after which /healthz answers 503."""
        return self.stale_intervals * self.interval_s

    @property
    def started(self) -> bool:
        with self._lock:
            return self._started

    def mark_started(self) -> None:
        """The service has started (see `KeeperService.start`): /readyz answers 200 from now."""
        with self._lock:
            self._started = True

    def standing_by(self, leader: str | None) -> None:
        """A replica's attempt at the lease failed (`leader` holds it): alive, not ready."""
        now = self._clock()
        with self._lock:
            self._started = False
            self._standby_for = leader or "nobody"
            self._last_good = now

    def leading(self) -> None:
        """The replica took the lease; ready once `mark_started` (after reconciliation)."""
        with self._lock:
            self._standby_for = None

    def tick_completed(self, ok: bool) -> None:
        """A tick ended; `ok` when it ended without an error."""
        if ok:
            now = self._clock()
            with self._lock:
                self._last_good = now

    def set_vaults(self, watched: int, halted: int) -> None:
        with self._lock:
            self._watched, self._halted = watched, halted

    def liveness(self) -> Verdict:
        with self._lock:
            since = self._last_good if self._last_good is not None else self._created_at
            watched, halted, ticked = self._watched, self._halted, self._last_good is not None
        age = max(0.0, self._clock() - since)
        details: dict[str, Any] = {
            "last_good_tick_age_seconds": round(age, 3) if ticked else None,
            "seconds_since_reference": round(age, 3),
            "stale_after_seconds": self.stale_after_s,
            "vaults": watched,
            "halted_vaults": halted,
        }
        if watched > 0 and halted >= watched:
            return Verdict(False, f"all {watched} vaults are halted", details)
        if age > self.stale_after_s:
            what = "the last good tick" if ticked else "start, and no tick has completed"
            return Verdict(
                False,
                f"{age:.0f}s since {what} (limit {self.stale_after_s:g}s = "
                f"{self.stale_intervals} intervals of {self.interval_s:g}s)",
                details,
            )
        return Verdict(True, "ticking", details)

    def readiness(self) -> Verdict:
        with self._lock:
            started, standby = self._started, self._standby_for
        if standby is not None:
            return Verdict(
                False, f"standby (leader: {standby})", {"started": False, "leader": standby}
            )
        return Verdict(started, "started" if started else "starting", {"started": started})


# ---------------------------------------------------------------------------------- the app
def make_app(registry: CollectorRegistry, health: HealthState) -> WSGIApplication:
    """/metrics, /healthz and /readyz on one WSGI app (GET and HEAD only)."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path not in ("/metrics", "/healthz", "/readyz"):
            return _text(
                start_response, "404 Not Found", "not found: try /metrics, /healthz, /readyz\n"
            )
        if method not in ("GET", "HEAD"):
            return _text(
                start_response,
                "405 Method Not Allowed",
                "GET or HEAD only\n",
                [("Allow", "GET, HEAD")],
            )
        if path == "/metrics":
            body: Iterable[bytes] = metrics_app(environ, start_response)
            return body
        verdict = health.liveness() if path == "/healthz" else health.readiness()
        payload = {"status": "ok" if verdict.ok else "unavailable", "reason": verdict.reason}
        payload.update(verdict.details)
        data = (json.dumps(payload, sort_keys=True) + "\n").encode()
        start_response(
            verdict.http_status,
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(data))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [b""] if method == "HEAD" else [data]

    return app


def _text(
    start_response: StartResponse,
    status: str,
    text: str,
    extra: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    data = text.encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))]
    start_response(status, headers + (extra or []))
    return [data]


# ---------------------------------------------------------------------------------- the server
class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per request, never blocking the process on exit."""

    daemon_threads = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """wsgiref logs every request to stderr; a scrape every 15 s belongs at DEBUG."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        logger.debug("metrics endpoint: " + format, *args)


@dataclass
class MetricsServer:
    """The running endpoint: its bound address (port 0 picks a free one) and how to stop it."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def host(self) -> str:
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(CLOSE_TIMEOUT_S)


def serve(app: WSGIApplication, port: int, host: str = DEFAULT_HOST) -> MetricsServer:
    """Serve `app` on `host:port` from a daemon thread (it never keeps the process alive).
    A port that cannot be bound is a ConfigError (the keeper stops at start, exit code 2)."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"metrics endpoint: port must be 0-65535, got {port}")
    server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
    try:
        server = make_server(host, port, app, server_class, handler_class=_QuietHandler)
    except OSError as exc:
        raise ConfigError(f"metrics endpoint {host}:{port}: cannot listen ({exc})") from None
    thread = threading.Thread(target=server.serve_forever, name="keeper-metrics", daemon=True)
    thread.start()
    running = MetricsServer(server, thread)
    if host not in ("127.0.0.1", "::1", "localhost"):
        logger.warning(
            "metrics endpoint listening on %s, not loopback: it has no authentication",
            running.url,
        )
    logger.info("metrics endpoint on %s (/metrics, /healthz, /readyz)", running.url)
    return running


__all__ = [
    "DEFAULT_HOST",
    "STALE_INTERVALS",
    "HealthState",
    "MetricsServer",
    "Verdict",
    "make_app",
    "serve",
]
