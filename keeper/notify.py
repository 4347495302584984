"""Notifications on the events an operator must hear about: a deleverage sent, an action that
failed, a vault halted, the lease lost, the gas balance low.

Sent through apprise, configured by URL (``KEEPER_NOTIFY_URLS``): ``slack://``, ``discord://``,
``tgram://``, ``pagerduty://``, ``mailto://``, or ``json://`` / ``jsons://`` for a plain JSON
webhook (``{"version", "title", "message", "attachments", "type"}``), among many others.

The tick is never blocked nor broken by a notification: an event method masks its text, drops
a repeat of the same event within `min_interval_s` (a halted vault stays halted; a failing
action fails every tick) and puts it on a bounded queue — when full, it is dropped and counted.
One daemon thread sends, each send bounded by `send_timeout_s`; a failed send is logged once
per URL per interval, masked, and never raised.

These URLs hold secrets (webhook tokens, bot tokens, passwords) like the RPC URL does: each is
registered with :mod:`keeper.masking` before apprise sees it (apprise logs the URLs it loads),
including the host part where a service puts a token there (``tgram://BOT_TOKEN/CHAT``), and
apprise's logger masks its records through the same filter as our handlers.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

from apprise import Apprise, AppriseAsset, NotifyFormat, NotifyType, PersistentStoreMode
from eth_typing import ChecksumAddress

from keeper.clock import Clock, SystemClock
from keeper.config_values import format_eth
from keeper.errors import ConfigError
from keeper.logs import SecretFilter
from keeper.masking import FRAGMENT_MIN_CHARS, MASK, MASKER, mask_rpc_url, mask_text

if TYPE_CHECKING:
    from keeper.service import TickReport

logger = logging.getLogger(__name__)


class _BelowError(logging.Filter):
    """Drops apprise's own ERROR records while a URL is parsed (ours is the one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR

#: The setting the URLs come from, named in a configuration error.
NOTIFY_URLS_SETTING = "KEEPER_NOTIFY_URLS"
#: Seconds before the same event (same key) is sent again, and between two log lines about
#: one URL failing or about the queue dropping: a halted vault is reported every tick.
MIN_INTERVAL_S = 300.0
#: Seconds one send may take, connection and answer included (apprise abandons it after).
SEND_TIMEOUT_S = 10.0
#: Notices waiting to be sent; more are dropped (and counted) rather than held in memory.
QUEUE_SIZE = 100
#: Rate-limit entries kept before the expired ones are pruned (deleverages key by tx hash).
MAX_KEYS = 1024
#: Vault functions whose mined transaction is a deleverage the operator hears about.
DELEVERAGE_FUNCTIONS = frozenset({"deleverage", "repayDebt"})
#: Outcome statuses that are an action failing (see `keeper.tx.core.Outcome`).
FAILED_STATUSES = frozenset({"failed", "reverted", "simulation_reverted", "timeout"})
#: Schemes whose host is a server's name; in any other scheme a host without a dot may be a
#: token (``slack://TOKEN_A/...``, ``discord://WEBHOOK_ID/...``, ``tgram://BOT:TOKEN/...``).
HOSTNAME_SCHEMES = frozenset(
    {"json", "jsons", "xml", "xmls", "form", "forms", "mailto", "mailtos", "apprise", "apprises"}
)
#: A health at or above this is "no debt" (the vault reports uint256 max).
_HEALTH_INFINITE = 2**255


@dataclass(frozen=True, slots=True)
class Notice:
    """One message. `key` names the event for rate limiting: the same key is sent at most once
    per interval."""

    key: str
    title: str
    body: str
    kind: NotifyType = NotifyType.INFO


@dataclass(frozen=True, slots=True)
class NotifierStats:
    """Counts since start: notices queued, suppressed as repeats, dropped on a full queue, and
    sends (one per notice and URL) that succeeded or failed."""

    queued: int
    suppressed: int
    dropped: int
    sent: int
    failed: int


@dataclass(slots=True)
class _Target:
    label: str  # masked, for logs
    apprise: Apprise
    logged_at: float | None = None
    unlogged: int = 0


def register_notify_url(url: str) -> None:
    """Mask `url`'s secret parts from now on: what :func:`keeper.masking.register_secret_url`
    masks (userinfo, path, query, fragment), and the host too unless it is a server's name."""
    MASKER.register_url(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return  # registered whole by register_url
    host = parts.netloc.rsplit("@", 1)[-1]
    if parts.scheme.lower() in HOSTNAME_SCHEMES or _is_hostname(host):
        return
    MASKER.register(host, *(p for p in host.split(":") if len(p) >= FRAGMENT_MIN_CHARS))


def _is_hostname(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host
    return "." in name or name.lower() == "localhost" or name.startswith("[")


def _label(index: int, url: str) -> str:
    """``#2 json://127.0.0.1:8080/***``: which entry, never a secret."""
    scheme = url.partition("://")[0].lower()
    host = urlsplit(url).netloc.rsplit("@", 1)[-1] if "://" in url else ""
    if scheme in HOSTNAME_SCHEMES or _is_hostname(host):
        shown = mask_rpc_url(url)
    else:
        shown = f"{scheme}://{MASK}"
    return f"#{index} {mask_text(shown)}"


def _ratio(wad: int) -> float:
    return float("inf") if wad >= _HEALTH_INFINITE else wad / 1e18


def _install_log_filter() -> None:
    """apprise logs the URLs it loads and posts to (tokens included) at DEBUG: its records are
    masked at the source, so no handler — ours, pytest's, a library's — sees them raw."""
    apprise_logger = logging.getLogger("apprise")
    if not any(isinstance(f, SecretFilter) for f in apprise_logger.filters):
        apprise_logger.addFilter(SecretFilter(MASKER))


class Notifier:
    """Sends notices to every configured URL from a background thread (see the module doc).
    With no URLs it does nothing and starts no thread. Invalid URLs raise ConfigError here,
    at start, naming the setting and the entry (masked)."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        min_interval_s: float = MIN_INTERVAL_S,
        clock: Clock | None = None,
        send_timeout_s: float = SEND_TIMEOUT_S,
        queue_size: int = QUEUE_SIZE,
        origin: str = "keeper",
        setting: str = NOTIFY_URLS_SETTING,
    ) -> None:
        if min_interval_s < 0 or send_timeout_s <= 0 or queue_size < 1:
            raise ValueError(
                f"min_interval_s={min_interval_s}, send_timeout_s={send_timeout_s}, "
                f"queue_size={queue_size}: need >= 0, > 0 and >= 1"
            )
        self.min_interval_s = min_interval_s
        self.send_timeout_s = send_timeout_s
        self.origin = origin
        self.clock: Clock = clock or SystemClock()
        entries = [u.strip() for u in urls if u.strip()]
        for url in entries:  # before apprise parses (and logs) any of them
            register_notify_url(url)
        _install_log_filter()
        self._targets = [self._target(i, url, setting) for i, url in enumerate(entries, 1)]
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0  # queued or being sent
        self._last_sent: dict[str, float] = {}
        self._drop_logged_at: float | None = None
        self._queued = self._suppressed = self._dropped = self._sent = self._failed = 0
        self._closed = False
        self._queue: queue.Queue[Notice | None] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        if self._targets:
            self._thread = threading.Thread(target=self._run, name="keeper-notify", daemon=True)
            self._thread.start()

    def _target(self, index: int, url: str, setting: str) -> _Target:
        asset = AppriseAsset(
            app_id="vault-keeper",
            app_desc="vault keeper",
            storage_mode=PersistentStoreMode.MEMORY,
            service_timeout=self.send_timeout_s,
        )
        # A URL apprise cannot parse is our one-line ConfigError below, not its own ERROR too.
        apprise_logger = logging.getLogger("apprise")
        quiet = _BelowError()
        apprise_logger.addFilter(quiet)
        try:
            service = Apprise.instantiate(url, asset=asset)
        finally:
            apprise_logger.removeFilter(quiet)
        label = _label(index, url)
        if service is None:
            raise ConfigError(
                f"{setting}: entry {index} ({label}) is not a notification URL apprise "
                "understands (see its wiki for each service's URL form)"
            )
        # Connect and read timeouts inside the send's own, so no socket outlives it.
        service.socket_connect_timeout = min(service.socket_connect_timeout, self.send_timeout_s)
        service.socket_read_timeout = min(service.socket_read_timeout, self.send_timeout_s)
        apprise = Apprise(asset=asset)
        apprise.add(service)
        return _Target(label, apprise)

    # ------------------------------------------------------------------ state
    @property
    def enabled(self) -> bool:
        """At least one URL is configured."""
        return bool(self._targets)

    @property
    def urls(self) -> list[str]:
        """The configured URLs as logs may show them."""
        return [t.label for t in self._targets]

    @property
    def stats(self) -> NotifierStats:
        with self._lock:
            return NotifierStats(
                self._queued, self._suppressed, self._dropped, self._sent, self._failed
            )

    # ------------------------------------------------------------------ events
    def deleverage_sent(
        self,
        vault: str,
        function: str,
        tx_hash: str | None,
        block: int | None,
        health_before: float | None,
    ) -> bool:
        """A deleverage (or debt repayment) mined. `health_before` is the ratio the tick read."""
        health = "unknown" if health_before is None else f"{health_before:.3f}"
        where = f"block {block}" if block is not None else "a block"
        return self.notify(
            Notice(
                f"deleverage_sent:{vault}:{function}:{tx_hash}",
                f"{self.origin}: {function} sent for vault {vault}",
                f"vault {vault}: {function} mined in {where}, tx {tx_hash}; "
                f"health before {health}.",
                NotifyType.WARNING,
            )
        )

    def action_failed(self, vault: str, function: str, status: str, error: str | None) -> bool:
        """An action ended without effect (see FAILED_STATUSES)."""
        return self.notify(
            Notice(
                f"action_failed:{vault}:{function}:{status}",
                f"{self.origin}: {function} {status} for vault {vault}",
                f"vault {vault}: {function} ended {status}: {error or 'no reason given'}.",
                NotifyType.FAILURE,
            )
        )

    def vault_halted(self, vault: str, why: str) -> bool:
        """The keeper stopped acting for `vault` (until it is restarted)."""
        return self.notify(
            Notice(
                f"vault_halted:{vault}",
                f"{self.origin}: vault {vault} halted",
                f"vault {vault} halted: {why}. No action for it until the keeper is restarted.",
                NotifyType.FAILURE,
            )
        )

    def lease_lost(self, holder: str | None) -> bool:
        """This process no longer holds the lease; `holder` is who does (None: nobody)."""
        return self.notify(
            Notice(
                "lease_lost",
                f"{self.origin}: lease lost",
                f"this keeper lost its lease; now held by {holder or 'nobody'}.",
                NotifyType.WARNING,
            )
        )

    def gas_balance_low(self, address: str, balance_wei: int, minimum_wei: int) -> bool:
        """The signer holds less native token than it needs for gas."""
        return self.notify(
            Notice(
                f"gas_balance_low:{address}",
                f"{self.origin}: gas balance low for {address}",
                f"signer {address} holds {format_eth(balance_wei)}, below the minimum "
                f"{format_eth(minimum_wei)}; fund it.",
                NotifyType.WARNING,
            )
        )

    def from_tick(
        self, report: TickReport, halted: Mapping[ChecksumAddress, str] | None = None
    ) -> int:
        """The events in one tick's report: mined deleverages and repayments, failed actions,
        and vaults halted this tick — those in `halted` (the service's `halted`: vault → why)
        that faulted this tick (a vault already halted is not counted again, so it is not in
        `report.faults`). How many notices were queued."""
        queued = 0
        for o in report.outcomes:
            if o.status == "mined" and o.function in DELEVERAGE_FUNCTIONS:
                snap = report.snapshots.get(cast(ChecksumAddress, o.vault))
                health = None if snap is None else _ratio(snap.health)
                block = o.details.get("block")
                queued += self.deleverage_sent(o.vault, o.function, o.tx_hash, block, health)
            elif o.status in FAILED_STATUSES:
                queued += self.action_failed(o.vault, o.function, o.status, o.error)
        for vault, why in (halted or {}).items():
            if vault in report.faults:
                queued += self.vault_halted(vault, why)
        return queued

    # ------------------------------------------------------------------ queue
    def notify(self, notice: Notice) -> bool:
        """Mask, rate-limit and queue `notice`; never blocks, never raises. True when queued."""
        if not self._targets or self._closed:
            return False
        masked = Notice(notice.key, mask_text(notice.title), mask_text(notice.body), notice.kind)
        now = self.clock.now()
        with self._lock:
            last = self._last_sent.get(notice.key)
            if last is not None and now - last < self.min_interval_s:
                self._suppressed += 1
                return False
            self._pending += 1
        try:
            self._queue.put_nowait(masked)
        except queue.Full:
            self._on_drop(masked, now)
            return False
        with self._lock:
            self._queued += 1
            self._last_sent[notice.key] = now
            if len(self._last_sent) > MAX_KEYS:
                self._prune(now)
        return True

    def _on_drop(self, notice: Notice, now: float) -> None:
        with self._lock:
            self._pending -= 1
            self._dropped += 1
            dropped = self._dropped
            quiet = (
                self._drop_logged_at is not None
                and now - self._drop_logged_at < self.min_interval_s
            )
            if not quiet:
                self._drop_logged_at = now
        if not quiet:
            logger.warning(
                "notification queue full (%d waiting): dropped %r; %d dropped since start",
                self._queue.maxsize,
                notice.title,
                dropped,
            )

    def _prune(self, now: float) -> None:
        expired = [k for k, t in self._last_sent.items() if now - t >= self.min_interval_s]
        for key in expired:
            del self._last_sent[key]

    def flush(self, timeout_s: float = SEND_TIMEOUT_S) -> bool:
        """Wait until every queued notice has been sent (or failed); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout_s)

    def close(self, timeout_s: float = SEND_TIMEOUT_S) -> None:
        """Stop taking notices, send what is queued (for at most `timeout_s`), stop the thread."""
        self._closed = True
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            logger.warning("notifier closed with %d notices unsent", self._queue.qsize())
            return
        self._thread.join(timeout_s)

    # ------------------------------------------------------------------ sending
    def _run(self) -> None:
        while True:
            notice = self._queue.get()
            if notice is None:
                return
            try:
                for target in self._targets:
                    self._send(target, notice)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _send(self, target: _Target, notice: Notice) -> None:
        try:
            with target.apprise.notify(
                body=notice.body,
                title=notice.title,
                notify_type=notice.kind,
                body_format=NotifyFormat.TEXT,
                interpret_escapes=False,
                timeout=self.send_timeout_s,
            ) as result:
                ok = bool(result)
                why = result.status.name.lower() + (" (timed out)" if result.timeout_count else "")
        except Exception as exc:  # a plugin's bug must stop neither this thread nor the tick
            ok, why = False, f"{type(exc).__name__}: {exc}"
        with self._lock:
            if ok:
                self._sent += 1
                return
            self._failed += 1
        self._log_failure(target, notice, why)

    def _log_failure(self, target: _Target, notice: Notice, why: str) -> None:
        """Once per URL per interval; the failures in between are counted in the next line."""
        now = self.clock.now()
        if target.logged_at is not None and now - target.logged_at < self.min_interval_s:
            target.unlogged += 1
            return
        since = f"; {target.unlogged} more failed since the last report" if target.unlogged else ""
        target.logged_at, target.unlogged = now, 0
        logger.warning(
            "%s",
            mask_text(
                f"notification {notice.title!r} to {target.label} failed: {why}{since}; "
                f"next report on this URL in {self.min_interval_s:.0f}s at the earliest"
            ),
        )


__all__ = [
    "DELEVERAGE_FUNCTIONS",
    "FAILED_STATUSES",
    "MIN_INTERVAL_S",
    "NOTIFY_URLS_SETTING",
    "QUEUE_SIZE",
    "SEND_TIMEOUT_S",
    "Notice",
    "Notifier",
    "NotifierStats",
    "register_notify_url",
]
