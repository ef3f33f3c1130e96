"""MCP servers as tool sources, over real gRPC against real MCP servers (mcp_test_server.py over stdio and
streamable HTTP): the id scheme, and registering, listing and calling their tools.

Availability and restarts are in test_mcp_connections.py, validation and permissions in
test_mcp_registration.py."""

import sys
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest
from google.protobuf import json_format

from agentplatform.tools.v1 import tools_pb2
from services.tools.mcp.naming import FUNCTION_NAME, server_name_problem, server_of, tool_id
from tests.tools.conftest import execute_request
from tests.tools.mcp_servers import ServerFiles, eventually
from tests.tools.mcp_sources.helpers import CONNECTED, Tools, assert_no_secrets, expect_error, update

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
    assert server.tool_count == 8 and server.HasField("last_connected_time") and server.HasField("create_time")
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
