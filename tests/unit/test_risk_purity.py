"""The risk core and the policy never touch a chain library (DESIGN: pure core)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PURE_FILES = sorted((REPO / "keeper" / "risk").glob("*.py")) + [REPO / "keeper" / "policy.py"]
FORBIDDEN_PREFIXES = ("web3", "eth_", "eth_tester", "eth_account", "eth_abi", "keeper.chain",
                      "hexbytes")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import inside keeper.risk
                names.add("keeper.risk." + (node.module or ""))
            else:
                names.add(node.module or "")
    return names


def test_pure_modules_exist() -> None:
    names = {p.name for p in PURE_FILES}
    assert {"health.py", "greeks.py", "volatility.py", "tail.py", "allocation.py",
            "hedging.py", "units.py", "policy.py"} <= names


def test_source_imports_no_chain_library() -> None:
    for path in PURE_FILES:
        bad = {n for n in _imports(path) if n.startswith(FORBIDDEN_PREFIXES)}
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_importing_the_core_loads_no_chain_library() -> None:
    modules = ["keeper.policy"] + [f"keeper.risk.{p.stem}" for p in PURE_FILES
                                   if p.parent.name == "risk" and p.stem != "__init__"]
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True)
    loaded = json.loads(out.stdout)
    assert "keeper.policy" in loaded and "keeper.risk.greeks" in loaded  # the check is live
    bad = [m for m in loaded if m.split(".")[0] in ("web3", "hexbytes")
           or m.startswith(("eth_", "keeper.chain"))]
    assert bad == []
