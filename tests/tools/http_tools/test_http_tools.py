"""HTTP tools ("tools without code"), over real gRPC against a real HTTP server the test runs (the `endpoint`
fixture; the tests allow 127.0.0.1 through TOOLS_HTTP_ALLOWED_HOSTS, which is what lets the tools service reach
it): creating and listing them, and their persistence, replicas, deletion and permissions.

Calls and where they may go are in test_http_calls.py."""

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format

from agentplatform.tools.v1 import tools_pb2
from services.common.auth import digest, new_api_key
from tests.tools.http_endpoint import Endpoint
from tests.tools.http_tools.helpers import SCHEMA, SECRET, Tools, assert_no_secret, expect_error, struct
from tests.tools.mcp_servers import server_files

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
