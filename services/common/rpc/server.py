"""The gRPC server bootstrap every service uses: interceptor, health, reflection, graceful shutdown."""

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.auth import HOW_TO_CONFIGURE, Authenticator, is_loopback
from services.common.rpc.interceptor import ServiceInterceptor
from services.common.settings import SettingsError

log = logging.getLogger(__name__)
#: A client balancing over DNS (`dns:///runs:50051`, a headless Service) resolves the name again only when a
#: connection ends: asking each client to reconnect after 5 minutes (GOAWAY) is how replicas added by a scale-out
#: get their share. Calls in flight, the long streams included, carry on: the grace after the GOAWAY is unbounded.
#: And no SO_REUSEPORT (gRPC's default on Linux): two servers given one port would both bind it and the kernel
#: would split the connections between them, calls answered UNIMPLEMENTED by the wrong service; without it the
#: second fails to start, naming the port.
SERVER_OPTIONS = (("grpc.max_connection_age_ms", 5 * 60 * 1000), ("grpc.so_reuseport", 0))


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service to host: its full name (for health and reflection) and how to register it."""

    name: str
    register: Callable[[grpc.aio.Server], None]


@dataclass
class RunningServer:
    """A started server, the port it bound and its health servicer."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING (so load balancers drain us), then let in-flight RPCs finish for `grace` s."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


def check_exposure(auth: Authenticator, host: str, what: str) -> None:
    """Development mode (no keys) is open to anyone who can connect, so it listens on loopback only: refuse to
    start on any other address, and say so when starting on loopback."""
    if not auth.open:
        return
    if not is_loopback(host):
        raise SettingsError(
            f"{what} would listen on {host} with no API keys configured, open to anyone who can reach it. Bind "
            f"it to 127.0.0.1 for development, or {HOW_TO_CONFIGURE}"
        )
    log.warning("development mode: no API keys configured, every caller is the admin 'local'; listening on %s "
                "(loopback) only", host)


async def start_server(
    bindings: Sequence[ServiceBinding], host: str, port: int, auth: Authenticator
) -> RunningServer:
    """Start a grpc.aio server hosting `bindings` on host:port (port 0 picks a free one); `auth` authenticates
    every call."""
    check_exposure(auth, host, f"the {bindings[0].name} server" if bindings else "the server")
    server = grpc.aio.server(interceptors=[ServiceInterceptor(auth)], options=SERVER_OPTIONS)
    for binding in bindings:
        binding.register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = tuple(b.name for b in bindings)
    reflection.enable_server_reflection((*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # grpcio raises where older versions returned 0
        bound = 0
    if bound == 0:
        raise OSError(f"could not bind gRPC server to {host}:{port}; is the port in use?")
    await server.start()
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, bound, health_servicer, names)


async def wait_for_shutdown_signal() -> None:
    """Return once SIGTERM or SIGINT arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
