"""The values settings are made of, and how they are read: names, units (gwei and ETH to
integer wei, with the rounding stated), addresses, deployment files, and the one-line error
each bad value gets. No settings model here: :mod:`keeper.config` builds on these."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any, Literal

from eth_typing import ChecksumAddress
from pydantic_core import ErrorDetails
from web3 import Web3
from web3.types import Wei

from keeper.errors import ConfigError
from keeper.masking import mask_rpc_url
from keeper.risk.actions import Urgency

logger = logging.getLogger("keeper.config")

#: Every setting is read from ``KEEPER_<FIELD NAME IN CAPITALS>``.
ENV_PREFIX = "KEEPER_"
#: ``KEEPER_*`` variables that other tools of this project read (scripts/deploy.py, ABI loading);
#: they are not keeper settings, but not typos either, so no warning for them.
FOREIGN_ENV_NAMES = frozenset({"KEEPER_DEPLOYER_KEY", "KEEPER_ABI_DIR"})
#: Default tick deadline as a share of the poll interval: leaves time to log and close the tick
#: before the next one is due.
TICK_DEADLINE_SHARE = 0.8
WEI_PER_GWEI = 10**9
WEI_PER_ETH = 10**18
#: Gas of one deleverage (one sell and one perp reduce; `make gas` measures 448,709), rounded up:
#: the default minimum gas balance is the gas limit of one such call at the CRITICAL fee cap.
DELEVERAGE_GAS = 450_000
#: The command-line option that names the settings file (errors about the file name it).
ENV_FILE_OPTION = "--env-file"
#: Basis points in one: ratios handed to the transaction layer are integer bps.
BPS = 10_000
#: Shown instead of any secret.
MASK = "***"
#: Shown for a setting that is not set.
UNSET = "(not set)"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
_PRIVATE_KEY_RE = re.compile(r"(0x)?[0-9a-fA-F]{64}")
_NUMBER_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
#: Fields whose input must never appear in a message, not even a malformed one.
_SECRET_FIELDS = frozenset({"rpc_url", "rpc_fallback_urls", "private_key", "notify_urls"})
_FEE_CAP_FIELDS: tuple[tuple[Urgency, str], ...] = (
    (Urgency.LOW, "max_fee_gwei_low"),
    (Urgency.NORMAL, "max_fee_gwei_normal"),
    (Urgency.HIGH, "max_fee_gwei_high"),
    (Urgency.CRITICAL, "max_fee_gwei_critical"),
)

#: The environment `load_settings` hands to the settings sources (None: pydantic's default).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("keeper_config_environ", default=None)


def env_name(field: str) -> str:
    """The environment variable that sets `field` (``poll_interval`` → ``KEEPER_POLL_INTERVAL``)."""
    return ENV_PREFIX + field.upper()


def gwei_to_wei(gwei: float) -> Wei:
    """`gwei` in integer wei, rounded down (we never send more than configured).

    Goes through the float's shortest decimal form, so ``0.57`` gwei is exactly 570_000_000 wei
    (a binary product would give 569_999_999).
    """
    if not math.isfinite(gwei) or gwei < 0:
        raise ValueError(f"not a non-negative finite amount of gwei: {gwei!r}")
    wei = (Decimal(repr(gwei)) * WEI_PER_GWEI).to_integral_value(rounding=ROUND_FLOOR)
    return Wei(int(wei))


def eth_to_wei(eth: float) -> Wei:
    """`eth` in integer wei, rounded up: a configured minimum is never lowered by rounding.
    Decimal-exact through the float's shortest form (``0.05`` is exactly 5e16 wei)."""
    if not math.isfinite(eth) or eth < 0:
        raise ValueError(f"not a non-negative finite amount of ETH: {eth!r}")
    wei = (Decimal(repr(eth)) * WEI_PER_ETH).to_integral_value(rounding=ROUND_CEILING)
    return Wei(int(wei))


def format_eth(wei: int) -> str:
    """`wei` as ETH for people, exact: ``281250000000000000`` → ``'0.28125 ETH'``."""
    return f"{(Decimal(wei) / WEI_PER_ETH).normalize():f} ETH"


def _http_url_problem(url: str) -> str | None:
    """Why `url` is not an http(s) URL with a host (masked), or None when it is one."""
    if re.match(r"https?://[^/\s]", url, flags=re.IGNORECASE):
        return None
    return f"must be an http(s) URL, got {mask_rpc_url(url)}"


def parse_address(text: str) -> ChecksumAddress:
    """`text` as a checksum address; all-lower or all-upper hex has no checksum to verify.

    Raises ValueError with a message quoting `text` (addresses are public).
    """
    candidate = text.strip()
    if not _ADDRESS_RE.fullmatch(candidate):
        raise ValueError(f"{candidate!r} is not an address")
    checksummed = Web3.to_checksum_address(candidate)
    digits = candidate[2:]
    if digits not in (digits.lower(), digits.upper()) and candidate != checksummed:
        raise ValueError(f"{candidate!r} has a bad checksum (expected {checksummed})")
    return checksummed


def _parse_addresses(texts: Iterable[str]) -> tuple[ChecksumAddress, ...]:
    """Checksum addresses in first-seen order, without duplicates."""
    out: dict[ChecksumAddress, None] = {}
    for text in texts:
        out.setdefault(parse_address(text), None)
    return tuple(out)


def load_deployment(path: str | Path) -> dict[str, Any]:
    """The deployment JSON that scripts/deploy.py writes, checked, with addresses checksummed.

    Requires ``chain_id`` (positive integer) and ``vaults`` (list of addresses); ``contracts`` and
    ``accounts``, when present, must map names to addresses. Every problem raises one
    ConfigError line naming KEEPER_DEPLOYMENT and the path.
    """
    where = f"{env_name('deployment')}: {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not a UTF-8 text file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    chain_id = data.get("chain_id")
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id <= 0:
        raise ConfigError(f"{where}: 'chain_id' must be a positive integer, got {chain_id!r}")
    vaults = data.get("vaults")
    if not isinstance(vaults, list) or not all(isinstance(v, str) for v in vaults):
        raise ConfigError(f"{where}: 'vaults' must be a list of addresses")
    try:
        data["vaults"] = list(_parse_addresses(vaults))
    except ValueError as exc:
        raise ConfigError(f"{where}: vaults: {exc}") from None
    for section in ("contracts", "accounts"):
        if section not in data:
            continue
        entries = data[section]
        if not isinstance(entries, dict) or not all(isinstance(v, str) for v in entries.values()):
            raise ConfigError(f"{where}: '{section}' must map names to addresses")
        try:
            data[section] = {name: parse_address(addr) for name, addr in entries.items()}
        except ValueError as exc:
            raise ConfigError(f"{where}: {section}: {exc}") from None
    return data


def _error_line(err: ErrorDetails) -> str:
    """One pydantic error as "KEEPER_NAME: problem"; secret inputs are never shown."""
    field = str(err["loc"][0]) if err["loc"] else ""
    name = env_name(field) if field else "settings"
    kind, ctx = err["type"], err.get("ctx", {})
    got = "" if field in _SECRET_FIELDS else f", got {_shown(err.get('input'))}"
    if kind == "missing":
        return f"{name}: required"
    if kind == "value_error":
        return f"{name}: {ctx.get('error', err['msg'])}"
    if kind == "greater_than":
        return f"{name}: must be > {_number(ctx['gt'])}{got}"
    if kind == "greater_than_equal":
        return f"{name}: must be >= {_number(ctx['ge'])}{got}"
    if kind in ("float_parsing", "float_type"):
        return f"{name}: must be a number{got}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{name}: must be a whole number{got}"
    if kind in ("bool_parsing", "bool_type"):
        return f"{name}: must be true or false{got}"
    if kind == "finite_number":
        return f"{name}: must be a finite number{got}"
    return f"{name}: {err['msg'].replace('Input should be', 'must be', 1)}{got}"


def _shown(value: object) -> str:
    text = str(value)
    return text if _NUMBER_RE.fullmatch(text.strip()) else repr(text)


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
