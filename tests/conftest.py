"""Fixtures and hooks every test folder may use.

At session start, unless TEST_POSTGRES_URL already names a server, a throwaway PostgreSQL server is started
(tests/support/postgres.py) and TEST_POSTGRES_URL set to it, so the store tests run on PostgreSQL as well as
SQLite. Without PostgreSQL installed those tests skip, unless REQUIRE_POSTGRES=1 (CI sets it).
"""

import os
import socket
from contextlib import ExitStack
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
_session_resources = ExitStack()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for processes that cannot report the port they bound)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pytest_sessionstart(session: pytest.Session) -> None:
    from tests.support.postgres import find_postgres_bin, postgres_server

    if os.environ.get("TEST_POSTGRES_URL"):
        return
    if find_postgres_bin() is None:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            raise pytest.UsageError("REQUIRE_POSTGRES=1 but PostgreSQL is not installed (apt-get install postgresql)")
        return
    os.environ["TEST_POSTGRES_URL"] = _session_resources.enter_context(postgres_server())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _session_resources.close()


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
