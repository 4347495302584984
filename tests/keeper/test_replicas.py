"""Two replicas of `keeper run` on one PostgreSQL journal against anvil (1 s blocks): the leader
is SIGKILLed at each point of the send path, or SIGSTOPped for longer than its lease; the
standby takes over within one lease, every intent ends with exactly one on-chain action, and no
nonce is used twice.

Real parts only: the PostgreSQL server is started by the tests (tests/pg.py), the replicas are
`keeper run` processes (tests/keeper/replica_driver.py arms the kill or the pause), the chain is
anvil mining a block a second.

`KEEPER_REPLICA_ROUNDS` (default 1) repeats every kill; `KEEPER_REPLICA_LEASE` (default 3 s,
renewed every 0.5 s, to keep the suite short; `make chaos-replicas` runs the production 10 s /
1 s) sets the lease; `KEEPER_REPLICA_REPORT` names a file that gets one JSON line per takeover.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from keeper.chain.reader import SnapshotReader
from keeper.devnet.market import Market
from keeper.devnet.service import local_key
from keeper.journal import Journal, JournalError, LeaseRecord
from keeper.lease import LEASE_NAME
from tests.keeper.conftest import Env, move
from tests.keeper.crash_driver import POINTS
from tests.pg import PostgresServer
from tests.webhook import Hook

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = int(os.environ.get("KEEPER_REPLICA_ROUNDS", "1"))
LEASE_S = float(os.environ.get("KEEPER_REPLICA_LEASE", "3"))
RENEW_S = min(1.0, LEASE_S / 6)
REPORT = os.environ.get("KEEPER_REPLICA_REPORT")
RISK_REDUCING = ("deleverage", "repayDebt")
#: Slack on "within one lease": the standby's next attempt comes at most one renewal interval
#: after the lapse; then process scheduling on a loaded 2-core machine.
TAKEOVER_SLACK_S = RENEW_S + 1.5
PROCESS_LIMIT_S = 90

_databases = iter(range(1, 10_000))


@dataclass
class Replica:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Blocks:
    """The head block sampled every 50 ms on a thread: which block was the head at a time."""

    def __init__(self, env: Env) -> None:
        self.samples: list[tuple[float, int]] = []
        self._w3 = Web3(Web3.HTTPProvider(env.w3.provider.endpoint_uri))  # type: ignore[attr-defined]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.samples.append((time.time(), int(self._w3.eth.block_number)))
            except Exception:  # the node is busy: the next sample will do
                pass

    def at(self, when: float) -> int:
        earlier = [b for t, b in self.samples if t <= when]
        return earlier[-1] if earlier else self.samples[0][1]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def chain(anvil_env: Env) -> Iterator[tuple[Env, Blocks]]:
    """anvil mining a block every second, as a real chain does (automine back after)."""
    anvil_env.rpc("evm_setIntervalMining", 1)
    blocks = Blocks(anvil_env)
    yield anvil_env, blocks
    blocks.stop()
    anvil_env.rpc("evm_setIntervalMining", 0)


def point_time(replica: Replica, point: str) -> float:
    """When the replica reached `point` (the unix time on its AT line)."""
    line = next(x for x in replica.text().splitlines() if x.startswith(f"AT {point} "))
    return float(line.split()[2])


@pytest.fixture
def journal_url(pg_server: PostgresServer) -> str:
    return pg_server.create_database(f"replicas_{os.getpid()}_{next(_databases)}")


def settings(env: Env, url: str, name: str) -> dict[str, str]:
    keep = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    return {
        **keep,
        "PYTHONPATH": str(ROOT),
        "KEEPER_RPC_URL": str(env.w3.provider.endpoint_uri),  # type: ignore[attr-defined]
        "KEEPER_CHAIN_ID": str(env.dep.chain_id),
        "KEEPER_PRIVATE_KEY": local_key(env.w3, env.keeper),
        "KEEPER_VAULTS": ",".join(env.dep.vaults),
        "KEEPER_JOURNAL": url,
        "KEEPER_REPLICA_ID": name,
        "KEEPER_LEASE_SECONDS": f"{LEASE_S:g}",
        "KEEPER_LEASE_RENEW_INTERVAL": f"{RENEW_S:g}",
        "KEEPER_POLL_INTERVAL": "2",
        "KEEPER_TX_TIMEOUT": "6",
    }


def spawn(env: Env, url: str, name: str, tmp: Path, point: str = "none", action: str = "kill",
          **extra: str) -> Replica:
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.keeper.replica_driver", point, action],
        cwd=tmp, env={**settings(env, url, name), **extra}, stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    return Replica(name, proc, log)


def start_pair(env: Env, url: str, tmp: Path, point: str, action: str, **extra: str
               ) -> tuple[Replica, Replica]:
    """Replica a (armed) leading, replica b standing by: both up before anything is due."""
    a = spawn(env, url, "replica-a", tmp, point, action, **extra)
    try:
        wait_for("replica-a to lead", lambda: held_by(url, env.dep.chain_id, "replica-a"),
                 timeout=PROCESS_LIMIT_S)
        b = spawn(env, url, "replica-b", tmp)
        wait_for("replica-b to stand by", lambda: "standing by" in b.text(), PROCESS_LIMIT_S)
    except BaseException:
        a.stop()
        raise
    return a, b


def held_by(url: str, chain_id: int, name: str) -> LeaseRecord | None:
    """The lease if `name` holds it (unexpired), else None."""
    lease = lease_of(url, chain_id)
    return lease if lease is not None and lease.holder == name and lease.live else None


def lease_of(url: str, chain_id: int) -> LeaseRecord | None:
    try:
        with Journal(url, chain_id=chain_id, read_only=True) as j:
            return j.lease(LEASE_NAME)
    except JournalError:  # not created yet: the first replica is still starting
        return None


def settled(url: str, chain_id: int, vault: str) -> bool:
    """The journal has nothing in flight and the vault's risk-reducing action is mined."""
    with Journal(url, chain_id=chain_id, read_only=True) as j:
        if j.unfinished_intents():
            return False
        return any(i.vault == vault and i.kind in RISK_REDUCING and i.status == "mined"
                   for i in j.recent_intents(limit=200))


def check_journal_against_chain(env: Env, url: str, start_nonce: int, vault: str) -> int:
    """Every intent ended; exactly one on-chain action each; the chain's nonces are exactly
    the included intents' (none burned twice, no gap). Returns how many landed."""
    with Journal(url, chain_id=env.dep.chain_id, read_only=True) as j:
        intents = j.recent_intents(limit=500)
        assert j.unfinished_intents() == []
    on_chain = [i for i in intents if i.status in ("mined", "reverted")]
    latest = env.nonce("latest")
    assert latest == start_nonce + len(on_chain), [(i.kind, i.nonce, i.status) for i in intents]
    assert sorted(i.nonce for i in on_chain) == list(range(start_nonce, latest))
    assert env.nonce("pending") == latest  # nothing stuck behind a gap
    for i in intents:
        assert len([t for t in i.transactions if t.status in ("mined", "reverted")]) <= 1, i
    risk = [i for i in on_chain if i.vault == vault and i.kind in RISK_REDUCING]
    assert [i.status for i in risk] == ["mined"]
    snap = SnapshotReader(env.w3).read([vault], int(env.w3.eth.block_number))[vault]
    assert snap.health >= snap.mandate.min_health
    return len(on_chain)


def report(row: dict[str, Any]) -> None:
    if REPORT:
        with open(REPORT, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")


def no_traceback(*replicas: Replica) -> None:
    for r in replicas:
        assert "Traceback" not in r.text(), r.text()[-3000:]


@pytest.mark.parametrize("round_", range(ROUNDS))
@pytest.mark.parametrize("point", POINTS)
def test_sigkill_the_leader_at_each_point_and_the_standby_takes_over(
    chain: tuple[Env, Blocks], market: Market, journal_url: str, tmp_path: Path, point: str,
    round_: int,
) -> None:
    (env, blocks), vault = chain, chain[0].dep.vaults[0]
    cid = env.dep.chain_id
    start_nonce = env.nonce("latest")
    a, b = start_pair(env, journal_url, tmp_path, point, "kill")
    try:
        move(market, env, 0.65, 0.70)  # a crash: the balanced vault must reduce risk
        assert a.proc.wait(timeout=PROCESS_LIMIT_S) == -signal.SIGKILL, a.text()[-3000:]
        taken = wait_for("replica-b to take over", lambda: held_by(journal_url, cid, "replica-b"),
                         LEASE_S + 10)
        died_at = point_time(a, point)
        took_s = taken.acquired_at - died_at  # the database's clock: this machine's
        took_blocks = blocks.at(taken.acquired_at) - blocks.at(died_at)
        assert taken.epoch == 2
        assert took_s <= LEASE_S + TAKEOVER_SLACK_S, took_s
        wait_for("the action to land once", lambda: settled(journal_url, cid, vault), 60, 0.25)
        assert b.stop() == 0, b.text()[-3000:]
        landed = check_journal_against_chain(env, journal_url, start_nonce, vault)
        no_traceback(b)
        assert "AT " + point in a.text()
        report({"signal": "SIGKILL", "point": point, "round": round_, "lease_s": LEASE_S,
                "takeover_s": round(took_s, 2), "takeover_blocks": took_blocks,
                "landed": landed})
    finally:
        for r in (a, b):
            r.stop()


@pytest.mark.parametrize("point", ["after_nonce", "after_sign"])
def test_a_paused_leader_wakes_up_and_sends_nothing_new(
    chain: tuple[Env, Blocks], market: Market, journal_url: str, tmp_path: Path, point: str,
    hook: Hook,
) -> None:
    """SIGSTOP the leader with a nonce (or a signed transaction) journaled, longer than its
    lease: the standby takes over and lands the action; the old leader, woken, finds its
    writes refused (fencing), sends no second action, notifies "lease lost" and stands by."""
    (env, blocks), vault = chain, chain[0].dep.vaults[0]
    cid = env.dep.chain_id
    start_nonce = env.nonce("latest")
    a, b = start_pair(env, journal_url, tmp_path, point, "stop", KEEPER_NOTIFY_URLS=hook.url())
    try:
        move(market, env, 0.65, 0.70)
        wait_for("replica-a to pause", lambda: f"AT {point}" in a.text(), PROCESS_LIMIT_S)
        taken = wait_for("replica-b to take over", lambda: held_by(journal_url, cid, "replica-b"),
                         LEASE_S + 10)
        paused_at = point_time(a, point)
        took_s = taken.acquired_at - paused_at
        took_blocks = blocks.at(taken.acquired_at) - blocks.at(paused_at)
        assert taken.epoch == 2
        assert took_s <= LEASE_S + TAKEOVER_SLACK_S, took_s
        wait_for("the action to land", lambda: settled(journal_url, cid, vault), 60, 0.25)
        a.proc.send_signal(signal.SIGCONT)  # the ex-leader wakes up, mid-send
        wait_for("replica-a to stand down", lambda: "standing by" in a.text().split(
            f"AT {point}", 1)[1], 30)
        time.sleep(3 * RENEW_S + 2)  # what it would send, it would have sent by now
        lease = lease_of(journal_url, cid)
        assert lease is not None and lease.holder == "replica-b" and lease.epoch == 2
        woke = a.text().split(f"AT {point}", 1)[1]
        assert "refused" in woke or "lost" in woke, woke[-3000:]
        lost = None
        while lost is None:  # the operator hears of it (apprise, JSON webhook)
            body = hook.take(1)[0][2]
            lost = body if body["title"] == "keeper: lease lost" else None
        assert lost["message"] == "this keeper lost its lease; now held by replica-b."
        for r in (a, b):
            assert r.stop() == 0, r.text()[-3000:]
        landed = check_journal_against_chain(env, journal_url, start_nonce, vault)
        no_traceback(a, b)
        report({"signal": "SIGSTOP", "point": point, "lease_s": LEASE_S,
                "takeover_s": round(took_s, 2), "takeover_blocks": took_blocks,
                "landed": landed})
    finally:
        for r in (a, b):
            r.stop()


def test_two_chains_share_one_server_and_status_reads_both_from_the_journal(
    chain: tuple[Env, Blocks], journal_url: str, tmp_path: Path
) -> None:
    """One keeper process per chain, both on one PostgreSQL database (a schema each);
    `keeper status --journal-only`, given KEEPER_JOURNAL alone, shows each chain's leader and
    last tick without asking any node."""
    from keeper.devnet.anvil import Anvil
    from keeper.devnet.deploy import deploy_everything
    from keeper.devnet.local import local_chain

    env = chain[0]
    with Anvil("--chain-id", "31338", "--block-time", "1") as w3:
        other = Env("anvil", w3, deploy_everything(w3), local_chain(w3))
        assert other.dep.chain_id == 31338
        one = spawn(env, journal_url, "keeper-31337", tmp_path / "a")
        two = spawn(other, journal_url, "keeper-31338", tmp_path / "b")
        try:
            for e, name in ((env, "keeper-31337"), (other, "keeper-31338")):
                wait_for(f"{name} to lead", lambda e=e, name=name: held_by(
                    journal_url, e.dep.chain_id, name), PROCESS_LIMIT_S)
                wait_for(f"{name} to tick", lambda e=e: ticked(journal_url, e.dep.chain_id), 60)
            shown = subprocess.run(
                [sys.executable, "-m", "keeper", "status", "--journal-only"],
                cwd=tmp_path, capture_output=True, text=True, timeout=60,
                env={"PATH": os.environ["PATH"], "KEEPER_JOURNAL": journal_url},
            )
            assert shown.returncode == 0, shown.stderr
            out = shown.stdout
            assert "chain 31337 (schema keeper_chain_31337):" in out
            assert "chain 31338 (schema keeper_chain_31338):" in out
            first, second = out.split("chain 31338 (schema keeper_chain_31338):")
            assert "leader: keeper-31337 (term 1)" in first
            assert "leader: keeper-31338 (term 1)" in second
            assert "last tick: block" in first and "last tick: block" in second
            assert PostgresServer.PASSWORD not in out + shown.stderr
            assert one.stop() == 0 and two.stop() == 0  # a clean stop releases the lease
            after = subprocess.run(
                [sys.executable, "-m", "keeper", "status", "--journal-only"],
                cwd=tmp_path, capture_output=True, text=True, timeout=60,
                env={"PATH": os.environ["PATH"], "KEEPER_JOURNAL": journal_url},
            ).stdout
            assert "leader: none — the lease of keeper-31337 (term 1) expired" in after
            no_traceback(one, two)
        finally:
            one.stop()
            two.stop()


def ticked(url: str, chain_id: int) -> bool:
    with Journal(url, chain_id=chain_id, read_only=True) as j:
        last = j.last_tick()
        return last is not None and last.status == "ok"
