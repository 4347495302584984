"""Composition root: settings → the connected parts of one keeper process."""

from __future__ import annotations

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3 import Web3

from keeper.chain.connect import connect
from keeper.chain.reader import SnapshotReader
from keeper.chain.retry import install_read_retries
from keeper.clock import Clock, SystemClock
from keeper.config import Settings, env_name, resolve_vaults
from keeper.errors import ConfigError
from keeper.journal import Journal
from keeper.masking import register_secret_url
from keeper.ports import SnapshotSource
from keeper.service import KeeperService
from keeper.tx.nonce import NonceManager
from keeper.tx.private import PrivateRelay
from keeper.tx.sender import SendPolicy, TxSender


def chain_id_source(settings: Settings) -> str:
    """The setting(s) the expected chain id comes from: the deployment's unless set directly."""
    if settings.deployment_data is None:
        return env_name("chain_id")
    return f"{env_name('chain_id')} / {env_name('deployment')}"


def vault_sources(settings: Settings) -> dict[ChecksumAddress, str]:
    """Every watched vault and the setting it came from, as error lines name it: KEEPER_VAULTS,
    or ``KEEPER_DEPLOYMENT <path>`` for a vault only the deployment lists."""
    deployment = f"{env_name('deployment')} {settings.deployment}"
    return {
        v: env_name("vaults") if v in settings.vaults else deployment
        for v in resolve_vaults(settings)
    }


def verify_vaults(settings: Settings, reader: SnapshotSource) -> None:
    """Refuse to start on an address that is not a RiskVault, naming the setting it came from
    (KEEPER_VAULTS or KEEPER_DEPLOYMENT) so the operator knows which one to fix."""
    by_source: dict[str, list[ChecksumAddress]] = {}
    for vault, source in vault_sources(settings).items():
        by_source.setdefault(source, []).append(vault)
    for source, vaults in by_source.items():  # KEEPER_VAULTS first: resolve_vaults' order
        reader.verify_vaults(vaults, source)


def register_rpc_secrets(settings: Settings) -> None:
    """Mask every configured RPC URL's (and a PostgreSQL journal URL's) secret parts in every
    error and log from now on."""
    for url in settings.secret_urls():
        register_secret_url(url)


def private_relay(settings: Settings) -> PrivateRelay | None:
    """KEEPER_PRIVATE_RPC_URL's relay (its secret parts masked from now on), or None."""
    if settings.private_rpc_url is None:
        return None
    return PrivateRelay(settings.private_rpc_url.get_secret_value(), settings.private_drop_blocks)


def connect_node(settings: Settings) -> Web3:
    """A Web3 on KEEPER_RPC_URL (with KEEPER_RPC_FALLBACK_URLS behind it) after connect() has
    checked that it answers on the expected chain; each error names the setting to fix."""
    register_rpc_secrets(settings)
    return connect(
        settings.rpc_url.get_secret_value(),
        settings.chain_id,
        url_setting=env_name("rpc_url"),
        chain_id_setting=chain_id_source(settings),
        fallback_urls=[s.get_secret_value() for s in settings.rpc_fallback_urls],
        fallback_setting=env_name("rpc_fallback_urls"),
    )


def build_service(
    settings: Settings,
    account: LocalAccount | None,
    w3: Web3 | None = None,
    clock: Clock | None = None,
    fence: tuple[str, str, int | None] | None = None,
) -> KeeperService:
    """Wire every part from `settings`. `w3` and `clock` are injected by tests and the demo.
    `fence` (lease name, holder, term): a replica's journal, every write of which needs that lease
    (see :mod:`keeper.lease`)."""
    register_rpc_secrets(settings)
    if w3 is None:
        w3 = connect_node(settings)
    install_read_retries(w3)  # a no-op where connect() (or the caller) already did
    clock = clock or SystemClock()
    vaults = resolve_vaults(settings)
    if not vaults:
        raise ConfigError(
            "KEEPER_VAULTS: no vaults to keep (set KEEPER_VAULTS or KEEPER_DEPLOYMENT)"
        )
    journal = Journal(settings.journal_target, chain_id=settings.chain_id)
    if fence is not None:
        journal.fence(*fence)
    address = Web3.to_checksum_address(account.address) if account else None
    # Dry run without a key: simulate as the deployment's keeper, so the role check passes.
    deployed_keeper = (settings.deployment_data or {}).get("accounts", {}).get("keeper")
    sim_from = address or (Web3.to_checksum_address(deployed_keeper) if deployed_keeper else None)
    nonces = None
    if account is not None and address is not None:
        # Never below the journal's transactions: one journaled just before its sender died (or
        # lost the lease) may be unknown to the node, and reconciliation will broadcast it.
        nonces = NonceManager.for_account(w3, address, floor=journal.nonce_floor)
        nonces.sync()
    sender = TxSender(
        w3,
        account,
        sim_from or Web3.to_checksum_address("0x" + "00" * 20),
        nonces,
        journal,
        settings.gas,
        SendPolicy(
            gas_limit_margin=settings.gas_limit_margin,
            tx_timeout_s=settings.tx_timeout,
            dry_run=settings.dry_run,
        ),
        clock,
        private=private_relay(settings),
    )
    return KeeperService(
        w3,
        vaults,
        SnapshotReader(w3),
        sender,
        journal,
        clock,
        max_staleness_s=settings.max_staleness,
        tick_deadline_s=settings.effective_tick_deadline,
        expected_chain_id=settings.chain_id,
        halt_after=settings.halt_after,
    )
