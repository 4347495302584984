"""Hiding what RPC and database URLs carry — API keys in the path or query, ``user:password`` —
wherever text leaves the process: error messages, log records, the journal.

Two rules, applied by :func:`mask_text`:

1. every fragment of a *registered* URL that can hold a secret (its userinfo, its path, long
   path segments, its query and query values) is replaced by ``***`` wherever it appears, in any
   letter case — also without the URL around it, as urllib3 writes it
   (``Max retries exceeded with url: /v3/KEY``);
2. in any other http(s), ws(s) or postgres(ql) URL, the userinfo, the query and path segments
   that look like tokens (:data:`TOKEN_MIN_CHARS` or more letters, digits, ``-`` and ``_``) are
   replaced.

Standard library only: :mod:`keeper.errors` masks every message through it, and the risk core
(which imports the errors) must not load a chain library.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import unquote, urlsplit, urlunsplit

#: A path segment this long in an unregistered URL is taken for a token (provider keys are
#: 32-64 characters; ordinary segments such as ``v3``, ``rpc``, ``mainnet`` are short).
TOKEN_MIN_CHARS = 16
#: A registered URL's path segment this long is masked on its own, wherever it appears.
SEGMENT_MIN_CHARS = 8
#: Standalone fragments shorter than this are not masked on their own (a 2-letter password would
#: otherwise blank every occurrence of those letters); they are still masked inside the URL.
FRAGMENT_MIN_CHARS = 4
#: What a hidden fragment becomes.
MASK = "***"

_URL_RE = re.compile(r"\b(?:https?|wss?|postgres(?:ql)?)://[^\s'\"<>()\[\]{},]+", re.IGNORECASE)
_TOKEN_RE = re.compile(rf"[A-Za-z0-9_\-]{{{TOKEN_MIN_CHARS},}}")


def mask_rpc_url(url: str) -> str:
    """The URL with credentials and path/query (where providers put API keys) hidden, for
    showing a configured URL: ``https://user:pw@eth.example.com/v2/SECRET?key=X`` →
    ``https://***@eth.example.com/***``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparseable url>"
    if not parts.scheme or not parts.hostname:
        return "<unparseable url>"
    netloc = parts.hostname + (f":{port}" if port else "")
    if parts.username or parts.password:
        netloc = MASK + "@" + netloc
    hidden_path = "/" + MASK if (parts.path.strip("/") or parts.query) else ""
    return urlunsplit((parts.scheme, netloc, hidden_path, "", ""))


def _mask_any_url(url: str) -> str:
    """Rule 2 for one URL found in free text: userinfo, query, fragment and token-like path
    segments hidden; scheme, host, port and ordinary segments kept (they help debugging)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
    path = "/".join(
        MASK if _TOKEN_RE.fullmatch(segment) or len(segment) >= 2 * TOKEN_MIN_CHARS else segment
        for segment in parts.path.split("/")
    )
    query = MASK if parts.query else ""
    fragment = MASK if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, path, query, fragment))


def secret_fragments(url: str) -> set[str]:
    """The parts of `url` that may hold a secret, raw and percent-decoded (see module doc)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return {url} if len(url) >= FRAGMENT_MIN_CHARS else set()
    found: set[str] = set()
    netloc = parts.netloc
    if parts.scheme.lower() in ("postgresql", "postgres"):
        return _database_fragments(parts.netloc, parts.query)
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        found.add(userinfo + "@")  # always: it is the credential, whatever its length
        found.update(s for s in userinfo.split(":") if len(s) >= FRAGMENT_MIN_CHARS)
    path = parts.path.rstrip("/")
    if len(path.strip("/")) >= FRAGMENT_MIN_CHARS or parts.query:
        found.add(path if path else "/")
    found.update(s for s in path.split("/") if len(s) >= SEGMENT_MIN_CHARS)
    if parts.query:
        found.add(parts.query)
        for pair in parts.query.split("&"):
            value = pair.partition("=")[2]
            if len(value) >= FRAGMENT_MIN_CHARS:
                found.add(value)
    if parts.fragment and len(parts.fragment) >= FRAGMENT_MIN_CHARS:
        found.add(parts.fragment)
    found |= {unquote(s) for s in found}
    found.discard("/")  # a bare slash is no secret (it stays in the set only to be dropped)
    return {s for s in found if s}


def _database_fragments(netloc: str, query: str) -> set[str]:
    """A database URL's secrets: its password (and the whole userinfo), and query values such
    as ``?password=``. Not the user or database names: those are no secret, and short common
    words ("keeper") masked everywhere would blank every log line and file path."""
    found: set[str] = set()
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        found.add(userinfo + "@")
        password = userinfo.partition(":")[2]
        if len(password) >= FRAGMENT_MIN_CHARS:
            found.add(password)
    for pair in query.split("&") if query else ():
        value = pair.partition("=")[2]
        if len(value) >= FRAGMENT_MIN_CHARS:
            found.add(value)
    found |= {unquote(s) for s in found}
    return {s for s in found if s}


class SecretMasker:
    """The registered secrets of this process and the two masking rules; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fragments: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def register_url(self, url: str) -> None:
        """Mask `url`'s secret parts from now on (idempotent)."""
        self.register(*secret_fragments(url))

    def register(self, *fragments: str) -> None:
        """Mask these literal strings from now on (case-insensitive)."""
        with self._lock:
            new = {f for f in fragments if f} - self._fragments
            if not new:
                return
            self._fragments |= new
            # Longest first, so a path is replaced whole before any segment of it.
            ordered = sorted(self._fragments, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(f) for f in ordered), re.IGNORECASE)

    def mask(self, text: str) -> str:
        """`text` with every registered fragment and every URL secret replaced by ``***``."""
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        return _URL_RE.sub(lambda m: _mask_any_url(m.group(0)), text)


#: One per process: configuration registers the RPC URLs, errors and logs mask through it.
MASKER = SecretMasker()


def register_secret_url(url: str) -> None:
    """From now on, mask `url`'s secret parts in every error, log record and journal entry."""
    MASKER.register_url(url)


def mask_text(text: str) -> str:
    """`text` safe to log or store: registered URL secrets and any URL's credentials hidden."""
    return MASKER.mask(text)


__all__ = [
    "MASK",
    "MASKER",
    "SecretMasker",
    "mask_rpc_url",
    "mask_text",
    "register_secret_url",
    "secret_fragments",
]
