"""Decoding revert data into readable custom errors, by the ABIs in `abis/`."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from eth_abi.abi import decode
from eth_utils.abi import function_signature_to_4byte_selector
from web3.exceptions import ContractCustomError, ContractLogicError, ContractPanicError

from keeper.chain.abi import CONTRACT_NAMES, abi_type, load_artifact

#: Solidity's built-in Error(string) and Panic(uint256) selectors.
ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")
PANIC_SELECTOR = bytes.fromhex("4e487b71")
#: Field names for VaultInvalidMandate(field, value), in Mandate struct order.
MANDATE_FIELDS = (
    "targetVol",
    "maxLeverage",
    "minHealth",
    "hedgeTarget",
    "hedgeBand",
    "cppiFloor",
    "cppiMultiplier",
    "kellyFraction",
    "maxSlippageBps",
)


@dataclass(frozen=True, slots=True)
class DecodedError:
    name: str
    args: tuple[Any, ...]

    def __str__(self) -> str:
        if (
            self.name == "VaultInvalidMandate"
            and len(self.args) == 2
            and self.args[0] < len(MANDATE_FIELDS)
        ):
            return f"VaultInvalidMandate({MANDATE_FIELDS[self.args[0]]}={self.args[1]})"
        return f"{self.name}({', '.join(str(a) for a in self.args)})"


@lru_cache(maxsize=1)
def _error_table() -> dict[bytes, tuple[str, list[str]]]:
    table: dict[bytes, tuple[str, list[str]]] = {}
    for name in CONTRACT_NAMES:
        for item in load_artifact(name).abi:
            if item.get("type") != "error":
                continue
            types = [abi_type(p) for p in item["inputs"]]
            selector = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})")
            table[selector] = (item["name"], types)
    return table


def decode_revert(data: bytes | str | None) -> DecodedError | None:
    """Name and arguments of the error in revert `data`; None if there is none or it is unknown."""
    if data is None:
        return None
    try:
        raw = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else data
    except ValueError:  # "no data" and other non-hex placeholders some nodes send
        return None
    if len(raw) < 4:
        return None
    selector, body = raw[:4], raw[4:]
    try:
        if selector == ERROR_STRING_SELECTOR:
            return DecodedError("Error", tuple(decode(["string"], body)))
        if selector == PANIC_SELECTOR:
            return DecodedError("Panic", tuple(decode(["uint256"], body)))
        entry = _error_table().get(selector)
        if entry is None:
            return None
        return DecodedError(entry[0], tuple(decode(entry[1], body)))
    except Exception:  # malformed revert data: report it as unknown rather than crash
        return None


def describe_revert(exc: BaseException) -> str:
    """One readable line for a web3 revert exception (custom error decoded when possible)."""
    data: Any = None
    if isinstance(exc, (ContractCustomError, ContractPanicError, ContractLogicError)):
        data = exc.data
    decoded = decode_revert(data) if isinstance(data, (str, bytes)) else None
    if decoded is not None:
        return str(decoded)
    if isinstance(exc, ContractLogicError) and exc.message:
        return str(exc.message)
    return str(exc)
