"""The journal's schema and its records: statuses, migrations, the record types it returns,
and the JSON encoding that survives inf, nan and big ints. No I/O: :mod:`keeper.journal` is
the store."""

from __future__ import annotations

import enum
import json
import logging
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from web3.types import Wei

from keeper.errors import KeeperError

logger = logging.getLogger(__name__)

IntentStatus = Literal["pending", "sent", "mined", "reverted", "failed", "dropped", "dry_run"]
TxStatus = Literal["pending", "mined", "reverted", "replaced", "dropped"]

#: An intent in one of these may still have a transaction in flight: reconcile before sending.
UNFINISHED_STATUSES: tuple[IntentStatus, ...] = ("pending", "sent")
#: What an intent may be created as: about to be sent, or recorded as never sent.
INITIAL_STATUSES: tuple[IntentStatus, ...] = ("pending", "dry_run", "failed")
#: SQLite integers are signed 64-bit; larger JSON ints are written as strings to stay exact
#: for readers (SQLite's json functions, JavaScript) that would round them through a double.
JSON_INT_MIN, JSON_INT_MAX = -(2**63), 2**63 - 1
#: Seconds to wait for a lock held by another connection (a `keeper status` reading the file).
BUSY_TIMEOUT_MS = 5_000

_SPECIAL_FLOATS = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
_BIG_INT_RE = re.compile(r"-?[0-9]{19,}")
_HASH_RE = re.compile(r"0x[0-9a-f]{64}")

#: Schema migrations: version → DDL. Append only; never edit a released step.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE ticks (
            id INTEGER PRIMARY KEY,
            started_at REAL NOT NULL,
            finished_at REAL,
            block INTEGER NOT NULL,
            chain_id INTEGER NOT NULL,
            status TEXT NOT NULL,
            error TEXT
        );
        CREATE TABLE decisions (
            id INTEGER PRIMARY KEY,
            tick_id INTEGER NOT NULL REFERENCES ticks(id),
            vault TEXT NOT NULL,
            kind TEXT NOT NULL,
            urgency TEXT NOT NULL,
            expected_benefit_usd REAL,
            expected_cost_usd REAL,
            reason TEXT NOT NULL,
            inputs_json TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE INDEX decisions_tick ON decisions(tick_id);
        CREATE TABLE intents (
            id INTEGER PRIMARY KEY,
            decision_id INTEGER REFERENCES decisions(id),
            vault TEXT NOT NULL,
            kind TEXT NOT NULL,
            calldata TEXT NOT NULL,
            to_address TEXT NOT NULL,
            value TEXT NOT NULL,
            nonce INTEGER,
            status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'mined', 'reverted',
                                                   'failed', 'dropped', 'dry_run')),
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            outcome_json TEXT
        );
        CREATE INDEX intents_status ON intents(status);
        CREATE INDEX intents_vault ON intents(vault, id);
        CREATE TABLE transactions (
            id INTEGER PRIMARY KEY,
            intent_id INTEGER NOT NULL REFERENCES intents(id),
            tx_hash TEXT NOT NULL UNIQUE,
            nonce INTEGER NOT NULL,
            max_fee_per_gas TEXT NOT NULL,
            max_priority_fee_per_gas TEXT NOT NULL,
            gas_limit INTEGER NOT NULL,
            raw_tx TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'mined', 'reverted', 'replaced',
                                                   'dropped')),
            block INTEGER,
            gas_used INTEGER,
            effective_gas_price TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX transactions_intent ON transactions(intent_id);
        """,
    ),
    (
        2,
        """
        CREATE TABLE vault_faults (
            vault TEXT PRIMARY KEY,
            consecutive_failures INTEGER NOT NULL,
            halted INTEGER NOT NULL,
            last_error TEXT,
            updated_at REAL NOT NULL
        );
        """,
    ),
    (
        3,
        # The leader's lease (times are the database's clock, unix seconds), and fencing by
        # nonce: no two live intents (awaiting, in flight or included) share a nonce.
        """
        CREATE TABLE leases (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            acquired_at REAL NOT NULL,
            renewed_at REAL NOT NULL,
            expires_at REAL NOT NULL
        );
        CREATE UNIQUE INDEX intents_live_nonce ON intents(nonce)
            WHERE nonce IS NOT NULL AND status IN ('pending', 'sent', 'mined', 'reverted');
        """,
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


class JournalError(KeeperError):
    """The journal refused a write or a lookup (unknown id, duplicate hash, disk error).

    Not retryable by default: nothing may be broadcast that the journal did not record."""


class LeaseLost(Exception):
    """A write of a fenced journal was refused: this process no longer holds the lease.

    Deliberately not a KeeperError: no tick or vault boundary may swallow it. The loop stops
    on it and the replica goes back to standby (see :mod:`keeper.lease`)."""


# --- records -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TickRecord:
    id: int
    started_at: float
    finished_at: float | None
    block: int
    chain_id: int
    status: str
    error: str | None


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    id: int
    tick_id: int
    vault: str
    kind: str
    urgency: str
    expected_benefit_usd: float
    expected_cost_usd: float
    reason: str
    #: Decoded: "inf"/"-inf"/"nan" and out-of-int64 digit strings come back as numbers.
    inputs: Mapping[str, object]
    created_at: float


@dataclass(frozen=True, slots=True)
class TxRecord:
    id: int
    intent_id: int
    tx_hash: str
    nonce: int
    max_fee_per_gas: Wei
    max_priority_fee_per_gas: Wei
    gas_limit: int
    #: The signed transaction, ready for eth_sendRawTransaction.
    raw_tx: bytes
    status: TxStatus
    block: int | None
    gas_used: int | None
    effective_gas_price: Wei | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    name: str
    holder: str
    #: Incremented at every change of holder: the term of the current leader.
    epoch: int
    acquired_at: float
    renewed_at: float
    expires_at: float
    #: The database's clock when this was read.
    db_now: float
    #: From :meth:`~keeper.journal.Journal.acquire_lease`: whether that call took or extended
    #: it for the caller (False: someone else's, or a live one under the caller's name).
    taken: bool = False

    @property
    def live(self) -> bool:
        return self.expires_at > self.db_now


@dataclass(frozen=True, slots=True)
class VaultFault:
    vault: str
    consecutive_failures: int
    halted: bool
    last_error: str | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class IntentRecord:
    id: int
    decision_id: int | None
    vault: str
    kind: str
    calldata: bytes
    to_address: str
    value: Wei
    nonce: int | None
    status: IntentStatus
    created_at: float
    updated_at: float
    outcome: Mapping[str, object] | None
    #: Oldest first; replacements share the nonce.
    transactions: tuple[TxRecord, ...]


# --- JSON that survives inf, nan and big ints ----------------------------------------------------


def _to_json_value(value: object, where: str) -> object:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, enum.Enum):
        return _label(value)
    if isinstance(value, numbers.Integral):
        number = int(value)
        return number if JSON_INT_MIN <= number <= JSON_INT_MAX else str(number)
    if isinstance(value, numbers.Real):
        number_f = float(value)
        if math.isnan(number_f):
            return "nan"
        if math.isinf(number_f):
            return "inf" if number_f > 0 else "-inf"
        return number_f
    if isinstance(value, Mapping):
        return {_label(k): _to_json_value(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise JournalError(f"{where}: cannot journal a {type(value).__name__}")


def _from_json_value(value: object) -> object:
    if isinstance(value, str):
        if value in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[value]
        if _BIG_INT_RE.fullmatch(value):
            number = int(value)
            if not JSON_INT_MIN <= number <= JSON_INT_MAX:
                return number
        return value
    if isinstance(value, dict):
        return {k: _from_json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json_value(v) for v in value]
    return value


def encode_json(data: Mapping[str, object], where: str = "inputs") -> str:
    """Strict JSON (no NaN/Infinity tokens) for `data`: non-finite floats become the strings
    "inf", "-inf", "nan"; ints outside int64 become decimal strings; enums their value/name.
    :func:`decode_json` reverses this — a string that happens to read "inf", or digits beyond
    int64, comes back as a number (the one ambiguity of this plain encoding)."""
    return json.dumps(_to_json_value(data, where), allow_nan=False, sort_keys=True)


def decode_json(text: str) -> Mapping[str, object]:
    """The inverse of :func:`encode_json`, read-only."""
    data = _from_json_value(json.loads(text))
    if not isinstance(data, dict):
        raise JournalError(f"journal JSON is not an object: {text[:80]!r}")
    return MappingProxyType(data)


def _label(value: object) -> str:
    """An enum as its string value (ActionKind.HEDGE → "hedge") or name (Urgency.HIGH → "HIGH")."""
    if isinstance(value, enum.Enum):
        return value.value if isinstance(value.value, str) else value.name
    return str(value)


def _hex(data: bytes) -> str:
    return "0x" + bytes(data).hex()


def _unhex(text: str) -> bytes:
    return bytes.fromhex(text[2:] if text.startswith("0x") else text)


def normalize_tx_hash(tx_hash: str | bytes) -> str:
    """`tx_hash` as lower-case ``0x`` + 64 hex digits (accepts HexBytes, bytes or str)."""
    text = _hex(tx_hash) if isinstance(tx_hash, bytes) else str(tx_hash).lower()
    if not text.startswith("0x"):
        text = "0x" + text
    if not _HASH_RE.fullmatch(text):
        raise JournalError(f"not a transaction hash: {tx_hash!r}")
    return text


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)  # SQLite stores NaN as NULL anyway


def _opt_wei(text: str | None) -> Wei | None:
    return None if text is None else Wei(int(text))
