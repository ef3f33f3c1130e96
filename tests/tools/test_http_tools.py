"""HTTP tools ("tools without code"), over real gRPC against a real HTTP server the test runs (starlette under
uvicorn, on a free port of 127.0.0.1, in the test's event loop; it records every request it receives). The tests
allow 127.0.0.1 through TOOLS_HTTP_ALLOWED_HOSTS, which is what lets the tools service reach it; every server and
service a test starts is stopped by its fixture."""

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import pytest_asyncio
import uvicorn
from google.protobuf import field_mask_pb2, json_format, struct_pb2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from agentplatform.tools.v1 import tools_pb2
from services.common.auth import digest, new_api_key
from services.common.settings import SettingsError
from services.tools.app import ToolsApp, start_tools
from services.tools.http.destinations import DestinationPolicy, parse_address
from tests.conftest import free_port
from tests.support.stubs import tools_stubs
from tests.tools.conftest import SettingsFactory, execute_request
from tests.tools.test_mcp_sources import server_files

#: A header value given at creation: it reaches the endpoint, and never a response.
SECRET = "Bearer http-secret-5c1d9a"
#: Settings that let the tools service reach the test's server on 127.0.0.1 (by address).
LOCAL = {"TOOLS_HTTP_ALLOWED_HOSTS": "127.0.0.1", "TOOLS_HTTP_SYNC_SECONDS": 0.2}
#: Length of the body /big answers with.
BIG_BODY_BYTES = 300_000
#: How long /slow takes to answer.
SLOW_SECONDS = 3.0

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "units": {"type": "array", "items": {"type": "string"}},
        "metric": {"type": "boolean"},
    },
    "required": ["city"],
    "additionalProperties": False,
}


# --- the endpoint the tools call ---------------------------------------------------------------------------------


@dataclass
class Received:
    """One request the test server received."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Endpoint:
    """The test's HTTP server and what it received."""

    port: int
    received: list[Received] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


def endpoint_app(endpoint: Endpoint) -> Starlette:
    async def record(request: Request) -> Received:
        received = Received(
            request.method, request.url.path, list(request.query_params.multi_items()),
            {key.lower(): value for key, value in request.headers.items()}, await request.body(),
        )
        endpoint.received.append(received)
        return received

    async def echo(request: Request) -> Response:
        received = await record(request)
        return JSONResponse({
            "method": received.method,
            "query": received.query,
            "json": json.loads(received.body) if received.body else None,
            "weather": "sunny",
        })

    async def fail(request: Request) -> Response:
        await record(request)
        return PlainTextResponse("boom: the forecast database is on fire", status_code=500)

    async def text(request: Request) -> Response:
        await record(request)
        return PlainTextResponse("plain words, not JSON")

    async def big(request: Request) -> Response:
        await record(request)
        return PlainTextResponse("x" * BIG_BODY_BYTES)

    async def slow(request: Request) -> Response:
        await record(request)
        await asyncio.sleep(SLOW_SECONDS)
        return JSONResponse({"late": True})

    async def redirect(request: Request) -> Response:
        await record(request)
        return RedirectResponse("/echo", status_code=302)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(routes=[
        Route("/echo", echo, methods=methods),
        Route("/fail", fail, methods=methods),
        Route("/text", text, methods=methods),
        Route("/big", big, methods=methods),
        Route("/slow", slow, methods=methods),
        Route("/redirect", redirect, methods=methods),
    ])


@pytest_asyncio.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    """The test HTTP server on a free port of 127.0.0.1, stopped afterwards."""
    endpoint = Endpoint(free_port())
    config = uvicorn.Config(
        endpoint_app(endpoint), host="127.0.0.1", port=endpoint.port, log_level="warning", lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises why it could not start
        await asyncio.sleep(0.02)
    try:
        yield endpoint
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


# --- the tools service -------------------------------------------------------------------------------------------


@dataclass
class Tools:
    """A running tools service and its stub; `restart` stops it and starts another on the same database."""

    make: Callable[[], Awaitable[ToolsApp]]
    app: ToolsApp | None = None
    channel: grpc.aio.Channel | None = None
    stub: Any = None
    #: Every response message the test saw, to look for the secret in.
    seen: list[Any] = field(default_factory=list)

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

    async def create(self, name: str, url: str, method: int = tools_pb2.HTTP_METHOD_POST, **fields: Any) -> Any:
        fields.setdefault("description", f"The {name} tool.")
        fields.setdefault("headers", {"Authorization": SECRET, "X-Team": "forecasts"})
        if "parameters" not in fields:
            fields["parameters"] = struct(SCHEMA)
        spec = tools_pb2.HttpToolSpec(name=name, url=url, method=method, **fields)
        tool = await self.stub.CreateTool(tools_pb2.CreateToolRequest(http=spec))
        self.seen.append(tool)
        return tool

    async def tools(self) -> dict[str, tools_pb2.Tool]:
        response = await self.stub.ListTools(tools_pb2.ListToolsRequest())
        self.seen.append(response)
        return {tool.id: tool for tool in response.tools}

    async def get(self, tool_id: str) -> tools_pb2.Tool:
        tool = await self.stub.GetTool(tools_pb2.GetToolRequest(tool_id=tool_id))
        self.seen.append(tool)
        return tool

    async def call(self, tool_id: str, **arguments: Any) -> Any:
        response = await self.stub.ExecuteTool(execute_request(tool_id, **arguments))
        self.seen.append(response)
        return response


@pytest_asyncio.fixture
async def make_tools(make_settings: SettingsFactory) -> AsyncIterator[Callable[..., Awaitable[Tools]]]:
    """Start tools services (LOCAL settings plus overrides, all on tmp_path's database); stopped afterwards."""
    started: list[Tools] = []

    async def build(**overrides: Any) -> Tools:
        tools = Tools(lambda: start_tools(make_settings(**{**LOCAL, **overrides})))
        started.append(tools)
        await tools.start()
        return tools

    yield build
    for tools in started:
        await tools.stop()


@pytest_asyncio.fixture
async def tools(make_tools: Callable[..., Awaitable[Tools]]) -> Tools:
    return await make_tools()


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def assert_no_secret(*messages: Any) -> None:
    for message in messages:
        text = json_format.MessageToJson(message) + str(message.SerializeToString())
        assert "http-secret" not in text


async def expect_error(call: Awaitable[Any], code: grpc.StatusCode, *fragments: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    assert exc.value.code() == code, exc.value.details()
    details = exc.value.details() or ""
    for fragment in fragments:
        assert fragment in details, details
    assert "http-secret" not in details
    return details


def result_of(response: Any) -> Any:
    return json_format.MessageToDict(response.result)


# --- creating and listing ----------------------------------------------------------------------------------------


async def test_a_created_tool_is_listed_with_its_schema_hints_and_header_names_never_the_secrets(
    tools: Tools, endpoint: Endpoint
) -> None:
    created = await tools.create("forecast", endpoint.url("/echo"), display_name="Forecast")
    assert created.id == "http__forecast"
    assert created.enabled and created.available and not created.mcp_server
    assert created.http.url == endpoint.url("/echo") and created.http.method == tools_pb2.HTTP_METHOD_POST
    assert list(created.http.header_names) == ["Authorization", "X-Team"]
    assert not created.http.headers
    await tools.create("lookup", endpoint.url("/echo"), tools_pb2.HTTP_METHOD_GET, headers={})

    listed = await tools.tools()
    assert {"http__forecast", "http__lookup", "calculator"} <= set(listed)
    forecast = listed["http__forecast"]
    assert json_format.MessageToDict(forecast.parameters) == SCHEMA
    schema = json_format.MessageToDict(forecast.schema)
    assert schema["function"]["name"] == "http__forecast"
    assert schema["function"]["description"] == "The forecast tool."
    assert forecast.display_name == "Forecast"
    # POST changes things; GET only reads. Both reach outside.
    assert not forecast.hints.read_only and forecast.hints.open_world
    lookup = listed["http__lookup"]
    assert lookup.hints.read_only and lookup.hints.open_world and not lookup.hints.destructive
    assert lookup.display_name == "lookup"

    got = await tools.get("http__forecast")
    assert list(got.http.header_names) == ["Authorization", "X-Team"]
    offered = await tools.stub.ListTools(tools_pb2.ListToolsRequest(enabled_only=True))
    assert "http__forecast" in {tool.id for tool in offered.tools}
    assert_no_secret(*tools.seen, offered)
    assert endpoint.received == []  # creating calls nothing


async def test_bad_definitions_are_invalid_arguments_and_a_taken_name_already_exists(
    tools: Tools, endpoint: Endpoint
) -> None:
    url = endpoint.url("/echo")
    for name in ("Weather", "9lives", "two__parts", "trailing_", "x" * 33, ""):
        await expect_error(tools.create(name, url), grpc.StatusCode.INVALID_ARGUMENT, "name")
    await expect_error(
        tools.create("bad_schema", url, parameters=struct({"type": "object", "properties": {"a": {"type": 5}}})),
        grpc.StatusCode.INVALID_ARGUMENT, "not a valid JSON schema",
    )
    await expect_error(
        tools.create("array_schema", url, parameters=struct({"type": "array"})),
        grpc.StatusCode.INVALID_ARGUMENT, "object",
    )
    await expect_error(
        tools.create("no_method", url, tools_pb2.HTTP_METHOD_UNSPECIFIED), grpc.StatusCode.INVALID_ARGUMENT, "method"
    )
    await expect_error(tools.create("no_text", url, description=" "), grpc.StatusCode.INVALID_ARGUMENT, "description")
    for bad_url in ("ftp://127.0.0.1/x", "not a url", f"http://user:pw@127.0.0.1:{endpoint.port}/echo"):
        await expect_error(tools.create("bad_url", bad_url), grpc.StatusCode.INVALID_ARGUMENT, "http.url")
    await expect_error(
        tools.create("host_header", url, headers={"Host": "elsewhere"}), grpc.StatusCode.INVALID_ARGUMENT, "Host"
    )
    await expect_error(
        tools.create("split", url, headers={"Authorization": "Bearer http-secret\r\nX: y"}),
        grpc.StatusCode.INVALID_ARGUMENT, "Authorization",
    )

    await tools.create("forecast", url)
    await expect_error(tools.create("forecast", url), grpc.StatusCode.ALREADY_EXISTS, "forecast")
    http_ids = {tool_id for tool_id in await tools.tools() if tool_id.startswith("http__")}
    assert http_ids == {"http__forecast"}  # none of the refused ones was stored


# --- calls -------------------------------------------------------------------------------------------------------


async def test_a_post_call_sends_the_arguments_as_json_with_the_stored_headers_and_returns_the_json(
    tools: Tools, endpoint: Endpoint
) -> None:
    await tools.create("forecast", endpoint.url("/echo"))
    response = await tools.call("http__forecast", city="Lyon", days=3, units=["c"], metric=True)

    [received] = endpoint.received
    assert received.method == "POST" and received.path == "/echo"
    # Integers arrive as integers (protobuf's Struct made them floats), the secret header as given.
    assert json.loads(received.body) == {"city": "Lyon", "days": 3, "units": ["c"], "metric": True}
    assert received.headers["content-type"] == "application/json"
    assert received.headers["authorization"] == SECRET and received.headers["x-team"] == "forecasts"
    assert received.headers["host"] == f"127.0.0.1:{endpoint.port}"
    result = result_of(response)
    assert result["weather"] == "sunny" and result["json"]["city"] == "Lyon"
    assert json.loads(response.text) == result  # the text the model reads is the JSON
    assert_no_secret(response)

    usage = (await tools.get("http__forecast")).usage
    assert usage.calls == 1 and usage.errors == 0


async def test_a_get_call_sends_the_arguments_as_query_parameters(tools: Tools, endpoint: Endpoint) -> None:
    await tools.create("lookup", endpoint.url("/echo?fixed=1"), tools_pb2.HTTP_METHOD_GET)
    response = await tools.call("http__lookup", city="Lyon", days=2, units=["c", "f"], metric=False)

    [received] = endpoint.received
    assert received.method == "GET" and received.body == b""
    assert sorted(received.query) == sorted(
        [("fixed", "1"), ("city", "Lyon"), ("days", "2"), ("units", "c"), ("units", "f"), ("metric", "false")]
    )
    assert received.headers["authorization"] == SECRET
    assert result_of(response)["method"] == "GET"


async def test_delete_sends_a_query_and_put_and_patch_a_json_body(tools: Tools, endpoint: Endpoint) -> None:
    methods = {"DELETE": tools_pb2.HTTP_METHOD_DELETE, "PUT": tools_pb2.HTTP_METHOD_PUT,
               "PATCH": tools_pb2.HTTP_METHOD_PATCH}
    for name, method in methods.items():
        await tools.create(name.lower(), endpoint.url("/echo"), method)
        await tools.call(f"http__{name.lower()}", city="Oslo")
    assert [(item.method, item.query, item.body) for item in endpoint.received] == [
        ("DELETE", [("city", "Oslo")], b""),
        ("PUT", [], b'{"city":"Oslo"}'),
        ("PATCH", [], b'{"city":"Oslo"}'),
    ]
    hints = {tool_id: tool.hints for tool_id, tool in (await tools.tools()).items()}
    assert not hints["http__delete"].read_only and hints["http__delete"].idempotent
    assert hints["http__put"].idempotent and not hints["http__patch"].idempotent


async def test_bad_arguments_are_refused_before_any_request_is_sent(tools: Tools, endpoint: Endpoint) -> None:
    await tools.create("forecast", endpoint.url("/echo"))
    await expect_error(tools.call("http__forecast", days=3), grpc.StatusCode.INVALID_ARGUMENT, "city")
    await expect_error(
        tools.call("http__forecast", city="Lyon", days=30), grpc.StatusCode.INVALID_ARGUMENT, "days"
    )
    await expect_error(
        tools.call("http__forecast", city="Lyon", extra="x"), grpc.StatusCode.INVALID_ARGUMENT, "extra"
    )
    assert endpoint.received == []


async def test_an_error_status_is_a_failure_with_the_status_and_the_body_and_a_text_body_is_text(
    tools: Tools, endpoint: Endpoint
) -> None:
    await tools.create("broken", endpoint.url("/fail"))
    await expect_error(
        tools.call("http__broken", city="Lyon"), grpc.StatusCode.INTERNAL, "500", "forecast database is on fire"
    )
    # A redirect is not followed: it is an answer outside 2xx like any other.
    await tools.create("moved", endpoint.url("/redirect"))
    await expect_error(tools.call("http__moved", city="Lyon"), grpc.StatusCode.INTERNAL, "302")
    assert [item.path for item in endpoint.received] == ["/fail", "/redirect"]

    await tools.create("words", endpoint.url("/text"))
    response = await tools.call("http__words", city="Lyon")
    assert response.text == "plain words, not JSON"
    assert response.result.string_value == "plain words, not JSON"
    usage = (await tools.get("http__broken")).usage
    assert usage.calls == 1 and usage.errors == 1


async def test_an_oversized_body_is_cut_with_the_marker(
    make_tools: Callable[..., Awaitable[Tools]], endpoint: Endpoint
) -> None:
    tools = await make_tools(TOOLS_MAX_RESULT_BYTES=4096)
    await tools.create("huge", endpoint.url("/big"), tools_pb2.HTTP_METHOD_GET)
    response = await tools.call("http__huge", city="Lyon")
    assert len(response.text.encode()) <= 4096
    assert response.text.startswith("xxxx")
    marker = f"[cut: the response was {BIG_BODY_BYTES:,} bytes; the limit is 4,096; the rest was not read]"
    assert response.text.endswith(marker)
    # The structured form is as bounded as the text.
    assert len(json.dumps(json_format.MessageToDict(response)["result"])) <= 4096 + 2


async def test_a_slow_endpoint_is_deadline_exceeded_at_the_time_limit(
    make_tools: Callable[..., Awaitable[Tools]], endpoint: Endpoint
) -> None:
    tools = await make_tools(TOOLS_TIMEOUT_SECONDS=1)
    await tools.create("sleepy", endpoint.url("/slow"))
    started = asyncio.get_running_loop().time()
    await expect_error(tools.call("http__sleepy", city="Lyon"), grpc.StatusCode.DEADLINE_EXCEEDED, "1 s")
    assert asyncio.get_running_loop().time() - started < SLOW_SECONDS
    usage = (await tools.get("http__sleepy")).usage
    assert usage.timeouts == 1


async def test_disabled_and_approval_settings_apply_to_http_tools(tools: Tools, endpoint: Endpoint) -> None:
    await tools.create("forecast", endpoint.url("/echo"))
    update = tools_pb2.UpdateToolRequest(
        tool=tools_pb2.Tool(id="http__forecast", enabled=False, requires_approval=True),
        update_mask=field_mask_pb2.FieldMask(paths=["enabled", "requires_approval"]),
    )
    updated = await tools.stub.UpdateTool(update)
    assert not updated.enabled and updated.requires_approval
    await expect_error(tools.call("http__forecast", city="Lyon"), grpc.StatusCode.FAILED_PRECONDITION, "disabled")
    offered = await tools.stub.ListTools(tools_pb2.ListToolsRequest(enabled_only=True))
    assert "http__forecast" not in {tool.id for tool in offered.tools}
    assert endpoint.received == []


# --- persistence, replicas, deletion -----------------------------------------------------------------------------


async def test_http_tools_and_their_settings_survive_a_restart(tools: Tools, endpoint: Endpoint) -> None:
    await tools.create("forecast", endpoint.url("/echo"))
    await tools.stub.UpdateTool(tools_pb2.UpdateToolRequest(
        tool=tools_pb2.Tool(id="http__forecast", requires_approval=True),
        update_mask=field_mask_pb2.FieldMask(paths=["requires_approval"]),
    ))
    await tools.restart()

    tool = (await tools.tools())["http__forecast"]
    assert tool.requires_approval and list(tool.http.header_names) == ["Authorization", "X-Team"]
    await tools.call("http__forecast", city="Lyon")
    assert endpoint.received[-1].headers["authorization"] == SECRET  # the secret was stored, not just its name
    assert_no_secret(*tools.seen)


async def test_another_replica_offers_and_withdraws_the_tools_created_and_deleted_through_one(
    make_tools: Callable[..., Awaitable[Tools]], endpoint: Endpoint
) -> None:
    first, second = await make_tools(), await make_tools()
    await first.create("forecast", endpoint.url("/echo"))

    async def seen_by_second(present: bool) -> None:
        for _ in range(100):
            if ("http__forecast" in await second.tools()) == present:
                return
            await asyncio.sleep(0.05)
        pytest.fail(f"the second replica did not {'offer' if present else 'withdraw'} the tool")

    await seen_by_second(True)
    await second.call("http__forecast", city="Lyon")
    assert len(endpoint.received) == 1
    await first.stub.DeleteTool(tools_pb2.DeleteToolRequest(tool_id="http__forecast"))
    await seen_by_second(False)


async def test_delete_removes_an_http_tool_and_its_settings_and_refuses_the_others(
    tools: Tools, endpoint: Endpoint
) -> None:
    await tools.create("forecast", endpoint.url("/echo"))
    await tools.stub.UpdateTool(tools_pb2.UpdateToolRequest(
        tool=tools_pb2.Tool(id="http__forecast", enabled=False), update_mask=field_mask_pb2.FieldMask(paths=["enabled"])
    ))
    await tools.stub.DeleteTool(tools_pb2.DeleteToolRequest(tool_id="http__forecast"))
    assert "http__forecast" not in await tools.tools()
    await expect_error(tools.call("http__forecast", city="Lyon"), grpc.StatusCode.NOT_FOUND, "http__forecast")
    await expect_error(
        tools.stub.DeleteTool(tools_pb2.DeleteToolRequest(tool_id="http__forecast")), grpc.StatusCode.NOT_FOUND
    )
    # Created again under the same name, it starts afresh: the old settings went with the old tool.
    assert (await tools.create("forecast", endpoint.url("/echo"))).enabled

    await expect_error(
        tools.stub.DeleteTool(tools_pb2.DeleteToolRequest(tool_id="calculator")),
        grpc.StatusCode.FAILED_PRECONDITION, "calculator", "UpdateTool",
    )
    assert "calculator" in await tools.tools()
    for unknown in ("no_such_tool", "mcp__nobody__nothing", "http__nothing"):
        delete = tools_pb2.DeleteToolRequest(tool_id=unknown)
        await expect_error(tools.stub.DeleteTool(delete), grpc.StatusCode.NOT_FOUND, unknown)
    await expect_error(tools.stub.DeleteTool(tools_pb2.DeleteToolRequest()), grpc.StatusCode.INVALID_ARGUMENT)


async def test_an_mcp_servers_tool_is_deleted_through_its_server(tools: Tools, tmp_path: Any) -> None:
    files = server_files(tmp_path / "stdio")
    transport = tools_pb2.McpStdioTransport(command=sys.executable, args=[str(files.script), "stdio"], env=files.env())
    await tools.stub.CreateMcpServer(
        tools_pb2.CreateMcpServerRequest(mcp_server=tools_pb2.McpServer(name="local", stdio=transport))
    )
    for _ in range(200):
        if "mcp__local__add" in await tools.tools():
            break
        await asyncio.sleep(0.1)
    await expect_error(
        tools.stub.DeleteTool(tools_pb2.DeleteToolRequest(tool_id="mcp__local__add")),
        grpc.StatusCode.FAILED_PRECONDITION, "'local'", "DeleteMcpServer",
    )
    assert "mcp__local__add" in await tools.tools()


async def test_creating_and_deleting_tools_is_for_admins(
    make_tools: Callable[..., Awaitable[Tools]], endpoint: Endpoint
) -> None:
    user, admin = new_api_key(), new_api_key()
    tools = await make_tools(
        AUTH_API_KEYS=f"alice:user:{digest(user)},root:admin:{digest(admin)}", PLATFORM_SERVICE_TOKEN="service-token"
    )

    def as_(key: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {key}"),)

    spec = tools_pb2.HttpToolSpec(
        name="forecast", description="d", url=endpoint.url("/echo"), method=tools_pb2.HTTP_METHOD_GET
    )
    await expect_error(
        tools.stub.CreateTool(tools_pb2.CreateToolRequest(http=spec), metadata=as_(user)),
        grpc.StatusCode.PERMISSION_DENIED, "admin",
    )
    created = await tools.stub.CreateTool(tools_pb2.CreateToolRequest(http=spec), metadata=as_(admin))
    assert created.id == "http__forecast"
    delete = tools_pb2.DeleteToolRequest(tool_id="http__forecast")
    await expect_error(tools.stub.DeleteTool(delete, metadata=as_(user)), grpc.StatusCode.PERMISSION_DENIED, "admin")
    listed = await tools.stub.ListTools(tools_pb2.ListToolsRequest(), metadata=as_(user))
    assert "http__forecast" in {tool.id for tool in listed.tools}  # reading is for everyone
    await tools.stub.DeleteTool(delete, metadata=as_(admin))


# --- where calls may go ------------------------------------------------------------------------------------------


async def test_a_host_that_is_not_allowed_is_refused_at_creation(
    make_tools: Callable[..., Awaitable[Tools]], endpoint: Endpoint
) -> None:
    tools = await make_tools(TOOLS_HTTP_ALLOWED_HOSTS="api.example.com,*.example.org")
    for url in ("https://evil.example.net/x", "https://example.org/x", endpoint.url("/echo")):
        await expect_error(tools.create("t", url), grpc.StatusCode.INVALID_ARGUMENT, "TOOLS_HTTP_ALLOWED_HOSTS")
    # The forms that are allowed pass (nothing is called at creation, so these need no server).
    await tools.create("one", "https://api.example.com/v1")
    await tools.create("two", "https://deep.api.example.org/v1")
    nothing_allowed = await make_tools(TOOLS_HTTP_ALLOWED_HOSTS="")
    await expect_error(
        nothing_allowed.create("t", endpoint.url("/echo")), grpc.StatusCode.INVALID_ARGUMENT,
        "TOOLS_HTTP_ALLOWED_HOSTS is empty",
    )


async def test_loopback_link_local_private_and_unspecified_addresses_are_refused_by_default(
    make_tools: Callable[..., Awaitable[Tools]],
) -> None:
    tools = await make_tools(TOOLS_HTTP_ALLOWED_HOSTS="*")
    for url, kind in (
        ("http://127.0.0.1:8080/x", "loopback"),
        ("http://[::1]/x", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/x", "link-local"),
        ("http://10.1.2.3/x", "private"),
        ("http://172.16.0.1/x", "private"),
        ("http://192.168.1.1/x", "private"),
        ("http://[fc00::1]/x", "private"),
        ("http://0.0.0.0/x", "unspecified"),
        ("http://[::ffff:127.0.0.1]/x", "loopback"),
    ):
        await expect_error(tools.create("t", url), grpc.StatusCode.INVALID_ARGUMENT, kind)
    assert (await tools.create("public", "https://93.184.215.14/x")).available

    # Allowing private networks opens loopback and private ranges, never the metadata endpoint.
    private = await make_tools(TOOLS_HTTP_ALLOWED_HOSTS="*", TOOLS_HTTP_ALLOW_PRIVATE_NETWORKS="true")
    await private.create("home", "http://192.168.1.1/x")
    await expect_error(
        private.create("meta", "http://169.254.169.254/latest/"), grpc.StatusCode.INVALID_ARGUMENT, "link-local"
    )
    # Listing the network does.
    listed = await make_tools(TOOLS_HTTP_ALLOWED_HOSTS="169.254.169.254/32")
    await listed.create("meta", "http://169.254.169.254/latest/")


async def test_a_name_that_resolves_to_loopback_is_refused_at_call_time(
    make_tools: Callable[..., Awaitable[Tools]], endpoint: Endpoint
) -> None:
    # "localhost" is allowed by name, so CreateTool takes it (a name is not resolved then: what it resolves to
    # may change); the call resolves it, finds 127.0.0.1 (or ::1), and refuses before connecting.
    tools = await make_tools(TOOLS_HTTP_ALLOWED_HOSTS="localhost")
    await tools.create("local", endpoint.url("/echo", host="localhost"))
    await expect_error(
        tools.call("http__local", city="Lyon"), grpc.StatusCode.FAILED_PRECONDITION,
        "'localhost' resolves to", "loopback", "TOOLS_HTTP_ALLOW_PRIVATE_NETWORKS",
    )
    assert endpoint.received == []

    # With private networks allowed, the same tool (same database) connects to the checked address, and the
    # Host header still names the host.
    await tools.stop()
    opened = await make_tools(TOOLS_HTTP_ALLOWED_HOSTS="localhost", TOOLS_HTTP_ALLOW_PRIVATE_NETWORKS="true")
    response = await opened.call("http__local", city="Lyon")
    assert result_of(response)["json"] == {"city": "Lyon"}
    [received] = endpoint.received
    assert received.headers["host"] == f"localhost:{endpoint.port}"


def test_the_allow_list_forms() -> None:
    policy = DestinationPolicy.parse(["API.example.com.", "*.example.org", "203.0.113.0/24", "10.0.0.7"])
    assert policy.host_problem("api.example.com") is None
    assert policy.host_problem("a.b.example.org") is None
    assert policy.host_problem("example.org") is not None  # "*." is for the names under the domain
    assert policy.host_problem("notexample.org") is not None
    assert policy.host_problem("203.0.113.9") is None
    assert policy.host_problem("10.0.0.7") is None  # listed: allowed although private
    assert policy.host_problem("10.0.0.8") is not None
    address = parse_address("10.0.0.7")
    assert address is not None and policy.address_problem("internal.example.org", address) is None
    other = parse_address("10.0.0.9")
    assert other is not None and "private" in (policy.address_problem("internal.example.org", other) or "")
    with pytest.raises(ValueError, match="not a host name"):
        DestinationPolicy.parse(["https://example.com"])


def test_a_bad_allow_list_entry_stops_the_service_at_start(make_settings: SettingsFactory) -> None:
    with pytest.raises(SettingsError, match="TOOLS_HTTP_ALLOWED_HOSTS"):
        make_settings(TOOLS_HTTP_ALLOWED_HOSTS="api.example.com/path")
