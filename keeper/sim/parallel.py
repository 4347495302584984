"""Running jobs — one scenario path, every policy and order on it — serially, on worker
processes (one chain each, built once per worker), or on a Ray cluster (one task per path, each
starting its own chain). Every way returns the same PathRuns for the same jobs: a job's result
depends only on its scenario, seed and path index.

A job that fails (a keeper bug, a chain that died) fails alone: its error goes to `on_fail` with
the job, the other jobs run on, and every policy is still compared on the same set of paths (a
failed job contributes no run of any policy)."""

from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.util as mp_util
import queue
import re
import signal
import socket
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from keeper.errors import ConfigError
from keeper.sim.records import PathRun

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Job:
    scenario: str
    path: int
    seed: int
    policies: tuple[str, ...]
    orders: tuple[str, ...]
    chain: str  # "anvil" | "tester" | "rpc"
    rpc_url: str | None = None
    time_scale: float = 1.0
    tail_hours: int | None = None

    @property
    def steps(self) -> int:
        """Chain steps this job replays (every policy and order walks the whole path)."""
        from keeper.sim.scenarios import get_scenario

        path = get_scenario(self.scenario).generate(
            self.seed, self.path, time_scale=self.time_scale, tail_hours=self.tail_hours
        )
        return path.n_steps * len(self.policies) * len(self.orders)


@dataclass(frozen=True, slots=True)
class JobFailure:
    """A job that raised: where, the one-line reason, and the traceback for the log."""

    scenario: str
    path: int
    error: str
    traceback: str

    @classmethod
    def of(cls, job: Job, exc: BaseException, trace: str | None = None) -> JobFailure:
        first = (str(exc).strip().splitlines() or [""])[0]
        reason = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        return cls(job.scenario, job.path, reason,
                   trace or "".join(traceback.format_exception(exc)))


OnJob = Callable[[list[PathRun]], None]
OnFail = Callable[[JobFailure], None]


#: One world per worker process, built on its first job (a process never mixes chains).
_WORLD: Any = None
_WORLD_CM: Any = None
_PROGRESS: Any = None


def run_job(job: Job, world: Any, on_step: Callable[[], None] | None = None) -> list[PathRun]:
    from keeper.sim.runner import run_path
    from keeper.sim.scenarios import get_scenario

    path = get_scenario(job.scenario).generate(
        job.seed, job.path, start_iv=world.iv0, time_scale=job.time_scale,
        tail_hours=job.tail_hours,
    )
    return [
        run_path(world, path, policy, order, job.path, on_step)
        for order in job.orders
        for policy in job.policies
    ]


def _worker_world(job: Job) -> Any:
    global _WORLD, _WORLD_CM
    if _WORLD is None:
        from keeper.sim.runner import open_world

        _WORLD_CM = open_world(job.chain, job.rpc_url)
        _WORLD = _WORLD_CM.__enter__()
        # Stop the worker's chain when the pool winds the worker down (a killed worker's anvil
        # dies with it: see `keeper.devnet.anvil`).
        mp_util.Finalize(None, _close_worker_world, exitpriority=10)
    return _WORLD


def _worker_init(progress: Any) -> None:
    global _PROGRESS
    _PROGRESS = progress
    # Ctrl-C is the parent's to handle (it terminates the pool): a worker interrupted in the
    # middle of a request would print its own traceback (seen once under load in CI).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger().setLevel(logging.ERROR)


def _worker_job(job: Job) -> list[PathRun]:
    def tick() -> None:
        if _PROGRESS is not None:
            _PROGRESS.put(1)

    return run_job(job, _worker_world(job), tick)


def _close_worker_world() -> None:
    global _WORLD, _WORLD_CM
    if _WORLD_CM is not None:
        _WORLD_CM.__exit__(None, None, None)
    _WORLD = _WORLD_CM = None


def run_serial(jobs: Sequence[Job], on_step: Callable[[], None], on_job: OnJob,
               on_fail: OnFail) -> None:
    """In this process, on one chain (each run starts from the world's snapshot, so a failed
    job leaves nothing behind for the next)."""
    if not jobs:
        return
    from keeper.sim.runner import open_world

    with open_world(jobs[0].chain, jobs[0].rpc_url) as world:
        for job in jobs:
            try:
                runs = run_job(job, world, on_step)
            except Exception as exc:  # noqa: BLE001 - reported per job; the others run on
                on_fail(JobFailure.of(job, exc))
            else:
                on_job(runs)


def run_workers(jobs: Sequence[Job], workers: int, on_step: Callable[[], None],
                on_job: OnJob, on_fail: OnFail) -> None:
    """On `workers` processes (spawned: no chain or web3 state is inherited)."""
    ctx = mp.get_context("spawn")
    progress = ctx.Manager().Queue()
    pool = ctx.Pool(workers, initializer=_worker_init, initargs=(progress,))
    try:
        pending = {pool.apply_async(_worker_job, (job,)): job for job in jobs}
        while pending:
            _drain(progress, on_step, timeout=0.2)
            for result in [p for p in pending if p.ready()]:
                job = pending.pop(result)
                try:
                    runs = result.get()
                except Exception as exc:  # noqa: BLE001 - the worker's error, re-raised here
                    on_fail(JobFailure.of(job, exc))
                else:
                    on_job(runs)
        _drain(progress, on_step, timeout=0.0)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


def _drain(progress: Any, on_step: Callable[[], None], timeout: float) -> None:
    try:
        progress.get(timeout=timeout) if timeout else progress.get_nowait()
        on_step()
        while True:
            progress.get_nowait()
            on_step()
    except queue.Empty:
        return


def _ray_job(job: Job) -> list[PathRun]:
    """A Ray task: its own chain, started and stopped inside the task."""
    from keeper.sim.runner import open_world

    with open_world(job.chain, job.rpc_url) as world:
        return run_job(job, world)


#: Terminal colour codes, which Ray puts in a task's remote traceback.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: Seconds to wait for a TCP connection to a Ray head before calling the address unreachable.
RAY_PROBE_TIMEOUT_S = 5.0


def _probe_ray(address: str) -> None:
    """Fail fast on a head that is not there: `ray.init` itself retries for minutes, printing
    a warning every few seconds. Only host:port forms are probed ("auto" is Ray's to find)."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        if address != "auto":
            raise ConfigError(f"--ray {address}: not an address (local, auto, HOST:PORT or "
                              "ray://HOST:PORT)")
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)),
                                      timeout=RAY_PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"--ray {address}: cannot reach the cluster head ({reason})") from None


def run_ray(jobs: Sequence[Job], address: str, on_job: OnJob, on_fail: OnFail,
            num_cpus: int | None = None) -> None:
    """One Ray task per path on the cluster at `address` ("local" starts a local one)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray: Ray is not installed (pip install '.[sim]')") from None
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address == "local":
            kwargs["num_cpus"] = num_cpus
        else:
            _probe_ray(address)
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"--ray {address}: cannot join the cluster ({exc})") from None
    try:
        task = ray.remote(_ray_job)
        refs = {task.remote(job): job for job in jobs}
        remaining = list(refs)
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            try:
                runs = ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:
                # The task's own exception and its remote traceback (in the error's text).
                trace = _ANSI.sub("", str(exc))
                on_fail(JobFailure.of(refs[done[0]], exc.cause or exc, trace=trace))
            else:
                on_job(runs)
    finally:
        if started_here:
            ray.shutdown()


def iter_jobs(scenarios: Sequence[str], paths: int, seed: int, **kwargs: Any) -> Iterator[Job]:
    for name in scenarios:
        for i in range(paths):
            yield Job(name, i, seed, **kwargs)


__all__ = ["Job", "JobFailure", "iter_jobs", "run_job", "run_ray", "run_serial", "run_workers"]
