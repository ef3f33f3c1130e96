"""Helpers of the MCP sources' tests: a tools service restarted on one database, with shorthands to register
servers and wait for their state (Tools), fast settings, and checks that no secret leaks. The fixtures built on
them are in conftest.py beside this module; also used by test_secrets_at_rest.py."""

import os
import sys
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format

from agentplatform.tools.v1 import tools_pb2
from tests.tools.mcp_servers import ENV_SECRET, HEADER_SECRET, HttpServer, ServerFiles, eventually
from tests.tools.running_tools import RunningTools

#: Settings that make the tests quick: a ping every 0.2 s, reconnection pauses of at most 1 s; and let HTTP servers
#: be on 127.0.0.1 (the destination rules refuse loopback by default).
FAST = {
    "TOOLS_MCP_PING_SECONDS": 0.2, "TOOLS_MCP_RETRY_MAX_SECONDS": 1, "TOOLS_MCP_CONNECT_SECONDS": 10,
    "TOOLS_MCP_ALLOWED_HOSTS": "127.0.0.1",
}


CONNECTED = tools_pb2.MCP_SERVER_STATE_CONNECTED
UNAVAILABLE = tools_pb2.MCP_SERVER_STATE_UNAVAILABLE


@dataclass
class Tools(RunningTools):
    """A running tools service (restartable on one database) with shorthands for these tests."""


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
