"""Malformed calls through the real Envoy (a recording grpcio upstream behind it): an empty or multi-message body,
grpc-web-text that is not base64, a timeout outside the gRPC or Connect grammar, too many headers. Each is refused
at once with a specific status in the caller's protocol (gRPC, grpc-web, Connect), reaches no service, and leaves
the gateway's upstream connection serving the next call."""

import base64
import time
from collections.abc import Callable

import grpc
import httpx
import pytest

from tests.gateway.conftest import GRPC_WEB, Gateway, RecordingUpstream, grpc_web_frame, grpc_web_status
from tests.gateway.test_edge import LIST_TOOLS, grpc_call

StartGateway = Callable[..., Gateway]
#: An answer this late is no refusal (an empty body once waited for the stream idle timeout, over 130 s).
PROMPTLY = 2.0
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
GRPC_WEB_TEXT = {"content-type": "application/grpc-web-text", "x-grpc-web": "1"}
CONNECT = {"content-type": "application/proto", "connect-protocol-version": "1"}
CONNECT_JSON = {"content-type": "application/json", "connect-protocol-version": "1"}


@pytest.fixture
def gateway(start_gateway: StartGateway) -> Gateway:
    return start_gateway()


def timed_post(gateway: Gateway, content: bytes, headers: dict[str, str]) -> httpx.Response:
    """A POST of LIST_TOOLS that must be answered within PROMPTLY."""
    started = time.monotonic()
    response = httpx.post(gateway.url + LIST_TOOLS, content=content, headers=headers, timeout=PROMPTLY + 5)
    assert time.monotonic() - started < PROMPTLY, f"answered after {time.monotonic() - started:.1f} s"
    return response


def assert_still_serving(gateway: Gateway, upstream: RecordingUpstream, calls_before: int) -> None:
    """Nothing reached the service, and the next good calls (grpc-web, then gRPC on Envoy's same upstream
    connection) are served: a bad grpc-timeout used to fail grpcio's HPACK parser for later calls too."""
    assert len(upstream.calls) == calls_before
    assert grpc_web_status(timed_post(gateway, grpc_web_frame(), GRPC_WEB)) == (0, "")
    assert grpc_call(gateway, LIST_TOOLS) == b""


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        (b"", GRPC_WEB, INVALID_ARGUMENT, "the request body has 0 messages; every method of this API takes"),
        (grpc_web_frame() * 2, GRPC_WEB, INVALID_ARGUMENT, "the request body has 2 messages"),
        (b"", GRPC_WEB_TEXT, INVALID_ARGUMENT, "the request body has 0 messages"),
        (b"!!!!", GRPC_WEB_TEXT, INVALID_ARGUMENT, "the request is malformed (grpc_base_64_decode_failed)"),
        (b"AAAAAAA", GRPC_WEB_TEXT, INVALID_ARGUMENT, "the request is malformed (grpc_base_64_decode_failed_bad_size)"),
        (grpc_web_frame(), {**GRPC_WEB, "grpc-timeout": "-1S"}, INVALID_ARGUMENT, "grpc-timeout '-1S' is not a"),
        (grpc_web_frame(), {**GRPC_WEB, "grpc-timeout": "abc"}, INVALID_ARGUMENT, "grpc-timeout 'abc' is not a"),
        (grpc_web_frame(), {**GRPC_WEB, "grpc-timeout": "123456789S"}, INVALID_ARGUMENT,
         "grpc-timeout '123456789S' is not a timeout: a positive integer of at most 8 digits"),
        (grpc_web_frame(), {**GRPC_WEB, "grpc-timeout": "0S"}, INVALID_ARGUMENT, "grpc-timeout '0S' is not a timeout"),
        (grpc_web_frame(), {**GRPC_WEB, "grpc-timeout": "5s"}, INVALID_ARGUMENT, "grpc-timeout '5s' is not a timeout"),
        (grpc_web_frame(), {**GRPC_WEB, "grpc-timeout": "1n"}, DEADLINE_EXCEEDED,
         "the call's deadline (grpc-timeout 1n) is under a millisecond"),
        (grpc_web_frame(), {**GRPC_WEB, "grpc-timeout": "999u"}, DEADLINE_EXCEEDED, "the call's deadline"),
        (grpc_web_frame(), {**GRPC_WEB, **{f"x-h{i}": "v" for i in range(1000)}}, RESOURCE_EXHAUSTED,
         "the request has 10"),
    ],
    ids=["empty", "two-messages", "text-empty", "text-not-base64", "text-bad-length", "timeout-negative",
         "timeout-letters", "timeout-9-digits", "timeout-zero", "timeout-bad-unit",
         "timeout-1ns", "timeout-999us", "1000-headers"],
)
def test_a_malformed_grpc_web_call_is_refused_at_once(
    gateway: Gateway, upstream: RecordingUpstream, body: bytes, headers: dict[str, str], status: int, says: str
) -> None:
    response = timed_post(gateway, body, headers)
    assert response.status_code == 200
    code, message = grpc_web_status(response)
    assert code == status, (code, message)
    assert message.startswith(says), message
    assert_still_serving(gateway, upstream, 0)


def test_good_grpc_web_text_and_timeouts_pass(gateway: Gateway, upstream: RecordingUpstream) -> None:
    text = base64.b64encode(grpc_web_frame())
    assert grpc_web_status(timed_post(gateway, text, GRPC_WEB_TEXT)) == (0, "")
    for timeout in ("10S", "99999999m", "1H", "5000000u", "99999999n"):
        assert grpc_web_status(timed_post(gateway, grpc_web_frame(), {**GRPC_WEB, "grpc-timeout": timeout})) == (0, "")
    assert len(upstream.calls) == 6


# (A valid timeout of more than 10 digits passes: the bridge turns it into a valid grpc-timeout.)
@pytest.mark.parametrize("timeout", ["0", "-1", "abc", "99999999999999999999", "1.5", ""])
@pytest.mark.parametrize("headers", [CONNECT, CONNECT_JSON], ids=["proto", "json"])
def test_a_bad_connect_timeout_is_invalid_argument_in_connect_terms(
    gateway: Gateway, upstream: RecordingUpstream, headers: dict[str, str], timeout: str
) -> None:
    body = b"{}" if headers is CONNECT_JSON else b""
    response = timed_post(gateway, body, {**headers, "connect-timeout-ms": timeout})
    # Connect's error for invalid_argument: HTTP 400 and a JSON body with the code and the reason.
    assert response.status_code == 400, (response.status_code, response.content[:300])
    error = response.json()
    assert error["code"] == "invalid_argument"
    assert "is not a timeout" in error["message"], error
    assert_still_serving(gateway, upstream, 0)


def test_a_good_connect_timeout_passes(gateway: Gateway, upstream: RecordingUpstream) -> None:
    assert timed_post(gateway, b"", {**CONNECT, "connect-timeout-ms": "5000"}).status_code == 200
    assert timed_post(gateway, b"{}", {**CONNECT_JSON, "connect-timeout-ms": "9999999999"}).status_code == 200
    assert len(upstream.calls) == 2


def test_too_many_headers_are_resource_exhausted_in_every_protocol(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    many = [(f"x-h{i}", "v") for i in range(1000)]
    started = time.monotonic()
    error = grpc_call(gateway, LIST_TOOLS, metadata=many)
    assert time.monotonic() - started < PROMPTLY
    assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert "the gateway takes at most 100" in (error.details() or "")
    # Many tiny headers, within the byte limit (max_headers_count is not what refuses them).
    error = grpc_call(gateway, LIST_TOOLS, metadata=[(f"h{i}", "") for i in range(5000)])
    assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    response = timed_post(gateway, b"", {**CONNECT, **dict(many)})
    assert (response.status_code, response.json()["code"]) == (429, "resource_exhausted")
    # As many as a call may have pass.
    assert grpc_call(gateway, LIST_TOOLS, metadata=[(f"x-h{i}", "v") for i in range(90)]) == b""
    assert len(upstream.calls) == 1
    assert_still_serving(gateway, upstream, 1)
