"""Sending setup transactions from unlocked node accounts or from local keys.

This is for deployment and test scripts, not the keeper's own transaction path (that lives in
`keeper.tx` with fee policy, nonce ownership and replacement)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.types import TxParams, TxReceipt, Wei

from keeper.chain.abi import Artifact
from keeper.chain.errors import describe_revert
from keeper.errors import DeploymentError

logger = logging.getLogger(__name__)

#: Gas estimates are exact on a fresh state; a margin covers state that moves before inclusion.
GAS_MARGIN = 1.2


class Sender:
    """Sends as any unlocked account of the node, or as one of `keys` (signed locally)."""

    def __init__(
        self, w3: Web3, keys: Mapping[ChecksumAddress, LocalAccount] | None = None
    ) -> None:
        self.w3 = w3
        self.keys = dict(keys or {})

    def call(self, fn: ContractFunction, sender: ChecksumAddress, what: str) -> TxReceipt:
        """Send `fn` from `sender`, wait for it, and fail with `what` in the message on revert."""
        try:
            tx: TxParams = {"from": sender}
            if sender in self.keys:
                built = fn.build_transaction(self._fill(tx, fn.estimate_gas(tx)))
                return self._send_signed(built, sender, what)
            # Our own margin over the estimate: state moves between estimate and inclusion
            # (interest, funding, timestamps), and an exact limit then runs out of gas.
            tx_hash = fn.transact({**tx, "gas": int(fn.estimate_gas(tx) * GAS_MARGIN)})
        except DeploymentError:
            raise
        except Exception as exc:  # web3 raises many types for a revert: one type, with context
            raise DeploymentError(f"{what}: {describe_revert(exc)}") from exc
        return self._wait(tx_hash, what)

    def deploy(
        self, artifact: Artifact, args: tuple[Any, ...], sender: ChecksumAddress, what: str
    ) -> Contract:
        factory = self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        receipt = self.call(factory.constructor(*args), sender, what)  # type: ignore[arg-type]
        address = receipt["contractAddress"]
        if address is None:
            raise DeploymentError(f"{what}: no contract address in receipt")
        return self.w3.eth.contract(address=address, abi=artifact.abi)

    def _fill(self, tx: TxParams, gas: int) -> TxParams:
        base_fee = int(self.w3.eth.get_block("latest").get("baseFeePerGas", 0))
        tip = int(self.w3.eth.max_priority_fee)
        sender = Web3.to_checksum_address(str(tx["from"]))
        return {
            **tx,
            "gas": int(gas * GAS_MARGIN),
            "maxPriorityFeePerGas": Wei(tip),
            "maxFeePerGas": Wei(2 * base_fee + tip),
            "nonce": self.w3.eth.get_transaction_count(sender, "pending"),
            "chainId": self.w3.eth.chain_id,
        }

    def _send_signed(self, tx: TxParams, sender: ChecksumAddress, what: str) -> TxReceipt:
        signed = self.keys[sender].sign_transaction(dict(tx))  # type: ignore[arg-type]
        return self._wait(self.w3.eth.send_raw_transaction(signed.raw_transaction), what)

    def _wait(self, tx_hash: HexBytes, what: str) -> TxReceipt:
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)
        if receipt["status"] != 1:
            raise DeploymentError(f"{what}: transaction {tx_hash.hex()} reverted")
        logger.debug("%s: gas %d", what, receipt["gasUsed"])
        return receipt
