"""MCP servers as tool sources, over real gRPC against real MCP servers (tests/tools/mcp_test_server.py, written
with the official SDK): one over stdio, run by the tools service, and one over streamable HTTP, run by the test
on a free port. Every process a test starts is stopped by the test (the stdio ones by the service it stops)."""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2, json_format

from agentplatform.tools.v1 import tools_pb2
from services.common.auth import digest, new_api_key
from services.tools.app import ToolsApp, start_tools
from services.tools.mcp.naming import FUNCTION_NAME, server_name_problem, server_of, tool_id
from tests.conftest import free_port
from tests.support.stubs import tools_stubs
from tests.tools.conftest import SettingsFactory, execute_request
from tests.tools.mcp_test_server import DOTTED_TOOL_NAME, LONG_TOOL_NAME

SERVER_SCRIPT = Path(__file__).with_name("mcp_test_server.py")
#: Secrets given at registration: they reach the server, and never a response.
ENV_SECRET = "env-secret-0d6f1c2b9e"
HEADER_SECRET = "Bearer header-secret-7a3e55"
#: Settings that make the tests quick: a ping every 0.2 s, reconnection pauses of at most 1 s; and let HTTP servers
#: be on 127.0.0.1 (the destination rules refuse loopback by default).
FAST = {
    "TOOLS_MCP_PING_SECONDS": 0.2, "TOOLS_MCP_RETRY_MAX_SECONDS": 1, "TOOLS_MCP_CONNECT_SECONDS": 10,
    "TOOLS_MCP_ALLOWED_HOSTS": "127.0.0.1",
}
#: How long a test waits for a connection state to be reached.
WAIT_SECONDS = 20.0
CONNECTED = tools_pb2.MCP_SERVER_STATE_CONNECTED
UNAVAILABLE = tools_pb2.MCP_SERVER_STATE_UNAVAILABLE


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = WAIT_SECONDS) -> Any:
    """Poll `check` until it returns something truthy; fail saying `what` did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:g} s")
        await asyncio.sleep(0.1)


@dataclass
class ServerFiles:
    """What a test server reports through (see mcp_test_server.py)."""

    folder: Path
    script: Path
    calls: Path
    pid: Path
    refuse: Path

    def env(self) -> dict[str, str]:
        return {
            "MCP_TEST_CALLS": str(self.calls),
            "MCP_TEST_PID": str(self.pid),
            "MCP_TEST_REFUSE": str(self.refuse),
            "MCP_TEST_SECRET": ENV_SECRET,
        }

    def seen(self) -> list[dict[str, Any]]:
        """The tool calls the server received, in order."""
        if not self.calls.exists():
            return []
        return [json.loads(line) for line in self.calls.read_text().splitlines()]


def server_files(folder: Path) -> ServerFiles:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "mcp_test_server.py"
    shutil.copy(SERVER_SCRIPT, script)
    return ServerFiles(folder, script, folder / "calls.jsonl", folder / "pid", folder / "refuse")


@dataclass
class HttpServer:
    """A streamable HTTP MCP server process the test starts, stops and starts again on the same port."""

    files: ServerFiles
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        env = {**os.environ, **self.files.env(), "MCP_TEST_AUTH": HEADER_SECRET}
        self.process = subprocess.Popen([sys.executable, str(self.files.script), "http", str(self.port)], env=env)
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the HTTP MCP server did not start (exit code {self.process.poll()})") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    server = HttpServer(server_files(tmp_path / "http"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def stdio_files(tmp_path: Path) -> ServerFiles:
    return server_files(tmp_path / "stdio")


@dataclass
class Tools:
    """A running tools service and its stub; `restart` stops it and starts another on the same database."""

    make: Callable[[], Awaitable[ToolsApp]]
    app: ToolsApp | None = None
    channel: grpc.aio.Channel | None = None
    stub: Any = None

    async def start(self) -> None:
        self.app = await self.make()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.app.port}")
        self.stub = tools_stubs(self.channel)

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        if self.app is not None:
            await self.app.stop()
        self.app = self.channel = self.stub = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    # --- shorthands ---

    async def tools(self, enabled_only: bool = False) -> dict[str, tools_pb2.Tool]:
        response = await self.stub.ListTools(tools_pb2.ListToolsRequest(enabled_only=enabled_only))
        return {tool.id: tool for tool in response.tools}

    async def server(self, name: str) -> tools_pb2.McpServer:
        return await self.stub.GetMcpServer(tools_pb2.GetMcpServerRequest(name=name))

    async def wait_for_state(self, name: str, state: int) -> tools_pb2.McpServer:
        async def reached() -> tools_pb2.McpServer | None:
            server = await self.server(name)
            return server if server.state == state else None

        return await eventually(reached, f"MCP server {name!r} reaching {tools_pb2.McpServerState.Name(state)}")

    async def register_stdio(self, name: str, files: ServerFiles) -> tools_pb2.McpServer:
        transport = tools_pb2.McpStdioTransport(
            command=sys.executable, args=[str(files.script), "stdio"], env=files.env()
        )
        return await self.stub.CreateMcpServer(
            tools_pb2.CreateMcpServerRequest(mcp_server=tools_pb2.McpServer(name=name, stdio=transport))
        )

    async def register_http(self, name: str, server: HttpServer) -> tools_pb2.McpServer:
        transport = tools_pb2.McpHttpTransport(url=server.url, headers={"Authorization": HEADER_SECRET})
        return await self.stub.CreateMcpServer(
            tools_pb2.CreateMcpServerRequest(mcp_server=tools_pb2.McpServer(name=name, http=transport))
        )


@pytest_asyncio.fixture
async def make_tools(make_settings: SettingsFactory) -> AsyncIterator[Callable[..., Awaitable[Tools]]]:
    """Start tools services (FAST settings plus overrides, all on tmp_path's database); stopped afterwards."""
    started: list[Tools] = []

    async def build(**overrides: Any) -> Tools:
        tools = Tools(lambda: start_tools(make_settings(**{**FAST, **overrides})))
        started.append(tools)
        await tools.start()
        return tools

    yield build
    for tools in started:
        await tools.stop()


@pytest_asyncio.fixture
async def tools(make_tools: Callable[..., Awaitable[Tools]]) -> Tools:
    return await make_tools()


def assert_no_secrets(*messages: Any) -> None:
    for message in messages:
        text = json_format.MessageToJson(message) + str(message.SerializeToString())
        assert ENV_SECRET not in text
        assert "header-secret" not in text


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def expect_error(call: Awaitable[Any], code: grpc.StatusCode, *fragments: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    assert exc.value.code() == code, exc.value.details()
    details = exc.value.details() or ""
    for fragment in fragments:
        assert fragment in details
    return details


def update(tool_id_: str, *paths: str, **values: Any) -> tools_pb2.UpdateToolRequest:
    return tools_pb2.UpdateToolRequest(
        tool=tools_pb2.Tool(id=tool_id_, **values), update_mask=field_mask_pb2.FieldMask(paths=list(paths))
    )


# --- the id scheme -----------------------------------------------------------------------------------------------


def test_tool_ids_are_function_names_in_the_servers_namespace() -> None:
    assert tool_id("github", "create_issue") == "mcp__github__create_issue"
    mapped = tool_id("files", "read.file")
    assert mapped.startswith("mcp__files__read_file_") and FUNCTION_NAME.match(mapped)
    # The hash is of the original name: two names mapping to the same characters keep apart, and a plain name
    # never equals a mapped one.
    assert tool_id("files", "read file") != mapped != tool_id("files", "read_file")
    longest = tool_id("s" * 32, "t" * 100)
    assert len(longest) == 64 and FUNCTION_NAME.match(longest)
    assert tool_id("s" * 32, "t" * 100) == longest  # stable (not Python's salted hash)
    assert tool_id("s" * 32, "t" * 100 + "u") != longest
    assert server_of("mcp__github__create_issue") == "github"
    assert server_of("calculator") is None


@pytest.mark.parametrize("name", ["", "Github", "1st", "a-b", "a__b", "a_", "x" * 33, "a.b"])
def test_bad_server_names_are_refused(name: str) -> None:
    assert server_name_problem(name) is not None


# --- registering, listing, calling -------------------------------------------------------------------------------


async def test_a_stdio_servers_tools_are_listed_called_and_counted(tools: Tools, stdio_files: ServerFiles) -> None:
    created = await tools.register_stdio("local", stdio_files)
    assert created.name == "local" and created.stdio.command == sys.executable
    assert list(created.stdio.env_names) == sorted(stdio_files.env())
    assert not created.stdio.env
    server = await tools.wait_for_state("local", CONNECTED)
    assert server.tool_count == 7 and server.HasField("last_connected_time") and server.HasField("create_time")
    assert_no_secrets(created, server, await tools.stub.ListMcpServers(tools_pb2.ListMcpServersRequest()))

    listed = await tools.tools()
    add = listed["mcp__local__add"]
    assert add.mcp_server == "local" and add.available and add.enabled and add.unavailable_reason == ""
    assert add.display_name == "Add numbers" and add.description == "Adds two integers."
    parameters = json_format.MessageToDict(add.parameters)
    assert parameters["properties"]["x"]["type"] == "integer" and parameters["required"] == ["x", "y"]
    assert json_format.MessageToDict(add.schema)["function"]["name"] == "mcp__local__add"
    assert (add.hints.read_only, add.hints.destructive, add.hints.idempotent, add.hints.open_world) == (
        True, False, True, False,
    )
    # No annotations: MCP's defaults.
    echo = listed["mcp__local__echo"]
    assert (echo.hints.read_only, echo.hints.destructive, echo.hints.open_world) == (False, True, True)
    assert "calculator" in listed  # the built-in tools keep their ids

    response = await tools.stub.ExecuteTool(execute_request("mcp__local__add", x=2, y=3))
    assert json_format.MessageToDict(response.result) == {"result": 5}
    assert response.text == "5"
    assert stdio_files.seen() == [{"tool": "add", "arguments": {"x": 2, "y": 3}}]
    echoed = await tools.stub.ExecuteTool(execute_request("mcp__local__echo", text="hello"))
    assert echoed.text == "hello"

    usage = (await tools.stub.GetTool(tools_pb2.GetToolRequest(tool_id="mcp__local__add"))).usage
    assert (usage.calls, usage.errors, usage.timeouts) == (1, 0, 0)
    assert usage.HasField("p50_duration") and usage.HasField("last_used_time")


async def test_bad_arguments_are_refused_before_the_server_sees_them(tools: Tools, stdio_files: ServerFiles) -> None:
    await tools.register_stdio("local", stdio_files)
    await tools.wait_for_state("local", CONNECTED)
    await expect_error(
        tools.stub.ExecuteTool(execute_request("mcp__local__add", x="two", y=3)),
        grpc.StatusCode.INVALID_ARGUMENT, "at x: 'two' is not of type 'integer'",
    )
    await expect_error(
        tools.stub.ExecuteTool(execute_request("mcp__local__add", x=1)),
        grpc.StatusCode.INVALID_ARGUMENT, "'y' is a required property",
    )
    assert stdio_files.seen() == []
    usage = (await tools.stub.GetTool(tools_pb2.GetToolRequest(tool_id="mcp__local__add"))).usage
    assert (usage.calls, usage.errors) == (2, 2)


async def test_a_tool_error_is_a_failure_the_caller_is_told(tools: Tools, stdio_files: ServerFiles) -> None:
    await tools.register_stdio("local", stdio_files)
    await tools.wait_for_state("local", CONNECTED)
    await expect_error(
        tools.stub.ExecuteTool(execute_request("mcp__local__fail", reason="the disk is full")),
        grpc.StatusCode.INTERNAL, "mcp__local__fail", "it failed because the disk is full",
    )
    assert stdio_files.seen() == [{"tool": "fail", "arguments": {"reason": "the disk is full"}}]
    usage = (await tools.stub.GetTool(tools_pb2.GetToolRequest(tool_id="mcp__local__fail"))).usage
    assert (usage.calls, usage.errors) == (1, 1)


async def test_disable_and_approval_apply_to_mcp_tools(tools: Tools, stdio_files: ServerFiles) -> None:
    await tools.register_stdio("local", stdio_files)
    await tools.wait_for_state("local", CONNECTED)
    disabled = await tools.stub.UpdateTool(update("mcp__local__echo", "enabled", enabled=False))
    assert not disabled.enabled
    assert "mcp__local__echo" not in await tools.tools(enabled_only=True)
    assert "mcp__local__add" in await tools.tools(enabled_only=True)
    await expect_error(
        tools.stub.ExecuteTool(execute_request("mcp__local__echo", text="hi")),
        grpc.StatusCode.FAILED_PRECONDITION, "disabled",
    )
    assert stdio_files.seen() == []

    approval = await tools.stub.UpdateTool(update("mcp__local__add", "requires_approval", requires_approval=True))
    assert approval.requires_approval
    assert (await tools.stub.GetTool(tools_pb2.GetToolRequest(tool_id="mcp__local__add"))).requires_approval


async def test_a_changed_tool_list_is_listed_again(tools: Tools, stdio_files: ServerFiles) -> None:
    await tools.register_stdio("local", stdio_files)
    await tools.wait_for_state("local", CONNECTED)
    assert "mcp__local__extra" not in await tools.tools()
    await tools.stub.ExecuteTool(execute_request("mcp__local__grow", name="extra"))

    async def listed() -> bool:
        return "mcp__local__extra" in await tools.tools()

    await eventually(listed, "the new tool appearing after notifications/tools/list_changed")
    assert (await tools.stub.ExecuteTool(execute_request("mcp__local__extra"))).text == "extra"


async def test_a_slow_tool_is_stopped_at_the_time_limit(
    make_tools: Callable[..., Awaitable[Tools]], stdio_files: ServerFiles
) -> None:
    tools = await make_tools(TOOLS_TIMEOUT_SECONDS=1)
    await tools.register_stdio("local", stdio_files)
    await tools.wait_for_state("local", CONNECTED)
    started = time.monotonic()
    await expect_error(
        tools.stub.ExecuteTool(execute_request("mcp__local__slow", seconds=30)),
        grpc.StatusCode.DEADLINE_EXCEEDED, "did not finish within 1 s",
    )
    assert time.monotonic() - started < 5

    async def cancelled() -> bool:
        return {"tool": "slow", "cancelled": True} in stdio_files.seen()

    await eventually(cancelled, "the server being told the call was cancelled")
    usage = (await tools.stub.GetTool(tools_pb2.GetToolRequest(tool_id="mcp__local__slow"))).usage
    assert (usage.calls, usage.timeouts) == (1, 1)
    # The session survives a cancelled call.
    assert (await tools.stub.ExecuteTool(execute_request("mcp__local__echo", text="still here"))).text == "still here"


# --- availability ------------------------------------------------------------------------------------------------


async def test_tools_of_a_server_that_goes_away_are_unavailable_until_it_comes_back(
    tools: Tools, stdio_files: ServerFiles, http_server: HttpServer
) -> None:
    await tools.register_stdio("local", stdio_files)
    await tools.register_http("remote", http_server)
    await tools.wait_for_state("local", CONNECTED)
    remote = await tools.wait_for_state("remote", CONNECTED)
    assert list(remote.http.header_names) == ["Authorization"] and not remote.http.headers
    assert_no_secrets(remote)
    assert (await tools.stub.ExecuteTool(execute_request("mcp__remote__add", x=1, y=1))).text == "2"
    assert http_server.files.seen() == [{"tool": "add", "arguments": {"x": 1, "y": 1}}]

    # The stdio server's process dies, and cannot start again for now.
    stdio_files.refuse.touch()
    os.kill(int(stdio_files.pid.read_text()), signal.SIGKILL)
    local = await tools.wait_for_state("local", UNAVAILABLE)
    assert local.unavailable_reason
    listed = await tools.tools()
    add = listed["mcp__local__add"]
    assert not add.available and add.enabled
    assert add.unavailable_reason.startswith("the MCP server 'local' is unavailable: ")
    offered = await tools.tools(enabled_only=True)
    assert not any(tool_id_.startswith("mcp__local__") for tool_id_ in offered)
    assert "mcp__remote__add" in offered and "calculator" in offered
    await expect_error(
        tools.stub.ExecuteTool(execute_request("mcp__local__add", x=1, y=2)),
        grpc.StatusCode.UNAVAILABLE, "tool 'mcp__local__add' is unavailable", "the MCP server 'local' is unavailable",
    )

    # The HTTP server stops too.
    http_server.stop()
    await tools.wait_for_state("remote", UNAVAILABLE)
    assert not (await tools.tools())["mcp__remote__add"].available
    await expect_error(
        tools.stub.ExecuteTool(execute_request("mcp__remote__add", x=1, y=2)), grpc.StatusCode.UNAVAILABLE
    )

    # Both come back, and so do their tools.
    http_server.start()
    stdio_files.refuse.unlink()
    await tools.wait_for_state("remote", CONNECTED)
    await tools.wait_for_state("local", CONNECTED)
    offered = await tools.tools(enabled_only=True)
    assert "mcp__remote__add" in offered and "mcp__local__add" in offered
    assert (await tools.stub.ExecuteTool(execute_request("mcp__remote__add", x=20, y=22))).text == "42"
    assert (await tools.stub.ExecuteTool(execute_request("mcp__local__add", x=1, y=2))).text == "3"


async def test_deleting_a_server_closes_its_session_and_removes_its_tools(
    tools: Tools, stdio_files: ServerFiles
) -> None:
    await tools.register_stdio("local", stdio_files)
    await tools.wait_for_state("local", CONNECTED)
    pid = int(stdio_files.pid.read_text())
    assert process_alive(pid)
    await tools.stub.DeleteMcpServer(tools_pb2.DeleteMcpServerRequest(name="local"))
    assert not process_alive(pid)
    assert not any(tool_id_.startswith("mcp__local__") for tool_id_ in await tools.tools())
    await expect_error(
        tools.stub.ExecuteTool(execute_request("mcp__local__add", x=1, y=2)), grpc.StatusCode.NOT_FOUND
    )
    await expect_error(tools.server("local"), grpc.StatusCode.NOT_FOUND)
    await expect_error(
        tools.stub.DeleteMcpServer(tools_pb2.DeleteMcpServerRequest(name="local")), grpc.StatusCode.NOT_FOUND
    )


# --- ids and persistence -----------------------------------------------------------------------------------------


async def test_registered_servers_and_their_ids_survive_a_restart(
    tools: Tools, stdio_files: ServerFiles, http_server: HttpServer
) -> None:
    long_server = "a" + "b" * 31
    await tools.register_stdio(long_server, stdio_files)
    await tools.register_http("remote", http_server)
    await tools.wait_for_state(long_server, CONNECTED)
    await tools.wait_for_state("remote", CONNECTED)
    ids = sorted(tool_id_ for tool_id_ in await tools.tools() if tool_id_.startswith("mcp__"))
    assert len(ids) == 14
    assert all(len(tool_id_) <= 64 and FUNCTION_NAME.match(tool_id_) for tool_id_ in ids)
    long_id = tool_id(long_server, LONG_TOOL_NAME)
    dotted_id = tool_id(long_server, DOTTED_TOOL_NAME)
    assert long_id in ids and dotted_id in ids and len(long_id) == 64
    first_pid = int(stdio_files.pid.read_text())

    await tools.restart()
    assert not process_alive(first_pid)  # the stopped service stopped its stdio server
    await tools.wait_for_state(long_server, CONNECTED)
    await tools.wait_for_state("remote", CONNECTED)
    assert sorted(tool_id_ for tool_id_ in await tools.tools() if tool_id_.startswith("mcp__")) == ids
    assert int(stdio_files.pid.read_text()) != first_pid
    assert (await tools.stub.ExecuteTool(execute_request(long_id))).text == "long"
    assert (await tools.stub.ExecuteTool(execute_request(dotted_id, path="a.txt"))).text == "contents of a.txt"
    assert (await tools.stub.ExecuteTool(execute_request("mcp__remote__echo", text="back"))).text == "back"
    listed = await tools.stub.ListMcpServers(tools_pb2.ListMcpServersRequest(page_size=1))
    assert [server.name for server in listed.mcp_servers] == [long_server] and listed.next_page_token
    rest = await tools.stub.ListMcpServers(tools_pb2.ListMcpServersRequest(page_token=listed.next_page_token))
    assert [server.name for server in rest.mcp_servers] == ["remote"] and not rest.next_page_token


# --- validation and permissions ----------------------------------------------------------------------------------


def create(name: str, **transports: Any) -> tools_pb2.CreateMcpServerRequest:
    return tools_pb2.CreateMcpServerRequest(mcp_server=tools_pb2.McpServer(name=name, **transports))


STDIO = tools_pb2.McpStdioTransport(command="true")
HTTP = tools_pb2.McpHttpTransport(url="http://127.0.0.1:9/mcp")


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (create("", stdio=STDIO), "mcp_server.name is required"),
        (create("GitHub", stdio=STDIO), "must be a lowercase letter"),
        (create("a__b", stdio=STDIO), "must not contain '__'"),
        (create("x" * 33, stdio=STDIO), "at most 31"),
        (create("both", stdio=STDIO, http=HTTP), "exactly one of mcp_server.stdio"),
        (create("neither"), "exactly one of mcp_server.stdio"),
        (create("nocommand", stdio=tools_pb2.McpStdioTransport()), "stdio.command is required"),
        (create("badurl", http=tools_pb2.McpHttpTransport(url="ftp://host/x")), "http(s) URL"),
        (
            create("badheader", http=tools_pb2.McpHttpTransport(url="http://h/mcp", headers={"X": "a\nb"})),
            "on one line",
        ),
    ],
)
async def test_create_refuses_bad_registrations(
    tools: Tools, request_: tools_pb2.CreateMcpServerRequest, fragment: str
) -> None:
    await expect_error(tools.stub.CreateMcpServer(request_), grpc.StatusCode.INVALID_ARGUMENT, fragment)
    assert (await tools.stub.ListMcpServers(tools_pb2.ListMcpServersRequest())).mcp_servers == []


async def test_a_taken_name_already_exists(tools: Tools, stdio_files: ServerFiles) -> None:
    await tools.register_stdio("local", stdio_files)
    details = await expect_error(tools.register_stdio("local", stdio_files), grpc.StatusCode.ALREADY_EXISTS, "local")
    assert ENV_SECRET not in details


async def test_a_server_that_cannot_start_is_unavailable_with_the_reason(tools: Tools, tmp_path: Path) -> None:
    missing = tools_pb2.McpStdioTransport(command=str(tmp_path / "no-such-program"))
    await tools.stub.CreateMcpServer(create("ghost", stdio=missing))
    ghost = await tools.wait_for_state("ghost", UNAVAILABLE)
    assert "no-such-program" in ghost.unavailable_reason or "No such file" in ghost.unavailable_reason
    await expect_error(
        tools.stub.ExecuteTool(execute_request("mcp__ghost__anything")), grpc.StatusCode.UNAVAILABLE, "ghost"
    )


async def test_mcp_servers_are_for_admins(make_tools: Callable[..., Awaitable[Tools]]) -> None:
    user, admin = new_api_key(), new_api_key()
    tools = await make_tools(
        AUTH_API_KEYS=f"alice:user:{digest(user)},root:admin:{digest(admin)}", PLATFORM_SERVICE_TOKEN="service-token"
    )

    def as_(key: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {key}"),)

    for call in (
        tools.stub.CreateMcpServer(create("mine", http=HTTP), metadata=as_(user)),
        tools.stub.GetMcpServer(tools_pb2.GetMcpServerRequest(name="mine"), metadata=as_(user)),
        tools.stub.ListMcpServers(tools_pb2.ListMcpServersRequest(), metadata=as_(user)),
        tools.stub.DeleteMcpServer(tools_pb2.DeleteMcpServerRequest(name="mine"), metadata=as_(user)),
    ):
        await expect_error(call, grpc.StatusCode.PERMISSION_DENIED, "needs the admin role")
    created = await tools.stub.CreateMcpServer(create("mine", http=HTTP), metadata=as_(admin))
    assert created.name == "mine"


# --- web_search without a backend --------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["none", ""])
async def test_web_search_without_a_backend_is_unavailable_and_not_offered(
    make_tools: Callable[..., Awaitable[Tools]], backend: str
) -> None:
    tools = await make_tools(TOOLS_WEB_SEARCH_BACKEND=backend)
    web_search = (await tools.tools())["web_search"]
    assert not web_search.available and web_search.enabled
    assert "TOOLS_WEB_SEARCH_BACKEND" in web_search.unavailable_reason
    offered = await tools.tools(enabled_only=True)
    assert "web_search" not in offered and "calculator" in offered
    await expect_error(
        tools.stub.ExecuteTool(execute_request("web_search", query="grpc")),
        grpc.StatusCode.UNAVAILABLE, "no web search backend is configured",
    )


async def test_web_search_on_the_demo_corpus_is_available_and_says_so(tools: Tools) -> None:
    web_search = (await tools.tools(enabled_only=True))["web_search"]
    assert web_search.available and web_search.unavailable_reason == ""
    assert "offline demo corpus" in web_search.description
    response = await tools.stub.ExecuteTool(execute_request("web_search", query="grpc"))
    assert "from the offline demo corpus, not the live web" in response.text
