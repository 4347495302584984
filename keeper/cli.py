"""The `keeper` command. Only this module configures logging handlers."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from keeper import __version__
from keeper.errors import KeeperError

logger = logging.getLogger(__name__)

#: Exit code for user errors (bad config, bad input, unreachable RPC): one line, no traceback.
EXIT_USER_ERROR = 2


def _cmd_demo(args: argparse.Namespace) -> int:
    from keeper.chain.abi import load_artifact
    from keeper.chain.deploy import UNDERLYINGS, deploy_everything
    from keeper.chain.snapshot import decode_snapshot
    from keeper.chain.tester import in_process_web3
    from keeper.report import deployment_table, snapshot_table

    print("Deploying the bundled market and two seeded vaults on the in-process chain…", flush=True)
    w3 = in_process_web3()
    dep = deploy_everything(w3)
    print(deployment_table(dep))
    symbols: dict[str, str] = {dep.contracts[sym]: sym for sym, *_ in UNDERLYINGS.values()}
    abi = load_artifact("RiskVault").abi
    for address in dep.vaults:
        vault = w3.eth.contract(address=address, abi=abi)
        snap = decode_snapshot(address, vault.functions.snapshot().call())
        print()
        print(snapshot_table(vault.functions.name().call(), snap, symbols))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keeper", description="Keeps derivative vaults inside their risk mandate."
    )
    parser.add_argument("--version", action="version", version=f"keeper {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="deploy the bundled market on an embedded chain and show the vaults"
    )
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except KeeperError as exc:
        print(f"keeper: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
