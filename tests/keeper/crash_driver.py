"""A keeper process that SIGKILLs itself at one point of the send path (test helper).

    python -m tests.keeper.crash_driver RPC_URL DEPLOYMENT_JSON JOURNAL POINT

Runs the real keeper (`build_local_service`: settings, signer, journal, sender) against the node
at RPC_URL, then one tick; at POINT the process kills itself with SIGKILL — no finaliser, no
flush, what a power cut or the OOM killer does. POINT "none" runs a normal start and tick
(the restart) and prints what it saw as one JSON line. The points:

- ``after_intent``: the intent is journaled, no nonce yet;
- ``after_nonce``: its nonce is journaled too;
- ``after_sign``: the signed transaction is journaled, not yet broadcast;
- ``after_broadcast``: a node took it, nothing recorded since;
- ``before_receipt``: its receipt was read, not yet recorded;
- ``mid_receipt``: the transaction is recorded mined, the intent not yet finished.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from web3 import Web3

from keeper.chain.connect import connect
from keeper.clock import SystemClock
from keeper.devnet.deploy import Deployment
from keeper.devnet.service import build_local_service
from keeper.journal import Journal
from keeper.tx.sender import TxSender

POINTS = (
    "after_intent",
    "after_nonce",
    "after_sign",
    "after_broadcast",
    "before_receipt",
    "mid_receipt",
)


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def after(obj: object, name: str, when: Callable[..., bool] = lambda *a, **k: True) -> None:
    """Kill the process right after `obj.name` returns (on a call where `when` holds)."""
    original = getattr(obj, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if when(*args, **kwargs):
            die()
        return result

    setattr(obj, name, wrapped)


def before(obj: object, name: str) -> None:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        die()

    setattr(obj, name, wrapped)


def arm(point: str, journal: Journal, sender: TxSender) -> None:
    if point == "after_intent":
        after(journal, "record_intent", lambda *a, **k: k.get("status") == "pending")
    elif point == "after_nonce":
        after(journal, "attach_nonce")
    elif point == "after_sign":
        after(journal, "record_transaction")
    elif point == "after_broadcast":
        after(sender, "_broadcast")
    elif point == "before_receipt":
        before(sender, "_record_receipt")
    elif point == "mid_receipt":
        after(journal, "mark_transaction", lambda *a, **k: a[1] == "mined")
    elif point != "none":
        raise SystemExit(f"unknown point {point!r} (known: {', '.join(POINTS)})")


def main(url: str, deployment: str, journal_path: str, point: str) -> int:
    data = json.loads(Path(deployment).read_text())
    dep = Deployment(**data)
    w3: Web3 = connect(url, dep.chain_id)
    service = build_local_service(w3, dep, Path(journal_path), SystemClock(), TX_TIMEOUT="5")
    arm(point, service.journal, service.sender)
    reconciled = service.start()
    report = service.tick()
    print(
        json.dumps(
            {
                "reconciled": [[o.vault, o.function, o.status] for o in reconciled],
                "outcomes": [[o.vault, o.function, o.status] for o in report.outcomes],
                "error": report.error,
            }
        )
    )
    service.journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
