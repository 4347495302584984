"""The durable record: ticks, decisions, intents and their transactions, in SQLite or PostgreSQL.

The rule it exists for: an intent, and each signed transaction with its raw bytes, is committed
to disk *before* it is broadcast. After a crash, :meth:`Journal.unfinished_intents` lists what
may be in flight, with everything needed to find its receipt or rebroadcast it, so a restart
never sends an action twice.

SQLite runs in WAL mode with ``synchronous=FULL``: every commit is fsynced before the call
returns. That costs a few milliseconds per write, nothing next to an RPC round trip, and a
keeper writes a handful of rows per tick. One connection is shared by the process behind a lock.
Wei amounts are stored as decimal TEXT (they overflow SQLite's 64-bit INTEGER); times are unix
seconds from an injectable clock.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, get_args

from web3.types import Wei

from keeper.journal_db import (
    MIGRATION_LOCK_KEY,
    POSTGRES,
    SQLITE,
    Dialect,
    connect,
    describe,
    schema_for,
)
from keeper.journal_schema import (  # noqa: F401 - some re-exported: keeper.journal is the API
    BUSY_TIMEOUT_MS,
    INITIAL_STATUSES,
    MIGRATIONS,
    SCHEMA_VERSION,
    UNFINISHED_STATUSES,
    DecisionRecord,
    IntentRecord,
    IntentStatus,
    JournalError,
    LeaseLost,
    LeaseRecord,
    TickRecord,
    TxRecord,
    TxStatus,
    VaultFault,
    _hex,
    _label,
    _nan_to_none,
    _opt_wei,
    _unhex,
    decode_json,
    encode_json,
    normalize_tx_hash,
)
from keeper.masking import mask_text

logger = logging.getLogger(__name__)


def _line(exc: BaseException) -> str:
    """A database error as one line: PostgreSQL's add LINE/HINT lines under the message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- the journal -------------------------------------------------------------------------------


class _Tx:
    """The connection inside one write transaction, speaking the journal's SQL (SQLite's
    spelling; translated for PostgreSQL)."""

    def __init__(self, conn: Any, dialect: Dialect) -> None:
        self._conn, self._dialect = conn, dialect

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> Any:
        return self._conn.execute(self._dialect.sql(sql), params)


class Journal:
    """One SQLite file (or ``":memory:"``) or one PostgreSQL schema, one connection, one lock.
    Every public write is one transaction, committed (and durable) before the method returns.

    Fencing: once :meth:`fence` names this process as the holder of a lease, every write first
    checks, inside its own transaction and by the database's clock, that the lease is still
    ours and unexpired (holding its row until commit); otherwise it raises :class:`LeaseLost`
    and writes nothing. Since every signed transaction is journaled before it is broadcast, a
    replica that lost its lease can broadcast only what the journal already holds — which the
    new leader reconciles — and never a new action."""

    def __init__(
        self,
        target: str | Path,
        clock: Callable[[], float] = time.time,
        read_only: bool = False,
        chain_id: int | None = None,
    ) -> None:
        """Open (creating and migrating) the journal at `target`: a SQLite path, or a
        ``postgresql://`` URL (then `chain_id` picks the schema). `read_only`: a journal another
        process writes, for `keeper status` — nothing is created, migrated or written; a journal
        of another schema version is refused."""
        self.path = str(target)
        self.where = describe(self.path)
        self.chain_id = chain_id
        self._clock = clock
        self._lock = threading.RLock()
        self._fence: tuple[str, str, int | None] | None = None
        self._read_only = read_only
        self._conn, self._db = connect(self.path, read_only, chain_id)
        self.backend = self._db.name
        try:
            if read_only:
                self._check_read_only()
                return
            mode = "wal"
            if self._db is SQLITE:
                mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.execute("PRAGMA foreign_keys=ON")
                self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._migrate()
        except BaseException as exc:
            self._conn.close()
            if self._db.is_db_error(exc):
                raise JournalError(f"journal {self.where}: cannot open: {_line(exc)}") from exc
            raise
        if mode != "wal" and self.path != ":memory:":
            logger.warning("journal %s: WAL unavailable, journal_mode=%s", self.where, mode)
        logger.debug("journal %s open (schema %d)", self.where, SCHEMA_VERSION)

    # --- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def fence(self, lease: str, holder: str, epoch: int | None = None) -> None:
        """From now on every write of this journal requires `holder` to hold lease `lease` (in
        term `epoch`, when given: a later term of the same name is another process's)."""
        self._fence = (lease, holder, epoch)

    def _live_conn(self) -> None:
        """PostgreSQL: a connection the server ended (a restart, the idle-in-transaction timeout
        after a pause) is opened again for the next statement; the one that failed has already
        raised. Lock held."""
        if self._db is POSTGRES and self._conn.closed:
            logger.warning("journal %s: connection lost; reconnecting", self.where)
            self._conn, _ = connect(self.path, self._read_only, self.chain_id)

    @contextmanager
    def _write(self, what: str, fenced: bool = True) -> Iterator[_Tx]:
        with self._lock:
            try:
                self._live_conn()
                self._conn.execute(self._db.begin)
                try:
                    tx = _Tx(self._conn, self._db)
                    if fenced and self._fence is not None:
                        self._check_fence(tx, what)
                    yield tx
                except BaseException:
                    if not (self._db is POSTGRES and self._conn.closed):
                        self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except (JournalError, LeaseLost):
                raise
            except Exception as exc:
                if self._db.is_integrity_error(exc):
                    why = _line(exc)
                    raise JournalError(f"journal: {what}: constraint violated: {why}") from exc
                if self._db.is_db_error(exc):
                    raise JournalError(f"journal: {what}: {_line(exc)}") from exc
                raise

    def _check_fence(self, tx: _Tx, what: str) -> None:
        assert self._fence is not None
        name, holder, epoch = self._fence
        row = tx.execute(
            f"SELECT holder, epoch, expires_at > {self._db.now} AS live FROM leases"
            " WHERE name = ?" + self._db.for_update,
            (name,),
        ).fetchone()
        ours = row is not None and row["holder"] == holder
        if ours and epoch is not None and int(row["epoch"]) != epoch:
            raise LeaseLost(
                f"journal: {what} refused: lease {name!r} is in term {row['epoch']}, "
                f"{holder} led term {epoch}"
            )
        if not ours or not row["live"]:
            by = (
                "nobody"
                if row is None
                else f"{row['holder']}" + ("" if row["live"] else ", expired")
            )
            raise LeaseLost(
                f"journal: {what} refused: lease {name!r} is not held by {holder} ({by})"
            )

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        with self._lock:
            for attempt in (1, 2):
                try:
                    self._live_conn()
                    return list(self._conn.execute(self._db.sql(sql), params).fetchall())
                except Exception as exc:
                    if not self._db.is_db_error(exc):
                        raise
                    if attempt == 1 and self._db is POSTGRES and self._conn.closed:
                        continue  # the session was ended: a read is safe to repeat at once
                    raise JournalError(f"journal: read failed: {_line(exc)}") from exc
            raise AssertionError("unreachable")

    def _check_read_only(self) -> None:
        try:
            if self._db is SQLITE:
                self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            row = self._conn.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()
        except Exception as exc:
            if not self._db.is_db_error(exc):
                raise
            raise JournalError(f"journal {self.where}: cannot read: {_line(exc)}") from None
        version = int(row["v"] or 0)
        if version != SCHEMA_VERSION:
            raise JournalError(
                f"journal {self.where}: schema {version}, this keeper reads {SCHEMA_VERSION} "
                "(start this keeper on it once to migrate)"
            )

    def _migrate(self) -> None:
        conn, db = self._conn, self._db
        conn.execute(db.begin)
        try:
            if db is POSTGRES:  # replicas starting together: one migrates, the others wait
                conn.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema_for(self.chain_id or 0)}")
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()
            current = int(row["v"] or 0)
            if current > SCHEMA_VERSION:
                raise JournalError(
                    f"journal {self.where}: schema {current} is newer than this keeper's "
                    f"{SCHEMA_VERSION}"
                )
            for version, ddl in MIGRATIONS:
                if version > current:
                    for statement in db.ddl(ddl).split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(
                        db.sql("INSERT INTO schema_version (version) VALUES (?)"), (version,)
                    )
                    logger.info("journal %s: schema migrated to %d", self.where, version)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # --- ticks and decisions ---------------------------------------------------------------------

    def start_tick(self, block: int, chain_id: int) -> int:
        with self._write("start tick") as conn:
            cur = conn.execute(
                "INSERT INTO ticks (started_at, block, chain_id, status) VALUES (?, ?, ?, ?)"
                " RETURNING id",
                (self._clock(), block, chain_id, "running"),
            )
            return int(cur.fetchone()["id"])

    def finish_tick(self, tick_id: int, status: str, error: str | None = None) -> None:
        """Close tick `tick_id` with `status` (e.g. 'ok', 'error', 'timeout'). The error text is
        masked (:func:`keeper.masking.mask_text`): it may quote an RPC URL."""
        shown = None if error is None else mask_text(error)
        with self._write("finish tick") as conn:
            cur = conn.execute(
                "UPDATE ticks SET status = ?, error = ?, finished_at = ? WHERE id = ?",
                (status, shown, self._clock(), tick_id),
            )
            self._require(cur.rowcount, f"tick {tick_id}")

    def tick(self, tick_id: int) -> TickRecord:
        rows = self._read("SELECT * FROM ticks WHERE id = ?", (tick_id,))
        self._require(len(rows), f"tick {tick_id}")
        r = rows[0]
        return TickRecord(
            r["id"],
            r["started_at"],
            r["finished_at"],
            r["block"],
            r["chain_id"],
            r["status"],
            r["error"],
        )

    def record_decision(
        self,
        tick_id: int,
        vault: str,
        kind: str | enum.Enum,
        urgency: str | enum.Enum,
        expected_benefit_usd: float,
        expected_cost_usd: float,
        reason: str,
        inputs: Mapping[str, object],
    ) -> int:
        """Record what was decided and every input it used (JSON; see :func:`encode_json`)."""
        inputs_json = encode_json(inputs)
        with self._write("record decision") as conn:
            cur = conn.execute(
                "INSERT INTO decisions (tick_id, vault, kind, urgency, expected_benefit_usd,"
                " expected_cost_usd, reason, inputs_json, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    tick_id,
                    vault,
                    _label(kind),
                    _label(urgency),
                    _nan_to_none(expected_benefit_usd),
                    _nan_to_none(expected_cost_usd),
                    reason,
                    inputs_json,
                    self._clock(),
                ),
            )
            return int(cur.fetchone()["id"])

    def decision(self, decision_id: int) -> DecisionRecord:
        rows = self._read("SELECT * FROM decisions WHERE id = ?", (decision_id,))
        self._require(len(rows), f"decision {decision_id}")
        r = rows[0]
        benefit, cost = r["expected_benefit_usd"], r["expected_cost_usd"]
        return DecisionRecord(
            r["id"],
            r["tick_id"],
            r["vault"],
            r["kind"],
            r["urgency"],
            math.nan if benefit is None else benefit,
            math.nan if cost is None else cost,
            r["reason"],
            decode_json(r["inputs_json"]),
            r["created_at"],
        )

    # --- intents and transactions ----------------------------------------------------------------

    def record_intent(
        self,
        vault: str,
        kind: str | enum.Enum,
        to_address: str,
        calldata: bytes,
        value: int = 0,
        decision_id: int | None = None,
        status: IntentStatus = "pending",
    ) -> int:
        """Record an action about to be sent; durable when this returns (write it *before*
        signing and broadcasting). `status` 'dry_run' or 'failed' records one never sent."""
        self._check_status(status, INITIAL_STATUSES, "new intent")
        if value < 0:
            raise JournalError(f"intent value must be >= 0, got {value}")
        now = self._clock()
        with self._write("record intent") as conn:
            cur = conn.execute(
                "INSERT INTO intents (decision_id, vault, kind, calldata, to_address, value,"
                " status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    decision_id,
                    vault,
                    _label(kind),
                    _hex(calldata),
                    to_address,
                    str(int(value)),
                    status,
                    now,
                    now,
                ),
            )
            return int(cur.fetchone()["id"])

    def attach_nonce(self, intent_id: int, nonce: int) -> None:
        """Set the intent's nonce (once: every transaction of an intent shares it)."""
        with self._write("attach nonce") as conn:
            current = self._intent_row(conn, intent_id)["nonce"]
            if current is not None and current != nonce:
                raise JournalError(f"intent {intent_id} already has nonce {current}, not {nonce}")
            conn.execute(
                "UPDATE intents SET nonce = ?, updated_at = ? WHERE id = ?",
                (nonce, self._clock(), intent_id),
            )

    def record_transaction(
        self,
        intent_id: int,
        tx_hash: str | bytes,
        nonce: int,
        max_fee_per_gas: int,
        max_priority_fee_per_gas: int,
        gas_limit: int,
        raw_tx: bytes,
    ) -> int:
        """Record a signed transaction (first send or replacement) with its raw bytes; durable
        when this returns, so write it *before* broadcasting. Marks the intent 'sent'."""
        tx_hash = normalize_tx_hash(tx_hash)
        now = self._clock()
        with self._write(f"record transaction {tx_hash}") as conn:
            intent = self._intent_row(conn, intent_id)
            if intent["status"] not in UNFINISHED_STATUSES:
                raise JournalError(
                    f"intent {intent_id} is {intent['status']}: no new transaction for it"
                )
            if intent["nonce"] is not None and intent["nonce"] != nonce:
                raise JournalError(
                    f"transaction {tx_hash} has nonce {nonce}, intent {intent_id} has "
                    f"{intent['nonce']}"
                )
            cur = conn.execute(
                "INSERT INTO transactions (intent_id, tx_hash, nonce, max_fee_per_gas,"
                " max_priority_fee_per_gas, gas_limit, raw_tx, status, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?) RETURNING id",
                (
                    intent_id,
                    tx_hash,
                    nonce,
                    str(int(max_fee_per_gas)),
                    str(int(max_priority_fee_per_gas)),
                    gas_limit,
                    _hex(raw_tx),
                    now,
                    now,
                ),
            )
            conn.execute(
                "UPDATE intents SET status = 'sent', nonce = ?, updated_at = ? WHERE id = ?",
                (nonce, now, intent_id),
            )
            return int(cur.fetchone()["id"])

    def mark_transaction(
        self,
        tx_hash: str | bytes,
        status: TxStatus,
        block: int | None = None,
        gas_used: int | None = None,
        effective_gas_price: int | None = None,
    ) -> None:
        """Record what became of a transaction. When one is included ('mined' or 'reverted':
        both consume the nonce), its siblings (same intent) become 'replaced'."""
        self._check_status(status, get_args(TxStatus), "transaction")
        tx_hash = normalize_tx_hash(tx_hash)
        now = self._clock()
        with self._write(f"mark transaction {tx_hash}") as conn:
            rows = conn.execute(
                "SELECT intent_id FROM transactions WHERE tx_hash = ?", (tx_hash,)
            ).fetchall()
            self._require(len(rows), f"transaction {tx_hash}")
            intent_id = rows[0]["intent_id"]
            conn.execute(
                "UPDATE transactions SET status = ?, block = COALESCE(?, block),"
                " gas_used = COALESCE(?, gas_used),"
                " effective_gas_price = COALESCE(?, effective_gas_price), updated_at = ?"
                " WHERE tx_hash = ?",
                (
                    status,
                    block,
                    gas_used,
                    None if effective_gas_price is None else str(int(effective_gas_price)),
                    now,
                    tx_hash,
                ),
            )
            if status in ("mined", "reverted"):
                included = conn.execute(
                    "SELECT tx_hash FROM transactions WHERE intent_id = ? AND tx_hash != ?"
                    " AND status IN ('mined', 'reverted')",
                    (intent_id, tx_hash),
                ).fetchall()
                if included:
                    raise JournalError(
                        f"transaction {tx_hash} and {included[0]['tx_hash']} of intent "
                        f"{intent_id} cannot both be included: they share a nonce"
                    )
                conn.execute(
                    "UPDATE transactions SET status = 'replaced', updated_at = ?"
                    " WHERE intent_id = ? AND tx_hash != ?",
                    (now, intent_id, tx_hash),
                )

    def finish_intent(
        self,
        intent_id: int,
        status: IntentStatus,
        outcome: Mapping[str, object] | None = None,
    ) -> None:
        """Close an intent with a final status and its outcome (JSON like decision inputs; its
        text masked like a tick's error)."""
        finals = tuple(s for s in get_args(IntentStatus) if s not in UNFINISHED_STATUSES)
        self._check_status(status, finals, "final intent")
        outcome_json = None if outcome is None else mask_text(encode_json(outcome, "outcome"))
        with self._write(f"finish intent {intent_id}") as conn:
            cur = conn.execute(
                "UPDATE intents SET status = ?, outcome_json = ?, updated_at = ? WHERE id = ?",
                (status, outcome_json, self._clock(), intent_id),
            )
            self._require(cur.rowcount, f"intent {intent_id}")

    def reopen_intent(self, intent_id: int, why: str) -> None:
        """An intent recorded as included whose block was reorged away while a node still holds
        its transaction: back to 'sent' (unfinished), every transaction 'pending' again and its
        block forgotten — awaited like any transaction in flight. `why` is logged, masked."""
        now = self._clock()
        with self._write(f"reopen intent {intent_id}") as conn:
            row = self._intent_row(conn, intent_id)
            if row["status"] not in ("mined", "reverted"):
                raise JournalError(
                    f"journal: intent {intent_id} is {row['status']}, not included: not reopened"
                )
            conn.execute(
                "UPDATE intents SET status = 'sent', outcome_json = NULL, updated_at = ?"
                " WHERE id = ?",
                (now, intent_id),
            )
            conn.execute(
                "UPDATE transactions SET status = 'pending', block = NULL, gas_used = NULL,"
                " effective_gas_price = NULL, updated_at = ? WHERE intent_id = ?"
                " AND status IN ('mined', 'reverted', 'replaced')",
                (now, intent_id),
            )
        logger.warning("journal: intent %d reopened: %s", intent_id, mask_text(why))

    def record_vault_fault(
        self, vault: str, consecutive_failures: int, halted: bool, last_error: str | None
    ) -> None:
        """A vault's failure count and halt, for `keeper status` (its error text masked)."""
        shown = None if last_error is None else mask_text(last_error)
        with self._write(f"record fault of {vault}") as conn:
            conn.execute(
                "INSERT INTO vault_faults (vault, consecutive_failures, halted, last_error,"
                " updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT(vault) DO UPDATE SET"
                " consecutive_failures = excluded.consecutive_failures,"
                " halted = excluded.halted,"
                " last_error = COALESCE(excluded.last_error, vault_faults.last_error),"
                " updated_at = excluded.updated_at",
                (vault, consecutive_failures, int(halted), shown, self._clock()),
            )

    def clear_halts(self) -> None:
        """At start: a restarted keeper tries every vault again."""
        with self._write("clear halts") as conn:
            conn.execute(
                "UPDATE vault_faults SET halted = 0, consecutive_failures = 0, updated_at = ?",
                (self._clock(),),
            )

    def vault_faults(self) -> list[VaultFault]:
        """Every vault with a failure on record, halted first."""
        rows = self._read("SELECT * FROM vault_faults ORDER BY halted DESC, vault")
        return [
            VaultFault(
                r["vault"],
                r["consecutive_failures"],
                bool(r["halted"]),
                r["last_error"],
                r["updated_at"],
            )
            for r in rows
        ]

    # --- the leader's lease ----------------------------------------------------------------------

    def acquire_lease(
        self, name: str, holder: str, duration_s: float, extend: bool = True
    ) -> LeaseRecord:
        """Take lease `name` for `holder` if nobody holds it or its holder let it expire (a new
        term: the epoch goes up), or extend it if `holder` holds it and `extend`. Returns the
        lease as it stands after, whoever holds it. Timed by the database's clock; never
        fenced. A process that did not take the lease itself passes ``extend=False``: a live
        lease under its own name is another process's (a duplicated replica id, or its own
        previous run), and it must wait for that one to lapse."""
        now = self._db.now
        with self._write(f"acquire lease {name}", fenced=False) as tx:
            row = self._lease_row(tx, name)
            if row is None:
                cur = tx.execute(
                    "INSERT INTO leases (name, holder, epoch, acquired_at, renewed_at,"
                    f" expires_at) VALUES (?, ?, 1, {now}, {now}, {now} + ?)"
                    " ON CONFLICT (name) DO NOTHING",
                    (name, holder, float(duration_s)),
                )
                taken = cur.rowcount == 1
            elif row["holder"] == holder and row["live"] and extend:
                tx.execute(
                    f"UPDATE leases SET renewed_at = {now}, expires_at = {now} + ? WHERE name = ?",
                    (float(duration_s), name),
                )
                taken = True
            elif not row["live"]:
                tx.execute(
                    f"UPDATE leases SET holder = ?, epoch = epoch + 1, acquired_at = {now},"
                    f" renewed_at = {now}, expires_at = {now} + ? WHERE name = ?",
                    (holder, float(duration_s), name),
                )
                taken = True
            else:
                taken = False
            found = self._lease_row(tx, name)
        assert found is not None
        return self._lease(found, taken)

    def renew_lease(self, name: str, holder: str, duration_s: float) -> LeaseRecord | None:
        """Extend lease `name` if `holder` holds it and it has not expired; None if not (it is
        lost: an expired lease is never renewed, only acquired again as a new term)."""
        now = self._db.now
        with self._write(f"renew lease {name}", fenced=False) as tx:
            cur = tx.execute(
                f"UPDATE leases SET renewed_at = {now}, expires_at = {now} + ?"
                f" WHERE name = ? AND holder = ? AND expires_at > {now}",
                (float(duration_s), name, holder),
            )
            if cur.rowcount == 0:
                return None
            found = self._lease_row(tx, name)
        assert found is not None
        return self._lease(found)

    def release_lease(self, name: str, holder: str) -> bool:
        """Give lease `name` up at once if `holder` holds it (a clean stop: the standby need not
        wait for it to expire). Whether it was ours."""
        now = self._db.now
        with self._write(f"release lease {name}", fenced=False) as tx:
            cur = tx.execute(
                f"UPDATE leases SET expires_at = {now} WHERE name = ? AND holder = ?"
                f" AND expires_at > {now}",
                (name, holder),
            )
            return bool(cur.rowcount)

    def lease(self, name: str) -> LeaseRecord | None:
        """Lease `name` as it stands (None: never taken)."""
        rows = self._read(
            f"SELECT *, expires_at > {self._db.now} AS live, {self._db.now} AS db_now"
            " FROM leases WHERE name = ?",
            (name,),
        )
        return self._lease(rows[0]) if rows else None

    def _lease_row(self, tx: _Tx, name: str) -> Any:
        return tx.execute(
            f"SELECT *, expires_at > {self._db.now} AS live, {self._db.now} AS db_now"
            " FROM leases WHERE name = ?" + self._db.for_update,
            (name,),
        ).fetchone()

    @staticmethod
    def _lease(r: Any, taken: bool = False) -> LeaseRecord:
        return LeaseRecord(
            r["name"],
            r["holder"],
            int(r["epoch"]),
            float(r["acquired_at"]),
            float(r["renewed_at"]),
            float(r["expires_at"]),
            float(r["db_now"]),
            taken,
        )

    def nonce_floor(self) -> int:
        """One above the highest nonce of an intent with a journaled transaction (in flight or
        included), else 0. A transaction is journaled before it is broadcast, so a node may not
        have seen it (its sender died in between, or it was a replica that lost the lease): a
        keeper that starts or takes over hands out nonces from here up, whatever the node
        reports. Intents with a nonce but no transaction were never broadcast and do not count
        (the start-up reconciliation closes them)."""
        rows = self._read(
            "SELECT MAX(nonce) AS n FROM intents WHERE nonce IS NOT NULL"
            " AND status IN ('sent', 'mined', 'reverted')"
        )
        value = rows[0]["n"] if rows else None
        return 0 if value is None else int(value) + 1

    # --- queries ---------------------------------------------------------------------------------

    def last_tick(self) -> TickRecord | None:
        """The newest tick, or None before the first."""
        rows = self._read("SELECT id FROM ticks ORDER BY id DESC LIMIT 1")
        return self.tick(int(rows[0]["id"])) if rows else None

    def included_since(self, block: int) -> list[IntentRecord]:
        """Intents recorded as included ('mined', 'reverted') in block `block` or later, oldest
        first: those a reorg of that depth could undo."""
        return self._intents(
            "SELECT * FROM intents WHERE status IN ('mined', 'reverted') AND id IN"
            " (SELECT intent_id FROM transactions WHERE status IN ('mined', 'reverted')"
            " AND block >= ?) ORDER BY id",
            (block,),
        )

    def unfinished_intents(self) -> list[IntentRecord]:
        """Intents that may have a transaction in flight ('pending', 'sent'), oldest first:
        what a starting keeper reconciles before it sends anything new."""
        marks = ", ".join("?" for _ in UNFINISHED_STATUSES)
        return self._intents(
            f"SELECT * FROM intents WHERE status IN ({marks}) ORDER BY id", UNFINISHED_STATUSES
        )

    def recent_intents(self, vault: str | None = None, limit: int = 50) -> list[IntentRecord]:
        """The newest intents first, of one vault or all."""
        if vault is None:
            return self._intents("SELECT * FROM intents ORDER BY id DESC LIMIT ?", (limit,))
        return self._intents(
            "SELECT * FROM intents WHERE vault = ? ORDER BY id DESC LIMIT ?", (vault, limit)
        )

    def intent(self, intent_id: int) -> IntentRecord:
        """One intent with its transactions; JournalError if unknown."""
        found = self._intents("SELECT * FROM intents WHERE id = ?", (intent_id,))
        self._require(len(found), f"intent {intent_id}")
        return found[0]

    def transaction(self, tx_hash: str | bytes) -> TxRecord:
        """One transaction by hash; JournalError if unknown."""
        rows = self._read(
            "SELECT * FROM transactions WHERE tx_hash = ?", (normalize_tx_hash(tx_hash),)
        )
        self._require(len(rows), f"transaction {tx_hash!r}")
        return self._tx(rows[0])

    def has_transaction(self, tx_hash: str | bytes) -> bool:
        """Whether a transaction with this hash was ever recorded (by any intent)."""
        rows = self._read(
            "SELECT 1 FROM transactions WHERE tx_hash = ?", (normalize_tx_hash(tx_hash),)
        )
        return bool(rows)

    # --- internals -------------------------------------------------------------------------------

    def _intents(self, sql: str, params: tuple[object, ...]) -> list[IntentRecord]:
        with self._lock:  # one snapshot of intents and their transactions
            rows = self._read(sql, params)
            if not rows:
                return []
            ids = [r["id"] for r in rows]
            marks = ", ".join("?" for _ in ids)
            txs: dict[int, list[TxRecord]] = {i: [] for i in ids}
            for t in self._read(
                f"SELECT * FROM transactions WHERE intent_id IN ({marks}) ORDER BY id", tuple(ids)
            ):
                txs[t["intent_id"]].append(self._tx(t))
        return [
            IntentRecord(
                r["id"],
                r["decision_id"],
                r["vault"],
                r["kind"],
                _unhex(r["calldata"]),
                r["to_address"],
                Wei(int(r["value"])),
                r["nonce"],
                r["status"],
                r["created_at"],
                r["updated_at"],
                None if r["outcome_json"] is None else decode_json(r["outcome_json"]),
                tuple(txs[r["id"]]),
            )
            for r in rows
        ]

    @staticmethod
    def _tx(r: Any) -> TxRecord:
        return TxRecord(
            r["id"],
            r["intent_id"],
            r["tx_hash"],
            r["nonce"],
            Wei(int(r["max_fee_per_gas"])),
            Wei(int(r["max_priority_fee_per_gas"])),
            r["gas_limit"],
            _unhex(r["raw_tx"]),
            r["status"],
            r["block"],
            r["gas_used"],
            _opt_wei(r["effective_gas_price"]),
            r["created_at"],
            r["updated_at"],
        )

    @staticmethod
    def _intent_row(conn: _Tx, intent_id: int) -> Any:
        row: Any = conn.execute("SELECT * FROM intents WHERE id = ?", (intent_id,)).fetchone()
        if row is None:
            raise JournalError(f"journal: unknown intent {intent_id}")
        return row

    @staticmethod
    def _require(count: int, what: str) -> None:
        if count == 0:
            raise JournalError(f"journal: unknown {what}")

    @staticmethod
    def _check_status(status: str, allowed: tuple[str, ...], what: str) -> None:
        if status not in allowed:
            raise JournalError(f"{what} status must be one of {allowed}, got {status!r}")


__all__ = [
    "INITIAL_STATUSES",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "UNFINISHED_STATUSES",
    "VaultFault",
    "DecisionRecord",
    "IntentRecord",
    "IntentStatus",
    "Journal",
    "JournalError",
    "LeaseLost",
    "LeaseRecord",
    "TickRecord",
    "TxRecord",
    "TxStatus",
    "decode_json",
    "encode_json",
    "normalize_tx_hash",
]
