"""Compiled contract artifacts from `abis/` (written by `scripts/compile.js`)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from keeper.errors import ConfigError

#: Repository root; `abis/` and `contracts/` sit there. KEEPER_ABI_DIR overrides for installs.
REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRACT_NAMES = (
    "TestToken",
    "PriceFeed",
    "LendingPool",
    "SwapVenue",
    "PerpMarket",
    "OptionMarket",
    "RiskVault",
)


def abi_dir() -> Path:
    return Path(os.environ.get("KEEPER_ABI_DIR", REPO_ROOT / "abis"))


@dataclass(frozen=True, slots=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    source_hash: str
    compiler_version: str
    compiler_settings: dict[str, Any]


@cache
def load_artifact(name: str) -> Artifact:
    """The artifact of contract `name`; a clear ConfigError when `abis/` lacks it."""
    path = abi_dir() / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"missing contract artifact {path} (run `make compile`)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"corrupt contract artifact {path}: {exc}") from None
    return Artifact(
        name=name,
        abi=data["abi"],
        bytecode=data["bytecode"],
        deployed_bytecode=data["deployedBytecode"],
        source_hash=data["sourceHash"],
        compiler_version=data["compiler"]["version"],
        compiler_settings=data["compiler"]["settings"],
    )


def source_hash(contracts_dir: Path, compiler_version: str, settings: dict[str, Any]) -> str:
    """Recompute the hash `scripts/compile.js` stores: sha256 over `path NUL content NUL` of every
    contracts/ source in path order, then `version NUL settings-json` (JS key order preserved)."""
    h = hashlib.sha256()
    root = contracts_dir.parent
    for file in sorted(contracts_dir.rglob("*.sol"), key=lambda p: p.relative_to(root).as_posix()):
        h.update(f"{file.relative_to(root).as_posix()}\0".encode())
        h.update(file.read_bytes() + b"\0")
    h.update(f"{compiler_version}\0".encode())
    h.update(json.dumps(settings, separators=(",", ":"), ensure_ascii=False).encode())
    return h.hexdigest()


def abi_type(param: dict[str, Any]) -> str:
    """Canonical ABI type string of one parameter, tuples expanded (for selectors and codecs)."""
    if param["type"].startswith("tuple"):
        inner = ",".join(abi_type(c) for c in param["components"])
        return f"({inner}){param['type'][5:]}"
    return str(param["type"])


def output_types(artifact: Artifact, function: str) -> list[str]:
    """ABI output types of `function` in `artifact` (the first overload)."""
    for item in artifact.abi:
        if item.get("type") == "function" and item.get("name") == function:
            return [abi_type(o) for o in item["outputs"]]
    raise ConfigError(f"{artifact.name} has no function {function}")
