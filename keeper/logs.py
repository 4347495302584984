"""Logging setup for the CLI (the only place handlers are configured): human-readable text by
default, JSON lines on request. Non-finite floats are written as strings so every line parses.
Every record passes :class:`SecretFilter` first: no RPC secret reaches a log line."""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Iterable
from typing import IO, Any

from keeper.masking import MASKER, SecretMasker

#: LogRecord attributes that are not user-supplied `extra` fields.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class SecretFilter(logging.Filter):
    """Masks every record in place before any handler formats it: the message with its args
    (rendered once, then masked), the exception and stack text, and string `extra` fields.

    The traceback is rendered to text here and ``exc_info`` cleared, so no later formatter —
    ours or a library's — can render the raw exception (requests quotes the full URL in it)."""

    def __init__(self, masker: SecretMasker = MASKER) -> None:
        super().__init__()
        self.masker = masker

    def filter(self, record: logging.LogRecord) -> bool:
        mask = self.masker.mask
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what there is, masked, rather than lose it
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = mask(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.exc_info = None
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, mask(value))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                out[key] = _jsonable(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, allow_nan=False)


def configure_logging(
    level: str = "INFO",
    json_lines: bool = False,
    secret_urls: Iterable[str] = (),
    stream: IO[str] | None = None,
) -> None:
    """One handler on the root logger (stderr unless `stream`), with the secret filter on it.
    `secret_urls` (the configured RPC URLs) are registered for masking; so is every URL that
    :func:`keeper.chain.connect.connect` connects to."""
    for url in secret_urls:
        MASKER.register_url(url)
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.addFilter(SecretFilter(MASKER))
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter (HTTP requests carry the RPC URL) stays out of our logs.
    for noisy in ("web3", "urllib3", "apscheduler", "asyncio", "eth"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
