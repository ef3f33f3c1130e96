"""Fixtures every test folder may use.

`postgres_url` is a throwaway PostgreSQL server (tests/support/postgres.py), started the first time a test asks
for it, so sessions without PostgreSQL tests pay nothing. TEST_POSTGRES_URL names an existing server instead.
Without PostgreSQL installed those tests skip, unless REQUIRE_POSTGRES=1 (CI sets it), which makes them fail.
"""

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for processes that cannot report the port they bound)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL (postgresql+asyncpg://…) of a PostgreSQL database for the whole session."""
    from tests.support.postgres import find_postgres_bin, postgres_server

    if url := os.environ.get("TEST_POSTGRES_URL"):
        yield url
        return
    if find_postgres_bin() is None:
        reason = "PostgreSQL is not installed (apt-get install postgresql)"
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    with postgres_server() as url:
        yield url
