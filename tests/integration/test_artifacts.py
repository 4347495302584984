"""The compiled artifacts in abis/: up to date with contracts/, deployable, consistent."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from eth_utils import function_signature_to_4byte_selector

from keeper.chain.abi import CONTRACT_NAMES, REPO_ROOT, load_artifact, source_hash
from tests.integration.conftest import ARTIFACT_OF, artifact_of

#: EIP-170 (deployed code) and EIP-3860 (init code) size limits, bytes.
MAX_CODE_BYTES = 24_576
MAX_INITCODE_BYTES = 49_152
#: Prefixes our own custom errors use (`<Contract><Condition>`); the rest come from OpenZeppelin.
OWN_ERROR_PREFIXES = (
    "Vault",
    "LendingPool",
    "SwapVenue",
    "PerpMarket",
    "OptionMarket",
    "Oracle",
    "PriceFeed",
    "SafeCastInt",
)
OZ_ERROR_PREFIXES = (
    "AccessControl",
    "ERC20",
    "ERC4626",
    "Ownable",
    "ReentrancyGuard",
    "SafeERC20",
    "EnforcedPause",
    "ExpectedPause",
    "Math",
    "SafeCast",
)


def _size(hex_code: str) -> int:
    return (len(hex_code) - 2) // 2


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_python_source_hash_matches_the_artifact(name):
    """Recomputed without node: sha256 over contracts/ sources, compiler version and settings,
    exactly as scripts/compile.js writes it (so Python and JS serialise the settings alike)."""
    art = load_artifact(name)
    assert (
        source_hash(REPO_ROOT / "contracts", art.compiler_version, art.compiler_settings)
        == art.source_hash
    )


def test_all_artifacts_come_from_one_compile():
    arts = [load_artifact(n) for n in CONTRACT_NAMES]
    assert len({a.source_hash for a in arts}) == 1
    assert len({a.compiler_version for a in arts}) == 1
    assert all(a.compiler_settings == arts[0].compiler_settings for a in arts)
    assert arts[0].compiler_version.startswith("0.8.")


@pytest.mark.skipif(
    not (REPO_ROOT / "node_modules" / "solc").exists() or shutil.which("node") is None,
    reason="node_modules/solc (npm ci) or node is missing: the Python hash check above still runs",
)
def test_compile_check_passes():
    """A fresh compile with the pinned solc-js reproduces abis/ byte for byte (~40 s)."""
    done = subprocess.run(
        ["node", "scripts/compile.js", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "up to date" in done.stdout


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_code_fits_the_size_limits(name):
    art = load_artifact(name)
    assert _size(art.deployed_bytecode) < MAX_CODE_BYTES
    assert _size(art.bytecode) < MAX_INITCODE_BYTES


def test_deployed_code_matches_the_artifacts(w3, deployment):
    """What is on chain has the artifacts' runtime length (immutables differ, so not the bytes)."""
    kinds = {name: artifact_of(name) for name in (*ARTIFACT_OF, "ETH_USD", "BTC_USD")}
    for name, kind in kinds.items():
        assert len(w3.eth.get_code(deployment.contracts[name])) == _size(
            load_artifact(kind).deployed_bytecode
        ), name
    for vault in deployment.vaults:
        assert len(w3.eth.get_code(vault)) == _size(load_artifact("RiskVault").deployed_bytecode)


def test_custom_errors_are_named_and_selectors_unique():
    seen: dict[bytes, str] = {}
    for name in CONTRACT_NAMES:
        for item in load_artifact(name).abi:
            if item["type"] != "error":
                continue
            assert item["name"].startswith(OWN_ERROR_PREFIXES + OZ_ERROR_PREFIXES), item["name"]
            types = ",".join(p["type"] for p in item["inputs"])
            selector = function_signature_to_4byte_selector(f"{item['name']}({types})")
            assert seen.setdefault(selector, item["name"]) == item["name"], (
                f"selector clash: {item['name']}"
            )
    assert "VaultHealthTooLow" in seen.values() and "OracleStalePrice" in seen.values()
