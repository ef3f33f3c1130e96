"""MCP servers' connections, over real gRPC against real MCP servers: tools unavailable while their server is away
and back when it returns, a deleted server's session closed, and registered servers and their ids surviving a
restart."""

import os
import signal

import grpc

from agentplatform.tools.v1 import tools_pb2
from services.tools.mcp.naming import FUNCTION_NAME, tool_id
from tests.tools.conftest import execute_request
from tests.tools.mcp_servers import HttpServer, ServerFiles
from tests.tools.mcp_sources.helpers import (
    CONNECTED,
    UNAVAILABLE,
    Tools,
    assert_no_secrets,
    expect_error,
    process_alive,
)
from tests.tools.mcp_test_server import DOTTED_TOOL_NAME, LONG_TOOL_NAME

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
    assert len(ids) == 16  # 8 tools of each server
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
