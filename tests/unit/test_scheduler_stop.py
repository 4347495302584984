"""The keeper loop's stop requests: one that arrives before the scheduler has started (a
SIGTERM between the signal handler's installation and the start, or while a replica was taking
over) is not lost."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from keeper.scheduler import KeeperLoop

ROOT = Path(__file__).resolve().parents[2]


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


#: A `keeper run` loop in a subprocess, on a service that never acts; {setup} arranges where
#: SIGTERM lands and {eth} is the node's `eth` the head poll reads.
SCRIPT = """
import concurrent.futures.thread as pool, logging, os, signal, sys, time, types
from keeper.scheduler import KeeperLoop

logging.basicConfig(level=logging.INFO)
{setup}

class Service:
    vaults = ("0xV",)
    tick_deadline_s = 1.0
    last_block = 0
    busy = False
    head_stalled_since = None
    journal = types.SimpleNamespace(close=lambda: None)
    w3 = types.SimpleNamespace(eth={eth})
    def tick(self):
        return types.SimpleNamespace(error=None)
    def wait_idle(self, timeout_s):
        return True

sys.exit(KeeperLoop(Service(), {interval}, head_poll_s=0.2).run())
"""


def stopped_by_sigterm(setup: str, eth: str, interval: float) -> str:
    """Run SCRIPT; it must exit 0 within 20 s (a deadlock fails here). Its stderr."""
    script = SCRIPT.format(setup=setup, eth=eth, interval=interval)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
            text=True, timeout=20, check=False,
        )
    except subprocess.TimeoutExpired as exc:  # before the fix: deadlocked for good
        raise AssertionError("the loop did not stop within 20 s of SIGTERM") from exc
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "finishing the tick in flight, then stopping" in proc.stderr
    return proc.stderr


DURING_HEAD_POLL = """
class Eth:
    calls = 0
    @property
    def block_number(self):
        Eth.calls += 1
        if Eth.calls == 2:  # SIGTERM lands while this head poll waits on the node
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)
        return 100 + Eth.calls  # a new head: the poll moves the tick job forward
"""


def test_a_signal_while_a_head_poll_waits_on_the_node_stops_the_loop() -> None:
    """SIGTERM in the main thread while the head poll (a worker thread) is in its RPC: the
    handler used to shut the scheduler down with wait=True, holding the scheduler's job-store
    lock until every job finished, and the poll, back from the node, blocked on that lock to
    move the tick job — the replica test's keeper that never exited after its stop."""
    stopped_by_sigterm(DURING_HEAD_POLL, "Eth()", 60.0)


DURING_SUBMIT = """
adjust, calls = pool.ThreadPoolExecutor._adjust_thread_count, []

def interrupted(self):
    calls.append(1)
    if len(calls) == 3:  # SIGTERM lands while submit holds the pool's shutdown lock
        os.kill(os.getpid(), signal.SIGTERM)
    adjust(self)

pool.ThreadPoolExecutor._adjust_thread_count = interrupted
"""


def test_a_signal_while_the_scheduler_submits_a_job_stops_the_loop() -> None:
    """SIGTERM while the main thread is inside the thread pool's submit (holding its
    non-reentrant shutdown lock): a handler that shut the pool down from there waited on that
    lock for good — the keeper of tests/cli/test_metrics_endpoint.py still running two hours
    after its SIGTERM. The handler now only records the signal; a thread stops the loop."""
    err = stopped_by_sigterm(DURING_SUBMIT, "types.SimpleNamespace(block_number=1)", 0.2)
    assert "keeper stopped cleanly" in err
