"""The `keeper` command. Only this module configures logging handlers.

User errors (bad settings, bad addresses, an unreachable RPC, a wrong chain, a signer without
the keeper role or without gas money: see :mod:`keeper.startup`) print one line and exit 2
with no traceback; a bug stops the process with a traceback and exit 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keeper import __version__
from keeper.errors import KeeperError

if TYPE_CHECKING:  # imported where used: a bad setting need not wait for web3 to load
    from eth_account.signers.local import LocalAccount
    from eth_typing import ChecksumAddress

    from keeper.config import Settings

logger = logging.getLogger(__name__)

#: Exit code for user errors (bad config, bad input, unreachable RPC): one line, no traceback.
EXIT_USER_ERROR = 2


#: The settings file read when --env-file is not given; it may be absent.
DEFAULT_ENV_FILE = ".env"
#: What `check-config --offline` leaves out.
OFFLINE_SKIPS = "chain id, fallback RPCs, vaults, keeper role, gas balance"


def _settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from keeper.config import load_settings

    # A file the operator names must be there; the default .env may be absent.
    named = args.env_file is not None
    return load_settings(
        env_file=args.env_file if named else DEFAULT_ENV_FILE, env_file_required=named
    )


def _signer_address(account: LocalAccount | None) -> ChecksumAddress | None:
    from web3 import Web3

    return Web3.to_checksum_address(account.address) if account is not None else None


class _HoldUntilStarted(logging.Handler):
    """Holds log records back while the keeper starts, so that a start refused for bad input is
    the one `keeper: error:` line alone; `let_through()` (or, unless `hold_warnings`, any
    warning) lets them all through."""

    def __init__(self, target: logging.Handler, hold_warnings: bool = False) -> None:
        super().__init__()
        self.target = target
        self.hold_warnings = hold_warnings
        self._held: list[logging.LogRecord] = []
        self._released = False

    def emit(self, record: logging.LogRecord) -> None:
        if self._released:
            self.target.handle(record)
            return
        self._held.append(record)
        if record.levelno >= logging.WARNING and not self.hold_warnings:
            self.let_through()  # something the operator must see now

    def drop_held(self) -> None:
        self._held.clear()

    def let_through(self) -> None:
        self._released = True
        held, self._held = self._held, []
        for record in held:
            self.target.handle(record)


@contextmanager
def _quiet_start(hold_warnings: bool = False) -> Iterator[None]:
    """Route the root logger through `_HoldUntilStarted` while the keeper starts. A KeeperError
    (bad input: its one line says it all) drops what is still held — below WARNING, or with
    `hold_warnings` (a check's report, where the error line says what the warnings would)
    everything; success or a bug (the traceback needs the context) lets it through."""
    root = logging.getLogger()
    targets = list(root.handlers)
    holders = [_HoldUntilStarted(h, hold_warnings) for h in targets]
    root.handlers[:] = holders
    try:
        yield
    except KeeperError:
        for holder in holders:
            holder.drop_held()
        raise
    finally:
        root.handlers[:] = targets
        for holder in holders:
            holder.let_through()


def _configure_keeper_logging(
    settings: Settings, json_lines: bool, level: str | None = None
) -> None:
    """Logging for the commands that read settings: every configured RPC URL (KEEPER_RPC_URL
    and each fallback) is masked from the first record on, not only once connect() has
    registered it. `level` overrides KEEPER_LOG_LEVEL (the reports show warnings only)."""
    from keeper.logs import configure_logging

    configure_logging(
        level or settings.log_level,
        settings.log_json or json_lines,
        secret_urls=settings.secret_urls(),
    )


def _cmd_check_config(args: argparse.Namespace) -> int:
    from keeper.config import resolve_vaults
    from keeper.signer import load_signer

    settings = _settings(args)
    _configure_keeper_logging(settings, args.json, level="WARNING")
    checks: list[list[str]] = []
    with _quiet_start(hold_warnings=True):
        account = load_signer(settings)
        if not args.offline:
            from keeper.app import connect_node
            from keeper.startup import run_startup_checks

            w3 = connect_node(settings)
            found = run_startup_checks(
                settings, w3, _signer_address(account), fallbacks_must_answer=True
            )
            checks = [[check.name, check.found] for check in found]
    # Only now: keeper.report pulls in the risk core (scipy), half a second a bad setting
    # need not wait for.
    from keeper.report import table

    rows = [[name, value] for name, value in settings.describe()]
    rows.append(["(signer address)", account.address if account else "none (dry run)"])
    rows.append(["(vaults, effective)", ", ".join(resolve_vaults(settings)) or "none"])
    print(table(["setting", "value"], rows))
    if args.offline:
        print(f"node not contacted (--offline): not checked: {OFFLINE_SKIPS}")
    else:
        print(table(["check", "found"], checks))
    print("configuration OK")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from keeper.app import connect_node
    from keeper.notify import Notifier
    from keeper.signer import load_signer
    from keeper.startup import run_startup_checks

    settings = _settings(args)
    _configure_keeper_logging(settings, args.json)
    with _quiet_start():
        # First: it registers the URLs' tokens for masking, and a bad URL is one line, exit 2.
        notifier = Notifier([u.get_secret_value() for u in settings.notify_urls])
        account = load_signer(settings)
        w3 = connect_node(settings)
        # Before the journal is opened or a nonce read: a refused start leaves nothing behind.
        for check in run_startup_checks(
            settings, w3, _signer_address(account), fallbacks_must_answer=False
        ):
            logger.info("start-up check %s: %s", check.name, check.found)
        metrics, server = _start_metrics(settings)  # before start(): /readyz 503 till then
        try:
            if settings.journal_is_postgres:
                lease = _open_lease(settings)
            else:
                service, reconciled = _start_service(settings, account, w3, metrics)
        except BaseException:
            if server is not None:
                server.close()
            raise
    if settings.journal_is_postgres:
        return _run_replica(args, settings, account, w3, notifier, lease, metrics, server)
    return _run_single(args, settings, service, reconciled, notifier, metrics, server)


def _open_lease(settings: Settings) -> Any:
    """The replica's leader lease on the PostgreSQL journal (its schema created or migrated);
    a database that is not there is one line naming KEEPER_JOURNAL."""
    from keeper.config import env_name
    from keeper.errors import ConfigError
    from keeper.journal import JournalError
    from keeper.lease import LeaderLease

    assert settings.chain_id is not None  # required with a PostgreSQL journal (config)
    try:
        return LeaderLease(
            settings.journal_target,
            settings.chain_id,
            settings.effective_replica_id,
            settings.lease_seconds,
            settings.lease_renew_interval,
        )
    except JournalError as exc:
        raise ConfigError(f"{env_name('journal')}: {exc}") from None


def _loop_options(settings: Settings, metrics: Any, notifier: Any) -> dict[str, Any]:
    return {
        "max_consecutive_failures": settings.max_consecutive_failures,
        "head_poll_s": settings.head_poll_interval,
        "head_stall_s": settings.head_stall,
        "metrics": metrics,
        "notifier": notifier,
        "min_gas_balance_wei": settings.min_gas_balance_wei,
    }


def _start_service(
    settings: Settings,
    account: LocalAccount | None,
    w3: Any,
    metrics: Any,
    fence: tuple[str, str, int | None] | None = None,
) -> tuple[Any, list[Any]]:
    """Build and start the service (reconciling the journal); (service, reconciled)."""
    from keeper.app import build_service

    service = build_service(settings, account, w3=w3, fence=fence)
    reconciled = service.start(verify_vaults=False)
    if metrics is not None:
        metrics.observe_started(service, reconciled)
    return service, reconciled


def _tick_once(service: Any, metrics: Any, notifier: Any) -> int:
    report = service.tick()
    if metrics is not None:
        metrics.observe_tick(report, service)
    notifier.from_tick(report, service.halted)
    service.journal.close()
    return 0 if report.error is None else 1


def _run_single(
    args: argparse.Namespace, settings: Settings, service: Any, reconciled: list[Any],
    notifier: Any, metrics: Any, server: Any,
) -> int:
    """One keeper on a SQLite journal, started: tick until stopped."""
    from keeper.scheduler import run_scheduler
    from keeper.service import TickReport

    try:
        notifier.from_tick(TickReport(block=-1, outcomes=list(reconciled)))
        if args.once:
            return _tick_once(service, metrics, notifier)
        options = _loop_options(settings, metrics, notifier)
        return run_scheduler(service, settings.poll_interval, **options)
    finally:
        if server is not None:
            server.close()
        notifier.close()


def _run_replica(
    args: argparse.Namespace, settings: Settings, account: LocalAccount | None, w3: Any,
    notifier: Any, lease: Any, metrics: Any, server: Any,
) -> int:
    """One replica on a PostgreSQL journal: stand by until the leader lease is ours, lead until
    it is lost (then stand by again) or the process is stopped. See :mod:`keeper.lease`."""
    import signal
    import threading

    from keeper.journal import LeaseLost
    from keeper.scheduler import EXIT_LEASE_LOST, KeeperLoop, SignalRelay
    from keeper.service import TickReport

    assert settings.chain_id is not None  # required with a PostgreSQL journal (config)
    stop = threading.Event()

    def on_signal(signum: int) -> None:
        logger.info("signal %d while standing by: stopping", signum)
        stop.set()

    # Set from the relay's thread: stop.set() takes the Event's lock, which the interrupted
    # main thread may hold (in stop.wait).
    relay = SignalRelay(on_signal)

    try:
        while True:
            signal.signal(signal.SIGINT, relay.handler)
            signal.signal(signal.SIGTERM, relay.handler)
            if metrics is not None:
                metrics.observe_standby(lease.current())
            logger.info(
                "replica %s on chain %d: standing by for the lease", lease.holder,
                settings.chain_id,
            )
            if not lease.wait(stop, on_attempt=_standby_probe(metrics)):
                return 0
            if metrics is not None:
                metrics.observe_lease(True, lease.record)
            try:
                service, reconciled = _start_service(
                    settings, account, w3, metrics, fence=lease.fence
                )
            except LeaseLost as exc:
                logger.error("lease lost while taking over (%s): standing by again", exc)
                lease.stop(release=False)
                continue
            notifier.from_tick(TickReport(block=-1, outcomes=list(reconciled)))
            if args.once:
                try:
                    return _tick_once(service, metrics, notifier)
                finally:
                    lease.stop(release=True)
            options = _loop_options(settings, metrics, notifier)
            loop = KeeperLoop(
                service, settings.poll_interval, lease=lease, stopping=stop, **options
            )
            code = loop.run()
            if code != EXIT_LEASE_LOST:
                return code
            if loop.signalled is not None:  # stopped by a signal as it stood down: stay stopped
                return 0
    finally:
        relay.close()
        lease.stop(release=True)
        lease.close()
        if server is not None:
            server.close()
        notifier.close()


def _standby_probe(metrics: Any) -> Any:
    """Called after each failed attempt at the lease: a standby's liveness and its metrics."""
    if metrics is None:
        return None
    return lambda current: metrics.observe_standby(current)


def _start_metrics(settings: Any) -> tuple[Any, Any]:
    """The Prometheus endpoint when KEEPER_METRICS_PORT is set: (metrics, server), else
    (None, None). Imported only then: prometheus-client is not needed otherwise."""
    if settings.metrics_port is None:
        return None, None
    from keeper.metrics import KeeperMetrics

    metrics = KeeperMetrics(
        interval_s=settings.poll_interval, min_gas_balance_wei=settings.min_gas_balance_wei
    )
    server = metrics.serve(settings.metrics_port, settings.metrics_host)
    logger.info("metrics on %s/metrics (and /healthz, /readyz)", server.url)
    return metrics, server


def _cmd_status(args: argparse.Namespace) -> int:
    if args.journal_only:
        return _status_from_journal(args)
    from keeper.app import build_service, verify_vaults
    from keeper.status import status_text

    # Read-only: nothing is sent, so nothing is journaled and no journal file is created; the
    # running keeper's journal, if there is one, is read without a write.
    configured = _settings(args)
    settings = configured.model_copy(update={"journal": Path(":memory:")})
    service = build_service(settings, None)
    try:
        verify_vaults(settings, service.reader)
        print(status_text(service))
    finally:
        service.journal.close()
    print()
    print(_recorded_text(configured.journal_target, configured.chain_id))
    return 0


def _recorded_text(target: str, chain_id: int | None) -> str:
    """The journal's part of `keeper status` for one chain (read-only, nothing created)."""
    from keeper.journal import Journal
    from keeper.journal_db import describe, is_postgres, list_chain_schemas
    from keeper.status import journal_text

    where = describe(target)
    if is_postgres(target):
        if chain_id not in list_chain_schemas(target):
            return f"journal {where} chain {chain_id}: none yet (no keeper has run there)"
    elif not Path(target).is_file():
        return f"journal {where}: none yet (the keeper has not run here)"
    with Journal(target, chain_id=chain_id, read_only=True) as recorded:
        return f"journal {where}" + (f" chain {chain_id}" if is_postgres(target) else "") + (
            ":\n" + journal_text(recorded)
        )


def _status_from_journal(args: argparse.Namespace) -> int:
    """`keeper status --journal-only`: KEEPER_JOURNAL alone, no node; on PostgreSQL every
    chain's journal on the server."""
    from keeper.config import load_journal_target
    from keeper.journal_db import is_postgres
    from keeper.masking import register_secret_url

    named = args.env_file is not None
    target = load_journal_target(
        env_file=args.env_file if named else DEFAULT_ENV_FILE, env_file_required=named
    )
    if is_postgres(target):
        from keeper.status import every_chain_text

        register_secret_url(target)
        print(every_chain_text(target))
        return 0
    if not Path(target).is_file():
        raise KeeperError(f"KEEPER_JOURNAL: {target}: no such journal (the keeper has not run)")
    print(_recorded_text(target, None))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from keeper.demo import run_demo
    from keeper.logs import configure_logging

    configure_logging("DEBUG" if args.verbose else "WARNING", args.json)
    return run_demo(steps=args.steps)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from keeper.logs import configure_logging
    from keeper.sim.simulate import (
        ERRORS_FILE,
        SimRequest,
        list_scenarios,
        simulate,
        split_names,
    )

    if args.list_scenarios:
        print(list_scenarios())
        return 0
    configure_logging("INFO" if args.verbose else "ERROR", args.json)
    request = SimRequest(
        scenarios=split_names(args.scenario),
        paths=args.paths,
        seed=args.seed,
        policies=split_names(args.policies),
        orders=split_names(args.order),
        workers=args.workers,
        out=Path(args.out),
        chain=args.chain,
        rpc_url=args.rpc_url,
        ray=args.ray,
        time_scale=args.time_scale,
        tail_hours=args.tail_hours,
        report=not args.no_report,
    )
    result = simulate(request)
    done = f"{result.steps:,} steps in {result.seconds:,.1f}s"
    print(f"wrote {Path(args.out) / 'metrics.json'} and report.md ({done})")
    if result.interrupted:
        return 130
    if result.failures:
        first = result.failures[0]
        print(
            f"keeper: error: simulate: {len(result.failures)} path(s) failed, first "
            f"{first.scenario} path {first.path}: {first.error} (tracebacks in "
            f"{Path(args.out) / ERRORS_FILE}; metrics.json holds the paths that finished)",
            file=sys.stderr,
        )
        return 1
    return 0


def _add_simulate(sub: Any) -> None:
    sim = sub.add_parser(
        "simulate",
        help="replay price scenarios through the real contracts with the keeper in the loop",
    )
    sim.add_argument(
        "--scenario",
        default="gap45,rally",
        help="comma-separated scenario names (see --list-scenarios)",
    )
    sim.add_argument("--list-scenarios", action="store_true", help="list the scenarios and exit")
    sim.add_argument("--paths", type=int, default=1, help="paths per scenario (Monte Carlo)")
    sim.add_argument("--seed", type=int, default=0, help="seed of path 0; path i uses (seed, i)")
    sim.add_argument(
        "--policies",
        default="hold,threshold,keeper",
        help="comma-separated: hold, threshold, keeper",
    )
    sim.add_argument(
        "--order",
        default="keeper-first,liquidator-first",
        help="who moves first after each oracle update: keeper-first, "
        "liquidator-first, or both (comma-separated)",
    )
    sim.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes, one chain each (with --ray: local CPUs)",
    )
    sim.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run one task per path on this Ray cluster ('local' starts one)",
    )
    sim.add_argument(
        "--rpc-url", default=None, help="an external dev node (anvil) instead of starting one"
    )
    sim.add_argument(
        "--chain",
        default="auto",
        choices=("auto", "anvil", "tester"),
        help="auto: anvil from node_modules when present, else in-process",
    )
    sim.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiply every phase's duration (short runs); moves keep their size",
    )
    sim.add_argument(
        "--tail-hours",
        type=int,
        default=None,
        help="length of the final flat tail (default: the scenario's, >= 48 h)",
    )
    sim.add_argument("--no-report", action="store_true", help="write metrics.json only")
    sim.add_argument("--out", default="sim-out", help="output directory")
    sim.set_defaults(func=_cmd_simulate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keeper", description="Keeps derivative vaults inside their risk mandate."
    )
    parser.add_argument("--version", action="version", version=f"keeper {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (demo)")
    parser.add_argument("--json", action="store_true", help="log JSON lines instead of text")
    parser.add_argument(
        "--env-file",
        default=None,
        help="settings file read before the environment; must exist "
        f"(default {DEFAULT_ENV_FILE}, read when present)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the keeper: a tick every KEEPER_POLL_INTERVAL seconds")
    run.add_argument("--once", action="store_true", help="run one tick and exit")
    run.set_defaults(func=_cmd_run)
    status = sub.add_parser(
        "status", help="each vault's health, leverage, greeks and mandate, read live"
    )
    status.add_argument(
        "--journal-only",
        action="store_true",
        help="read only KEEPER_JOURNAL, no node: last tick, halts, transactions in flight and "
        "the leader (on PostgreSQL: of every chain on the server)",
    )
    status.set_defaults(func=_cmd_status)
    check = sub.add_parser(
        "check-config",
        help="validate the settings, print them (secrets masked) and run the start-up checks "
        "on the node: chain id, vaults, keeper role, gas balance",
    )
    check.add_argument(
        "--offline", action="store_true", help="validate the settings only; contact no node"
    )
    check.set_defaults(func=_cmd_check_config)
    demo = sub.add_parser(
        "demo", help="embedded chain: deploy, drive a scripted market, keep the vaults"
    )
    demo.add_argument(
        "--steps", type=int, default=0, help="stop after this many market steps (0 = all)"
    )
    demo.set_defaults(func=_cmd_demo)
    _add_simulate(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeeperError as exc:
        print(f"keeper: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
