"""Fixtures shared by every test directory: a real PostgreSQL server, started once per run on
a loopback port (only when a test asks for it) and stopped at the end; a webhook receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg import PostgresServer
from tests.webhook import Hook, serve_hook


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture
def hook() -> Iterator[Hook]:
    with serve_hook() as server:
        yield server
