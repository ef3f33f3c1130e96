"""The gateway in a run's trace (issue 19): with tracing on, Envoy makes a span per request, the child of a
caller's traceparent, exports it over OTLP/gRPC, and passes its own span on to the service as the parent; a
browser may send the header (CORS). Off, the config has no tracing at all."""

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from services.common import tracing
from services.launcher.gateway_config import AdminSocket, Upstream, render_gateway_config
from tests.gateway.conftest import GRPC_WEB, Gateway, RecordingUpstream, gateway_settings, grpc_web_frame
from tests.support.otlp import otlp_receiver

StartGateway = Callable[..., Gateway]

GET_RUN = "/agentplatform.runs.v1.RunService/GetRun"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def test_a_call_through_the_gateway_has_its_span_between_the_caller_and_the_service(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    with otlp_receiver() as receiver:
        host_port = receiver.endpoint.removeprefix("http://").rsplit(":", 1)
        gateway = start_gateway(tracing=(host_port[0], int(host_port[1])))
        response = httpx.post(
            gateway.url + GET_RUN, content=grpc_web_frame(),
            headers={**GRPC_WEB, "traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"}, timeout=10,
        )
        assert response.status_code == 200
        spans = receiver.wait_for(lambda spans: any(span.trace_id == TRACE_ID for span in spans), timeout=15)
    (span,) = [span for span in spans if span.trace_id == TRACE_ID]
    assert span.service == "gateway" and span.parent_id == CALLER_SPAN
    # The service is called with Envoy's span as the parent: its own span will be Envoy's child.
    (call,) = upstream.calls
    version, trace_id, parent, _ = call.metadata["traceparent"].split("-")
    assert (version, trace_id, parent) == ("00", TRACE_ID, span.span_id)


def test_a_browser_may_send_its_traceparent(start_gateway: StartGateway) -> None:
    gateway = start_gateway(cors_allowed_origins=["http://localhost:5173"])
    preflight = httpx.options(gateway.url + GET_RUN, headers={
        "origin": "http://localhost:5173",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,x-grpc-web,traceparent,tracestate",
    })
    allowed = {h.strip() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert {"traceparent", "tracestate"} <= allowed


def test_without_tracing_the_config_has_none(tmp_path: Path) -> None:
    upstream = Upstream("127.0.0.1", 1)
    config = render_gateway_config(
        gateway_settings(), admin=AdminSocket(tmp_path / "admin.sock"),
        engine=upstream, runs=upstream, tools=upstream, agents=upstream, service_token="t",
    )
    assert "otlp_collector" not in config
    assert "envoy.tracers.opentelemetry" not in config


@pytest.mark.parametrize(
    ("variables", "collector"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, ("collector", 4317)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:14317"}, ("127.0.0.1", 14317)),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("localhost", 4317)),
        # Not for Envoy's exporter: TLS, OTLP/HTTP, the console.
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4317"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, None),
        ({"OTEL_TRACES_EXPORTER": "console"}, None),
    ],
)
def test_the_gateway_exports_where_the_services_do(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], collector: tuple[str, int] | None
) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert tracing.otlp_grpc_collector() == collector
