"""The keeper loop's stop requests: one that arrives before the scheduler has started (a
SIGTERM between the signal handler's installation and the start, or while a replica was taking
over) is not lost."""

from __future__ import annotations

import threading
import time

from keeper.scheduler import KeeperLoop


class Journal:
    closed = False

    def close(self) -> None:
        self.closed = True


class Service:
    """What KeeperLoop touches of a KeeperService when nothing ticks."""

    vaults = ("0xV",)
    tick_deadline_s = 1.0

    def __init__(self) -> None:
        self.journal = Journal()
        self.ticks = 0

    def tick(self) -> object:
        self.ticks += 1
        raise AssertionError("no tick may run after a stop request")

    def wait_idle(self, timeout_s: float) -> bool:
        return True


def run_in_thread(loop: KeeperLoop, limit_s: float = 10.0) -> int | None:
    result: dict[str, int] = {}
    t = threading.Thread(target=lambda: result.update(code=loop.run()), daemon=True)
    t.start()
    t.join(limit_s)
    return result.get("code")


def test_a_stop_before_the_start_stops_the_loop_at_once() -> None:
    service = Service()
    loop = KeeperLoop(service, 60.0, head_poll_s=0)  # type: ignore[arg-type]
    loop.stop()
    started = time.monotonic()
    assert run_in_thread(loop) == 0  # before the fix: blocked for good (the 10 s limit)
    assert time.monotonic() - started < 5
    assert service.ticks == 0 and service.journal.closed


def test_the_callers_stop_event_set_before_the_loop_runs_is_honoured() -> None:
    service, stopping = Service(), threading.Event()
    stopping.set()
    loop = KeeperLoop(service, 60.0, head_poll_s=0, stopping=stopping)  # type: ignore[arg-type]
    assert run_in_thread(loop) == 0
    assert service.ticks == 0
