"""The operator's settings: typed, read from the environment and `.env`, validated once.

Everything here is what belongs to the operator (RPC, key source, vaults, gas policy, intervals);
the risk mandate lives on-chain in each vault. :func:`load_settings` is the one entry point: it
reads ``KEEPER_*`` variables (the process environment wins over the `.env` file), validates every
rule once and raises :class:`~keeper.errors.ConfigError` with one line naming the setting.

Gas amounts are configured in gwei (floats, as operators think of them) and converted once, by
:func:`gwei_to_wei` (floor, decimal-exact), into the integer
:class:`~keeper.tx.fees.FeePolicy` that the transaction layer uses; it never sees a float fee.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from dotenv import dotenv_values
from eth_typing import ChecksumAddress
from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)
from web3.types import Wei

from keeper.config_values import (  # noqa: F401 - re-exported: keeper.config is the API
    _ENVIRON,
    _FEE_CAP_FIELDS,
    _PRIVATE_KEY_RE,
    BPS,
    DELEVERAGE_GAS,
    ENV_FILE_OPTION,
    ENV_PREFIX,
    FOREIGN_ENV_NAMES,
    MASK,
    TICK_DEADLINE_SHARE,
    UNSET,
    WEI_PER_ETH,
    WEI_PER_GWEI,
    LogLevel,
    _error_line,
    _http_url_problem,
    _parse_addresses,
    env_name,
    eth_to_wei,
    format_eth,
    gwei_to_wei,
    load_deployment,
    parse_address,
)
from keeper.errors import ConfigError
from keeper.journal_db import is_postgres
from keeper.masking import mask_rpc_url
from keeper.risk.actions import Urgency
from keeper.tx.fees import FeePolicy
from keeper.tx.private import DEFAULT_PRIVATE_DROP_BLOCKS

logger = logging.getLogger(__name__)


class _MappingEnvSource(EnvSettingsSource):
    """Reads ``KEEPER_*`` from a given mapping instead of ``os.environ`` (tests, embedding)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Same normalisation as pydantic-settings applies to os.environ: names are matched
        # case-insensitively and empty values count as unset (env_ignore_empty).
        return {key.lower(): value for key, value in self._environ.items() if value != ""}


class Settings(BaseSettings):
    """The keeper's settings. Build with :func:`load_settings`; immutable once built."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        allow_inf_nan=False,
        validate_default=True,
    )

    # --- chain -----------------------------------------------------------------------------
    rpc_url: SecretStr = Field(
        description="HTTP(S) JSON-RPC endpoint. Holds API keys: only ever shown masked."
    )
    rpc_fallback_urls: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated HTTP(S) endpoints tried in order when KEEPER_RPC_URL fails; "
        "each must be on the same chain. Secrets like KEEPER_RPC_URL: only ever shown masked.",
    )
    private_rpc_url: SecretStr | None = Field(
        default=None,
        description="HTTP(S) endpoint of a private relay (Flashbots Protect, MEV Blocker): "
        "non-urgent actions (LOW, NORMAL) are sent there instead of the public mempool; HIGH "
        "and CRITICAL always go public. Secrets like KEEPER_RPC_URL: only ever shown masked.",
    )
    private_drop_blocks: int = Field(
        default=DEFAULT_PRIVATE_DROP_BLOCKS,
        ge=1,
        description="Blocks after which a private transaction neither mined nor known to the "
        "public node counts as dropped: sent publicly if still wanted, else its nonce is "
        "filled with a no-op. 25 is Flashbots Protect's own retry window (~5 min on mainnet).",
    )
    chain_id: int | None = Field(
        default=None,
        gt=0,
        description="Expected chain id, checked at start. Default: the deployment's chain_id.",
    )

    # --- signing key (one source) ---------------------------------------------------------------
    private_key: SecretStr | None = Field(
        default=None,
        description="Hex private key (32 bytes, 0x optional). Or use KEEPER_KEYSTORE.",
    )
    keystore: Path | None = Field(
        default=None,
        description="Encrypted JSON keystore (eth-account); needs KEEPER_KEYSTORE_PASSWORD_FILE.",
    )
    keystore_password_file: Path | None = Field(
        default=None,
        description="File holding the keystore password (one trailing newline is ignored).",
    )

    # --- what to watch ---------------------------------------------------------------------------
    vaults: Annotated[tuple[ChecksumAddress, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated vault addresses (EIP-55 checksum checked if mixed case).",
    )
    deployment: Path | None = Field(
        default=None,
        description="Deployment JSON from scripts/deploy.py; its vaults are watched too.",
    )

    # --- timing ------------------------------------------------------------------------------
    poll_interval: float = Field(default=12.0, gt=0, description="Seconds between ticks.")
    tick_deadline: float | None = Field(
        default=None,
        gt=0,
        description="Seconds a tick may run; at most the poll interval. Default: 0.8 × interval.",
    )
    max_staleness: int = Field(
        default=3600,
        gt=0,
        description="Seconds after which a price feed is stale: no action on stale data.",
    )

    # --- gas policy ------------------------------------------------------------------------------
    max_fee_gwei_low: float = Field(default=30.0, gt=0, description="Fee cap for LOW, gwei.")
    max_fee_gwei_normal: float = Field(default=60.0, gt=0, description="Fee cap for NORMAL, gwei.")
    max_fee_gwei_high: float = Field(default=150.0, gt=0, description="Fee cap for HIGH, gwei.")
    #: The replays' base fees peak at 530-710 gwei (May 2021, Aug 2024); under a 500 cap their
    #: breaches stayed open 12-15 blocks. `deleverage_urgency` pays it only for a large stake.
    max_fee_gwei_critical: float = Field(
        default=1000.0, gt=0, description="Fee cap for CRITICAL (deleverage), gwei."
    )
    acceptable_base_fee_gwei: float = Field(
        default=25.0,
        gt=0,
        description="LOW/NORMAL actions wait while the base fee is above this, gwei.",
    )
    priority_fee_min_gwei: float = Field(
        default=0.01, gt=0, description="Lowest priority fee (tip) offered, gwei."
    )
    priority_fee_max_gwei: float = Field(
        default=5.0, gt=0, description="Highest priority fee (tip) offered, gwei."
    )
    gas_limit_margin: float = Field(
        default=1.25, ge=1.0, description="Gas limit = gas estimate × this margin."
    )
    tx_timeout: float = Field(
        default=60.0, gt=0, description="Seconds to wait for a receipt before replacing."
    )
    max_replacements: int = Field(
        default=5, ge=0, description="Fee-bumped replacements of a stuck transaction, at most."
    )
    fee_bump_percent: float = Field(
        default=12.5,
        ge=12.5,
        description="Fee increase per replacement, percent (nodes require at least 12.5).",
    )
    min_gas_balance_eth: float | None = Field(
        default=None,
        ge=0,
        description="Native balance (ETH) the signer must hold to start; 0 turns the check off. "
        "Default: one deleverage's gas limit at the CRITICAL cap "
        "(450,000 gas x KEEPER_GAS_LIMIT_MARGIN x KEEPER_MAX_FEE_GWEI_CRITICAL).",
    )

    # --- process ---------------------------------------------------------------------------
    max_consecutive_failures: int = Field(
        default=10,
        ge=1,
        description="Failed ticks in a row after which `keeper run` exits with code 3.",
    )
    halt_after: int = Field(
        default=3,
        ge=1,
        description="Ticks in a row in which one vault's read, decision or build fails before "
        "it is halted (no action until restart; shown by `keeper status`).",
    )
    head_poll_interval: float = Field(
        default=1.0,
        ge=0,
        description="Seconds between head polls; a new block starts a tick at once (0: ticks "
        "on the poll interval only).",
    )
    notify_urls: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated apprise URLs (slack://, tgram://, discord://, "
        "pagerduty://, mailto://, json://...) told of deleverages, failed actions, halted "
        "vaults and a low gas balance. Hold tokens: only ever shown masked.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port of the Prometheus endpoint (/metrics, /healthz, /readyz); unset: off.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address the Prometheus endpoint listens on (loopback unless set).",
    )
    head_stall: float = Field(
        default=120.0,
        gt=0,
        description="Seconds without a new block before the watchdog logs the head as stalled.",
    )
    journal: Path | SecretStr = Field(
        default=Path("keeper-journal.sqlite"),
        description="The journal: a SQLite file, or a postgresql:// URL (replicas, several "
        "chains on one server).",
    )
    replica_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="This replica's name in the leader lease (PostgreSQL journal); unset: "
        "host name and process id.",
    )
    lease_seconds: float = Field(
        default=10.0,
        ge=1.0,
        le=600.0,
        description="How long the leader's lease lasts without renewal (PostgreSQL journal).",
    )
    lease_renew_interval: float = Field(
        default=1.0,
        gt=0,
        le=60.0,
        description="Seconds between the leader's renewals, and between a standby's attempts.",
    )
    dry_run: bool = Field(
        default=False, description="Decide and log what would be sent; send nothing."
    )
    log_json: bool = Field(default=False, description="Log JSON lines instead of text.")
    log_level: LogLevel = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")

    _deployment_data: dict[str, Any] | None = PrivateAttr(default=None)
    _chain_id_from_deployment: bool = PrivateAttr(default=False)
    _gas: FeePolicy | None = PrivateAttr(default=None)
    _min_gas_balance_wei: int = PrivateAttr(default=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ = _ENVIRON.get()
        if environ is not None:
            env_settings = _MappingEnvSource(settings_cls, environ)
        # Order is precedence: explicit arguments, then the environment, then `.env`.
        return init_settings, env_settings, dotenv_settings

    # --- field rules -------------------------------------------------------------------------

    @field_validator("rpc_url")
    @classmethod
    def _check_rpc_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value().strip()
        problem = _http_url_problem(url)
        if problem is not None:
            raise ValueError(problem)
        return SecretStr(url)

    @field_validator("rpc_fallback_urls", mode="before")
    @classmethod
    def _split_fallback_urls(cls, value: object) -> object:
        urls = _secret_list(value)
        if not isinstance(urls, tuple):
            return urls
        for index, url in enumerate(urls, start=1):
            problem = _http_url_problem(url.get_secret_value())
            if problem is not None:
                raise ValueError(f"entry {index} {problem}")
        return urls

    @field_validator("private_rpc_url")
    @classmethod
    def _check_private_rpc_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        url = value.get_secret_value().strip()
        problem = _http_url_problem(url)
        if problem is not None:
            raise ValueError(problem)
        return SecretStr(url)

    @field_validator("notify_urls", mode="before")
    @classmethod
    def _split_notify_urls(cls, value: object) -> object:
        return _secret_list(value)

    @field_validator("private_key")
    @classmethod
    def _check_private_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        key = value.get_secret_value().strip()
        if not _PRIVATE_KEY_RE.fullmatch(key):
            raise ValueError("not a valid private key")  # never echo any of it
        return SecretStr(key)

    @field_validator("vaults", mode="before")
    @classmethod
    def _split_vaults(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            return _parse_addresses(str(v) for v in value)
        return value

    @field_validator("keystore", "keystore_password_file", "deployment", mode="after")
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("journal", mode="before")
    @classmethod
    def _journal_target(cls, value: object) -> object:
        """A postgresql:// URL is a secret (it may carry a password); anything else a path."""
        if isinstance(value, SecretStr | Path):
            return value
        if isinstance(value, str):
            text = value.strip()
            if is_postgres(text):
                return SecretStr(text)
            return Path(text).expanduser()
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    # --- cross-field rules (raise ConfigError directly: the message names both settings) ----

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        self._check_key_source()
        self._check_fallback_urls()
        self._check_private_rpc_url_is_not_public()
        self._resolve_deployment()
        if not self.vaults and not (self._deployment_data and self._deployment_data["vaults"]):
            raise ConfigError(
                f"{env_name('vaults')} / {env_name('deployment')}: no vault to watch; "
                "set at least one"
            )
        self._check_timing()
        self._set_gas_policy()
        self._set_min_gas_balance()
        self._check_journal()
        return self

    def _check_journal(self) -> None:
        name = env_name("journal")
        if isinstance(self.journal, Path):
            parent = self.journal.parent
            if not parent.is_dir():
                raise ConfigError(f"{name}: directory {parent} does not exist")
            return
        url = self.journal.get_secret_value()
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ConfigError(f"{name}: not a valid postgresql:// URL") from None
        if not parts.hostname or not parts.path.strip("/"):
            raise ConfigError(
                f"{name}: {mask_rpc_url(url)} names no host or database "
                "(postgresql://USER:PASSWORD@HOST:PORT/DATABASE)"
            )
        if self.chain_id is None:
            raise ConfigError(
                f"{name}: a PostgreSQL journal needs {env_name('chain_id')} (or "
                f"{env_name('deployment')}): each chain has its own schema there"
            )
        renew, lease = self.lease_renew_interval, self.lease_seconds
        if renew * 3 > lease:
            raise ConfigError(
                f"{env_name('lease_renew_interval')}: {renew:g}s leaves fewer than 3 renewals "
                f"in the {lease:g}s lease ({env_name('lease_seconds')})"
            )

    def _check_key_source(self) -> None:
        key, keystore, password = (
            env_name("private_key"),
            env_name("keystore"),
            env_name("keystore_password_file"),
        )
        if self.private_key is not None and self.keystore is not None:
            raise ConfigError(f"{key} and {keystore}: both set; give exactly one key source")
        if self.keystore is not None and self.keystore_password_file is None:
            raise ConfigError(f"{password}: required with {keystore}")
        if self.keystore is None and self.keystore_password_file is not None:
            raise ConfigError(f"{password}: set without {keystore}")
        if self.private_key is None and self.keystore is None and not self.dry_run:
            raise ConfigError(
                f"{key} / {keystore}: a signing key is required "
                f"(or set {env_name('dry_run')}=true to run without one)"
            )

    def _check_fallback_urls(self) -> None:
        # A repeated endpoint is no fallback: most likely a copy-paste slip.
        seen = {self.rpc_url.get_secret_value().rstrip("/"): env_name("rpc_url")}
        name = env_name("rpc_fallback_urls")
        for index, secret in enumerate(self.rpc_fallback_urls, start=1):
            url = secret.get_secret_value().rstrip("/")
            if url in seen:
                raise ConfigError(f"{name}: entry {index} repeats {seen[url]}")
            seen[url] = f"entry {index}"

    def _check_private_rpc_url_is_not_public(self) -> None:
        # The public node as the "private" relay would publish every action: a slip.
        if self.private_rpc_url is None:
            return
        url = self.private_rpc_url.get_secret_value().rstrip("/")
        public = [(env_name("rpc_url"), self.rpc_url)] + [
            (f"{env_name('rpc_fallback_urls')} entry {i}", s)
            for i, s in enumerate(self.rpc_fallback_urls, start=1)
        ]
        for name, secret in public:
            if secret.get_secret_value().rstrip("/") == url:
                raise ConfigError(f"{env_name('private_rpc_url')}: repeats {name} (a public node)")

    def _resolve_deployment(self) -> None:
        if self.deployment is None:
            return
        data = load_deployment(self.deployment)
        deployed_chain = int(data["chain_id"])
        if self.chain_id is None:
            object.__setattr__(self, "chain_id", deployed_chain)  # frozen: set during validation
            self._chain_id_from_deployment = True
        elif self.chain_id != deployed_chain:
            raise ConfigError(
                f"{env_name('chain_id')}: {self.chain_id} differs from chain_id {deployed_chain} "
                f"in {env_name('deployment')} {self.deployment}"
            )
        self._deployment_data = data

    def _check_timing(self) -> None:
        interval, deadline = env_name("poll_interval"), env_name("tick_deadline")
        if self.tick_deadline is None:
            object.__setattr__(self, "tick_deadline", TICK_DEADLINE_SHARE * self.poll_interval)
        elif self.tick_deadline > self.poll_interval:
            raise ConfigError(
                f"{deadline}: must be <= {interval} ({self.poll_interval:g}), "
                f"got {self.tick_deadline:g}"
            )

    def _set_gas_policy(self) -> None:
        caps = {u.name: gwei_to_wei(getattr(self, f)) for u, f in _FEE_CAP_FIELDS}
        for (_, lower), (_, upper) in zip(_FEE_CAP_FIELDS, _FEE_CAP_FIELDS[1:], strict=False):
            if getattr(self, upper) < getattr(self, lower):
                raise ConfigError(
                    f"{env_name(upper)} ({getattr(self, upper):g}) must be >= "
                    f"{env_name(lower)} ({getattr(self, lower):g}): caps rise with urgency"
                )
        for _, field in _FEE_CAP_FIELDS:
            if gwei_to_wei(getattr(self, field)) == 0:
                raise ConfigError(f"{env_name(field)}: must be at least 1 wei (1e-9 gwei)")
        base_fee = gwei_to_wei(self.acceptable_base_fee_gwei)
        if base_fee > caps[Urgency.NORMAL.name]:
            raise ConfigError(
                f"{env_name('acceptable_base_fee_gwei')} ({self.acceptable_base_fee_gwei:g}) "
                f"must be <= {env_name('max_fee_gwei_normal')} ({self.max_fee_gwei_normal:g})"
            )
        tip_min = gwei_to_wei(self.priority_fee_min_gwei)
        tip_max = gwei_to_wei(self.priority_fee_max_gwei)
        if tip_min > tip_max:
            raise ConfigError(
                f"{env_name('priority_fee_min_gwei')} ({self.priority_fee_min_gwei:g}) must be "
                f"<= {env_name('priority_fee_max_gwei')} ({self.priority_fee_max_gwei:g})"
            )
        self._gas = FeePolicy(
            max_fee_cap=caps,
            acceptable_base_fee=base_fee,
            priority_fee_min=tip_min,
            priority_fee_max=tip_max,
            bump_percent=self.fee_bump_percent,
            max_replacements=self.max_replacements,
        )

    def _set_min_gas_balance(self) -> None:
        if self.min_gas_balance_eth is not None:
            self._min_gas_balance_wei = eth_to_wei(self.min_gas_balance_eth)
            return
        # What a node demands before it takes the deleverage at the cap: gas limit x max fee
        # (the sender's gas limit is the estimate x the margin, rounded down).
        gas_limit = int(DELEVERAGE_GAS * self.gas_limit_margin)
        self._min_gas_balance_wei = gas_limit * self.gas.cap_for(Urgency.CRITICAL)

    # --- derived values ----------------------------------------------------------------------

    @property
    def min_gas_balance_wei(self) -> int:
        """The least native balance, in wei, the signer must hold to start (0: no check)."""
        return self._min_gas_balance_wei

    @property
    def journal_target(self) -> str:
        """The journal as :class:`keeper.journal.Journal` opens it: a path, or the URL unmasked
        (for connecting and for the masker, nothing else)."""
        if isinstance(self.journal, SecretStr):
            return self.journal.get_secret_value()
        return str(self.journal)

    @property
    def journal_is_postgres(self) -> bool:
        return isinstance(self.journal, SecretStr)

    @property
    def effective_replica_id(self) -> str:
        """This replica's name in the lease: KEEPER_REPLICA_ID, else host name and pid."""
        return self.replica_id or f"{socket.gethostname()}:{os.getpid()}"

    def secret_urls(self) -> tuple[str, ...]:
        """Every configured URL whose secret parts the masker must hide: the RPC URLs, the
        private relay's and a PostgreSQL journal's URL."""
        journal = (self.journal_target,) if self.journal_is_postgres else ()
        private = () if self.private_rpc_url is None else (self.private_rpc_url.get_secret_value(),)
        return (*self.rpc_urls(), *private, *journal)

    def rpc_urls(self) -> tuple[str, ...]:
        """KEEPER_RPC_URL and then each KEEPER_RPC_FALLBACK_URLS entry, unmasked: for connecting
        and for registering their secret parts with the log and error masker, nothing else."""
        fallbacks = (s.get_secret_value() for s in self.rpc_fallback_urls)
        return (self.rpc_url.get_secret_value(), *fallbacks)

    @property
    def gas(self) -> FeePolicy:
        """The fee policy the transaction layer uses, integer wei, built once at validation."""
        if self._gas is None:  # only when built around the validators (model_construct)
            raise ConfigError("settings were not validated; use load_settings()")
        return self._gas

    def fee_caps_wei(self) -> Mapping[str, Wei]:
        """Fee cap per urgency name ('LOW', 'NORMAL', 'HIGH', 'CRITICAL') in wei."""
        return self.gas.max_fee_cap  # type: ignore[return-value]

    @property
    def deployment_data(self) -> Mapping[str, Any] | None:
        """The checked deployment JSON (addresses checksummed), or None without one."""
        return self._deployment_data

    @property
    def effective_tick_deadline(self) -> float:
        """The tick deadline in seconds (always set after validation)."""
        return (
            self.tick_deadline
            if self.tick_deadline is not None
            else TICK_DEADLINE_SHARE * self.poll_interval
        )

    def describe(self) -> list[tuple[str, str]]:
        """Effective settings as (ENV_NAME, shown value) rows; secrets masked, RPC URL masked."""
        rows: list[tuple[str, str]] = []
        for field in type(self).model_fields:
            rows.append((env_name(field), self._display(field)))
        return rows

    def _display(self, field: str) -> str:
        value = getattr(self, field)
        if field == "rpc_url":
            return mask_rpc_url(self.rpc_url.get_secret_value())
        if field == "rpc_fallback_urls":
            masked = [mask_rpc_url(s.get_secret_value()) for s in value]
            return ", ".join(masked) if masked else "(none)"
        if field == "journal" and isinstance(value, SecretStr):
            return mask_rpc_url(value.get_secret_value())
        if field == "private_rpc_url" and value is not None:
            return mask_rpc_url(value.get_secret_value())
        if field == "notify_urls":
            return f"{len(value)} URL(s), masked" if value else "(none)"
        if field == "private_key":
            return MASK if value is not None else UNSET
        if field == "min_gas_balance_eth":
            if self._min_gas_balance_wei == 0:
                return "0 ETH (check off)"
            shown = format_eth(self._min_gas_balance_wei)
            return shown if value is not None else f"{shown} (one deleverage at the CRITICAL cap)"
        if value is None:
            return UNSET
        if field == "chain_id" and self._chain_id_from_deployment:
            return f"{value} (from {env_name('deployment')})"
        if field == "vaults":
            return ", ".join(value) if value else "(none)"
        if field == "deployment" and self._deployment_data is not None:
            count = len(self._deployment_data["vaults"])
            return f"{value} ({count} vault{'s' if count != 1 else ''})"
        if field.endswith("_gwei") or "_gwei_" in field:
            return f"{value:g} gwei"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)


def _secret_list(value: object) -> object:
    """A comma-separated setting (or a list) as a tuple of stripped SecretStr entries, empty
    entries dropped; anything else is left to pydantic to refuse."""
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple):
        return value
    return tuple(
        SecretStr((e.get_secret_value() if isinstance(e, SecretStr) else str(e)).strip())
        for e in value
    )


def resolve_vaults(settings: Settings) -> tuple[ChecksumAddress, ...]:
    """Every vault to watch: KEEPER_VAULTS first, then the deployment's, without duplicates."""
    deployed: list[str] = []
    if settings.deployment_data is not None:
        deployed = list(settings.deployment_data["vaults"])
    return _parse_addresses([*settings.vaults, *deployed])


def load_settings(
    env: Mapping[str, str] | None = None,
    env_file: str | Path | None = ".env",
    *,
    env_file_required: bool = False,
) -> Settings:
    """Read, validate and return the settings, or raise ConfigError with one line.

    `env` replaces the process environment (tests); `env_file` is read when it exists and the
    environment wins over it; a missing `env_file` is an error only when `env_file_required`
    (the operator named it), a directory always is (pydantic-settings would skip it silently).
    Validation happens here, once.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    if env_file is not None:
        _check_env_file(Path(env_file), required=env_file_required)
    _warn_unknown_names(environ, env_file)
    token = _ENVIRON.set(environ)
    try:
        return Settings(_env_file=env_file)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError("; ".join(_error_line(err) for err in exc.errors())) from None
    except SettingsError as exc:
        raise ConfigError(str(exc).splitlines()[0]) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{ENV_FILE_OPTION} {env_file}: not UTF-8 text") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{ENV_FILE_OPTION} {env_file}: cannot read ({reason})") from None
    finally:
        _ENVIRON.reset(token)


def load_journal_target(
    env: Mapping[str, str] | None = None,
    env_file: str | Path | None = ".env",
    *,
    env_file_required: bool = False,
) -> str:
    """KEEPER_JOURNAL alone (the environment over `env_file`, the default if neither has it),
    for the commands that read only the journal (`keeper status --journal-only`): no other
    setting is needed or checked. A path or a ``postgresql://`` URL, unmasked."""
    environ: Mapping[str, str] = os.environ if env is None else env
    name = env_name("journal")
    value = next((v for k, v in environ.items() if k.upper() == name), None)
    if value is None and env_file is not None:
        _check_env_file(Path(env_file), required=env_file_required)
        if Path(env_file).is_file():
            try:
                found = dotenv_values(env_file)
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{ENV_FILE_OPTION} {env_file}: cannot read ({exc})") from None
            value = next((v for k, v in found.items() if k.upper() == name and v), None)
    if value is None or not value.strip():
        return str(Settings.model_fields["journal"].default)
    parsed = Settings._journal_target(value)
    return parsed.get_secret_value() if isinstance(parsed, SecretStr) else str(parsed)


def _check_env_file(path: Path, required: bool) -> None:
    if path.is_dir():
        raise ConfigError(f"{ENV_FILE_OPTION} {path}: is a directory, not a settings file")
    if required and not path.exists():
        raise ConfigError(f"{ENV_FILE_OPTION} {path}: no such file")


def _warn_unknown_names(environ: Mapping[str, str], env_file: str | Path | None) -> None:
    """Log (by name only) ``KEEPER_*`` variables no setting reads: most likely a typo."""
    names = {name.upper() for name in environ}
    if env_file is not None and Path(env_file).is_file():
        try:
            names |= {name.upper() for name in dotenv_values(env_file)}
        except (OSError, UnicodeDecodeError):
            pass  # load_settings reports an unreadable env file itself
    known = {env_name(field) for field in Settings.model_fields} | FOREIGN_ENV_NAMES
    for name in sorted(n for n in names if n.startswith(ENV_PREFIX) and n not in known):
        logger.warning("ignoring %s: no such setting (typo?)", name)


__all__ = [
    "load_journal_target",
    "BPS",
    "DELEVERAGE_GAS",
    "ENV_FILE_OPTION",
    "ENV_PREFIX",
    "MASK",
    "TICK_DEADLINE_SHARE",
    "UNSET",
    "WEI_PER_ETH",
    "WEI_PER_GWEI",
    "LogLevel",
    "Settings",
    "env_name",
    "eth_to_wei",
    "format_eth",
    "gwei_to_wei",
    "load_deployment",
    "load_settings",
    "parse_address",
    "resolve_vaults",
]
