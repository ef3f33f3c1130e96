"""Fixtures every test folder may use.

`postgres_url` is a throwaway PostgreSQL server (tests/support/postgres.py), started the first time a test asks
for it, so sessions without PostgreSQL tests pay nothing. TEST_POSTGRES_URL names an existing server instead.
Without PostgreSQL installed those tests skip, unless REQUIRE_POSTGRES=1 (CI sets it), which makes them fail.

Property-based tests (hypothesis) run at the "default" profile's size in `make test`; HYPOTHESIS_PROFILE=nightly
runs each with many more examples, for a longer hunt outside the test budget.
"""

import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

REPO_ROOT = Path(__file__).resolve().parent.parent

# No deadline per example: the machine is shared and noisy; a boundary's own time bound is what tests assert.
settings.register_profile(
    "default", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.register_profile(
    "nightly", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Services log JSON by default; the tests read their processes' logs as the readable lines `make run` shows (a test
# that checks the JSON lines asks for them).
os.environ.setdefault("LOG_FORMAT", "text")


#: Where free_port looks: below Linux's ephemeral range (32768-60999), from which the kernel also hands out the
#: source ports of outgoing connections. A port picked from that range can be taken by some client's connection
#: before the server meant for it binds it, and a stack of six processes makes that a real chance.
_PORT_RANGE = (20_000, 32_000)


#: Ports handed out by this process: never handed out twice, since nothing holds a port between free_port() and
#: the bind of the server it is for (a stack's runs service and engine once drew the same one).
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for processes that cannot report the port they bound), never one this process
    handed out before."""
    for _ in range(200):
        port = random.randrange(*_PORT_RANGE)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    raise OSError(f"no free port in {_PORT_RANGE} after 200 tries")


def two_free_ports() -> int:
    """A free port whose next one is free too (the second engine's, as the launcher picks it)."""
    while True:
        port = free_port()
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port + 1)) != 0:
                return port


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL (postgresql+asyncpg://…) of a PostgreSQL database for the whole session."""
    from tests.support.postgres import postgres_server, skip_without_postgres

    if url := os.environ.get("TEST_POSTGRES_URL"):
        yield url
        return
    skip_without_postgres()
    with postgres_server() as url:
        yield url
