"""`keeper simulate`: validate the request, run the jobs (serially, on workers or on Ray) with a
progress line, and write `metrics.json` and the report — also, with what is done, when the run is
interrupted (Ctrl-C)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from keeper.errors import ConfigError
from keeper.sim.metrics import build_metrics, json_safe
from keeper.sim.parallel import JobFailure, iter_jobs, run_ray, run_serial, run_workers
from keeper.sim.policies import check_policies
from keeper.sim.records import PathRun
from keeper.sim.runner import ORDERS, chain_kind
from keeper.sim.scenarios import SCENARIOS, UnknownScenario, get_scenario

logger = logging.getLogger(__name__)

#: Beside metrics.json when a path failed: each failure's traceback (metrics.json has one line).
ERRORS_FILE = "errors.log"


@dataclass(frozen=True, slots=True)
class SimRequest:
    scenarios: tuple[str, ...]
    paths: int
    seed: int
    policies: tuple[str, ...]
    orders: tuple[str, ...]
    workers: int
    out: Path
    chain: str = "auto"  # auto | anvil | tester
    rpc_url: str | None = None
    ray: str | None = None
    time_scale: float = 1.0
    tail_hours: int | None = None
    report: bool = True


@dataclass
class SimResult:
    runs: list[PathRun] = field(default_factory=list)
    failures: list[JobFailure] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    seconds: float = 0.0
    steps: int = 0


def split_names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def validate(req: SimRequest) -> SimRequest:
    """Every user error, as one line naming the flag — before any chain is started."""
    for name in req.scenarios:
        try:
            get_scenario(name)
        except UnknownScenario as exc:
            raise ConfigError(f"--scenario: {exc}") from None
    if not req.scenarios:
        raise ConfigError("--scenario: give at least one scenario (see --list-scenarios)")
    if req.paths < 1:
        raise ConfigError(f"--paths: must be at least 1, got {req.paths}")
    if req.workers < 1:
        raise ConfigError(f"--workers: must be at least 1, got {req.workers}")
    if req.time_scale <= 0:
        raise ConfigError(f"--time-scale: must be positive, got {req.time_scale}")
    if req.tail_hours is not None and req.tail_hours < 1:
        raise ConfigError(f"--tail-hours: must be at least 1, got {req.tail_hours}")
    policies = tuple(check_policies(req.policies))
    bad = [o for o in req.orders if o not in ORDERS]
    if bad or not req.orders:
        raise ConfigError(f"--order: unknown order {', '.join(bad) or '(none given)'} "
                          f"(known: {', '.join(ORDERS)})")
    if req.rpc_url and (req.workers > 1 or req.ray):
        raise ConfigError("--rpc-url: one external node cannot serve several workers (its "
                          "snapshots would collide); use --workers 1 without --ray")
    if req.chain not in ("auto", "anvil", "tester"):
        raise ConfigError(f"--chain: unknown chain {req.chain!r} (auto, anvil, tester)")
    if req.chain == "anvil" and chain_kind("auto", None) != "anvil":
        raise ConfigError("--chain anvil: anvil is not installed (make install gets it from npm)")
    check_writable(req.out)
    return SimRequest(**{**_fields(req), "policies": policies,
                         "orders": tuple(dict.fromkeys(req.orders))})


def _fields(req: SimRequest) -> dict[str, Any]:
    return {name: getattr(req, name) for name in req.__dataclass_fields__}


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".keeper-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out {out}: not writable ({exc.strerror or exc})") from None


def list_scenarios() -> str:
    lines = []
    width = max(len(n) for n in SCENARIOS)
    for name, sc in SCENARIOS.items():
        lines.append(f"{name.ljust(width)}  {sc.hours:>5} h  {sc.description}")
    return "\n".join(lines)


class Progress:
    """One status line on a terminal: paths and steps done, steps/s, ETA."""

    def __init__(self, total_paths: int, total_steps: int, stream: TextIO = sys.stderr) -> None:
        self.total_paths, self.total_steps = total_paths, total_steps
        self.paths = self.steps = 0
        self.started = time.monotonic()
        self.stream = stream
        self._last = 0.0

    def step(self) -> None:
        self.steps += 1
        self.show()

    def path_done(self, n: int = 1) -> None:
        self.paths += n
        self.show(force=True)

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.5:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-9)
        rate = self.steps / elapsed
        left = (self.total_steps - self.steps) / rate if rate > 0 else float("inf")
        eta = f"{left:,.0f}s" if left != float("inf") else "?"
        end = "\n" if self.paths >= self.total_paths else ""
        self.stream.write(
            f"\rpaths {self.paths}/{self.total_paths}  steps {self.steps:,}/{self.total_steps:,}"
            f"  {rate:,.1f} steps/s  ETA {eta}   {end}"
        )
        self.stream.flush()


def simulate(req: SimRequest, stream: TextIO = sys.stderr) -> SimResult:
    """Run `req` (validated) and write its outputs; Ctrl-C keeps what is done."""
    req = validate(req)
    kind = chain_kind(req.chain, req.rpc_url)
    jobs = list(iter_jobs(req.scenarios, req.paths, req.seed, policies=req.policies,
                          orders=req.orders, chain=kind, rpc_url=req.rpc_url,
                          time_scale=req.time_scale, tail_hours=req.tail_hours))
    total_steps = sum(j.steps for j in jobs)
    runs_per_job = len(req.policies) * len(req.orders)
    progress = Progress(len(jobs) * runs_per_job, total_steps, stream)
    result = SimResult()
    started = time.monotonic()

    def on_job(runs: list[PathRun]) -> None:
        result.runs.extend(runs)
        progress.path_done(len(runs))

    def on_fail(failure: JobFailure) -> None:
        if sigint.seen:
            # A casualty of Ctrl-C (the chains got the signal too and may die first; a cleanup
            # request then replaces the KeyboardInterrupt), not a failing path.
            raise KeyboardInterrupt
        if req.rpc_url:
            failure = _masked(failure, req.rpc_url)
        result.failures.append(failure)
        progress.path_done(runs_per_job)
        logger.error("simulate: %s path %d failed: %s", failure.scenario, failure.path,
                     failure.error)

    sigint = _SigintSeen()
    try:
        sigint.install()
        if req.ray:
            run_ray(jobs, req.ray, _with_steps(on_job, progress), on_fail, num_cpus=req.workers)
        elif req.workers > 1:
            run_workers(jobs, req.workers, progress.step, on_job, on_fail)
        else:
            run_serial(jobs, progress.step, on_job, on_fail)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        sigint.restore()
    if result.interrupted or sigint.seen:
        result.interrupted = True
        stream.write("\ninterrupted: writing what is done\n")
    result.seconds = time.monotonic() - started
    result.steps = sum(len(r.market) for r in result.runs)
    result.metrics = build_metrics(result.runs, _header(req, kind, result))
    write_outputs(req, result)
    return result


class _SigintSeen:
    """Remembers a Ctrl-C (and raises KeyboardInterrupt, as Python's own handler does), so that
    what the interrupt broke is not reported as failed paths: in a terminal the chains get the
    signal too, and one that dies first turns the run's next request into a ConnectionError."""

    def __init__(self) -> None:
        self.seen = False
        self._previous: Any = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            return  # started in the background on purpose: leave it so
        self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.seen = True
        raise KeyboardInterrupt

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _masked(failure: JobFailure, url: str) -> JobFailure:
    from keeper.chain.connect import mask_rpc_url

    shown = mask_rpc_url(url)
    return replace(failure, error=failure.error.replace(url, shown),
                   traceback=failure.traceback.replace(url, shown))


def _with_steps(on_job: Any, progress: Progress) -> Any:
    def counted(runs: list[PathRun]) -> None:
        progress.steps += sum(len(r.market) for r in runs)
        on_job(runs)

    return counted


def _header(req: SimRequest, kind: str, result: SimResult) -> dict[str, Any]:
    return {
        "chain": kind,
        "seed": req.seed,
        "paths": req.paths,
        "scenarios": list(req.scenarios),
        "policies": list(req.policies),
        "orders": list(req.orders),
        "time_scale": req.time_scale,
        "tail_hours": req.tail_hours,
        "interrupted": result.interrupted,
        "completed_runs": len(result.runs),
        "failed": [{"scenario": f.scenario, "path": f.path, "error": f.error}
                   for f in result.failures],
    }


def write_outputs(req: SimRequest, result: SimResult) -> None:
    req.out.mkdir(parents=True, exist_ok=True)
    (req.out / "metrics.json").write_text(
        json.dumps(json_safe(result.metrics), indent=2, sort_keys=False) + "\n"
    )
    errors = req.out / ERRORS_FILE
    if result.failures:
        errors.write_text("".join(
            f"== {f.scenario} path {f.path}: {f.error}\n{f.traceback}\n" for f in result.failures
        ))
    elif errors.exists():
        errors.unlink()  # a previous run's, not this one's
    if req.report and result.runs:
        from keeper.sim.report import write_report

        write_report(req.out, sorted(result.runs, key=_run_key), result.metrics)


def _run_key(r: PathRun) -> tuple[str, str, str, int]:
    return (r.scenario, r.order, r.policy, r.path)


__all__ = ["ERRORS_FILE", "Progress", "SimRequest", "SimResult", "list_scenarios", "simulate",
           "split_names", "validate"]
