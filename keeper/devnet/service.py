"""A real keeper service (settings, signer, journal, sender) wired to a local chain's accounts:
for the demo, the simulator and the tests."""

from __future__ import annotations

from pathlib import Path

from web3 import Web3

from keeper.app import build_service
from keeper.clock import Clock
from keeper.config import load_settings
from keeper.devnet.deploy import Deployment
from keeper.service import KeeperService
from keeper.signer import account_from_private_key


def local_key(w3: Web3, address: str) -> str:
    """The private key of an unlocked account of a local chain (in-process or anvil)."""
    from keeper.devnet.anvil import anvil_key
    from keeper.devnet.tester import RevertingTesterProvider

    if isinstance(w3.provider, RevertingTesterProvider):
        for key in w3.provider.ethereum_tester.backend.account_keys:  # type: ignore[union-attr]
            if key.public_key.to_checksum_address() == address:
                return "0x" + bytes(key.to_bytes()).hex()
    else:
        index = [str(a).lower() for a in w3.eth.accounts].index(address.lower())
        return anvil_key(index)
    raise RuntimeError(f"no local key for {address}")


def build_local_service(
    w3: Web3, dep: Deployment, journal: Path, clock: Clock | None = None, **settings: str
) -> KeeperService:
    """A real keeper (settings, signer, journal, sender) on a local chain; `settings` are
    extra KEEPER_* values (without the prefix, e.g. TX_TIMEOUT="30")."""
    key = local_key(w3, dep.accounts["keeper"])
    env = {
        "KEEPER_RPC_URL": "http://local.invalid",
        "KEEPER_PRIVATE_KEY": key,
        "KEEPER_VAULTS": ",".join(dep.vaults),
        "KEEPER_JOURNAL": str(journal),
        "KEEPER_POLL_INTERVAL": "12",
        "KEEPER_TX_TIMEOUT": "30",
    }
    env.update({f"KEEPER_{k.upper()}": v for k, v in settings.items()})
    return build_service(
        load_settings(env=env, env_file=None), account_from_private_key(key), w3=w3, clock=clock
    )


__all__ = ["build_local_service", "local_key"]
