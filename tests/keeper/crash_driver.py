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


def _always(*_args: Any, **_kwargs: Any) -> bool:
    return True


#: Where each point is: the journal's or the sender's method, before or after the call, and
#: which calls count (given the call's arguments).
HOOKS: dict[str, tuple[str, str, str, Callable[..., bool]]] = {
    "after_intent": (
        "journal", "record_intent", "after", lambda *a, **k: k.get("status") == "pending"
    ),
    "after_nonce": ("journal", "attach_nonce", "after", _always),
    "after_sign": ("journal", "record_transaction", "after", _always),
    "after_broadcast": ("sender", "_broadcast", "after", _always),
    "before_receipt": ("sender", "_record_receipt", "before", _always),
    "mid_receipt": ("journal", "mark_transaction", "after", lambda *a, **k: a[1] == "mined"),
}
assert tuple(HOOKS) == POINTS


def install(point: str, targets: dict[str, object], fire: Callable[[], None]) -> None:
    """Call `fire` at `point`: on the objects in `targets` ("journal", "sender"), or on their
    classes (then every instance is hooked). "none" hooks nothing."""
    if point == "none":
        return
    if point not in HOOKS:
        raise SystemExit(f"unknown point {point!r} (known: {', '.join(POINTS)})")
    which, name, when, counts = HOOKS[point]
    target = targets[which]
    original = getattr(target, name)
    unbound = isinstance(target, type)  # a class: the wrapper gets `self` first

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        call_args = args[1:] if unbound else args
        if when == "before" and counts(*call_args, **kwargs):
            fire()
        result = original(*args, **kwargs)
        if when == "after" and counts(*call_args, **kwargs):
            fire()
        return result

    setattr(target, name, wrapped)


def arm(point: str, journal: Journal, sender: TxSender) -> None:
    install(point, {"journal": journal, "sender": sender}, die)


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
