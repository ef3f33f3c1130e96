"""The gateway in front of two replicas of each service (real Envoy, two gRPC servers): calls are balanced over
both, a stopped replica's refused connections are retried on the other, and a call that reached a replica is
sent again only when it is a read (Get*, List*, Watch*), never a write such as StartRun or CancelRun."""

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from services.launcher.gateway_config import AdminSocket, Upstream, render_gateway_config
from tests.conftest import free_port
from tests.gateway.conftest import START_TIMEOUT, Gateway, envoy_argv, gateway_settings, stop, wait_until_routing

CHAT = "/agentplatform.engine.v1.AgentService/Chat"
START_RUN = "/agentplatform.engine.v1.AgentService/StartRun"
GET_RUN = "/agentplatform.runs.v1.RunService/GetRun"
CANCEL_RUN = "/agentplatform.runs.v1.RunService/CancelRun"


class Replica:
    """A gRPC server on a fixed loopback port (in a thread of its own) that answers every method with its name,
    after `hold` seconds for the methods in `slow`; it can be stopped and started again on the same port."""

    def __init__(self, name: str, slow: frozenset[str] = frozenset(), hold: float = 0.0) -> None:
        self.name = name
        self.port = free_port()
        self.calls: list[str] = []
        self.slow, self.hold = slow, hold
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"replica-{name}", daemon=True)
        self._thread.start()
        self._server: grpc.aio.Server | None = None

    @property
    def upstream(self) -> Upstream:
        return Upstream("127.0.0.1", self.port)

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)

    def stop(self) -> None:
        """Stop at once (grace 0): calls in flight are reset, new connections are refused."""
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(10)
            self._server = None

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self) -> None:
        replica = self

        async def health(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING).SerializeToString()

        class Handler(grpc.GenericRpcHandler):
            def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
                if details.method.startswith("/grpc.health.v1.Health/"):
                    return grpc.unary_unary_rpc_method_handler(health)
                method = details.method

                async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                    replica.calls.append(method)
                    if method in replica.slow:
                        await asyncio.sleep(replica.hold)
                    return replica.name.encode()

                return grpc.unary_unary_rpc_method_handler(answer)

        server = grpc.aio.server()
        server.add_generic_rpc_handlers([Handler()])
        server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server


def start_envoy(directory: Path, first: Replica, second: Replica) -> Gateway:
    """Envoy with every cluster over both replicas."""
    settings = gateway_settings()
    config, admin = directory / "envoy.yaml", directory / "admin.sock"
    both = [first.upstream, second.upstream]
    config.write_text(
        render_gateway_config(settings, admin=AdminSocket(admin), engine=both, runs=both, tools=both, agents=both)
    )
    log_path = directory / "envoy.log"
    environment = {k: v for k, v in os.environ.items() if k != "PLATFORM_SERVICE_TOKEN"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(envoy_argv(config), stdout=log, stderr=subprocess.STDOUT, env=environment)
    gateway = Gateway(settings, config, admin, log_path, process)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        wait_until_routing(gateway, deadline)
        # Both hosts of every cluster healthy, not just one.
        while gateway.admin("GET", "/clusters").text.count("health_flags::healthy") < 8:
            assert time.monotonic() < deadline, gateway.admin("GET", "/clusters").text
            time.sleep(0.05)
    except BaseException:
        stop(process)
        raise
    return gateway


@pytest.fixture
def replicas() -> Iterator[tuple[Replica, Replica]]:
    slow = frozenset({START_RUN, GET_RUN, CANCEL_RUN})
    pair = (Replica("a", slow, hold=1.0), Replica("b", slow, hold=1.0))
    for replica in pair:
        replica.start()
    yield pair
    for replica in pair:
        replica.close()


@pytest.fixture
def gateway(tmp_path: Path, replicas: tuple[Replica, Replica]) -> Iterator[Gateway]:
    gateway = start_envoy(tmp_path, *replicas)
    yield gateway
    stop(gateway.process)


def call(channel: grpc.Channel, method: str, metadata: tuple[tuple[str, str], ...] = ()) -> bytes | grpc.RpcError:
    try:
        return channel.unary_unary(method)(b"", timeout=10, metadata=metadata)
    except grpc.RpcError as error:
        return error


def stat(gateway: Gateway, name: str) -> int:
    for line in gateway.admin("GET", f"/stats?filter=^{name}$").text.splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


def test_calls_are_balanced_over_both_replicas(gateway: Gateway, replicas: tuple[Replica, Replica]) -> None:
    with grpc.insecure_channel(gateway.address) as channel:
        answers = [call(channel, CHAT) for _ in range(20)]
    assert set(answers) == {b"a", b"b"}, answers


def test_a_stopped_replicas_refused_connections_are_retried_on_the_other(
    gateway: Gateway, replicas: tuple[Replica, Replica]
) -> None:
    replicas[0].stop()
    # At once, before a health check can have noticed: every call that Envoy sends to the stopped replica is
    # refused there, and retried on the other.
    with grpc.insecure_channel(gateway.address) as channel:
        answers = [call(channel, CHAT) for _ in range(10)]
    assert answers == [b"b"] * 10, answers
    assert stat(gateway, "cluster.engine.upstream_rq_retry") >= 1


def test_a_write_that_reached_a_replica_is_not_sent_again_and_a_read_is(
    gateway: Gateway, replicas: tuple[Replica, Replica]
) -> None:
    """The replica a call reached stops while it serves it (it answers UNAVAILABLE, "Cancelling all calls"): a
    write fails UNAVAILABLE, seen by that replica alone, even when its caller asks Envoy for retries; a read is
    answered by the other replica."""
    asks_for_retries = (("x-envoy-retry-grpc-on", "unavailable"), ("x-envoy-retry-on", "reset,5xx"))
    for method, retried in ((START_RUN, False), (CANCEL_RUN, False), (GET_RUN, True)):
        for replica in replicas:
            replica.calls.clear()
        outcome: list[bytes | grpc.RpcError] = []
        with grpc.insecure_channel(gateway.address) as channel:

            def send(method: str = method, channel: grpc.Channel = channel, into: list[object] = outcome) -> None:
                into.append(call(channel, method, asks_for_retries))

            caller = threading.Thread(target=send)
            caller.start()
            deadline = time.monotonic() + 10
            while not any(method in replica.calls for replica in replicas):
                assert time.monotonic() < deadline, f"{method} never arrived"
                time.sleep(0.01)
            reached = next(replica for replica in replicas if method in replica.calls)
            other = next(replica for replica in replicas if replica is not reached)
            reached.stop()
            caller.join(15)
        if retried:
            assert outcome == [other.name.encode()], (method, outcome)
            assert other.calls == [method]
        else:
            assert isinstance(outcome[0], grpc.RpcError), (method, outcome)
            assert outcome[0].code() == grpc.StatusCode.UNAVAILABLE, (method, outcome[0])
            assert other.calls == [], f"{method} was sent again to the other replica"
        # Back before the next method; Envoy may have ejected it meanwhile: wait until it routes to both again.
        reached.start()
        wait_both_healthy(gateway)


def wait_both_healthy(gateway: Gateway) -> None:
    deadline = time.monotonic() + 20
    while True:
        text = gateway.admin("GET", "/clusters").text
        if text.count("health_flags::healthy") >= 8:
            return
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
