"""OpenTelemetry traces for every service: set up once per process (services.common.process), off unless the
standard OTEL_* variables configure an exporter.

Tracing is on when OTEL_TRACES_EXPORTER names an exporter (`otlp`, `console`, ...) or, with that variable unset,
when an OTLP endpoint is given (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); never with
OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none. Everything else (the endpoint, headers, OTEL_TRACES_SAMPLER,
OTEL_BSP_* batching, OTEL_RESOURCE_ATTRIBUTES, OTEL_PROPAGATORS) is read by the SDK itself. OTEL_SERVICE_NAME
defaults to the service's name.

Off, `enabled()` is False and the callers (the RPC interceptors, the engine's spans) skip their tracing
altogether: no span objects, no context switches, nothing on the hot path. Who uses it: the server interceptor
(a SERVER span per RPC, services.common.rpc.interceptor), `dial` (trace context into outgoing calls,
services.common.rpc.channels), the engine (GenAI spans, services.engine.spans) and its executor link with the runs
service (the context in each call's message), and the launcher (Envoy's spans go to `otlp_grpc_collector()`).
"""

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from opentelemetry.context import Context

# The SDK (about 4 MiB of every process's RSS) is imported only where tracing is configured: it is off by default,
# and the API above is all the callers need then (issue 22: the engine's memory).
if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

#: The instrumentation scope of every span the platform makes.
SCOPE = "agentplatform"

#: The GenAI conventions' switch for prompts, answers and tool arguments in spans (they may hold personal data).
CAPTURE_CONTENT_VARIABLE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

_provider: "TracerProvider | None" = None
_capture_content = False


def enabled() -> bool:
    """Whether this process records spans (configure_tracing found an exporter)."""
    return _provider is not None


def capture_content() -> bool:
    """Whether spans may carry message content (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true)."""
    return _capture_content


def exporter_names() -> list[str]:
    """The span exporters (entry-point names) the environment asks for; [] when tracing is off.

    The SDK's own parsing of OTEL_TRACES_EXPORTER and OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL; the only difference
    is the default: the SDK's is `otlp`, the platform's is off unless an OTLP endpoint is set (a service should not
    try to reach a collector nobody asked for)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    if "OTEL_TRACES_EXPORTER" in os.environ:
        from opentelemetry.sdk._configuration import _get_exporter_names

        return _get_exporter_names("traces")
    if any(os.environ.get(name) for name in _ENDPOINT_VARIABLES):
        from opentelemetry.sdk._configuration import _get_exporter_entry_point

        return [_get_exporter_entry_point("otlp", "traces")]
    return []


def otlp_grpc_collector() -> tuple[str, int] | None:
    """The (host, port) of the OTLP/gRPC endpoint the environment sends spans to over plain text (Envoy's
    gateway sends its spans there too); None when tracing is off, goes elsewhere (console, OTLP/HTTP), or the
    endpoint is TLS (https://), which the gateway's exporter is not set up for."""
    if "otlp_proto_grpc" not in exporter_names():
        return None
    endpoint = next((os.environ[name] for name in _ENDPOINT_VARIABLES if os.environ.get(name)), "")
    url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint or 'localhost:4317'}")
    if url.scheme != "http" or not url.hostname:
        return None
    return url.hostname, url.port or 4317


def configure_tracing(service: str) -> bool:
    """Set up this process's tracer provider from the environment, with `service` as its default service name;
    False (and nothing set up) when tracing is not configured. A configuration the SDK refuses (an unknown
    exporter or protocol) raises its error, naming the value."""
    global _provider, _capture_content
    names = exporter_names()
    if not names:
        return False
    from opentelemetry.sdk._configuration import _import_exporters
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporters, _, _ = _import_exporters(names, [], [])
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER, read by the SDK
    for exporter in exporters.values():
        provider.add_span_processor(BatchSpanProcessor(exporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    _capture_content = os.environ.get(CAPTURE_CONTENT_VARIABLE, "").strip().lower() == "true"
    log.info("traces to %s (service %s)", ", ".join(names), resource.attributes.get(SERVICE_NAME))
    return True


def shutdown_tracing() -> None:
    """Export what is still buffered and stop the exporters (at the process's stop)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def tracer() -> trace.Tracer:
    """The platform's tracer (the SDK's when tracing is on)."""
    return _provider.get_tracer(SCOPE) if _provider is not None else trace.get_tracer(SCOPE)


#: google.rpc codes the RPC conventions count as a server span's error (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED,
#: INTERNAL, UNAVAILABLE, DATA_LOSS); the others are the caller's.
_SERVER_ERRORS = frozenset({2, 4, 12, 13, 14, 15})


def start_rpc_span(method: str, metadata: Mapping[str, str | bytes]) -> trace.Span:
    """A SERVER span for the call of `method` (/package.Service/Method), named and attributed after the RPC
    conventions, the child of the trace context in the call's `metadata` (a new trace without one)."""
    name = method.lstrip("/")
    service, _, rpc_method = name.partition("/")
    return tracer().start_span(
        name,
        context=extract(metadata),
        kind=trace.SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc_method},
    )


def rpc_status(span: trace.Span, code: int) -> None:
    """The status `code` (google.rpc.Code) a call ended with, on its span."""
    span.set_attribute("rpc.grpc.status_code", code)
    if code in _SERVER_ERRORS:
        span.set_status(trace.StatusCode.ERROR)


@contextmanager
def rpc_span(method: str, metadata: Mapping[str, str | bytes]) -> Iterator[trace.Span | None]:
    """start_rpc_span's span, current while the block runs; None, and no span, with tracing off."""
    if _provider is None:
        yield None
        return
    span = start_rpc_span(method, metadata)
    with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
        yield span


def extract(metadata: Mapping[str, str | bytes]) -> Context:
    """The trace context an incoming call carries (W3C traceparent and tracestate in its metadata)."""
    return propagate.extract({k: v for k, v in metadata.items() if isinstance(v, str)})


def inject() -> list[tuple[str, str]]:
    """The current trace context as metadata for an outgoing call (traceparent, tracestate)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())
