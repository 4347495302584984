"""A webhook receiver on a free loopback port, for the notification tests: apprise's
``json://127.0.0.1:PORT/...`` posts land in a queue (the ``hook`` fixture, tests/conftest.py)."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Seconds a test waits for something that happens in well under one.
WAIT_S = 10.0


@dataclass
class Hook:
    """A webhook receiver. While `gate` is clear, each request is held unanswered."""

    port: int
    requests: queue.Queue[tuple[str, dict[str, str], dict[str, Any]]]
    gate: threading.Event
    arrived: threading.Event
    answered: threading.Event

    def url(self, path: str = "/hook", scheme: str = "json", userinfo: str = "") -> str:
        return f"{scheme}://{userinfo}127.0.0.1:{self.port}{path}"

    def take(self, n: int) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
        return [self.requests.get(timeout=WAIT_S) for _ in range(n)]

    def bodies(self, n: int) -> list[dict[str, Any]]:
        return [body for _, _, body in self.take(n)]


@contextmanager
def serve_hook() -> Iterator[Hook]:
    requests: queue.Queue[tuple[str, dict[str, str], dict[str, Any]]] = queue.Queue()
    gate, arrived, answered = threading.Event(), threading.Event(), threading.Event()
    gate.set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.put((self.path, dict(self.headers), body))
            arrived.set()
            gate.wait(timeout=60)
            self.send_response(200)
            self.end_headers()
            answered.set()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Hook(server.server_address[1], requests, gate, arrived, answered)
    finally:
        gate.set()
        server.shutdown()
        server.server_close()
