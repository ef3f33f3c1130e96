"""Secrets at rest: MCP servers' env and headers and HTTP tools' headers are encrypted in the tools database (read
here straight from the tables), still reach the endpoint and the servers (a real HTTP server, real MCP servers over
stdio and HTTP), are never returned nor logged; rows an earlier version kept in plain text are encrypted at start;
rotation moves every secret to the newest key (the real `python -m services.tools.secrets rotate`), after which the
old key can go; a missing, malformed or wrong key stops the start saying what to do. On SQLite and PostgreSQL."""

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import JSON, DateTime, String, column, insert, table, text

from agentplatform.tools.v1 import tools_pb2
from services.common.db.database import Database
from services.common.settings import SettingsError
from services.tools.app import start_tools
from services.tools.secret_codec import new_key
from tests.tools.conftest import SettingsFactory, execute_request
from tests.tools.http_endpoint import Endpoint
from tests.tools.http_tools.helpers import LOCAL, SCHEMA, SECRET
from tests.tools.http_tools.helpers import Tools as HttpTools
from tests.tools.mcp_servers import ENV_SECRET, HEADER_SECRET, HttpServer, ServerFiles, server_files
from tests.tools.mcp_sources.helpers import CONNECTED, FAST
from tests.tools.mcp_sources.helpers import Tools as McpTools

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRETS = (SECRET, ENV_SECRET, HEADER_SECRET)
KEY_A, KEY_B = new_key(), new_key()


class Service(HttpTools, McpTools):
    """One tools service with the shorthands of both test modules (HTTP tools and MCP servers)."""


async def _empty_of_tools(database: Database) -> None:
    async with database.write() as session:
        tables = set((await session.execute(text(
            "SELECT name FROM sqlite_master WHERE type='table'" if database.is_sqlite
            else "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ))).scalars())
        for name in ("mcp_servers", "http_tools", "tool_settings"):
            if name in tables:
                await session.execute(text(f"DELETE FROM {name}"))


@pytest_asyncio.fixture
async def raw(database_url: str) -> AsyncIterator[Database]:
    """The tools database read and written as it is, past the service (no codec): emptied of tools before and
    after, since the PostgreSQL one is shared by the session. After, too: these tests store secrets under keys of
    their own, which every later tools service on that database (the default TOOLS_SECRET_KEYS) could not decrypt
    and would refuse to start on (tests/tools/test_replicas.py did, in another file order)."""
    database = Database(database_url)
    await _empty_of_tools(database)
    yield database
    await _empty_of_tools(database)
    await database.dispose()


StartService = Callable[..., Awaitable[Service]]


@pytest_asyncio.fixture
async def start(make_settings: SettingsFactory, database_url: str) -> AsyncIterator[StartService]:
    """Start tools services on the test's database with the given keys (TOOLS_SECRET_KEYS); stopped afterwards."""
    started: list[Service] = []

    async def build(keys: str = KEY_A) -> Service:
        settings = make_settings(**LOCAL, **FAST, TOOLS_DATABASE_URL=database_url, TOOLS_SECRET_KEYS=keys)
        service = Service(lambda: start_tools(settings))
        started.append(service)
        await service.start()
        return service

    yield build
    for service in started:
        await service.stop()


async def stored_rows(raw: Database) -> dict[str, list[dict[str, Any]]]:
    """Every row of the two tables with secrets, as the database holds them."""
    rows = {}
    async with raw.read() as session:
        for name in ("http_tools", "mcp_servers"):
            rows[name] = [dict(row._mapping) for row in await session.execute(text(f"SELECT * FROM {name}"))]
    return rows


def sealed_values(rows: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The stored secret columns, each of which must be an encrypted token (a JSON string)."""
    values = []
    for row in [*rows["http_tools"], *rows["mcp_servers"]]:
        for name in ("env", "headers"):
            stored = row.get(name)
            if stored is not None:
                # SQLite gives the JSON text; asyncpg has decoded it already.
                value = json.loads(stored) if isinstance(stored, str) and stored[:1] in '"{' else stored
                assert isinstance(value, str) and value.startswith("gAAAAA"), f"{name} of {row['name']}: {value!r}"
                values.append(value)
    return values


async def register_everything(service: Service, endpoint: Endpoint, stdio: ServerFiles, http: HttpServer) -> None:
    await service.create("forecast", endpoint.url("/echo"))
    await service.register_stdio("local", stdio)
    await service.register_http("remote", http)


async def assert_secrets_reach_their_destinations(service: Service, endpoint: Endpoint, stdio: ServerFiles) -> None:
    """The HTTP tool sends its header, the stdio server has its env, the HTTP server got its header (it answers
    401 without it, so CONNECTED says so)."""
    await service.call("http__forecast", city="Lyon")
    assert endpoint.received[-1].headers["authorization"] == SECRET
    await service.wait_for_state("local", CONNECTED)
    await service.wait_for_state("remote", CONNECTED)
    response = await service.stub.ExecuteTool(execute_request("mcp__local__add", x=2, y=3))
    assert response.text == "5"
    assert f"MCP_TEST_SECRET={ENV_SECRET}" in await asyncio.to_thread(environment_of, stdio)
    response = await service.stub.ExecuteTool(execute_request("mcp__remote__add", x=1, y=1))
    assert response.text == "2"


def environment_of(server: ServerFiles) -> list[str]:
    """The environment the stdio server process runs with (its pid is in its pid file)."""
    return Path(f"/proc/{int(server.pid.read_text())}/environ").read_text().split("\0")


def assert_nothing_shows_a_secret(*messages: Any, log: str = "") -> None:
    for message in messages:
        for secret in SECRETS:
            assert secret not in str(message) and secret.encode() not in message.SerializeToString()
    for secret in SECRETS:
        assert secret not in log


async def test_secrets_are_stored_encrypted_reach_their_destinations_and_are_never_shown_or_logged(
    start: StartService, raw: Database, endpoint: Endpoint, http_server: HttpServer,
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    stdio = server_files(tmp_path / "stdio")
    service = await start()
    await register_everything(service, endpoint, stdio, http_server)

    rows = await stored_rows(raw)
    assert len(sealed_values(rows)) == 3
    for secret in SECRETS:
        assert secret not in str(rows), "a secret is stored in plain text"
    assert "MCP_TEST_SECRET" not in str(rows), "not even the names are in plain text"

    await service.restart()  # everything below is read back from the database
    await assert_secrets_reach_their_destinations(service, endpoint, stdio)
    assert_nothing_shows_a_secret(
        await service.get("http__forecast"),
        await service.stub.ListTools(tools_pb2.ListToolsRequest()),
        await service.stub.ListMcpServers(tools_pb2.ListMcpServersRequest()),
        await service.server("local"),
        await service.server("remote"),
        log=caplog.text,
    )


async def test_rows_an_earlier_version_stored_in_plain_text_are_encrypted_at_start(
    start: StartService, raw: Database, endpoint: Endpoint, tmp_path: Path
) -> None:
    stdio = server_files(tmp_path / "stdio")
    await (await start()).stop()  # the schema
    now = datetime.now(UTC)
    http_tools = table(
        "http_tools", column("name", String), column("display_name", String), column("description", String),
        column("parameters", JSON), column("url", String), column("method", String), column("headers", JSON),
        column("created_at", DateTime(timezone=True)),
    )
    mcp_servers = table(
        "mcp_servers", column("name", String), column("transport", String), column("command", String),
        column("args", JSON), column("env", JSON), column("created_at", DateTime(timezone=True)),
    )
    async with raw.write() as session:
        await session.execute(insert(http_tools).values(
            name="forecast", display_name="forecast", description="The forecast.", parameters=SCHEMA,
            url=endpoint.url("/echo"), method="POST", headers={"Authorization": SECRET}, created_at=now,
        ))
        await session.execute(insert(mcp_servers).values(
            name="local", transport="stdio", command=sys.executable, args=[str(stdio.script), "stdio"],
            env=stdio.env(), created_at=now,
        ))
    assert SECRET in str(await stored_rows(raw))

    service = await start()
    rows = await stored_rows(raw)
    assert len(sealed_values(rows)) == 2
    for secret in SECRETS:
        assert secret not in str(rows)
    await service.call("http__forecast", city="Lyon")
    assert endpoint.received[-1].headers["authorization"] == SECRET
    await service.wait_for_state("local", CONNECTED)
    assert f"MCP_TEST_SECRET={ENV_SECRET}" in await asyncio.to_thread(environment_of, stdio)


def rotate(database_url: str, keys: str) -> subprocess.CompletedProcess[str]:
    """The real command, as an operator runs it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TOOLS_")}
    env |= {"TOOLS_DATABASE_URL": database_url, "TOOLS_SECRET_KEYS": keys}
    return subprocess.run(
        [sys.executable, "-m", "services.tools.secrets", "rotate"], env=env, cwd=REPO_ROOT, capture_output=True,
        text=True, timeout=60,
    )


async def test_rotation_moves_every_secret_to_the_newest_key_and_the_old_key_can_go(
    start: StartService, raw: Database, database_url: str, endpoint: Endpoint, http_server: HttpServer,
    tmp_path: Path,
) -> None:
    stdio = server_files(tmp_path / "stdio")
    service = await start(KEY_A)
    await register_everything(service, endpoint, stdio, http_server)
    await service.stop()

    # Without the key they were encrypted with, the service refuses to start, naming the rows, not the values.
    with pytest.raises(SettingsError) as refused:
        await start(KEY_B)
    message = str(refused.value)
    assert "http_tools 'forecast' (headers)" in message and "mcp_servers 'local' (env)" in message
    assert "TOOLS_SECRET_KEYS" in message and not any(secret in message for secret in SECRETS)

    done = await asyncio.to_thread(rotate, database_url, f"{KEY_B},{KEY_A}")
    assert done.returncode == 0, done.stderr
    assert "re-encrypted 3 stored secret(s)" in done.stdout
    for value in sealed_values(await stored_rows(raw)):
        Fernet(KEY_B.encode()).decrypt(value.encode())
        with pytest.raises(InvalidToken):
            Fernet(KEY_A.encode()).decrypt(value.encode())
    again = await asyncio.to_thread(rotate, database_url, f"{KEY_B},{KEY_A}")
    assert "re-encrypted 0 stored secret(s)" in again.stdout and "3 already under it" in again.stdout

    service = await start(KEY_B)  # the old key removed
    await assert_secrets_reach_their_destinations(service, endpoint, stdio)

    # Rotating with a key list that cannot read them changes nothing and says why.
    before = await stored_rows(raw)
    failed = await asyncio.to_thread(rotate, database_url, KEY_A)
    assert failed.returncode != 0 and "no key in TOOLS_SECRET_KEYS decrypts" in failed.stderr
    assert await stored_rows(raw) == before


async def test_a_missing_or_malformed_key_stops_the_start_saying_how_to_make_one(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    for keys, expected in (
        ("", "has no key: set TOOLS_SECRET_KEYS"),
        (" , ", "has no key: set TOOLS_SECRET_KEYS"),
        ("not-a-key", "TOOLS_SECRET_KEYS: key 1 of 1 is not a Fernet key"),
        (f"{KEY_A},{KEY_B[:-2]}", "TOOLS_SECRET_KEYS: key 2 of 2 is not a Fernet key"),
    ):
        with pytest.raises(SettingsError) as refused:
            await start_tools(make_settings(TOOLS_SECRET_KEYS=keys))
        assert expected in str(refused.value)
        assert "python -m services.tools.secrets new-key" in str(refused.value)
        assert KEY_B[:-2] not in str(refused.value) and "not-a-key" not in str(refused.value)

    # The real service process says it too, and exits.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TOOLS_", "AUTH_", "PLATFORM_"))}
    env |= {"TOOLS_PORT": "0", "TOOLS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'tools.db'}"}
    process = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.tools"], env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=60,
    )
    assert process.returncode != 0 and "has no key: set TOOLS_SECRET_KEYS" in process.stderr, process.stderr
