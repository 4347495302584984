"""Start-up checks: what must hold before the keeper's first tick, and what `check-config` asks
the node.

1. the RPC is a node of the expected chain — :func:`keeper.app.connect_node` (through
   :func:`keeper.chain.connect.connect`) has checked it by the time a Web3 exists; each
   KEEPER_RPC_FALLBACK_URLS entry is asked the same way, through the same function;
2. every watched address is a RiskVault (:func:`keeper.app.verify_vaults`);
3. the signer holds KEEPER_ROLE on every vault: one Multicall3 read of ``hasRole`` for all of
   them, at one block;
4. the signer holds gas money: a native balance of at least KEEPER_MIN_GAS_BALANCE_ETH.

A failure raises one KeeperError line that starts with the setting to fix (exit 2 at the CLI).
Dry run without a key skips 3 and 4: there is no signer to ask about. Read-only: nothing here
sends a transaction or writes the journal, so a refused start leaves no trace.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from eth_typing import BlockNumber, ChecksumAddress
from web3 import Web3

from keeper.app import chain_id_source, vault_sources, verify_vaults
from keeper.chain.connect import connect
from keeper.chain.reader import SnapshotReader
from keeper.chain.rpc_errors import read_failure
from keeper.config import Settings, env_name, format_eth
from keeper.errors import ChainReadError, ConfigError
from keeper.signer import key_setting

logger = logging.getLogger(__name__)

#: RiskVault's ``KEEPER_ROLE`` constant: ``keccak256("KEEPER_ROLE")`` (OpenZeppelin
#: AccessControl). Computed here so the role read is one batch; a test compares it with the
#: deployed vault's own constant.
KEEPER_ROLE = bytes(Web3.keccak(text="KEEPER_ROLE"))
_HAS_ROLE = bytes(Web3.keccak(text="hasRole(bytes32,address)")[:4])
#: Why the role and balance checks did not run.
NO_KEY = "skipped: dry run without a key"


@dataclass(frozen=True, slots=True)
class Check:
    """One start-up check that passed (or was skipped): its name and what was found."""

    name: str
    found: str


def run_startup_checks(
    settings: Settings,
    w3: Web3,
    signer: ChecksumAddress | None,
    *,
    fallbacks_must_answer: bool,
) -> list[Check]:
    """Every check, in order; the first failure raises (one line naming the setting).

    `w3` comes from :func:`keeper.app.connect_node`, so the chain id is already checked.
    `fallbacks_must_answer`: `check-config` fails on a fallback endpoint that does not answer;
    `keeper run` only warns when the failure may pass (down, timing out: the primary works, and
    a fallback down for maintenance must not stop a restart), and refuses a definite one
    (another chain, a refused API key) like check-config."""
    chain_id = _chain_id(w3)
    expected = "" if settings.chain_id is None else f" (as {chain_id_source(settings)} expects)"
    checks = [Check("chain id", f"{chain_id}{expected}")]
    if fallbacks_must_answer and settings.rpc_fallback_urls:
        # With fallbacks, connect_node() starts on the first endpoint that answers: a primary
        # that does not is only a warning for `run`, but check-config must report it.
        connect(
            settings.rpc_url.get_secret_value(),
            chain_id,
            url_setting=env_name("rpc_url"),
            chain_id_setting=chain_id_source(settings),
        )
    checks.append(check_fallbacks(settings, chain_id, must_answer=fallbacks_must_answer))
    reader = SnapshotReader(w3)
    verify_vaults(settings, reader)
    sources = vault_sources(settings)
    checks.append(Check("vaults", f"{len(sources)} RiskVault{'s' if len(sources) != 1 else ''}"))
    if signer is None:
        checks += [Check("keeper role", NO_KEY), Check("gas balance", NO_KEY)]
        return checks
    block = _block_number(w3)
    owner = key_setting(settings)
    checks.append(check_keeper_role(reader, signer, sources, block, key_source=owner))
    checks.append(
        check_gas_balance(w3, signer, settings.min_gas_balance_wei, block, key_source=owner)
    )
    return checks


def check_fallbacks(settings: Settings, chain_id: int, *, must_answer: bool) -> Check:
    """Each KEEPER_RPC_FALLBACK_URLS entry answers on `chain_id` (the primary's): through
    :func:`connect`, the same check as the primary's, with the errors naming the entry."""
    name = env_name("rpc_fallback_urls")
    urls = [s.get_secret_value() for s in settings.rpc_fallback_urls]
    if not urls:
        return Check("fallback RPCs", "none configured")
    answering = 0
    for index, url in enumerate(urls, start=1):
        where = f"{name} entry {index}"
        try:
            connect(url, chain_id, url_setting=where, chain_id_setting=where)
        except ChainReadError as exc:
            # Doubt is not failure: down or timing out may pass; another chain or a refused
            # API key (not retryable) will not, and refuses the start in `run` too.
            if must_answer or not exc.retryable:
                raise
            logger.warning("%s; starting without it", exc)
            continue
        answering += 1
    return Check("fallback RPCs", f"{answering} of {len(urls)} answering on chain {chain_id}")


def check_keeper_role(
    reader: SnapshotReader,
    signer: ChecksumAddress,
    vaults: Mapping[ChecksumAddress, str],
    block: int,
    *,
    key_source: str,
) -> Check:
    """`signer` holds KEEPER_ROLE on every vault of `vaults` (vault → the setting it came
    from): one multicall of ``hasRole(KEEPER_ROLE, signer)`` for all of them at `block`."""
    call = _HAS_ROLE + reader.w3.codec.encode(["bytes32", "address"], [KEEPER_ROLE, signer])
    answers = reader.call_each(lambda vault: (vault, call), list(vaults), ["bool"], block)
    unanswered = [v for v in vaults if answers[v] is None]
    if unanswered:  # verify_vaults passed, so a RiskVault that cannot say: refuse, don't guess
        vault = unanswered[0]
        raise ConfigError(f"{vaults[vault]}: {vault} does not answer hasRole(KEEPER_ROLE, ...)")
    missing = [v for v in vaults if answers[v] != (True,)]
    if missing:
        where = ", ".join(f"{v} ({vaults[v]})" for v in missing)
        raise ConfigError(
            f"{key_source}: signer {signer} lacks the keeper role (KEEPER_ROLE) on "
            f"vault{'s' if len(missing) > 1 else ''} {where}; have the vault admin grant it, "
            "or configure the keeper's key"
        )
    return Check("keeper role", f"{signer} holds KEEPER_ROLE on all {len(vaults)}")


def check_gas_balance(
    w3: Web3, signer: ChecksumAddress, minimum_wei: int, block: int, *, key_source: str
) -> Check:
    """`signer`'s native balance at `block` is at least `minimum_wei` (0: no minimum)."""
    try:
        balance = int(w3.eth.get_balance(signer, block_identifier=BlockNumber(block)))
    except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
        raise read_failure(exc, f"balance of {signer}") from None
    setting = env_name("min_gas_balance_eth")
    if balance < minimum_wei:
        raise ConfigError(
            f"{setting}: signer {signer} ({key_source}) holds {format_eth(balance)}, less than "
            f"the {format_eth(minimum_wei)} it needs for gas; fund it (or lower {setting})"
        )
    floor = f"minimum {format_eth(minimum_wei)}" if minimum_wei else f"no minimum ({setting}=0)"
    return Check("gas balance", f"{format_eth(balance)} ({floor})")


def _chain_id(w3: Web3) -> int:
    try:
        return int(w3.eth.chain_id)
    except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
        raise read_failure(exc, "eth_chainId") from None


def _block_number(w3: Web3) -> int:
    try:
        return int(w3.eth.block_number)
    except Exception as exc:  # sorted once, by the classifier (a bug is re-raised)
        raise read_failure(exc, "block number") from None


__all__ = [
    "KEEPER_ROLE",
    "Check",
    "check_fallbacks",
    "check_gas_balance",
    "check_keeper_role",
    "run_startup_checks",
]
