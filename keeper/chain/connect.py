"""Connecting to an RPC endpoint with clear, masked errors."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from web3 import Web3
from web3.providers.rpc import HTTPProvider

from keeper.errors import ChainReadError

#: Seconds to wait for any single RPC answer before calling the endpoint unreachable.
RPC_TIMEOUT_S = 10.0


def mask_rpc_url(url: str) -> str:
    """The URL with credentials and path/query (where providers put API keys) hidden.

    `https://user:pw@eth.example.com/v2/SECRET?key=X` → `https://***@eth.example.com/***`.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if not parts.scheme or not parts.hostname:
        return "<unparseable url>"
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    if parts.username or parts.password:
        netloc = "***@" + netloc
    hidden_path = "/***" if (parts.path.strip("/") or parts.query) else ""
    return urlunsplit((parts.scheme, netloc, hidden_path, "", ""))


def connect(
    rpc_url: str, expected_chain_id: int | None = None, timeout_s: float = RPC_TIMEOUT_S
) -> Web3:
    """An HTTP Web3 for `rpc_url` after checking it answers (and is on `expected_chain_id`)."""
    parts = urlsplit(rpc_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ChainReadError(f"RPC URL {mask_rpc_url(rpc_url)!s} is not an http(s) URL")
    w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout_s}))
    try:
        chain_id = int(w3.eth.chain_id)
    except Exception as exc:  # requests/aiohttp/JSON errors all mean the same thing here
        raise ChainReadError(
            f"RPC {mask_rpc_url(rpc_url)} unreachable: {type(exc).__name__}"
        ) from None
    if expected_chain_id is not None and chain_id != expected_chain_id:
        raise ChainReadError(
            f"RPC {mask_rpc_url(rpc_url)} is on chain {chain_id}, expected {expected_chain_id}"
        )
    return w3
