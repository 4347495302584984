"""`keeper run` as a replica, armed to die or freeze at one point of the send path (test helper).

    python -m tests.keeper.replica_driver POINT ACTION      (settings in KEEPER_* variables)

It runs the real command (`keeper.cli.main(["run"])`: settings, start-up checks, lease, journal
on PostgreSQL, sender, scheduler). The first time this process passes POINT (one of
:data:`tests.keeper.crash_driver.POINTS`, or "none"), ACTION happens to it: ``kill`` sends itself
SIGKILL (no finaliser, no flush: a power cut), ``stop`` SIGSTOP (a pause: a VM migration, a
long GC, a laptop lid) — the test sends SIGCONT when it wants it back. It prints ``AT POINT T``
on stderr just before (T: unix time).
"""

from __future__ import annotations

import os
import signal
import sys
import time

from keeper.cli import main as keeper_main
from keeper.journal import Journal
from keeper.tx.sender import TxSender
from tests.keeper.crash_driver import install


def arm(point: str, action: str) -> None:
    sig = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}[action]
    fired = False

    def hit() -> None:
        nonlocal fired
        if fired:
            return
        fired = True
        print(f"AT {point} {time.time():.3f}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), sig)

    install(point, {"journal": Journal, "sender": TxSender}, hit)


if __name__ == "__main__":
    arm(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "kill")
    sys.exit(keeper_main(["run"]))
