"""Property: whatever a grpc-web or Connect caller sends through the real Envoy (any body, any grpc-timeout or
connect-timeout-ms, up to a thousand headers), the answer comes promptly and is never INTERNAL or an HTTP 5xx; and
the gateway keeps serving good calls afterwards."""

import base64
import time
from collections.abc import Callable

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.gateway.conftest import (  # noqa: F401 (start_gateway, upstream: the gateway tests' fixtures)
    GRPC_WEB,
    Gateway,
    grpc_web_frame,
    grpc_web_status,
    pytestmark,
    start_gateway,
    upstream,
)
from tests.gateway.test_edge import LIST_TOOLS, grpc_call

PROMPTLY = 2.0
INTERNAL = 13

#: Header values httpx can send: printable ASCII (Envoy's HTTP/1 codec refuses control characters itself).
_value = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
_timeouts = st.one_of(
    _value,
    st.builds(lambda digits, unit: digits + unit, st.from_regex(r"[0-9]{1,12}", fullmatch=True),
              st.sampled_from(list("HMSmunsh"))),
    st.integers(-(10**12), 10**12).map(str),
)
_bodies = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=100).map(grpc_web_frame),
    st.lists(st.binary(max_size=20).map(grpc_web_frame), max_size=4).map(b"".join),
    st.tuples(st.integers(0, 255), st.integers(0, 2**32 - 1), st.binary(max_size=20)).map(
        lambda parts: bytes([parts[0]]) + parts[1].to_bytes(4, "big") + parts[2]
    ),
)
_protocols = st.sampled_from(["grpc-web", "grpc-web-text", "connect", "connect-json"])


def _headers(protocol: str) -> dict[str, str]:
    return {
        "grpc-web": GRPC_WEB,
        "grpc-web-text": {"content-type": "application/grpc-web-text", "x-grpc-web": "1"},
        "connect": {"content-type": "application/proto", "connect-protocol-version": "1"},
        "connect-json": {"content-type": "application/json", "connect-protocol-version": "1"},
    }[protocol]


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway]) -> Gateway:  # noqa: F811 (the fixture imported above)
    """One Envoy for every example of the test."""
    return start_gateway()


@given(
    protocol=_protocols,
    body=_bodies,
    timeout=st.none() | _timeouts,
    connect_timeout=st.none() | _timeouts,
    extra_headers=st.integers(0, 1000),
    as_text=st.booleans(),
)
def test_any_call_is_answered_promptly_and_never_internal(
    gateway: Gateway,
    protocol: str,
    body: bytes,
    timeout: str | None,
    connect_timeout: str | None,
    extra_headers: int,
    as_text: bool,
) -> None:
    headers = dict(_headers(protocol))
    if timeout is not None:
        headers["grpc-timeout"] = timeout
    if connect_timeout is not None:
        headers["connect-timeout-ms"] = connect_timeout
    headers.update({f"x-h{i}": "v" for i in range(extra_headers)})
    if protocol == "grpc-web-text" and as_text:
        body = base64.b64encode(body)
    started = time.monotonic()
    response = httpx.post(gateway.url + LIST_TOOLS, content=body, headers=headers, timeout=PROMPTLY + 5)
    assert time.monotonic() - started < PROMPTLY
    assert response.status_code < 500, (response.status_code, response.content[:200])
    if protocol.startswith("grpc-web"):
        assert grpc_web_status(response)[0] != INTERNAL, (response.headers, response.content[:200])
    else:
        assert response.status_code == 200 or response.json().get("code") != "internal", response.content[:200]
    # The gateway, and its upstream connection, still serve a good call.
    assert grpc_web_status(httpx.post(gateway.url + LIST_TOOLS, content=grpc_web_frame(), headers=GRPC_WEB,
                                      timeout=PROMPTLY + 5)) == (0, "")
    assert grpc_call(gateway, LIST_TOOLS) == b""

