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


def in_process_web3() -> Web3:
    """A fresh in-process chain with 10 funded, unlocked accounts."""
    genesis = PyEVMBackend.generate_genesis_params(overrides={"gas_limit": TESTER_BLOCK_GAS_LIMIT})
    backend = PyEVMBackend(genesis_parameters=genesis)
    return Web3(RevertingTesterProvider(EthereumTester(backend)))
