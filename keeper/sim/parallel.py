"""Running jobs — one scenario path, every policy and order on it — serially, on worker
processes (one chain each, built once per worker), or on a Ray cluster (one task per path, each
starting its own chain). Every way returns the same PathRuns for the same jobs: a job's result
depends only on its scenario, seed and path index."""

from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.util as mp_util
import queue
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


def run_serial(jobs: Sequence[Job], on_step: Callable[[], None],
               on_job: Callable[[list[PathRun]], None]) -> None:
    """In this process, on one chain."""
    if not jobs:
        return
    from keeper.sim.runner import open_world

    with open_world(jobs[0].chain, jobs[0].rpc_url) as world:
        for job in jobs:
            on_job(run_job(job, world, on_step))


def run_workers(jobs: Sequence[Job], workers: int, on_step: Callable[[], None],
                on_job: Callable[[list[PathRun]], None]) -> None:
    """On `workers` processes (spawned: no chain or web3 state is inherited)."""
    ctx = mp.get_context("spawn")
    progress = ctx.Manager().Queue()
    pool = ctx.Pool(workers, initializer=_worker_init, initargs=(progress,))
    try:
        pending = [pool.apply_async(_worker_job, (job,)) for job in jobs]
        while pending:
            _drain(progress, on_step, timeout=0.2)
            for result in [p for p in pending if p.ready()]:
                pending.remove(result)
                on_job(result.get())
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


def run_ray(jobs: Sequence[Job], address: str, on_job: Callable[[list[PathRun]], None],
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
            on_job(ray.get(done[0]))
    finally:
        if started_here:
            ray.shutdown()


def iter_jobs(scenarios: Sequence[str], paths: int, seed: int, **kwargs: Any) -> Iterator[Job]:
    for name in scenarios:
        for i in range(paths):
            yield Job(name, i, seed, **kwargs)


__all__ = ["Job", "iter_jobs", "run_job", "run_ray", "run_serial", "run_workers"]
