"""The gateway's edge with a recording upstream behind it: what is routed, what is refused and how, the limits,
the timeouts and the admin interface. Each test runs its own Envoy (rendered by the launcher's renderer)."""

import socket
import threading
import time
from collections.abc import Callable

import grpc
import httpx
import pytest

from tests.gateway.conftest import GRPC_WEB, Gateway, RecordingUpstream, grpc_web_frame, grpc_web_status

LIST_TOOLS = "/agentplatform.tools.v1.ToolService/ListTools"
PUBLIC_METHODS = [
    "/agentplatform.engine.v1.AgentService/StreamChat",
    "/agentplatform.runs.v1.RunService/GetRun",
    LIST_TOOLS,
]
NOT_ROUTED = [
    "/agentplatform.runs.internal.v1.ExecutionService/AppendSteps",
    "/agentplatform.tools.internal.v1.ToolExecutionService/ExecuteTool",
    "/agentplatform.tools.v2.ToolService/ListTools",
    "/grpc.health.v1.Health/Check",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/nope",
]
NO_LIMIT_WARNING = "There is no configured limit to the number of allowed active downstream connections"

StartGateway = Callable[..., Gateway]


def grpc_call(gateway: Gateway, method: str, request: bytes = b"", **kwargs: object) -> grpc.RpcError | bytes:
    """A native gRPC (HTTP/2) unary call through the gateway: the answer's bytes, or the error."""
    with grpc.insecure_channel(gateway.address) as channel:
        try:
            return channel.unary_unary(method)(request, timeout=10, **kwargs)
        except grpc.RpcError as error:
            return error


def post(gateway: Gateway, path: str, content: bytes = b"", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(gateway.url + path, content=content, headers=GRPC_WEB if headers is None else headers, timeout=10)


# --- routing ----------------------------------------------------------------------------------------------------


def test_public_services_are_routed(start_gateway: StartGateway, upstream: RecordingUpstream) -> None:
    gateway = start_gateway()
    for method in PUBLIC_METHODS:
        response = post(gateway, method, grpc_web_frame())
        assert (response.status_code, grpc_web_status(response)) == (200, (0, "")), method
        assert grpc_call(gateway, method) == b""
    assert [call.method for call in upstream.calls] == [m for m in PUBLIC_METHODS for _ in (1, 2)]


def test_unknown_and_internal_services_are_unimplemented_at_the_gateway(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = start_gateway()
    for method in NOT_ROUTED:
        status, message = grpc_web_status(post(gateway, method, grpc_web_frame()))
        assert status == grpc.StatusCode.UNIMPLEMENTED.value[0], method
        assert message == "no such public gRPC method on this gateway"
        error = grpc_call(gateway, method)
        assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.UNIMPLEMENTED, method
        assert "no such public gRPC method" in (error.details() or "")
    assert upstream.calls == [], "nothing but the public services may reach a service"


def test_a_get_or_a_wrong_content_type_is_told_what_the_gateway_expects(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = start_gateway()
    for method in ("GET", "PUT", "DELETE"):
        response = httpx.request(method, gateway.url + LIST_TOOLS, timeout=10)
        assert response.status_code == 405, method
        assert response.headers["content-type"] == "text/plain"
        assert "application/grpc-web+proto" in response.text and "application/connect+proto" in response.text
    assert httpx.get(gateway.url + "/", timeout=10).status_code == 405
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/grpcx"):
        response = post(gateway, LIST_TOOLS, b"hello", {"content-type": content_type})
        assert response.status_code == 415, content_type
        assert "expects POST with content-type" in response.text
    response = post(gateway, LIST_TOOLS, b"hello", {})
    assert response.status_code == 415
    assert upstream.calls == []


def test_cors_preflight_from_an_allowed_origin_only(start_gateway: StartGateway, upstream: RecordingUpstream) -> None:
    gateway = start_gateway(cors_allowed_origins=["http://localhost:5173"])
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,x-grpc-web,connect-protocol-version,connect-timeout-ms",
    }
    allowed = httpx.options(gateway.url + LIST_TOOLS, headers={**preflight, "origin": "http://localhost:5173"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:5173"
    allowed_headers = {h.strip() for h in allowed.headers["access-control-allow-headers"].split(",")}
    assert {"connect-protocol-version", "connect-timeout-ms", "x-grpc-web", "authorization"} <= allowed_headers
    exposed = {h.strip() for h in allowed.headers["access-control-expose-headers"].split(",")}
    assert {"grpc-status", "grpc-message", "grpc-status-details-bin", "x-request-id"} <= exposed

    other = httpx.options(gateway.url + LIST_TOOLS, headers={**preflight, "origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    # An OPTIONS that is no preflight is no call either.
    assert httpx.options(gateway.url + LIST_TOOLS).status_code == 405

    call = post(gateway, LIST_TOOLS, grpc_web_frame(), {**GRPC_WEB, "origin": "http://localhost:5173"})
    assert call.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert upstream.calls and all(call.method == LIST_TOOLS for call in upstream.calls)


# --- limits -----------------------------------------------------------------------------------------------------


def test_an_oversized_body_is_resource_exhausted(start_gateway: StartGateway, upstream: RecordingUpstream) -> None:
    gateway = start_gateway(max_request_bytes=4096)
    assert grpc_web_status(post(gateway, LIST_TOOLS, grpc_web_frame(b"x" * 3000))) == (0, "")
    response = post(gateway, LIST_TOOLS, grpc_web_frame(b"x" * 5000))
    status, message = grpc_web_status(response)
    assert status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert message == "the request is larger than the gateway's limit of 4096 bytes"
    # gRPC over HTTP/2 sends no content-length: Envoy sees the size only as DATA frames arrive, so the bound holds
    # to within one frame (16 KiB).
    error = grpc_call(gateway, LIST_TOOLS, b"x" * (4096 + 20_000))
    assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [len(call.request) for call in upstream.calls] == [3000]


def test_oversized_headers_are_refused(start_gateway: StartGateway, upstream: RecordingUpstream) -> None:
    gateway = start_gateway(max_request_headers_kb=4)
    assert grpc_web_status(post(gateway, LIST_TOOLS, grpc_web_frame(), {**GRPC_WEB, "x-pad": "y" * 2000}))[0] == 0
    response = post(gateway, LIST_TOOLS, grpc_web_frame(), {**GRPC_WEB, "x-pad": "y" * 5000})
    assert response.status_code == 431
    assert response.text == "Request Header Fields Too Large"
    assert len(upstream.calls) == 1


def test_connections_above_the_limit_are_closed(start_gateway: StartGateway) -> None:
    gateway = start_gateway(max_connections=2)
    assert NO_LIMIT_WARNING not in gateway.log()
    held = [socket.create_connection(("127.0.0.1", gateway.settings.port), timeout=5) for _ in range(2)]
    try:
        for sock in held:  # both served, and kept open
            sock.sendall(b"GET / HTTP/1.1\r\nhost: gateway\r\n\r\n")
            assert sock.recv(64).startswith(b"HTTP/1.1 405")
        with socket.create_connection(("127.0.0.1", gateway.settings.port), timeout=5) as third:
            try:
                third.sendall(b"GET / HTTP/1.1\r\nhost: gateway\r\n\r\n")
                assert third.recv(64) == b"", "a connection over the limit must be closed unanswered"
            except ConnectionResetError:
                pass
    finally:
        for sock in held:
            sock.close()
    # Once one closes, a new one is served.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if httpx.get(gateway.url + "/", timeout=5).status_code == 405:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the gateway served no new connection after the held ones closed")


def test_a_body_larger_than_the_connection_buffer_still_flows(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    # The buffer limit bounds what Envoy holds per connection (back-pressure), not what a request may carry: a
    # request larger than it but within GATEWAY_MAX_REQUEST_BYTES arrives whole.
    gateway = start_gateway(connection_buffer_bytes=16 * 1024, max_request_bytes=256 * 1024)
    payload = bytes(range(256)) * 512  # 128 KiB
    assert grpc_web_status(post(gateway, LIST_TOOLS, grpc_web_frame(payload))) == (0, "")
    assert upstream.calls[-1].request == payload
    error = grpc_call(gateway, LIST_TOOLS, payload * 3)
    assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_global_rate_limit_answers_resource_exhausted(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = start_gateway(rate_limit_per_second=1, rate_limit_burst=3)
    statuses = [grpc_web_status(post(gateway, LIST_TOOLS, grpc_web_frame())) for _ in range(5)]
    assert statuses[:3] == [(0, "")] * 3
    limited = (grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], "the gateway's request rate limit is exceeded: retry later")
    assert statuses[3:] == [limited] * 2
    error = grpc_call(gateway, LIST_TOOLS)
    assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(upstream.calls) == 3


# --- timeouts ---------------------------------------------------------------------------------------------------


def _stalled_upload(gateway: Gateway, sent: bytes, declared: int) -> tuple[float, bytes]:
    """POST a grpc-web request that declares `declared` body bytes but sends only `sent`; how long until Envoy
    answered or closed, and what it said."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", gateway.settings.port), timeout=30) as sock:
        sock.sendall(
            f"POST {LIST_TOOLS} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/grpc-web+proto\r\n"
            f"x-grpc-web: 1\r\ncontent-length: {declared}\r\n\r\n".encode()
            + sent
        )
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return time.monotonic() - started, answer


def test_a_stalled_upload_is_reset_within_the_bound(start_gateway: StartGateway, upstream: RecordingUpstream) -> None:
    gateway = start_gateway(request_timeout_seconds=1.5)
    # A truncated grpc-web frame (it announces 100 bytes, 10 arrive) and a body shorter than its content-length.
    frame = b"\x00" + (100).to_bytes(4, "big") + b"x" * 10
    for sent, declared in ((frame, len(frame) + 90), (grpc_web_frame(b"abc"), 500)):
        elapsed, answer = _stalled_upload(gateway, sent, declared)
        assert 1.0 <= elapsed < 5, f"reset after {elapsed:.1f}s, the bound is 1.5s"
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert upstream.calls == [], "an incomplete request must not reach a service"


def test_the_request_timeout_spares_a_complete_request(start_gateway: StartGateway) -> None:
    gateway = start_gateway(request_timeout_seconds=1)
    results: list[tuple[int | None, str]] = []
    threads = [
        threading.Thread(target=lambda: results.append(grpc_web_status(post(gateway, LIST_TOOLS, grpc_web_frame()))))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    time.sleep(1.5)
    assert results == [(0, "")] * 3
    assert grpc_web_status(post(gateway, LIST_TOOLS, grpc_web_frame())) == (0, "")


# --- admin ------------------------------------------------------------------------------------------------------


def test_the_admin_interface_is_not_on_the_public_listener(start_gateway: StartGateway) -> None:
    gateway = start_gateway()
    for path in ("/quitquitquit", "/", "/stats", "/config_dump", "/healthcheck/fail", "/logging?level=trace"):
        response = httpx.post(gateway.url + path, timeout=10)
        assert response.status_code == 415, path
        assert httpx.get(gateway.url + path, timeout=10).status_code == 405
        assert grpc_call(gateway, path) is not None
    time.sleep(0.5)
    assert gateway.process.poll() is None, "a request to the public listener stopped Envoy"
    assert gateway.admin("GET", "/ready").text.strip() == "LIVE"
    assert oct(gateway.admin_socket.stat().st_mode & 0o777) == oct(0o600)
    # The admin socket does work (so the test above has teeth): /quitquitquit through it stops Envoy.
    assert gateway.admin("POST", "/quitquitquit").status_code == 200
    gateway.process.wait(10)


def test_an_upstream_counts_as_healthy_within_seconds_of_serving(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    """Envoy starts with the services, so its first checks fail. Before any traffic, it checked again only every
    60 s (no_traffic_interval's default) and routed in panic mode meanwhile; now every second."""
    upstream.serving = False
    gateway = start_gateway(healthy=False)
    deadline = time.monotonic() + 10
    while "failed_active_hc" not in gateway.admin("GET", "/clusters").text:
        assert time.monotonic() < deadline, "the upstream never failed its health check"
        time.sleep(0.05)
    upstream.serving = True
    serving_since = time.monotonic()
    while "failed_active_hc" in (clusters := gateway.admin("GET", "/clusters").text):
        assert time.monotonic() - serving_since < 10, f"still unhealthy 10 s after it began serving:\n{clusters}"
        time.sleep(0.05)
    assert "health_flags::healthy" in clusters
    print(f"healthy {time.monotonic() - serving_since:.2f} s after it began serving")
