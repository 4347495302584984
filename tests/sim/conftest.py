"""The simulator against real chains: one warmed-up world on anvil per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keeper.devnet.anvil import anvil_path
from keeper.sim.runner import World, open_world


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    if anvil_path() is None:
        pytest.skip("anvil is not installed (make install puts it in node_modules)")
    with open_world("anvil") as w:
        yield w
