"""The leader lease on a real PostgreSQL server: standby and takeover, renewal, a clean release,
and a leader cut off from its database standing down before its lease lapses there."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from keeper.lease import LeaderLease
from tests.pg import PostgresServer

CHAIN = 777


def test_a_standby_takes_over_when_the_leader_stops_renewing(pg_server: PostgresServer) -> None:
    url = pg_server.create_database("lease_takeover")
    a = LeaderLease(url, CHAIN, "a", lease_s=1.0, renew_s=0.2)
    b = LeaderLease(url, CHAIN, "b", lease_s=1.0, renew_s=0.2)
    try:
        assert a.try_acquire() and not b.try_acquire()
        lost: list[str] = []
        a.start_renewing(lost.append)
        time.sleep(1.5)  # longer than the lease: only the renewals keep it
        assert not b.try_acquire() and a.held and lost == []
        a.stop(release=False)  # a stops renewing (a pause, a crash): the lease lapses
        stop = threading.Event()
        started = time.monotonic()
        assert b.wait(stop)
        assert time.monotonic() - started <= 1.0 + 0.2 + 0.5
        assert b.record is not None and (b.record.holder, b.record.epoch) == ("b", 2)
        b.stop(release=True)  # a clean stop: free at once, no lapse to wait for
        assert a.try_acquire() and a.record is not None and a.record.epoch == 3
    finally:
        a.close()
        b.close()


def test_a_leader_cut_off_from_the_database_stands_down_before_its_lease_lapses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with PostgresServer() as server:  # its own server: this test stops it
        lease = LeaderLease(server.url(), CHAIN, "a", lease_s=2.0, renew_s=0.25)
        assert lease.try_acquire()
        expires_at = lease.record.expires_at  # type: ignore[union-attr]
        lost = threading.Event()
        why: list[str] = []
        lease.start_renewing(lambda w: (why.append(w), lost.set()))
        time.sleep(0.6)
        renewed = lease.record.expires_at  # type: ignore[union-attr]
        assert renewed > expires_at
        server.stop()  # the database goes away
        cut_at = time.time()
        assert lost.wait(5.0)
        # gave up one renewal interval before the database would call it lapsed
        assert time.time() < renewed + 0.25
        assert time.time() - cut_at < 2.0
        assert why and why[0].startswith("not renewed for") and not lease.held
        with caplog.at_level(logging.WARNING, logger="keeper.lease"):
            stop = threading.Event()
            threading.Timer(1.0, stop.set).start()
            assert lease.wait(stop) is False  # standing by, the database still down
        unreachable = [r for r in caplog.records if "cannot reach the journal" in r.getMessage()]
        assert len(unreachable) == 1  # once per outage, not once a second
        assert server.PASSWORD not in caplog.text
        lease.stop(release=True)


def test_a_replica_paused_inside_a_transaction_does_not_block_the_takeover(
    pg_server: PostgresServer,
) -> None:
    """A process frozen between BEGIN and COMMIT holds the lease row; the server ends such a
    session after IDLE_IN_TRANSACTION_MS, so the standby takes over anyway, and the frozen
    one's journal reconnects when it wakes up."""
    from keeper.journal import Journal
    from keeper.journal_db import IDLE_IN_TRANSACTION_MS

    url = pg_server.create_database("lease_frozen")
    a = LeaderLease(url, CHAIN, "a", lease_s=1.0, renew_s=0.2)
    b = LeaderLease(url, CHAIN, "b", lease_s=1.0, renew_s=0.2)
    frozen = Journal(url, chain_id=CHAIN)
    try:
        assert a.try_acquire()
        frozen._conn.execute("BEGIN")  # what a renewal or a fenced write does, then a SIGSTOP
        frozen._conn.execute("SELECT * FROM leases WHERE name = 'leader' FOR UPDATE")
        started = time.monotonic()
        assert b.wait(threading.Event())
        took = time.monotonic() - started
        assert took <= max(1.0, IDLE_IN_TRANSACTION_MS / 1000) + 1.5, took
        assert b.record is not None and b.record.epoch == 2
        time.sleep(0.2)
        lease = frozen.lease("leader")  # woken: its dead session is replaced
        assert lease is not None and lease.holder == "b"
    finally:
        for j in (a, b):
            j.close()
        frozen.close()


def test_a_second_process_under_the_same_name_never_shares_the_term(
    pg_server: PostgresServer,
) -> None:
    from keeper.journal import Journal, LeaseLost

    url = pg_server.create_database("lease_same_name")
    first = LeaderLease(url, CHAIN, "keeper-1", lease_s=1.0, renew_s=0.2)
    twin = LeaderLease(url, CHAIN, "keeper-1", lease_s=1.0, renew_s=0.2)  # KEEPER_REPLICA_ID twice
    try:
        assert first.try_acquire()
        first.start_renewing(lambda why: None)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # the first keeps renewing: the twin never leads
            assert not twin.try_acquire()
            time.sleep(0.1)
        first.stop(release=False)  # the first stops (crash): its lease lapses, a new term
        assert twin.wait(threading.Event())
        assert twin.record is not None and twin.record.epoch == 2
        # the first one's fenced journal (term 1) writes nothing in term 2, same name or not
        old = Journal(url, chain_id=CHAIN)
        old.fence("leader", "keeper-1", 1)
        with pytest.raises(LeaseLost, match="term 2"):
            old.start_tick(1, CHAIN)
        old.close()
    finally:
        first.close()
        twin.close()
