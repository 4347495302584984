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
from collections.abc import Callable
from typing import Any

from keeper.cli import main as keeper_main
from keeper.journal import Journal
from keeper.tx.sender import TxSender
from tests.keeper.crash_driver import POINTS


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

    def after(cls: type, name: str, when: Callable[..., bool] = lambda *a, **k: True) -> None:
        original = getattr(cls, name)

        def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(self, *args, **kwargs)
            if when(*args, **kwargs):
                hit()
            return result

        setattr(cls, name, wrapped)

    def before(cls: type, name: str) -> None:
        original = getattr(cls, name)

        def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
            hit()
            return original(self, *args, **kwargs)

        setattr(cls, name, wrapped)

    if point == "after_intent":
        after(Journal, "record_intent", lambda *a, **k: k.get("status") == "pending")
    elif point == "after_nonce":
        after(Journal, "attach_nonce")
    elif point == "after_sign":
        after(Journal, "record_transaction")
    elif point == "after_broadcast":
        after(TxSender, "_broadcast")
    elif point == "before_receipt":
        before(TxSender, "_record_receipt")
    elif point == "mid_receipt":
        after(Journal, "mark_transaction", lambda *a, **k: a[1] == "mined")
    elif point != "none":
        raise SystemExit(f"unknown point {point!r} (known: {', '.join(POINTS)})")


if __name__ == "__main__":
    arm(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "kill")
    sys.exit(keeper_main(["run"]))
