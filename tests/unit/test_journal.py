"""The journal on both of its databases (SQLite, and a real PostgreSQL server started by the
tests): durability, crash recovery, replacement bookkeeping, JSON, threads, migrations, the
leader's lease and fencing."""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hexbytes import HexBytes

from keeper.journal import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Journal,
    JournalError,
    LeaseLost,
    decode_json,
    encode_json,
)
from keeper.risk.actions import ActionKind, Urgency

VAULT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
OTHER_VAULT = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
CALLDATA = bytes.fromhex("a9059cbb") + bytes(64)


def h(n: int) -> str:
    """A distinct transaction hash."""
    return "0x" + f"{n:064x}"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


#: A fresh chain id (so a fresh schema) for each PostgreSQL journal of the run.
_CHAINS = itertools.count(900_001)

Opener = Callable[..., Journal]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the same journal (a file, or one chain's schema on the test server) each call."""
    opened: list[Journal] = []
    if request.param == "sqlite":
        target, chain_id = str(tmp_path / "journal.sqlite"), None
    else:
        target, chain_id = request.getfixturevalue("pg_server").url(), next(_CHAINS)

    def open_(**kw: object) -> Journal:
        kw.setdefault("chain_id", chain_id)
        j = Journal(target, **kw)  # type: ignore[arg-type]
        opened.append(j)
        return j

    yield open_
    for j in opened:
        try:
            j.close()
        except Exception:  # closed by the test already
            pass


@pytest.fixture
def journal(open_journal: Opener) -> Journal:
    return open_journal(clock=Clock())


def sent_intent(j: Journal, nonce: int = 7, n: int = 1) -> int:
    intent_id = j.record_intent(VAULT, "deleverage", VAULT, CALLDATA)
    j.attach_nonce(intent_id, nonce)
    j.record_transaction(intent_id, h(n), nonce, 30 * 10**9, 2 * 10**9, 500_000, b"\x02raw")
    return intent_id


def test_survives_close_and_reopen(open_journal: Opener) -> None:
    with open_journal() as j:
        tick = j.start_tick(block=123, chain_id=31337)
        decision = j.record_decision(tick, VAULT, ActionKind.DELEVERAGE, Urgency.CRITICAL, 1e6,
                                     12.5, "health 1.1 < 1.25", {"health": 1.1})
        intent_id = j.record_intent(VAULT, ActionKind.DELEVERAGE, VAULT, CALLDATA, value=5,
                                    decision_id=decision)
        j.finish_tick(tick, "ok")
    with open_journal() as j:
        record = j.intent(intent_id)
        assert (record.vault, record.kind, record.calldata, record.value) == (
            VAULT, "deleverage", CALLDATA, 5)
        assert (record.status, record.decision_id, record.transactions) == ("pending", decision, ())
        assert j.decision(decision).urgency == "CRITICAL"
        assert j.tick(tick).status == "ok"
        assert j.tick(tick).block == 123


def test_pragmas_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with Journal(path) as j:
        conn = j._conn  # the one connection: its per-connection settings
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    Journal(path).close()  # reopening migrates nothing twice
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent, per file
    versions = raw.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    assert versions == [(1,), (2,), (3,)] and SCHEMA_VERSION == 3
    raw.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    raw.commit()
    raw.close()
    with pytest.raises(JournalError, match="newer"):
        Journal(path)


def test_unfinished_intent_survives_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    # A separate process writes the intent and the signed transaction, then dies without
    # closing anything (os._exit skips every finaliser), as a killed keeper would.
    script = textwrap.dedent(f"""
        import os
        from keeper.journal import Journal
        j = Journal({str(path)!r})
        i = j.record_intent({VAULT!r}, "hedge", {VAULT!r}, b"\\x01\\x02")
        j.attach_nonce(i, 41)
        j.record_transaction(i, {h(9)!r}, 41, 50, 5, 90000, b"\\x02signed-bytes")
        done = j.record_intent({VAULT!r}, "rebalance", {VAULT!r}, b"")
        j.finish_intent(done, "failed", {{"error": "simulation reverted"}})
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parents[2])
    with Journal(path) as j:
        unfinished = j.unfinished_intents()
        assert len(unfinished) == 1
        intent = unfinished[0]
        assert (intent.kind, intent.status, intent.nonce) == ("hedge", "sent", 41)
        (tx,) = intent.transactions
        assert (tx.tx_hash, tx.nonce, tx.status) == (h(9), 41, "pending")
        assert tx.raw_tx == b"\x02signed-bytes"
        assert (tx.max_fee_per_gas, tx.max_priority_fee_per_gas, tx.gas_limit) == (50, 5, 90000)


def test_mined_replacement_marks_its_siblings_replaced(journal: Journal) -> None:
    intent_id = sent_intent(journal, nonce=7, n=1)
    for n, fee in ((2, 34), (3, 38)):
        journal.record_transaction(intent_id, h(n), 7, fee * 10**9, 3 * 10**9, 500_000, b"r")
    other = sent_intent(journal, nonce=8, n=4)
    journal.mark_transaction(h(2), "mined", block=99, gas_used=321_000,
                             effective_gas_price=12 * 10**9)
    txs = {t.tx_hash: t for t in journal.intent(intent_id).transactions}
    assert {k: t.status for k, t in txs.items()} == {h(1): "replaced", h(2): "mined",
                                                   h(3): "replaced"}
    assert (txs[h(2)].block, txs[h(2)].gas_used, txs[h(2)].effective_gas_price) == (
        99, 321_000, 12 * 10**9)
    assert journal.intent(other).transactions[0].status == "pending"  # other intents untouched
    assert journal.intent(intent_id).status == "sent"  # until the sender records the outcome
    with pytest.raises(JournalError, match="share a nonce"):
        journal.mark_transaction(h(3), "mined")
    journal.finish_intent(intent_id, "mined", {"tx_hash": h(2), "gas_used": 321_000})
    assert [i.id for i in journal.unfinished_intents()] == [other]
    assert journal.intent(intent_id).outcome == {"tx_hash": h(2), "gas_used": 321_000}


def test_a_reverted_transaction_also_replaces_its_siblings(journal: Journal) -> None:
    intent_id = sent_intent(journal, n=1)
    journal.record_transaction(intent_id, h(2), 7, 40 * 10**9, 3 * 10**9, 500_000, b"r")
    journal.mark_transaction(h(1), "reverted", block=5)
    assert [t.status for t in journal.intent(intent_id).transactions] == ["reverted", "replaced"]


def test_json_round_trip_of_non_finite_floats_and_huge_ints(journal: Journal) -> None:
    inputs = {
        "health": math.inf,
        "floor": -math.inf,
        "vol": math.nan,
        "debt_wei": 2**200,
        "short_wei": -(2**64),
        "int64_max": 2**63 - 1,
        "nested": {"legs": [1.5, 2**70, math.inf], "kind": ActionKind.HEDGE},
        "symbol": "ETH",
        "ok": True,
        "none": None,
    }
    tick = journal.start_tick(1, 1)
    decision_id = journal.record_decision(tick, VAULT, "hedge", "HIGH", math.inf, math.nan,
                                          "delta drift", inputs)
    stored = journal._read(
        "SELECT inputs_json FROM decisions WHERE id = ?", (decision_id,))[0]["inputs_json"]

    def reject(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token}")

    plain = json.loads(stored, parse_constant=reject)  # strict JSON: no Infinity/NaN tokens
    assert (plain["health"], plain["vol"], plain["debt_wei"]) == ("inf", "nan", str(2**200))
    assert plain["int64_max"] == 2**63 - 1  # still a JSON number
    record = journal.decision(decision_id)
    back = record.inputs
    assert back["health"] == math.inf and back["floor"] == -math.inf
    assert isinstance(back["vol"], float) and math.isnan(back["vol"])
    assert back["debt_wei"] == 2**200 and back["short_wei"] == -(2**64)
    assert back["nested"] == {"legs": [1.5, 2**70, math.inf], "kind": "hedge"}
    assert (back["symbol"], back["ok"], back["none"]) == ("ETH", True, None)
    assert record.expected_benefit_usd == math.inf and math.isnan(record.expected_cost_usd)
    assert decode_json(encode_json({"x": 2**63})) == {"x": 2**63}


def test_json_rejects_unknown_types(journal: Journal) -> None:
    tick = journal.start_tick(1, 1)
    with pytest.raises(JournalError, match=r"inputs\.when"):
        journal.record_decision(tick, VAULT, "hedge", "HIGH", 1.0, 1.0, "r", {"when": object()})


def test_tx_hash_is_unique(journal: Journal) -> None:
    first = sent_intent(journal, nonce=7, n=1)
    second = journal.record_intent(VAULT, "hedge", VAULT, CALLDATA)
    with pytest.raises(JournalError, match="constraint"):
        journal.record_transaction(second, h(1), 8, 1, 1, 21_000, b"x")
    # same hash in another spelling is the same transaction
    with pytest.raises(JournalError, match="constraint"):
        journal.record_transaction(first, HexBytes(h(1)), 7, 1, 1, 21_000, b"x")
    assert journal.intent(second).status == "pending"  # the failed write was rolled back
    assert journal.intent(second).nonce is None
    assert journal.transaction(h(1).upper().replace("0X", "0x")).intent_id == first


def test_transaction_consistency_checks(journal: Journal) -> None:
    intent_id = sent_intent(journal, nonce=7, n=1)
    with pytest.raises(JournalError, match="nonce"):
        journal.record_transaction(intent_id, h(2), 8, 1, 1, 21_000, b"x")
    with pytest.raises(JournalError, match="nonce"):
        journal.attach_nonce(intent_id, 9)
    journal.finish_intent(intent_id, "dropped")
    with pytest.raises(JournalError, match="dropped"):
        journal.record_transaction(intent_id, h(3), 7, 1, 1, 21_000, b"x")
    with pytest.raises(JournalError, match="not a transaction hash"):
        journal.mark_transaction("0x1234", "mined")
    with pytest.raises(JournalError, match="unknown"):
        journal.mark_transaction(h(77), "mined")


def test_unknown_ids_statuses_and_foreign_keys(journal: Journal) -> None:
    with pytest.raises(JournalError, match="unknown intent 5"):
        journal.intent(5)
    with pytest.raises(JournalError, match="unknown intent"):
        journal.finish_intent(5, "failed")
    with pytest.raises(JournalError, match="unknown tick"):
        journal.finish_tick(3, "ok")
    with pytest.raises(JournalError):  # foreign key: no such tick
        journal.record_decision(42, VAULT, "hedge", "HIGH", 1.0, 1.0, "r", {})
    with pytest.raises(JournalError):  # foreign key: no such decision
        journal.record_intent(VAULT, "hedge", VAULT, CALLDATA, decision_id=42)
    with pytest.raises(JournalError, match="status"):
        journal.record_intent(VAULT, "hedge", VAULT, CALLDATA, status="mined")
    intent_id = journal.record_intent(VAULT, "hedge", VAULT, CALLDATA)
    with pytest.raises(JournalError, match="status"):
        journal.finish_intent(intent_id, "sent")


def test_dry_run_and_failed_intents_are_not_unfinished(journal: Journal) -> None:
    journal.record_intent(VAULT, "hedge", VAULT, CALLDATA, status="dry_run")
    journal.record_intent(VAULT, "hedge", VAULT, CALLDATA, status="failed")
    pending = journal.record_intent(VAULT, "hedge", VAULT, CALLDATA)
    assert [i.id for i in journal.unfinished_intents()] == [pending]


def test_recent_intents_newest_first_per_vault(journal: Journal) -> None:
    ids = [journal.record_intent(v, "hedge", v, CALLDATA)
           for v in (VAULT, OTHER_VAULT, VAULT, VAULT)]
    assert [i.id for i in journal.recent_intents()] == ids[::-1]
    assert [i.id for i in journal.recent_intents(VAULT, limit=2)] == [ids[3], ids[2]]
    assert [i.id for i in journal.recent_intents(OTHER_VAULT)] == [ids[1]]


def test_timestamps_come_from_the_injected_clock(journal: Journal) -> None:
    intent_id = journal.record_intent(VAULT, "hedge", VAULT, CALLDATA)  # t = +1
    journal.attach_nonce(intent_id, 3)  # t = +2
    record = journal.intent(intent_id)
    assert (record.created_at, record.updated_at) == (1_700_000_001.0, 1_700_000_002.0)


def test_concurrent_writes_from_threads(open_journal: Opener) -> None:
    threads, per_thread = 8, 25
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []
    with open_journal() as j:

        def work(slot: int) -> None:
            try:
                barrier.wait()
                for k in range(per_thread):
                    n = slot * per_thread + k
                    intent_id = j.record_intent(VAULT, "hedge", VAULT, CALLDATA)
                    j.attach_nonce(intent_id, n)
                    j.record_transaction(intent_id, h(n + 1), n, 10, 1, 21_000, bytes([slot]))
            except BaseException as exc:  # surfaced below: a thread must not fail silently
                errors.append(exc)

        pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        assert errors == []
        unfinished = j.unfinished_intents()
    assert len(unfinished) == threads * per_thread
    assert len({i.id for i in unfinished}) == threads * per_thread
    assert sorted(i.nonce or 0 for i in unfinished) == list(range(threads * per_thread))
    assert all(len(i.transactions) == 1 and i.transactions[0].nonce == i.nonce
               for i in unfinished)


def test_a_version_1_journal_is_migrated_and_keeps_its_intents(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    raw = sqlite3.connect(path)  # what the released version 1 wrote: its DDL, one intent
    raw.executescript(MIGRATIONS[0][1])
    raw.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    raw.execute("INSERT INTO schema_version VALUES (1)")
    raw.execute(
        "INSERT INTO intents (vault, kind, calldata, to_address, value, status, created_at,"
        " updated_at) VALUES (?, 'hedge', '0x01', ?, '0', 'pending', 1.0, 1.0)",
        (VAULT, VAULT),
    )
    raw.commit()
    raw.close()
    with Journal(path) as j:
        (intent,) = j.unfinished_intents()
        assert (intent.kind, intent.calldata) == ("hedge", b"\x01")
        assert j.vault_faults() == []  # the new table is there, empty
        j.record_vault_fault(VAULT, 2, False, "decide: ValueError: price 0")
        j.record_vault_fault(VAULT, 3, True, None)  # the last error is kept
        (fault,) = j.vault_faults()
        assert (fault.consecutive_failures, fault.halted, fault.last_error) == (
            3, True, "decide: ValueError: price 0")
        j.clear_halts()
        assert [(f.halted, f.consecutive_failures) for f in j.vault_faults()] == [(False, 0)]


def test_a_reorged_intent_is_reopened_with_its_transactions_pending(
    open_journal: Opener,
) -> None:
    with open_journal() as j:
        i = j.record_intent(VAULT, "hedge", VAULT, CALLDATA)
        j.attach_nonce(i, 7)
        j.record_transaction(i, h(1), 7, 50, 5, 90_000, b"\x02a")
        j.record_transaction(i, h(2), 7, 60, 6, 90_000, b"\x02b")
        j.mark_transaction(h(2), "mined", block=120, gas_used=80_000)
        j.finish_intent(i, "mined", {"block": 120})
        assert [r.id for r in j.included_since(120)] == [i]
        assert j.included_since(121) == []
        j.reopen_intent(i, "block 120 reorged away")
        (back,) = j.unfinished_intents()
        assert (back.id, back.status, back.outcome) == (i, "sent", None)
        assert [(t.status, t.block) for t in back.transactions] == [
            ("pending", None), ("pending", None)]
        assert j.included_since(0) == []
        with pytest.raises(JournalError, match="not included"):
            j.reopen_intent(i, "again")


def test_status_shows_the_journals_halts_and_transactions_in_flight(
    open_journal: Opener,
) -> None:
    from keeper.status import journal_text

    with open_journal(clock=lambda: 1_000.0) as j:
        tick = j.start_tick(77, 1)
        j.finish_tick(tick, "error", "eth_blockNumber failed after 4 attempts")
        j.record_vault_fault(VAULT, 3, True, "decide: RiskInputError: SOL.price_usd must be > 0")
        i = j.record_intent(VAULT, "deleverage", VAULT, CALLDATA)
        j.attach_nonce(i, 12)
        j.record_transaction(i, h(1), 12, 30 * 10**9, 10**9, 90_000, b"\x02a")
        j.record_transaction(i, h(2), 12, 34 * 10**9, 2 * 10**9, 90_000, b"\x02b")
    with open_journal(read_only=True) as ro:
        text = journal_text(ro, now=1_060.0)
        with pytest.raises(JournalError, match="read-?only"):
            ro.start_tick(78, 1)  # read-only: a write is refused, nothing changes
    assert "last tick: block 77, error (eth_blockNumber failed after 4 attempts), 60 s ago" in text
    assert "HALTED" in text and "SOL.price_usd must be > 0" in text
    row = next(line for line in text.splitlines() if h(2) in line).split()
    # vault, action, nonce, last tx, max fee (gwei), replacements, age (s)
    assert row == [VAULT, "deleverage", "12", h(2), "34.000", "1", "60"]


def test_a_missing_or_older_journal_is_refused_read_only(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="cannot"):
        Journal(tmp_path / "none.sqlite", read_only=True)
    old = tmp_path / "v1.sqlite"
    raw = sqlite3.connect(old)
    raw.executescript(MIGRATIONS[0][1])
    raw.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    raw.execute("INSERT INTO schema_version VALUES (1)")
    raw.commit()
    raw.close()
    with pytest.raises(JournalError, match="schema 1, this keeper reads 3"):
        Journal(old, read_only=True)


def _apply_old_schema(target: str, chain_id: int | None, versions: int) -> None:
    """What a keeper of schema `versions` left: its DDL, and one intent in flight."""
    from keeper.journal_db import POSTGRES, SQLITE, connect, schema_for

    conn, db = connect(target, False, chain_id)
    if db is POSTGRES:
        conn.execute(f"CREATE SCHEMA {schema_for(chain_id or 0)}")
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version, ddl in MIGRATIONS[:versions]:
        for statement in db.ddl(ddl).split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(db.sql("INSERT INTO schema_version VALUES (?)"), (version,))
    conn.execute(db.sql(
        "INSERT INTO intents (vault, kind, calldata, to_address, value, nonce, status,"
        " created_at, updated_at) VALUES (?, 'hedge', '0x01', ?, '0', 4, 'sent', 1.0, 1.0)"),
        (VAULT, VAULT))
    if db is SQLITE:
        conn.commit()
    conn.close()


def test_a_version_2_journal_is_migrated_on_both_backends(open_journal: Opener) -> None:
    first = open_journal()  # only to learn the fixture's target and chain, then emptied
    target, chain_id = first.path, first.chain_id
    first.close()
    if first.backend == "sqlite":
        Path(target).unlink()
        for suffix in ("-wal", "-shm"):
            Path(target + suffix).unlink(missing_ok=True)
    else:
        import psycopg

        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA keeper_chain_{chain_id} CASCADE")
    _apply_old_schema(target, chain_id, versions=2)
    with open_journal() as j:
        (intent,) = j.unfinished_intents()
        assert (intent.kind, intent.nonce, intent.status) == ("hedge", 4, "sent")
        assert j.nonce_floor() == 5
        assert j.lease("leader") is None  # the new table is there, empty
        versions = [r["version"] for r in j._read("SELECT version FROM schema_version")]
        assert sorted(versions) == [1, 2, 3]


def test_no_two_live_intents_share_a_nonce(journal: Journal) -> None:
    first = sent_intent(journal, nonce=7, n=1)
    other = journal.record_intent(VAULT, "hedge", VAULT, CALLDATA)
    with pytest.raises(JournalError, match="constraint"):
        journal.attach_nonce(other, 7)  # fencing by nonce: a second action on 7 is refused
    assert journal.intent(other).nonce is None
    journal.finish_intent(first, "dropped", {"error": "reorged away, unknown to the node"})
    assert journal.nonce_floor() == 0  # nothing in flight or included
    journal.attach_nonce(other, 7)  # a dropped intent's nonce is free again
    assert journal.intent(other).nonce == 7
    assert journal.nonce_floor() == 0  # a nonce without a transaction was never broadcast
    journal.record_transaction(other, h(2), 7, 10, 1, 21_000, b"\x02")
    assert journal.nonce_floor() == 8
    journal.mark_transaction(h(2), "mined", block=3)
    journal.finish_intent(other, "mined")
    assert journal.nonce_floor() == 8


def test_the_lease_is_taken_renewed_expired_and_taken_over(journal: Journal) -> None:
    a = journal.acquire_lease("leader", "replica-a", 0.6)
    assert (a.holder, a.epoch, a.live) == ("replica-a", 1, True)
    assert a.expires_at - a.renewed_at == pytest.approx(0.6)  # by the database's clock
    b = journal.acquire_lease("leader", "replica-b", 0.6)
    assert (b.holder, b.epoch) == ("replica-a", 1)  # held: b stands by
    time.sleep(0.01)  # SQLite's clock counts milliseconds
    renewed = journal.renew_lease("leader", "replica-a", 0.6)
    assert renewed is not None and renewed.expires_at > a.expires_at
    assert journal.renew_lease("leader", "replica-b", 0.6) is None
    time.sleep(0.7)
    assert journal.lease("leader").live is False  # type: ignore[union-attr]
    assert journal.renew_lease("leader", "replica-a", 0.6) is None  # expired: lost, not renewed
    b = journal.acquire_lease("leader", "replica-b", 10)
    assert (b.holder, b.epoch, b.live) == ("replica-b", 2, True)  # a new term
    assert journal.release_lease("leader", "replica-a") is False
    assert journal.release_lease("leader", "replica-b") is True
    again = journal.acquire_lease("leader", "replica-a", 10)
    assert (again.holder, again.epoch) == ("replica-a", 3)


def test_a_fenced_journal_writes_nothing_once_the_lease_is_gone(open_journal: Opener) -> None:
    leader, other = open_journal(), open_journal()
    leader.acquire_lease("leader", "a", 0.5)
    leader.fence("leader", "a")
    intent_id = leader.record_intent(VAULT, "hedge", VAULT, CALLDATA)
    leader.attach_nonce(intent_id, 3)
    time.sleep(0.6)
    other.acquire_lease("leader", "b", 10)  # the standby takes over
    with pytest.raises(LeaseLost, match="not held by a"):
        leader.record_transaction(intent_id, h(1), 3, 10, 1, 21_000, b"\x02late")
    with pytest.raises(LeaseLost):
        leader.record_intent(VAULT, "hedge", VAULT, CALLDATA)
    with pytest.raises(LeaseLost):
        leader.finish_intent(intent_id, "failed")
    # nothing of the refused writes is there: the intent is as the old leader left it
    (left,) = other.unfinished_intents()
    assert (left.id, left.status, left.nonce, left.transactions) == (intent_id, "pending", 3, ())
    other.fence("leader", "b")
    other.finish_intent(intent_id, "failed", {"error": "never broadcast"})  # the leader may


def test_one_of_two_replicas_racing_for_a_free_lease_wins(open_journal: Opener) -> None:
    journals = [open_journal() for _ in range(4)]
    barrier = threading.Barrier(len(journals))
    won: list[str] = []

    def race(k: int) -> None:
        barrier.wait()
        if journals[k].acquire_lease("leader", f"r{k}", 10).holder == f"r{k}":
            won.append(f"r{k}")

    pool = [threading.Thread(target=race, args=(k,)) for k in range(len(journals))]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert len(won) == 1
    assert journals[0].lease("leader").holder == won[0]  # type: ignore[union-attr]


def test_an_unreachable_or_refusing_server_is_one_line_without_the_password(
    pg_server: object,
) -> None:
    from tests.pg import PostgresServer, free_port

    assert isinstance(pg_server, PostgresServer)
    dead = f"postgresql://keeper:hunter2-secret@127.0.0.1:{free_port()}/keeper"
    with pytest.raises(JournalError, match="cannot connect") as down:
        Journal(dead, chain_id=1)
    wrong = pg_server.url(password="wrong-password-9")
    with pytest.raises(JournalError, match="password authentication failed") as refused:
        Journal(wrong, chain_id=1)
    for exc in (down.value, refused.value):
        text = str(exc)
        assert "\n" not in text and "hunter2" not in text and "wrong-password" not in text
    with pytest.raises(JournalError, match="needs the chain id"):
        Journal(pg_server.url())
