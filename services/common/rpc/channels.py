"""The one way a service dials another: a balanced grpc.aio channel with the platform's options, and the check of
the address settings it dials.

Used by the engine (to the runs, tools and agents services) and the agents service (to the tools service); their
settings check every address with `check_target` at start. A dependency may run in several replicas, so every
channel balances `round_robin` over all the addresses its target names: each call goes to the next READY one, and
an address that is down is skipped until it reconnects (under the backoff below). A target is
- `host:port` (resolved by gRPC's DNS resolver, every address of the name);
- a comma list `host:port,host:port` for replicas on one machine: dialled as gRPC's `ipv4:`/`ipv6:` multi-address
  target, names resolved once, when the channel is made;
- a gRPC name such as `dns:///runs:50051` (a Kubernetes headless Service: one address per pod), passed to
  gRPC as it is.

Every call on such a channel is counted in the process's client metrics (services.common.metrics), and with
tracing on (services.common.tracing) carries the caller's trace context (W3C traceparent) in its metadata, so the
server's span joins the caller's trace.
"""

import asyncio
import ipaddress
import json
import re
import socket
import time
from collections.abc import AsyncIterable, Callable
from typing import Annotated, Any

import grpc
from pydantic import AfterValidator

from services.common import tracing
from services.common.metrics import client_method_metrics

#: For a dependency that restarts: gRPC's default reconnect backoff grows to 120 s, which would keep a channel
#: idle long after the server is back.
RECONNECT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)

#: Spread calls over every address of the target (gRPC's default, pick_first, sends them all to one).
ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})

BALANCING_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.service_config", ROUND_ROBIN),
    # The policy above is the platform's, not whatever a DNS TXT record says.
    ("grpc.service_config_disable_resolution", 1),
    # A DNS target is resolved again when an address goes away, at most this often (gRPC's default is 30 s): a
    # replaced pod's new address is then used within a second or so of the old one failing.
    ("grpc.dns_min_time_between_resolutions_ms", 1000),
)

#: Targets gRPC parses itself (its name-resolver schemes).
GRPC_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")

_EXPECTED = "host:port, a comma-separated list of them, or a gRPC target such as dns:///runs:50051"


def _host_port(text: str) -> tuple[str, int]:
    """(host, port) of one `host:port` or `[v6]:port`; ValueError saying what is wrong."""
    if not text:
        raise ValueError(f"an empty address in the list (two commas in a row, or one at an end); expected {_EXPECTED}")
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        raise ValueError(f"{text!r} has no port: expected {_EXPECTED}")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{text!r}: {host} is not an IPv6 address") from None
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: an IPv6 address goes in brackets, as in [::1]:50051")
    elif not _HOSTNAME.match(host):
        raise ValueError(f"{text!r}: {host!r} is neither a host name nor an IP address")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port)


def check_target(text: str) -> str:
    """`text` stripped, if it is a target `dial` accepts (see the module docstring); otherwise ValueError saying
    what is wrong. Names are not resolved here."""
    target = text.strip()
    if not target:
        raise ValueError(f"empty: expected {_EXPECTED}")
    if target.startswith(GRPC_SCHEMES):
        return target
    if "://" in target:
        raise ValueError(f"{target!r} is a URL: expected {_EXPECTED}")
    parts = [part.strip() for part in target.split(",")]
    for part in parts:
        _host_port(part)
    return ",".join(parts)


#: A setting that names a service to dial (RUNS_ADDR, TOOLS_ADDR ...): checked at start, so a malformed list is
#: an error naming the variable, not a channel that never connects.
ServiceAddress = Annotated[str, AfterValidator(check_target)]


def _ip_addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The host's addresses: itself for an IP literal, else its IPv4 addresses if it has any, else its IPv6 ones."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"{host}:{port} in an address list: the name does not resolve ({exc.strerror})") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in found))
    return [a for a in addresses if a.version == 4] or addresses


def grpc_target(address: str) -> str:
    """The target gRPC dials for `address` (a setting `check_target` accepts). A comma list becomes one `ipv4:` or
    `ipv6:` target (names resolved now); ValueError for a list that mixes the two families."""
    target = check_target(address)
    if target.startswith(GRPC_SCHEMES) or "," not in target:
        return target
    endpoints: dict[str, int] = {}
    for part in target.split(","):
        host, port = _host_port(part)
        for ip in _ip_addresses(host, port):
            endpoints[f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}"] = ip.version
    versions = set(endpoints.values())
    if len(versions) > 1:
        raise ValueError(f"{address!r} mixes IPv4 and IPv6 addresses; gRPC balances over one family: use one")
    return f"ipv{versions.pop()}:" + ",".join(endpoints)


def channel_options(max_receive_bytes: int | None = None) -> tuple[tuple[str, int | str], ...]:
    """The options of a channel to another service; `max_receive_bytes` raises gRPC's default 4 MiB limit on an
    answer, for a dependency whose answers can be larger."""
    options = (*RECONNECT_OPTIONS, *BALANCING_OPTIONS)
    if max_receive_bytes is None:
        return options
    return (*options, ("grpc.max_receive_message_length", max_receive_bytes))


class _CallsSeen:
    """What the interceptors below share: the client metrics of each call's method (services.common.metrics: by
    status code, and how long it took as the caller saw it) and, with tracing on, the current trace context
    (traceparent, tracestate) in its metadata."""

    def __init__(self) -> None:
        self._tracing = tracing.enabled()
        # Stream calls are counted by a task once they end; held here until then (the loop keeps weak references).
        self._counting: set[asyncio.Task[None]] = set()

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        if not self._tracing:
            return details
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *tracing.inject())
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    def _count_when_done(self, call: Any, method: str | bytes) -> Any:
        metrics, started = client_method_metrics(method), time.perf_counter()

        async def count(done: Any) -> None:
            metrics.handled((await done.code()).name, time.perf_counter() - started)

        def done(finished: Any) -> None:
            task = asyncio.get_running_loop().create_task(count(finished))
            self._counting.add(task)
            task.add_done_callback(self._counting.discard)

        call.add_done_callback(done)
        return call


# One class per kind of call: grpc.aio files an interceptor under the FIRST kind it is an instance of, so one
# class implementing every kind would see only unary calls.

class _UnaryUnaryCalls(_CallsSeen, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        metrics, started = client_method_metrics(details.method), time.perf_counter()
        call = await continuation(self._details(details), request)
        try:
            await call
        except grpc.aio.AioRpcError as error:
            metrics.handled(error.code().name, time.perf_counter() - started)
        except asyncio.CancelledError:
            metrics.handled(grpc.StatusCode.CANCELLED.name, time.perf_counter() - started)
            raise
        else:
            metrics.handled(grpc.StatusCode.OK.name, time.perf_counter() - started)
        # The call itself, done: its caller awaits it for the response or the error, metadata included.
        return call


class _UnaryStreamCalls(_CallsSeen, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return self._count_when_done(await continuation(self._details(details), request), details.method)


class _StreamStreamCalls(_CallsSeen, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, request_iterator: AsyncIterable[Any]
    ) -> Any:
        return self._count_when_done(await continuation(self._details(details), request_iterator), details.method)


def call_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The interceptors of a dialled channel, one per kind of call the protos use."""
    return [_UnaryUnaryCalls(), _UnaryStreamCalls(), _StreamStreamCalls()]


def dial(address: str, max_receive_bytes: int | None = None) -> grpc.aio.Channel:
    """A channel balanced over every replica at `address` (see the module docstring), with
    channel_options(max_receive_bytes); its calls are counted and, with tracing on, carry the trace context."""
    return grpc.aio.insecure_channel(
        grpc_target(address), options=channel_options(max_receive_bytes), interceptors=call_interceptors()
    )
