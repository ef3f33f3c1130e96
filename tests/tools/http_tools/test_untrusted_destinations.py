"""Destinations as untrusted input (issue 15): IPv6 forms that carry a loopback, private or link-local IPv4 address
are refused, for HTTP tools and MCP servers alike, at registration and at every connection."""

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from agentplatform.tools.v1 import tools_pb2
from services.common.settings import SettingsError
from services.tools.http.destinations import DestinationPolicy, address_kind, embedded_ipv4
from tests.tools.conftest import SettingsFactory
from tests.tools.http_endpoint import Endpoint
from tests.tools.http_tools.helpers import Tools, expect_error, result_of
from tests.tools.http_tools.untrusted_helpers import json_reply, raw_server
from tests.tools.mcp_servers import HEADER_SECRET, HttpServer

# --- destinations -------------------------------------------------------------------------------------------------

#: IPv6 forms that carry an IPv4 address, each with the kind of what it carries.
EMBEDDED_FORMS = [
    ("64:ff9b::7f00:1", "127.0.0.1", "loopback"),  # NAT64
    ("64:ff9b::a9fe:a9fe", "169.254.169.254", "link-local"),
    ("64:ff9b::c0a8:101", "192.168.1.1", "private"),
    ("64:ff9b:1::a00:1", "10.0.0.1", "private"),  # local-use NAT64
    ("2002:7f00:1::", "127.0.0.1", "loopback"),  # 6to4
    ("2002:a9fe:a9fe::1", "169.254.169.254", "link-local"),
    ("::127.0.0.1", "127.0.0.1", "loopback"),  # IPv4-compatible
    ("::10.1.2.3", "10.1.2.3", "private"),
    ("::ffff:169.254.169.254", "169.254.169.254", "link-local"),  # IPv4-mapped
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1", "loopback"),  # Teredo: the client is NOT ~7f000001
    ("2606:4700::5efe:7f00:1", "127.0.0.1", "loopback"),  # ISATAP
    ("2606:4700::200:5efe:a9fe:a9fe", "169.254.169.254", "link-local"),
]


@pytest.mark.parametrize(("form", "carried", "kind"), EMBEDDED_FORMS)
def test_ipv6_forms_carrying_a_refused_ipv4_address_are_refused(form: str, carried: str, kind: str) -> None:
    assert ipaddress.IPv4Address(carried) in embedded_ipv4(ipaddress.ip_address(form)) or form.startswith("::ffff:")
    problem = DestinationPolicy.parse(["*"]).host_problem(form)
    assert problem is not None
    if address_kind(ipaddress.ip_address(form)) is None:  # a public IPv6 address: refused for what it carries
        assert f"carries {carried}, a {kind} address" in problem or form.startswith("::ffff:"), problem
    # Allowing private networks never opens link-local, wherever it is carried.
    opened = DestinationPolicy.parse(["*"], allow_private_networks=True).host_problem(form)
    assert (opened is not None) == (kind == "link-local"), opened


@pytest.mark.parametrize("form", ["64:ff9b::808:808", "2002:808:808::1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_ipv6_forms_carrying_a_public_address_pass(form: str) -> None:
    assert DestinationPolicy.parse(["*"]).host_problem(form) is None


@pytest.fixture
def resolve_to(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Make the event loop resolve a test name to addresses (DNS as an attacker controls it): the first given at
    the first lookup, the next at the next, the last from then on."""
    names: dict[str, list[str]] = {}
    loop_type = type(asyncio.get_event_loop_policy().get_event_loop())
    real = loop_type.getaddrinfo

    async def getaddrinfo(self: Any, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in names:
            answers = names[host]
            address = answers.pop(0) if len(answers) > 1 else answers[0]
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
            return [(family, socket.SOCK_STREAM, 6, "", sockaddr)]
        return await real(self, host, port, *args, **kwargs)

    monkeypatch.setattr(loop_type, "getaddrinfo", getaddrinfo)

    def resolve(name: str, *addresses: str) -> None:
        names[name] = list(addresses)

    return resolve


async def test_a_real_server_reached_through_an_embedded_form_is_refused(
    make_tools: Callable[..., Awaitable[Tools]], endpoint: Endpoint, resolve_to: Callable[..., None]
) -> None:
    resolve_to("mapped.test", "::ffff:127.0.0.1")  # Linux delivers this one to 127.0.0.1: the endpoint
    resolve_to("nat64.test", "64:ff9b::7f00:1")
    resolve_to("sixtofour.test", "2002:7f00:1::1")
    tools = await make_tools(TOOLS_HTTP_ALLOWED_HOSTS="*.test")
    for name in ("mapped", "nat64", "sixtofour"):
        await tools.create(name, endpoint.url("/echo", host=f"{name}.test"))
        await expect_error(
            tools.call(f"http__{name}", city="Lyon"), grpc.StatusCode.FAILED_PRECONDITION, "127.0.0.1", "loopback"
        )
    any_host = await make_tools(TOOLS_HTTP_ALLOWED_HOSTS="*")
    for form in ("64:ff9b::7f00:1", "2002:7f00:1::", "::127.0.0.1"):
        await expect_error(
            any_host.create("literal", f"http://[{form}]:{endpoint.port}/echo"), grpc.StatusCode.INVALID_ARGUMENT,
            "carries 127.0.0.1",
        )
    assert endpoint.received == []
    # The control: with loopback listed, the same tool reaches the endpoint through the mapped form, so the
    # refusal above is what kept it out.
    await tools.stop()
    listed = await make_tools(TOOLS_HTTP_ALLOWED_HOSTS="*.test,127.0.0.0/8")
    assert result_of(await listed.call("http__mapped", city="Lyon"))["json"] == {"city": "Lyon"}
    assert len(endpoint.received) == 1


# --- MCP servers' URLs -------------------------------------------------------------------------------------------


def _mcp_http(name: str, url: str, headers: dict[str, str] | None = None) -> tools_pb2.CreateMcpServerRequest:
    return tools_pb2.CreateMcpServerRequest(
        mcp_server=tools_pb2.McpServer(name=name, http=tools_pb2.McpHttpTransport(url=url, headers=headers))
    )


async def test_mcp_server_urls_follow_the_destination_rules_at_registration(
    make_tools: Callable[..., Awaitable[Tools]],
) -> None:
    tools = await make_tools()  # the defaults: any public host
    for url, kind in (
        ("http://127.0.0.1:9/mcp", "loopback"),
        ("http://169.254.169.254/mcp", "link-local"),
        ("http://[64:ff9b::a9fe:a9fe]/mcp", "link-local"),
        ("http://[2002:a00:1::]/mcp", "private"),
    ):
        await expect_error(
            tools.stub.CreateMcpServer(_mcp_http("remote", url)), grpc.StatusCode.INVALID_ARGUMENT,
            "mcp_server.http.url", kind, "TOOLS_MCP_ALLOWED_HOSTS",
        )
    narrow = await make_tools(TOOLS_MCP_ALLOWED_HOSTS="mcp.example.com")
    await expect_error(
        narrow.stub.CreateMcpServer(_mcp_http("remote", "https://evil.example.net/mcp")),
        grpc.StatusCode.INVALID_ARGUMENT, "TOOLS_MCP_ALLOWED_HOSTS",
    )
    created = await narrow.stub.CreateMcpServer(_mcp_http("remote", "https://mcp.example.com/mcp"))
    assert created.name == "remote"


async def test_mcp_server_urls_are_checked_again_at_every_connection(
    make_tools: Callable[..., Awaitable[Tools]], http_server: HttpServer
) -> None:
    allowed = await make_tools(TOOLS_MCP_ALLOWED_HOSTS="127.0.0.1", TOOLS_MCP_PING_SECONDS=0.2)
    await allowed.stub.CreateMcpServer(_mcp_http("remote", http_server.url, {"Authorization": HEADER_SECRET}))
    await _wait_for_state(allowed, "remote", tools_pb2.MCP_SERVER_STATE_CONNECTED)
    await allowed.stop()
    # The same registration (same database), under the default rules: loopback is refused before connecting.
    default = await make_tools(TOOLS_MCP_RETRY_MAX_SECONDS=1)
    server = await _wait_for_state(default, "remote", tools_pb2.MCP_SERVER_STATE_UNAVAILABLE)
    assert "loopback" in server.unavailable_reason and "TOOLS_MCP_ALLOWED_HOSTS" in server.unavailable_reason


async def test_an_mcp_server_whose_name_rebinds_to_loopback_is_never_connected_to(
    make_tools: Callable[..., Awaitable[Tools]], resolve_to: Callable[..., None]
) -> None:
    # The first lookup (the check before connecting) finds a public address, every later one 127.0.0.1, where a
    # server listens: the client's own connections go through the rules too, so it is never reached.
    async with raw_server(json_reply("{}")) as local:
        resolve_to("rebind.test", "93.184.215.14", "127.0.0.1")
        tools = await make_tools(TOOLS_MCP_ALLOWED_HOSTS="*.test", TOOLS_MCP_RETRY_MAX_SECONDS=1)
        await tools.stub.CreateMcpServer(_mcp_http("rebind", f"http://rebind.test:{local.port}/mcp"))
        server = await _wait_for_state(tools, "rebind", tools_pb2.MCP_SERVER_STATE_UNAVAILABLE)
        assert "loopback" in server.unavailable_reason, server
        await asyncio.sleep(1.5)  # a retry or two
        assert local.connections == 0


def test_a_bad_mcp_allow_list_entry_stops_the_service_at_start(make_settings: SettingsFactory) -> None:
    with pytest.raises(SettingsError, match="TOOLS_MCP_ALLOWED_HOSTS"):
        make_settings(TOOLS_MCP_ALLOWED_HOSTS="http://mcp.example.com/")


async def _wait_for_state(tools: Tools, name: str, state: int) -> tools_pb2.McpServer:
    deadline = time.monotonic() + 20
    while True:
        server = await tools.stub.GetMcpServer(tools_pb2.GetMcpServerRequest(name=name))
        if server.state == state or time.monotonic() > deadline:
            assert server.state == state, server
            return server
        await asyncio.sleep(0.1)
