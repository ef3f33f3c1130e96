"""Tool schemas, tool responses and destinations as untrusted input (issue 15), over real gRPC against real local
servers: a `$ref` to a server that never answers is refused and never contacted, and health answers meanwhile;
self-referencing and costly schemas are refused where they enter, naming the JSON pointer; patterns run on RE2; a
response nested 60,000 deep is a clear tool error; IPv6 forms that carry a loopback, private or link-local IPv4
address are refused, for HTTP tools and MCP servers alike."""

# The fixtures of the HTTP tools' and MCP sources' tests are imported, and test arguments redefine them.
# ruff: noqa: F811

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import mcp_types as types
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentplatform.tools.v1 import tools_pb2
from services.common.errors import Internal
from services.common.json_values import MAX_JSON_DEPTH
from services.common.settings import SettingsError
from services.tools.http.destinations import DestinationPolicy, address_kind, embedded_ipv4
from services.tools.http.specs import HttpToolSpec, HttpToolStore
from services.tools.mcp.connection import McpTool, output_of
from tests.tools.conftest import SettingsFactory
from tests.tools.test_http_tools import (  # noqa: F401  (make_tools and endpoint are fixtures used below)
    Endpoint,
    Tools,
    endpoint,
    expect_error,
    make_tools,
    result_of,
    struct,
)
from tests.tools.test_mcp_sources import HEADER_SECRET, HttpServer, http_server  # noqa: F401  (http_server is a fixture)

LOCAL = {"TOOLS_HTTP_ALLOWED_HOSTS": "127.0.0.1"}


# --- raw local servers -------------------------------------------------------------------------------------------


@dataclass
class RawServer:
    """A TCP server on 127.0.0.1 that counts its connections and answers each with `reply` (None: never)."""

    reply: bytes | None
    connections: int = 0
    server: asyncio.Server | None = None
    held: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.reply is None:
            self.held.append(writer)  # read nothing, answer nothing, keep the connection open
            return
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(self.reply)
            await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def raw_server(reply: bytes | None) -> AsyncIterator[RawServer]:
    server = RawServer(reply)
    server.server = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    try:
        yield server
    finally:
        for writer in server.held:
            writer.close()
        server.server.close()
        await server.server.wait_closed()


def json_reply(body: str) -> bytes:
    data = body.encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
        + f"Content-Length: {len(data)}\r\n\r\n".encode() + data
    )


async def health_latency(tools: Tools) -> float:
    """Seconds one health check of the service takes to answer."""
    assert tools.channel is not None
    started = time.perf_counter()
    response = await health_pb2_grpc.HealthStub(tools.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    return time.perf_counter() - started


# --- $ref ---------------------------------------------------------------------------------------------------------


async def test_a_ref_to_a_server_that_never_answers_is_refused_and_never_contacted(
    make_tools: Callable[..., Awaitable[Tools]],
) -> None:
    async with raw_server(None) as silent:
        tools = await make_tools(TOOLS_HTTP_ALLOWED_HOSTS="127.0.0.1", TOOLS_TIMEOUT_SECONDS=30)
        url = f"http://127.0.0.1:{silent.port}/schema.json"
        schema = {"type": "object", "properties": {"city": {"$ref": url}}}
        await expect_error(
            tools.create("weather", f"http://127.0.0.1:{silent.port}/x", parameters=struct(schema)),
            grpc.StatusCode.INVALID_ARGUMENT, "/properties/city/$ref", "never fetched",
        )
        # A tool stored before the checks (straight into the table): its calls refuse to use the schema, and
        # nothing is fetched either.
        assert tools.app is not None
        old = HttpToolSpec("legacy", "Legacy", "An old tool.", schema, f"http://127.0.0.1:{silent.port}/x", "POST")
        await HttpToolStore(tools.app.database).create(old)
        await tools.app.http_tools.sync()
        started = time.perf_counter()
        call = asyncio.ensure_future(tools.call("http__legacy", city="Lyon"))
        assert await health_latency(tools) < 2
        await expect_error(call, grpc.StatusCode.FAILED_PRECONDITION, "/properties/city/$ref", "recreate it")
        assert time.perf_counter() - started < 5
        assert silent.connections == 0


RECURSIVE_TREE = {
    "type": "object",
    "$defs": {"node": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
    "$ref": "#/$defs/node",
}


def _doubling(levels: int) -> dict[str, Any]:
    """allOf of two refs to a definition that does the same, `levels` deep: 2^levels schemas per value."""
    defs = {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]} for i in range(levels)}
    defs[f"d{levels}"] = {"type": "string"}
    return {"type": "object", "$defs": defs, "properties": {"x": {"$ref": "#/$defs/d0"}}}


@pytest.mark.parametrize(
    ("schema", "fragments"),
    [
        ({"type": "object", "$ref": "#"}, ["at /$ref", "never end"]),
        (
            {"type": "object", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
             "properties": {"x": {"$ref": "#/$defs/a"}}},
            ["/$defs/", "never end"],
        ),
        (
            {"type": "object", "$defs": {"a": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/a"}]}},
             "properties": {"x": {"$ref": "#/$defs/a"}}},
            ["/$defs/a/anyOf/1/$ref", "never end"],
        ),
        (_doubling(40), ["more than 2,000 schemas"]),
        (
            {"type": "object", "$defs": {f"c{i}": {"$ref": f"#/$defs/c{i + 1}"} for i in range(300)} | {"c300": {}},
             "properties": {"x": {"$ref": "#/$defs/c0"}}},
            ["nest through"],
        ),
        ({"type": "object", "properties": {"x": {"$ref": "https://json-schema.org/draft/2020-12/schema"}}},
         ["/properties/x/$ref", "never fetched"]),
        ({"type": "object", "$id": "https://example.com/s", "properties": {"x": {"$ref": "other.json"}}},
         ["/properties/x/$ref"]),
        ({"type": "object", "properties": {"x": {"$dynamicRef": "#meta"}}}, ["/properties/x/$dynamicRef"]),
        ({"type": "object", "properties": {"x": {"$schema": "http://json-schema.org/draft-04/schema#"}}},
         ["/properties/x/$schema"]),
        ({"type": "object", "properties": {"x": {"type": "string", "pattern": "(a)\\1"}}},
         ["/properties/x/pattern", "RE2"]),
        ({"type": "object", "properties": {"x": {"type": "string", "pattern": "(?<=a)b"}}},
         ["/properties/x/pattern", "RE2"]),
        ({"type": "object", "patternProperties": {"^(?!x)": {}}}, ["/patternProperties/^(?!x)", "RE2"]),
        ({"type": "object", "unevaluatedProperties": False, "patternProperties": {"^a": {}}},
         ["/unevaluatedProperties"]),
        ({"type": "object", "properties": {"x": {"type": 12}}}, ["/properties/x/type", "not a valid JSON schema"]),
        ({"type": "string"}, ["/type", "object"]),
    ],
)
async def test_bad_schemas_are_refused_at_creation_naming_where(
    make_tools: Callable[..., Awaitable[Tools]], schema: dict[str, Any], fragments: list[str]
) -> None:
    tools = await make_tools(**LOCAL)
    await expect_error(
        tools.create("t", "http://127.0.0.1:9/x", parameters=struct(schema)), grpc.StatusCode.INVALID_ARGUMENT,
        "http.parameters", *fragments,
    )
    assert await health_latency(tools) < 2


async def test_a_recursive_schema_that_descends_is_accepted_and_checks_every_level(
    tools: Tools, endpoint: Endpoint
) -> None:
    await tools.create("tree", endpoint.url("/echo"), parameters=struct(RECURSIVE_TREE))
    response = await tools.call("http__tree", kids=[{"kids": [{"kids": []}]}])
    assert result_of(response)["json"] == {"kids": [{"kids": [{"kids": []}]}]}
    await expect_error(
        tools.call("http__tree", kids=[{"kids": [{"kids": 3}]}]), grpc.StatusCode.INVALID_ARGUMENT,
        "at kids[0].kids[0].kids: 3.0 is not of type 'array'",
    )


async def test_non_finite_numbers_in_a_schema_or_in_arguments_are_invalid_arguments(
    tools: Tools, endpoint: Endpoint
) -> None:
    await expect_error(
        tools.create("inf", endpoint.url("/echo"), parameters=struct({"type": "object", "maximum": float("inf")})),
        grpc.StatusCode.INVALID_ARGUMENT, "http.parameters", "Infinity",
    )
    await tools.create("num", endpoint.url("/echo"), parameters=struct({"type": "object"}))
    await expect_error(tools.call("http__num", x=float("nan")), grpc.StatusCode.INVALID_ARGUMENT, "arguments", "NaN")
    assert endpoint.received == []


# --- patterns -----------------------------------------------------------------------------------------------------


async def test_patterns_run_on_re2_in_linear_time(tools: Tools, endpoint: Endpoint) -> None:
    evil = "^(a+)+$"
    schema = {
        "type": "object",
        "properties": {"word": {"type": "string", "pattern": evil}},
        "patternProperties": {evil: {"type": "integer"}},
        "additionalProperties": False,
    }
    await tools.create("words", endpoint.url("/echo"), parameters=struct(schema))
    hostile = "a" * 5000 + "b"
    started = time.perf_counter()
    await expect_error(tools.call("http__words", word=hostile), grpc.StatusCode.INVALID_ARGUMENT, "does not match")
    await expect_error(tools.call("http__words", **{hostile: 1}), grpc.StatusCode.INVALID_ARGUMENT, "not allowed")
    assert time.perf_counter() - started < 5  # Python's re would take longer than the universe's age
    response = await tools.call("http__words", word="aaaa", aaa=3)
    assert result_of(response)["json"] == {"word": "aaaa", "aaa": 3}


async def test_health_answers_while_a_costly_validation_runs(tools: Tools, endpoint: Endpoint) -> None:
    # Accepted at creation (2^8 schemas per item is under the bound), costly per call: every item of the array
    # goes through all of them, until the step budget stops it.
    schema = _doubling(8)
    schema["properties"] = {"items": {"type": "array", "items": {"$ref": "#/$defs/d0"}}}
    await tools.create("costly", endpoint.url("/echo"), parameters=struct(schema))
    started = time.perf_counter()
    call = asyncio.ensure_future(tools.call("http__costly", items=["fits"] * 2000))
    latencies: list[float] = []
    while not call.done():
        latencies.append(await health_latency(tools))
        await asyncio.sleep(0.05)
    duration = time.perf_counter() - started
    await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT, "50,000 steps")
    assert endpoint.received == []
    # The validation ran long enough to be measured, and the service answered health checks all along.
    assert duration > 0.3 and len(latencies) >= 3, (duration, latencies)
    assert max(latencies) < max(0.5, duration / 3), (duration, latencies)


async def test_health_answers_while_a_large_schema_is_checked_at_creation(tools: Tools) -> None:
    # The largest schema accepted (about 64 KB) takes a while to check against the metaschema and to walk.
    schema = {"type": "object", "properties": {f"p{index}": {"allOf": [{}, {}]} for index in range(1500)}}
    started = time.perf_counter()
    create = asyncio.ensure_future(tools.create("large", "http://127.0.0.1:9/x", parameters=struct(schema)))
    latencies: list[float] = []
    while not create.done():
        latencies.append(await health_latency(tools))
        await asyncio.sleep(0.02)
    duration = time.perf_counter() - started
    assert (await create).id == "http__large"
    assert max(latencies, default=0) < max(0.5, duration / 3), (duration, latencies)


# --- responses ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        ("[" * 60_000, grpc.StatusCode.INTERNAL, f"the tool's response is nested deeper than {MAX_JSON_DEPTH} levels"),
        (
            '{"a":' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1),
            grpc.StatusCode.INTERNAL,
            f"nested deeper than {MAX_JSON_DEPTH} levels",
        ),
        ('["' + "\\\"[" * 20_000 + '",' + "[" * 30_000, grpc.StatusCode.INTERNAL, "nested deeper"),
    ],
)
async def test_a_response_nested_too_deeply_is_a_clear_tool_error(
    make_tools: Callable[..., Awaitable[Tools]], body: str, code: grpc.StatusCode, fragment: str
) -> None:
    async with raw_server(json_reply(body)) as server:
        tools = await make_tools(**LOCAL, TOOLS_MAX_RESULT_BYTES=1024 * 1024)
        await tools.create("deep", f"http://127.0.0.1:{server.port}/x", parameters=struct({"type": "object"}))
        details = await expect_error(tools.call("http__deep"), code, fragment)
        assert "server log" not in details  # not the unexpected-error answer
        assert server.connections == 1


async def test_responses_as_deep_as_the_bound_or_with_non_finite_numbers_are_results_or_text(
    make_tools: Callable[..., Awaitable[Tools]],
) -> None:
    deep = '{"a":' * MAX_JSON_DEPTH + "1" + "}" * MAX_JSON_DEPTH
    async with raw_server(json_reply(deep)) as ok, raw_server(json_reply('{"x": NaN}')) as nan:
        tools = await make_tools(**LOCAL)
        await tools.create("ok", f"http://127.0.0.1:{ok.port}/x", parameters=struct({"type": "object"}))
        await tools.create("nan", f"http://127.0.0.1:{nan.port}/x", parameters=struct({"type": "object"}))
        value = result_of(await tools.call("http__ok"))
        for _ in range(MAX_JSON_DEPTH):
            value = value["a"]
        assert value == 1
        response = await tools.call("http__nan")
        assert response.text == '{"x": NaN}' and result_of(response) == '{"x": NaN}'  # the text, not a NaN


def test_an_mcp_result_nested_too_deeply_is_a_clear_tool_error() -> None:
    class Connection:
        name = "deep"

    tool = McpTool(Connection(), types.Tool(name="t", input_schema={"type": "object"}))  # type: ignore[arg-type]
    deep: Any = 1
    for _ in range(MAX_JSON_DEPTH + 1):
        deep = {"a": deep}
    with pytest.raises(Internal, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
        output_of(tool, types.CallToolResult(content=[], structured_content=deep))
    assert output_of(tool, types.CallToolResult(content=[], structured_content=deep["a"])).result == deep["a"]


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


@pytest_asyncio.fixture
async def tools(make_tools: Callable[..., Awaitable[Tools]]) -> Tools:
    return await make_tools(**LOCAL)
