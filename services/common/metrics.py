"""Prometheus metrics: each service process's `/metrics` endpoint, and the metrics of the gRPC server every service
runs (filled by services.common.rpc.interceptor) and of its calls to the other services (filled by the channels
services.common.rpc.channels dials).

Each domain declares its own metrics beside its code, in prometheus_client's registry of the process: the engine's
runs and model calls in services/engine/metrics.py, the store's leases and watchers in services/runs/metrics.py, the
tool calls and workers in services/tools/metrics.py. Names follow Prometheus conventions (base units, `_total` for
counters, `_seconds` for durations); labels take values from bounded sets (a method, a status code, a model, a tool),
never a run id or a user id, so a series count stays what a dashboard can hold.

The endpoint is prometheus_client's own HTTP server on a thread of the process: it reads the registry, which is
thread-safe, and costs the event loop nothing while it is scraped.
"""

import logging
from dataclasses import dataclass
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

#: The setting of each service's /metrics port (services' settings declare them; tools starting several
#: processes on one machine set them to 0, a free port each).
METRICS_PORT_SETTINGS = ("RUNS_METRICS_PORT", "TOOLS_METRICS_PORT", "ENGINE_METRICS_PORT", "AGENTS_METRICS_PORT")

#: Buckets of RPC and call durations: an internal call takes a millisecond, a chat a minute.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

GRPC_SERVER_HANDLED = Counter(
    "grpc_server_handled_total", "RPCs completed by the server, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_SERVER_HANDLING = Histogram(
    "grpc_server_handling_seconds", "Time from an RPC's start to its status, by method (streams included).",
    ["grpc_service", "grpc_method"], buckets=DURATION_BUCKETS,
)
GRPC_SERVER_STREAMS = Gauge(
    "grpc_server_streams_in_flight", "Server-streaming RPCs open now (watches, streamed chats), by method.",
    ["grpc_service", "grpc_method"],
)

GRPC_CLIENT_HANDLED = Counter(
    "grpc_client_handled_total",
    "RPCs this process made to another service, completed, by method and status code (UNAVAILABLE and "
    "DEADLINE_EXCEEDED here and not on the server's side: the call never reached it, or its answer never came back).",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_CLIENT_HANDLING = Histogram(
    "grpc_client_handling_seconds", "Time from a call's start to its status, as its caller saw it, by method.",
    ["grpc_service", "grpc_method"], buckets=DURATION_BUCKETS,
)

STORE_BATCH_WRITES = Histogram(
    "agentplatform_store_batch_writes", "Writes committed together in one transaction (group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
STORE_COMMIT = Histogram(
    "agentplatform_store_commit_seconds", "Time one write transaction took, by outcome (ok, failed).",
    ["outcome"], buckets=DURATION_BUCKETS,
)
NOTIFICATIONS_CONNECTED = Gauge(
    "agentplatform_notifications_connected",
    "1 while the process's LISTEN connection (the replicas' fan-out) is up, 0 while it is away; by database "
    "(only postgresql has one: absent on SQLite, where nothing is fanned out).",
    ["database"],
)
NOTIFICATIONS_RECONNECTS = Counter(
    "agentplatform_notifications_reconnects_total",
    "Times the LISTEN connection came back after it was lost (each one makes every subscriber catch up).",
)

AUTH_FAILURES = Counter(
    "agentplatform_auth_failures_total",
    "Calls refused for their credentials, by reason: missing_credentials, malformed_header, unknown_key, "
    "jwt_not_at_gateway, bad_service_token, bad_identity_header, internal_api (a user calling an internal API).",
    ["reason"],
)


def rpc_labels(method: str) -> tuple[str, str]:
    """(service, method) of a full method name, "/agentplatform.runs.v1.RunService/GetRun"."""
    _, service, name = method.split("/", 2) if method.count("/") >= 2 else ("", "unknown", method)
    return service, name


@dataclass
class MetricsEndpoint:
    """A process's `/metrics` HTTP endpoint, serving until `stop`."""

    host: str
    port: int
    _server: WSGIServer
    _thread: Thread

    @classmethod
    def start(cls, host: str, port: int) -> "MetricsEndpoint":
        """Serve the process's metrics on host:port (0 picks a free port); a port already taken raises OSError,
        which stops the service's start naming it."""
        server, thread = start_http_server(port, addr=host)
        return cls(host, server.server_port, server, thread)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class MethodMetrics:
    """The gRPC server metrics of one method, their label values bound once (a lookup per RPC costs more than the
    count itself)."""

    def __init__(self, method: str) -> None:
        self._labels = rpc_labels(method)
        self._handling = GRPC_SERVER_HANDLING.labels(*self._labels)
        self.streams = GRPC_SERVER_STREAMS.labels(*self._labels)
        self._handled: dict[str, Counter] = {}

    def handled(self, code_name: str, seconds: float) -> None:
        """An RPC of this method ended with `code_name` (OK, NOT_FOUND ...) after `seconds`."""
        counter = self._handled.get(code_name)
        if counter is None:
            counter = self._handled[code_name] = GRPC_SERVER_HANDLED.labels(*self._labels, code_name)
        counter.inc()
        self._handling.observe(seconds)


class ClientMethodMetrics:
    """The gRPC client metrics of one method another service offers, label values bound once."""

    def __init__(self, method: str) -> None:
        self._labels = rpc_labels(method)
        self._handling = GRPC_CLIENT_HANDLING.labels(*self._labels)
        self._handled: dict[str, Counter] = {}

    def handled(self, code_name: str, seconds: float) -> None:
        """A call of this method ended with `code_name` (OK, UNAVAILABLE ...) after `seconds`."""
        counter = self._handled.get(code_name)
        if counter is None:
            counter = self._handled[code_name] = GRPC_CLIENT_HANDLED.labels(*self._labels, code_name)
        counter.inc()
        self._handling.observe(seconds)


_METHODS: dict[str, MethodMetrics] = {}
_CLIENT_METHODS: dict[str, ClientMethodMetrics] = {}


def method_metrics(method: str) -> MethodMetrics:
    """The metrics of `method`, made on its first call (the server's methods are a fixed set)."""
    metrics = _METHODS.get(method)
    if metrics is None:
        metrics = _METHODS[method] = MethodMetrics(method)
    return metrics


def client_method_metrics(method: str | bytes) -> ClientMethodMetrics:
    """The client metrics of `method` (as grpc.aio's call details name it), made on its first call."""
    name = method.decode() if isinstance(method, bytes) else method
    metrics = _CLIENT_METHODS.get(name)
    if metrics is None:
        metrics = _CLIENT_METHODS[name] = ClientMethodMetrics(name)
    return metrics
