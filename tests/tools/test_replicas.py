"""Two tools replicas on one real PostgreSQL (services/tools/replicas.py): what is changed through one (a tool's
settings, an HTTP tool, an MCP server) the other shows within a second, with the periodic re-read left at its
60 s default so that only the notifications can explain it; and a replica whose notifications connection is cut
reports NOT_SERVING, comes back, and catches up with what changed while it was away."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentplatform.tools.v1 import tools_pb2
from services.common.db.notifications import APPLICATION_NAME, asyncpg_dsn
from tests.tools.conftest import SettingsFactory
from tests.tools.mcp_sources.helpers import FAST, Tools
from tests.tools.running_tools import tools_started_with

pytestmark = pytest.mark.postgres

#: What the issue asks: a change reaches every replica within this.
WITHIN_SECONDS = 1.0
SETTINGS = {**FAST, "TOOLS_HTTP_ALLOWED_HOSTS": "127.0.0.1"}


@dataclass
class Replicas:
    a: Tools
    b: Tools
    #: The backend pid of b's notifications connection (to cut it alone).
    b_listener_pid: int
    postgres_url: str


async def _listener_pids(postgres_url: str) -> set[int]:
    admin = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        rows = await admin.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", APPLICATION_NAME)
    finally:
        await admin.close()
    return {row["pid"] for row in rows}


@pytest_asyncio.fixture
async def replicas(make_settings: SettingsFactory, postgres_url: str) -> AsyncIterator[Replicas]:
    settings = {**SETTINGS, "TOOLS_DATABASE_URL": postgres_url}
    async with tools_started_with(make_settings, settings, Tools) as start:
        a = await start()
        before = await _listener_pids(postgres_url)
        b = await start()
        (b_pid,) = await _listener_pids(postgres_url) - before
        yield Replicas(a, b, b_pid, postgres_url)


def unique(prefix: str) -> str:
    """A name no other test on the session's database uses."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def seen_within(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 5.0) -> float:
    """Poll `check` every 10 ms; the seconds it took to hold (failing after `timeout`)."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what} did not happen within {timeout:g} s")
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - started
    print(f"{what}: {elapsed * 1000:.0f} ms")
    return elapsed


async def create_http_tool(tools: Tools, name: str) -> None:
    spec = tools_pb2.HttpToolSpec(
        name=name, description=f"The {name} tool.", url="http://127.0.0.1:9/never-called",
        method=tools_pb2.HTTP_METHOD_GET,
    )
    await tools.stub.CreateTool(tools_pb2.CreateToolRequest(http=spec))


async def update_tool(tools: Tools, tool: tools_pb2.Tool, *paths: str) -> None:
    await tools.stub.UpdateTool(
        tools_pb2.UpdateToolRequest(tool=tool, update_mask=field_mask_pb2.FieldMask(paths=list(paths)))
    )


async def health(tools: Tools) -> Any:
    response = await health_pb2_grpc.HealthStub(tools.channel).Check(health_pb2.HealthCheckRequest(service=""))
    return response.status


def shown(tool: tools_pb2.Tool) -> tuple[str, bool, bool, str]:
    return tool.id, tool.enabled, tool.requires_approval, tool.description


async def test_settings_and_http_tools_changed_through_one_replica_reach_the_other_within_a_second(
    replicas: Replicas,
) -> None:
    a, b = replicas.a, replicas.b
    name = unique("replicated")
    tool_id = f"http__{name}"

    await create_http_tool(a, name)
    created = await seen_within(lambda: _has(b, tool_id), "an HTTP tool created through A listed by B")

    await update_tool(a, tools_pb2.Tool(id=tool_id, enabled=False, requires_approval=True),
                      "enabled", "requires_approval")

    async def b_shows_the_settings() -> bool:
        tool = await b.stub.GetTool(tools_pb2.GetToolRequest(tool_id=tool_id))
        return not tool.enabled and tool.requires_approval

    updated = await seen_within(b_shows_the_settings, "a tool disabled and set to need approval through A, on B")
    listed = (await b.tools())[tool_id]
    assert not listed.enabled and listed.requires_approval
    assert tool_id not in await b.tools(enabled_only=True)
    # The two agree on every tool.
    assert sorted(map(shown, (await a.tools()).values())) == sorted(map(shown, (await b.tools()).values()))

    await a.stub.DeleteTool(tools_pb2.DeleteToolRequest(tool_id=tool_id))
    deleted = await seen_within(lambda: _lacks(b, tool_id), "an HTTP tool deleted through A withdrawn by B")
    assert max(created, updated, deleted) < WITHIN_SECONDS


@pytest.mark.parametrize("transport", ["http", "stdio"])
async def test_an_mcp_server_registered_through_one_replica_is_connected_by_the_other(
    replicas: Replicas, transport: str, request: pytest.FixtureRequest
) -> None:
    a, b = replicas.a, replicas.b
    name = unique("shared")
    tool_id = f"mcp__{name}__add"

    async def b_knows_the_server() -> bool:
        # Before B has the registration, the tool is unknown (NOT_FOUND); once it has, it is either listed or,
        # while B's session is still connecting, UNAVAILABLE. (GetMcpServer would re-read the table itself.)
        try:
            await b.stub.GetTool(tools_pb2.GetToolRequest(tool_id=tool_id))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
        return True

    if transport == "http":
        await a.register_http(name, request.getfixturevalue("http_server"))
    else:  # each replica starts the server's program for its own session
        await a.register_stdio(name, request.getfixturevalue("stdio_files"))
    try:
        known = await seen_within(b_knows_the_server, "an MCP server registered through A, known to B")
        # B's own session to the server, connecting and listing, after it had the registration.
        await seen_within(lambda: _has(b, tool_id), "its tools listed by B", timeout=20)
        assert known < WITHIN_SECONDS
    finally:
        await a.stub.DeleteMcpServer(tools_pb2.DeleteMcpServerRequest(name=name))
    gone = await seen_within(lambda: _lacks(b, tool_id), "an MCP server deleted through A, its tools gone from B")
    assert gone < WITHIN_SECONDS


async def test_a_replica_that_lost_its_notifications_is_not_serving_and_catches_up_when_back(
    replicas: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = replicas.a, replicas.b
    known, created = unique("known"), unique("while_away")
    await create_http_tool(a, known)
    await seen_within(lambda: _has(b, f"http__{known}"), "a tool created before the cut listed by B")
    # Keep B away: its notifications connection is refused until the test lets it back (a partition, as B sees it).
    # Only that connection: the services' database pools connect through asyncpg too.
    away = True
    connect = asyncpg.connect

    async def refusing_the_listener(*args: Any, **kwargs: Any) -> Any:
        if away and (kwargs.get("server_settings") or {}).get("application_name") == APPLICATION_NAME:
            raise OSError("the test keeps this connection away")
        return await connect(*args, **kwargs)

    monkeypatch.setattr(asyncpg, "connect", refusing_the_listener)
    admin = await asyncpg.connect(asyncpg_dsn(replicas.postgres_url))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", replicas.b_listener_pid)
    finally:
        await admin.close()

    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    await seen_within(lambda: _status_is(b, not_serving), "B reporting NOT_SERVING")
    assert await health(a) == health_pb2.HealthCheckResponse.SERVING

    # Changed through A while B cannot hear: B's message is lost.
    await create_http_tool(a, created)
    await update_tool(a, tools_pb2.Tool(id=f"http__{known}", requires_approval=True), "requires_approval")
    await asyncio.sleep(0.5)
    assert f"http__{created}" not in await b.tools(), "B heard of the tool while its connection was away"

    away = False
    await seen_within(lambda: _status_is(b, health_pb2.HealthCheckResponse.SERVING), "B serving again")
    await seen_within(lambda: _has(b, f"http__{created}"), "B taking the tool created while it was away", timeout=1)
    assert (await b.stub.GetTool(tools_pb2.GetToolRequest(tool_id=f"http__{known}"))).requires_approval
    for name in (known, created):
        await a.stub.DeleteTool(tools_pb2.DeleteToolRequest(tool_id=f"http__{name}"))


async def _has(tools: Tools, tool_id: str) -> bool:
    return tool_id in await tools.tools()


async def _lacks(tools: Tools, tool_id: str) -> bool:
    return tool_id not in await tools.tools()


async def _status_is(tools: Tools, status: Any) -> bool:
    return bool(await health(tools) == status)
