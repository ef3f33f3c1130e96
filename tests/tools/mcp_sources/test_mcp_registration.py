"""Registering MCP servers: bad registrations and taken names refused, a server that cannot start unavailable
with the reason, registration for admins only; and web_search offered only with a backend."""

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from agentplatform.tools.v1 import tools_pb2
from services.common.auth import digest, new_api_key
from tests.tools.conftest import execute_request
from tests.tools.mcp_servers import ENV_SECRET, ServerFiles
from tests.tools.mcp_sources.helpers import UNAVAILABLE, Tools, expect_error

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
