"""A loopback JSON-RPC proxy that fails on demand, for the fault tests (loopback only).

It listens on ``http://127.0.0.1:PORT/v3/<secret>`` — the URL shape of a hosted provider whose
API key is in the path — answers 404 on any other path, and forwards good requests to an
upstream node (anvil). A `plan` decides, per request, whether to inject a fault instead:

- ``drop_before``: close the connection without forwarding (the node never saw it);
- ``drop_after``: forward, then close without answering (the node did see it: the "maybe sent"
  case of a broadcast);
- ``http_502`` / ``http_502_after``: a gateway's HTML 502, before or after forwarding;
- ``html``: HTTP 200 with an HTML page; ``http_429``: rate limited;
- ``header_not_found``: the JSON-RPC error a lagging node gives for a block it lacks;
- ``delay``: answer after `delay_s` (past a short client timeout);
- ``reverted``: the JSON-RPC error of a call that reverted (a final answer, not a fault).

Without an upstream it answers every request itself: ``eth_chainId`` with `chain_id`, anything
else with ``"0x1"``. :meth:`FaultyRpc.stop` kills it for real (open keep-alive connections are
closed too, so a client sees refused connections); :meth:`FaultyRpc.restart` serves again on
the same port, so the same URL works again.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

FAULTS = (
    "drop_before",
    "drop_after",
    "http_502",
    "http_502_after",
    "html",
    "http_429",
    "header_not_found",
    "delay",
    "reverted",
)
#: What a misconfigured gateway sends instead of JSON.
HTML_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"

#: plan(method, n) -> a fault name or None; n counts every request the proxy has seen.
Plan = Callable[[str, int], str | None]


class FaultyRpc:
    """The proxy; a context manager that always stops its server thread."""

    def __init__(
        self,
        upstream: str | None,
        secret: str = "SECRETKEY123",
        delay_s: float = 1.5,
        chain_id: int = 1,
    ) -> None:
        self.upstream = upstream
        self.path = f"/v3/{secret}"
        self.delay_s = delay_s
        self.chain_id = chain_id
        self.plan: Plan = lambda method, n: None
        self.requests = 0
        self.received: Counter[str] = Counter()  # method -> requests seen (faults included)
        self.injected: Counter[tuple[str, str]] = Counter()  # (fault, method) -> count
        self.forwarded: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._session = requests.Session()
        self._session.trust_env = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None
        self.running = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}{self.path}"

    def start(self) -> FaultyRpc:
        server = self._server  # a short poll: stop() returns in ~50 ms, not 0.5 s
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.05), daemon=True
        )
        self._thread.start()
        self.running = True
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection: the port refuses from now on."""
        if not self.running:
            return
        self.running = False
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections, self._open = list(self._open), set()
        for connection in connections:  # a handler waiting on a keep-alive connection
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._session.close()

    def restart(self) -> FaultyRpc:
        """Serve again on the same port (same URL), after :meth:`stop`."""
        if self.running:
            return self
        self._session = requests.Session()
        self._session.trust_env = False
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), self._handler())
        self._server.daemon_threads = True
        return self.start()

    def __enter__(self) -> FaultyRpc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextmanager
    def planned(self, plan: Plan) -> Iterator[None]:
        previous, self.plan = self.plan, plan
        try:
            yield
        finally:
            self.plan = previous

    def injected_total(self, fault: str | None = None, method: str | None = None) -> int:
        return sum(
            n
            for (f, m), n in self.injected.items()
            if (fault is None or f == fault) and (method is None or m == method)
        )

    # --- the server side -----------------------------------------------------------------------

    def _decide(self, method: str) -> str | None:
        with self._lock:
            n = self.requests
            self.requests += 1
            self.received[method] += 1
            fault = self.plan(method, n)
            if fault is not None:
                self.injected[(fault, method)] += 1
            return fault

    def _forward(self, body: bytes) -> bytes:
        if self.upstream is None:
            request = json.loads(body)
            result = hex(self.chain_id) if request.get("method") == "eth_chainId" else "0x1"
            answer = {"jsonrpc": "2.0", "id": request.get("id"), "result": result}
            return json.dumps(answer).encode()
        answer = self._session.post(
            self.upstream, data=body, headers={"Content-Type": "application/json"}, timeout=30
        )
        return bytes(answer.content)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy._open.add(self.connection)

            def finish(self) -> None:
                with proxy._lock:
                    proxy._open.discard(self.connection)
                super().finish()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                return

            def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (a delay past its timeout)
                    self.close_connection = True

            def _drop(self) -> None:
                self.close_connection = True  # nothing written: the client sees a dropped reply

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != proxy.path:
                    self._answer(404, b"not found", "text/plain")
                    return
                try:
                    request = json.loads(body)
                    method = request.get("method", "?") if isinstance(request, dict) else "batch"
                    request_id = request.get("id") if isinstance(request, dict) else None
                except ValueError:
                    method, request_id = "?", None
                fault = proxy._decide(method)
                if fault == "drop_before":
                    self._drop()
                    return
                if fault == "http_502":
                    self._answer(502, HTML_PAGE, "text/html")
                    return
                if fault == "html":
                    self._answer(200, HTML_PAGE, "text/html")
                    return
                if fault == "http_429":
                    self._answer(429, b"Too Many Requests", "text/plain")
                    return
                if fault == "header_not_found":
                    error = {"code": -32000, "message": "header not found"}
                    answer = {"jsonrpc": "2.0", "id": request_id, "error": error}
                    self._answer(200, json.dumps(answer).encode())
                    return
                if fault == "reverted":
                    error = {"code": 3, "message": "execution reverted", "data": "0x"}
                    answer = {"jsonrpc": "2.0", "id": request_id, "error": error}
                    self._answer(200, json.dumps(answer).encode())
                    return
                if fault == "delay":
                    time.sleep(proxy.delay_s)
                upstream = proxy._forward(body)
                proxy.forwarded[method] += 1
                if fault == "drop_after":
                    self._drop()
                    return
                if fault == "http_502_after":
                    self._answer(502, HTML_PAGE, "text/html")
                    return
                self._answer(200, upstream)

        return Handler


__all__ = ["FAULTS", "HTML_PAGE", "FaultyRpc", "Plan"]
