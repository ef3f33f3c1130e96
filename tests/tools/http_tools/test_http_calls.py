"""Calls of HTTP tools, over real gRPC against a real HTTP server the test runs: methods, arguments, headers,
error statuses, oversized and slow answers, settings; and where calls may go (allowed hosts, loopback, private
and link-local addresses refused)."""

import asyncio
import json
from collections.abc import Awaitable, Callable

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format

from agentplatform.tools.v1 import tools_pb2
from services.common.settings import SettingsError
from services.tools.http.destinations import DestinationPolicy, parse_address
from tests.tools.conftest import SettingsFactory
from tests.tools.http_endpoint import BIG_BODY_BYTES, SLOW_SECONDS, Endpoint
from tests.tools.http_tools.helpers import SECRET, Tools, assert_no_secret, expect_error, result_of

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
