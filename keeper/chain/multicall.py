"""Multicall3 at its canonical address, and putting it there on a local chain."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from eth_typing import ChecksumAddress
from web3 import Web3
from web3.types import Wei

from keeper.errors import ChainReadError

logger = logging.getLogger(__name__)

#: Same address on most public chains; local chains get it from the pre-signed transaction.
MULTICALL3_ADDRESS: ChecksumAddress = Web3.to_checksum_address(
    "0xcA11bde05977b3631167028862bE2a173976CA11"
)
#: The one-off deployer of the pre-signed (keyless, pre-EIP-155) deployment transaction.
MULTICALL3_DEPLOYER: ChecksumAddress = Web3.to_checksum_address(
    "0x05f32B3cC3888453ff71B01135B34FF8e41263F2"
)
#: Gas 1,000,000 at 100 gwei: what the deployer must hold to pay for it.
MULTICALL3_DEPLOY_COST_WEI = 10**17
_PRESIGNED_TX = Path(__file__).with_name("multicall3-presigned-tx.hex")

MULTICALL3_ABI: list[dict[str, Any]] = [
    {
        "name": "aggregate3",
        "type": "function",
        "stateMutability": "payable",
        "inputs": [
            {
                "name": "calls",
                "type": "tuple[]",
                "components": [
                    {"name": "target", "type": "address"},
                    {"name": "allowFailure", "type": "bool"},
                    {"name": "callData", "type": "bytes"},
                ],
            }
        ],
        "outputs": [
            {
                "name": "returnData",
                "type": "tuple[]",
                "components": [
                    {"name": "success", "type": "bool"},
                    {"name": "returnData", "type": "bytes"},
                ],
            }
        ],
    },
    {
        "name": "getBlockNumber",
        "type": "function",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "blockNumber", "type": "uint256"}],
    },
]


def ensure_multicall3(w3: Web3, funder: ChecksumAddress) -> bool:
    """Deploy Multicall3 at its canonical address if absent, paying its deployer from the unlocked
    `funder`. Returns True when it deployed. Raises ChainReadError if it cannot be placed there."""
    if len(w3.eth.get_code(MULTICALL3_ADDRESS)) > 0:
        return False
    balance = w3.eth.get_balance(MULTICALL3_DEPLOYER)
    if balance < MULTICALL3_DEPLOY_COST_WEI:
        tx = w3.eth.send_transaction(
            {
                "from": funder,
                "to": MULTICALL3_DEPLOYER,
                "value": Wei(MULTICALL3_DEPLOY_COST_WEI - balance),
            }
        )
        w3.eth.wait_for_transaction_receipt(tx)
    raw = bytes.fromhex(_PRESIGNED_TX.read_text().strip().removeprefix("0x"))
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(raw))
    if receipt["status"] != 1 or len(w3.eth.get_code(MULTICALL3_ADDRESS)) == 0:
        raise ChainReadError(
            f"could not deploy Multicall3 at {MULTICALL3_ADDRESS} (deployer nonce already used?)"
        )
    logger.info("deployed Multicall3 at %s", MULTICALL3_ADDRESS)
    return True
