"""Tracing: off unless the OTEL_* variables configure it; with it on, a SERVER span per RPC that joins the caller's
trace (W3C traceparent in the metadata), and channels made by `dial` that pass the trace on."""

import os
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from services.common import errors, tracing
from services.common.auth import Authenticator
from services.common.rpc.channels import dial
from services.common.rpc.server import ServiceBinding, start_server

SERVICE = "agentplatform.runs.v1.RunService"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment without any OTEL_* variable."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_off_without_configuration(otel_env: pytest.MonkeyPatch) -> None:
    assert tracing.exporter_names() == []
    assert tracing.configure_tracing("runs") is False
    assert not tracing.enabled()


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, ["otlp_proto_grpc"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317"}, ["otlp_proto_grpc"]),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp_proto_grpc"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, []),
    ],
)
def test_which_exporters(otel_env: pytest.MonkeyPatch, variables: dict[str, str], expected: list[str]) -> None:
    for name, value in variables.items():
        otel_env.setenv(name, value)
    assert tracing.exporter_names() == expected


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaegerx"}, "jaegerx"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"},
         "carrier-pigeon"),
    ],
)
def test_a_configuration_the_sdk_refuses_is_an_error_naming_the_value(
    otel_env: pytest.MonkeyPatch, variables: dict[str, str], named: str
) -> None:
    # run_service turns it into a start-up error naming the OTEL_* settings.
    for name, value in variables.items():
        otel_env.setenv(name, value)
    with pytest.raises(RuntimeError, match=named):
        tracing.configure_tracing("runs")
    assert not tracing.enabled()


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on for this test, its spans kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_provider", provider)
    yield exporter
    provider.shutdown()


class RelayingRuns(runs_pb2_grpc.RunServiceServicer):
    """GetRun("relay") asks the same server for GetRun("leaf") over a dialled channel, GetRun("watch") for
    WatchRun("leaf") (a stream); "missing" is NOT_FOUND."""

    def __init__(self) -> None:
        self.address = ""

    async def GetRun(self, request: runs_pb2.GetRunRequest, context: grpc.aio.ServicerContext) -> runs_pb2.Run:
        if request.run_id == "missing":
            raise errors.NotFound("no such run")
        if request.run_id == "relay":
            async with dial(self.address) as channel:
                await runs_pb2_grpc.RunServiceStub(channel).GetRun(runs_pb2.GetRunRequest(run_id="leaf"), timeout=5)
        if request.run_id == "watch":
            async with dial(self.address) as channel:
                watch = runs_pb2_grpc.RunServiceStub(channel).WatchRun(runs_pb2.WatchRunRequest(run_id="leaf"))
                assert len([event async for event in watch]) == 1
        return runs_pb2.Run(id=request.run_id)

    async def WatchRun(
        self, request: runs_pb2.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[runs_pb2.RunEvent]:
        yield runs_pb2.RunEvent()


@pytest.fixture
async def server(spans: InMemorySpanExporter) -> AsyncIterator[RelayingRuns]:
    servicer = RelayingRuns()
    running = await start_server(
        [ServiceBinding(SERVICE, lambda s: runs_pb2_grpc.add_RunServiceServicer_to_server(servicer, s))],
        "127.0.0.1",
        0,
        Authenticator.development(),
    )
    servicer.address = f"127.0.0.1:{running.port}"
    yield servicer
    await running.stop(0)


async def test_server_spans_join_the_callers_trace(
    server: RelayingRuns, spans: InMemorySpanExporter
) -> None:
    servicer = server
    async with grpc.aio.insecure_channel(servicer.address) as channel:
        await runs_pb2_grpc.RunServiceStub(channel).GetRun(
            runs_pb2.GetRunRequest(run_id="relay"),
            metadata=(("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01"),),
            timeout=5,
        )
    finished = spans.get_finished_spans()
    assert len(finished) == 2
    leaf, relay = finished  # the inner call ends first
    for span in finished:
        assert span.name == f"{SERVICE}/GetRun"
        assert span.kind == SpanKind.SERVER
        assert f"{span.context.trace_id:032x}" == TRACE_ID
        assert dict(span.attributes or {}) == {
            "rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": "GetRun", "rpc.grpc.status_code": 0,
        }
    assert relay.parent is not None and f"{relay.parent.span_id:016x}" == CALLER_SPAN
    # The dialled call carried the relay's span: the leaf's span is its child.
    assert leaf.parent is not None and leaf.parent.span_id == relay.context.span_id


async def test_a_dialled_stream_carries_the_trace_too(server: RelayingRuns, spans: InMemorySpanExporter) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        await runs_pb2_grpc.RunServiceStub(channel).GetRun(runs_pb2.GetRunRequest(run_id="watch"), timeout=5)
    watch, relay = spans.get_finished_spans()
    assert (watch.name, relay.name) == (f"{SERVICE}/WatchRun", f"{SERVICE}/GetRun")
    assert watch.parent is not None and watch.parent.span_id == relay.context.span_id


async def test_a_call_without_traceparent_starts_a_trace_and_a_client_error_is_not_the_servers(
    server: RelayingRuns, spans: InMemorySpanExporter
) -> None:
    servicer = server
    async with grpc.aio.insecure_channel(servicer.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await runs_pb2_grpc.RunServiceStub(channel).GetRun(runs_pb2.GetRunRequest(run_id="missing"), timeout=5)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    (span,) = spans.get_finished_spans()
    assert span.parent is None
    assert (span.attributes or {})["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert span.status.status_code == StatusCode.UNSET  # NOT_FOUND is the caller's error, not the server's
