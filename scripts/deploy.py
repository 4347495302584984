#!/usr/bin/env python3
"""Deploy the bundled market and two seeded vaults; write the deployment JSON.

    scripts/deploy.py                         # in-process chain (deploys, prints, exits)
    scripts/deploy.py --rpc-url http://127.0.0.1:8545 --out deployment.json
    KEEPER_DEPLOYER_KEY=0x… scripts/deploy.py --rpc-url URL --chain-id 31337 --keeper 0x…

On a node with unlocked accounts (anvil, the in-process chain) the first six accounts take the
roles admin, strategist, keeper, guardian, depositor, liquidator. With a deployer key (read only
from the environment variable named by --deployer-key-env), the deployer takes every role it
must sign for while seeding, and --keeper/--guardian grant those roles to other addresses after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eth_account import Account  # noqa: E402
from web3 import Web3  # noqa: E402

from keeper.chain.abi import load_artifact  # noqa: E402
from keeper.chain.connect import connect  # noqa: E402
from keeper.devnet.deploy import ROLE_NAMES, MarketDeployer, unlocked_roles  # noqa: E402
from keeper.devnet.tester import in_process_web3  # noqa: E402
from keeper.devnet.txsend import Sender  # noqa: E402
from keeper.errors import ConfigError, KeeperError  # noqa: E402

EXIT_USER_ERROR = 2


def _address(value: str, flag: str) -> str:
    if not Web3.is_address(value):
        raise ConfigError(f"{flag}: {value!r} is not an address")
    if value != value.lower() and not Web3.is_checksum_address(value):
        raise ConfigError(f"{flag}: {value!r} has a bad checksum")
    return Web3.to_checksum_address(value)


def run(args: argparse.Namespace) -> int:
    w3 = connect(args.rpc_url, args.chain_id) if args.rpc_url else in_process_web3()
    if args.rpc_url is None and args.chain_id is not None and args.chain_id != w3.eth.chain_id:
        raise ConfigError(f"--chain-id {args.chain_id}: the in-process chain is {w3.eth.chain_id}")
    key_hex = os.environ.get(args.deployer_key_env)
    extra_grants: dict[str, str] = {}
    if key_hex:
        try:
            account = Account.from_key(key_hex)
        except Exception:
            raise ConfigError(f"{args.deployer_key_env} is not a valid private key") from None
        deployer = Web3.to_checksum_address(account.address)
        sender = Sender(w3, {deployer: account})
        roles = {role: deployer for role in ROLE_NAMES}
        for role in ("keeper", "guardian"):
            value = getattr(args, role)
            if value:
                extra_grants[role] = _address(value, f"--{role}")
    else:
        sender = Sender(w3)
        roles = unlocked_roles(w3)
    deployment = MarketDeployer(w3, sender, roles).deploy_all()
    abi = load_artifact("RiskVault").abi
    for role, address in extra_grants.items():
        for vault_address in deployment.vaults:
            vault = w3.eth.contract(address=vault_address, abi=abi)
            role_id = vault.functions[f"{role.upper()}_ROLE"]().call()
            sender.call(
                vault.functions.grantRole(role_id, address), roles["admin"], f"grant {role}"
            )
        deployment.accounts[role] = Web3.to_checksum_address(address)
    text = json.dumps(deployment.to_json(), indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
        print(
            f"deployed {len(deployment.contracts)} contracts and {len(deployment.vaults)} vaults "
            f"on chain {deployment.chain_id}; wrote {args.out}"
        )
    else:
        print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rpc-url", help="JSON-RPC endpoint (default: an in-process chain)")
    parser.add_argument("--out", help="write the deployment JSON here (default: print it)")
    parser.add_argument(
        "--chain-id", type=int, help="refuse to deploy unless the node is on this chain"
    )
    parser.add_argument(
        "--deployer-key-env",
        default="KEEPER_DEPLOYER_KEY",
        help="environment variable holding the deployer's private key (default %(default)s)",
    )
    parser.add_argument(
        "--keeper", help="with a deployer key: also grant KEEPER_ROLE to this address"
    )
    parser.add_argument(
        "--guardian", help="with a deployer key: also grant GUARDIAN_ROLE to this address"
    )
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KeeperError as exc:
        print(f"deploy: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
