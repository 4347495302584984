"""Fixtures shared by every test directory: a real PostgreSQL server, started once per run on
a loopback port (only when a test asks for it) and stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg import PostgresServer


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server
