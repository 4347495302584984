"""The in-process chain (eth-tester / py-evm) made to report reverts like a real node.

eth-tester raises a bare `TransactionFailed` holding the revert bytes, so web3 never decodes
custom errors. `RevertingTesterProvider` answers such a failure with the standard JSON-RPC error
a node sends (`{code: 3, message: "execution reverted", data: "0x…"}`), so the keeper decodes
custom errors the same way on eth-tester, anvil and geth.
"""

from __future__ import annotations

import ast
from typing import Any, cast

from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider
from web3.types import RPCEndpoint, RPCResponse

#: The JSON-RPC error code geth and anvil use for a revert with data.
EXECUTION_REVERTED_CODE = 3
#: eth-tester's fee for a call that names none (wei).
TESTER_DEFAULT_CALL_FEE_WEI = 10**9
#: Gas limit of each in-process block: large enough for a full market deployment.
TESTER_BLOCK_GAS_LIMIT = 60_000_000


def _revert_data(exc: TransactionFailed) -> bytes | None:
    arg: Any = exc.args[0] if exc.args else None
    if isinstance(arg, Exception) and arg.args:
        arg = arg.args[0]
    if isinstance(arg, str) and arg.startswith(("b'", 'b"')):
        # Some paths (gas estimation) hand over the revert bytes as their Python repr.
        try:
            arg = ast.literal_eval(arg)
        except (ValueError, SyntaxError):
            return None
    return arg if isinstance(arg, bytes) else None


class RevertingTesterProvider(EthereumTesterProvider):
    """EthereumTesterProvider whose reverts look like a node's JSON-RPC error."""

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        namespace, _, endpoint = method.partition("_")
        assert self.api_endpoints is not None  # set by the base constructor
        delegator = self.api_endpoints.get(namespace, {}).get(endpoint)
        if delegator is None:
            return super().make_request(method, params)
        request_id = repr(self._current_request_id)
        self._current_request_id += 1
        if method in ("eth_call", "eth_estimateGas"):
            params = self._priced_call(params)
        try:
            result = delegator(self.ethereum_tester, params)
        except TransactionFailed as exc:
            data = _revert_data(exc)
            error: dict[str, Any] = {
                "code": EXECUTION_REVERTED_CODE,
                "message": "execution reverted",
            }
            if data is not None:
                error["data"] = "0x" + data.hex()
            else:
                error["message"] = f"execution reverted: {exc.args[0] if exc.args else ''}"
            return cast(RPCResponse, {"id": request_id, "jsonrpc": "2.0", "error": error})
        except NotImplementedError:
            return super().make_request(method, params)
        return cast(RPCResponse, {"id": request_id, "jsonrpc": "2.0", "result": result})

    def _priced_call(self, params: Any) -> Any:
        """A node runs a call that names no fee at gas price 0; eth-tester prices it at 1 gwei
        and refuses it once the base fee is higher. Offer the pending base fee instead."""
        if not params or not isinstance(params[0], dict):
            return params
        tx = params[0]
        if any(k in tx for k in ("gasPrice", "maxFeePerGas", "gas_price", "max_fee_per_gas")):
            return params
        chain: Any = cast(Any, self.ethereum_tester).backend.chain
        # The call may run on the latest or the pending header; either base fee, with headroom.
        fees = [getattr(h, "base_fee_per_gas", 0) or 0
                for h in (chain.header, chain.get_canonical_head())]
        # At least eth-tester's own 1 gwei default, which every older block accepts.
        fee = max(TESTER_DEFAULT_CALL_FEE_WEI, 4 * int(max(fees)) + 1)
        priced = {**tx, "max_fee_per_gas": fee, "max_priority_fee_per_gas": 0}
        return [priced, *params[1:]]


def in_process_web3(start_timestamp: int | None = None) -> Web3:
    """A fresh in-process chain with 10 funded, unlocked accounts.

    With `start_timestamp` (ahead of the wall clock) the chain jumps there first; every later
    block is then stamped parent + 1 s unless travelled, so a replay is deterministic."""
    genesis = PyEVMBackend.generate_genesis_params(overrides={"gas_limit": TESTER_BLOCK_GAS_LIMIT})
    backend = PyEVMBackend(genesis_parameters=genesis)
    w3 = Web3(RevertingTesterProvider(EthereumTester(backend)))
    if start_timestamp is not None:
        testing: Any = cast(Any, w3).testing
        testing.timeTravel(start_timestamp)
        testing.mine(1)
    return w3


# --- base-fee control (what anvil_setNextBlockBaseFeePerGas does on anvil) ---------------------
#: (parent hash, base fee) of pending headers whose base fee was set by hand: py-evm's header
#: validation accepts exactly these, and checks every other block by the EIP-1559 rule.
_OVERRIDDEN: set[tuple[bytes, int]] = set()
_PATCHED = False


def _patch_base_fee_validation() -> None:
    global _PATCHED
    if _PATCHED:
        return
    from eth.validation import validate_gas_limit
    from eth.vm.forks import london

    original = london.LondonVM.validate_gas.__func__  # type: ignore[attr-defined]

    def validate_gas(cls: Any, header: Any, parent_header: Any) -> None:
        if (bytes(header.parent_hash), int(header.base_fee_per_gas)) in _OVERRIDDEN:
            validate_gas_limit(header.gas_limit, parent_header.gas_limit)
            return
        original(cls, header, parent_header)

    london.LondonVM.validate_gas = classmethod(validate_gas)  # type: ignore[method-assign,assignment]
    _PATCHED = True


def set_next_base_fee(w3: Web3, wei: int) -> None:
    """Give the in-process chain's pending block a base fee of `wei` (the blocks after it follow
    the EIP-1559 rule from there, as on anvil)."""
    if wei <= 0:
        raise ValueError(f"base fee must be positive, got {wei}")
    _patch_base_fee_validation()
    provider = cast(RevertingTesterProvider, w3.provider)
    chain: Any = cast(Any, provider.ethereum_tester).backend.chain
    header = chain.header.copy(base_fee_per_gas=wei)
    _OVERRIDDEN.add((bytes(header.parent_hash), wei))
    chain.header = header
