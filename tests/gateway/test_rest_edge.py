"""The REST paths at the gateway's edge, with a recording upstream behind it: a REST call arrives as the method's
gRPC call, and what the gateway refuses by itself (limits, CORS, unknown paths) is refused in REST terms, JSON with
the HTTP status of its code. tests/e2e/test_rest.py drives the same paths against the real services."""

import time
from collections.abc import Callable

import httpx

from agentplatform.runs.v1 import runs_pb2
from tests.gateway.conftest import Gateway, RecordingUpstream

StartGateway = Callable[..., Gateway]


def rest_error(response: httpx.Response) -> tuple[int, int, str]:
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    return response.status_code, body["code"], body["message"]


def test_a_rest_call_reaches_its_method_as_grpc_with_its_fields(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = start_gateway()
    response = httpx.get(
        gateway.url + "/api/runs", params={"pageSize": 3, "state": "RUN_STATE_RUNNING"},
        headers={"authorization": "Bearer apk_x"}, timeout=10,
    )
    # The upstream answers an empty message: every field printed at its default.
    assert response.status_code == 200 and response.json() == {"runs": [], "nextPageToken": ""}
    assert not [name for name in response.headers if name.startswith("grpc-")], "the gRPC call's headers stay inside"
    [call] = upstream.calls
    assert call.method == "/agentplatform.runs.v1.RunService/ListRuns"
    assert runs_pb2.ListRunsRequest.FromString(call.request) == runs_pb2.ListRunsRequest(
        page_size=3, state=runs_pb2.RUN_STATE_RUNNING
    )
    # The key reaches the service as for any call; no identity header of the client's does.
    assert call.metadata["authorization"] == "Bearer apk_x"


def test_the_gateways_own_refusals_of_rest_calls_are_json(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = start_gateway(max_request_bytes=4096, rate_limit_per_second=1, rate_limit_burst=3)
    too_large = httpx.post(gateway.url + "/api/chat", json={"message": "x" * 5000}, timeout=10)
    assert rest_error(too_large) == (413, 8, "the request is larger than the gateway's limit of 4096 bytes")
    statuses = [httpx.get(gateway.url + "/api/tools", timeout=10) for _ in range(4)]
    assert rest_error(statuses[-1]) == (429, 8, "the gateway's request rate limit is exceeded: retry later")
    assert not any(call.method.endswith("/StreamChat") for call in upstream.calls)


def test_rest_paths_have_cors_for_allowed_origins_only(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = start_gateway(cors_allowed_origins=["http://localhost:5173"])
    preflight = {
        "access-control-request-method": "PATCH", "access-control-request-headers": "content-type,authorization"
    }
    allowed = httpx.options(
        gateway.url + "/api/tools/calculator", headers={**preflight, "origin": "http://localhost:5173"}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "PATCH" in allowed.headers["access-control-allow-methods"]
    other = httpx.options(
        gateway.url + "/api/tools/calculator", headers={**preflight, "origin": "http://evil.example"}
    )
    assert "access-control-allow-origin" not in other.headers

    call = httpx.get(gateway.url + "/api/tools", headers={"origin": "http://localhost:5173"}, timeout=10)
    assert call.status_code == 200 and call.headers["access-control-allow-origin"] == "http://localhost:5173"
    document = httpx.get(gateway.url + "/api/openapi.json", headers={"origin": "http://localhost:5173"}, timeout=10)
    assert document.json()["openapi"] == "3.1.0"
    assert document.headers["access-control-allow-origin"] == "http://localhost:5173"
    unknown = httpx.get(gateway.url + "/api/nothing", headers={"origin": "http://localhost:5173"}, timeout=10)
    assert rest_error(unknown)[:2] == (404, 5) and unknown.headers["access-control-allow-origin"]


def test_a_plain_json_post_to_a_grpc_path_is_refused_before_any_service(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = start_gateway(cors_allowed_origins=["http://localhost:5173"])
    for headers in ({}, {"origin": "http://localhost:5173"}):
        response = httpx.post(
            gateway.url + "/agentplatform.runs.v1.RunService/ListRuns", json={"pageSize": 1}, headers=headers,
            timeout=10,
        )
        assert response.status_code == 415
        assert "connect-protocol-version: 1" in response.text and "/api/" in response.text
    assert upstream.calls == []
    # Nor silent on the gateway's side: a line of its output says what it refused.
    refused = "gateway refused POST /agentplatform.runs.v1.RunService/ListRuns with HTTP 415 (direct_response)"
    deadline = time.monotonic() + 10
    while refused not in gateway.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)  # Envoy flushes its access log about once a second
    assert refused in gateway.log_path.read_text()
