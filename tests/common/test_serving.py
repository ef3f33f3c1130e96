"""A server's health from the conditions it depends on (services/common/rpc/serving.py): SERVING while every one
holds, and following a notifications connection as it goes and comes back."""

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.auth import Authenticator
from services.common.db.notifications import LocalNotifications
from services.common.rpc.server import start_server
from services.common.rpc.serving import Readiness, serve_while

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class SwitchedNotifications(LocalNotifications):
    """Notifications whose connection the test switches off and on."""

    def __init__(self) -> None:
        self.up = True

    @property
    def connected(self) -> bool:
        return self.up


async def test_the_server_serves_while_every_condition_holds_and_follows_its_notifications() -> None:
    running = await start_server([], "127.0.0.1", 0, Authenticator.development())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    stub = health_pb2_grpc.HealthStub(channel)

    async def status() -> int:
        return (await stub.Check(health_pb2.HealthCheckRequest(service=""))).status  # type: ignore[no-any-return]

    async def until(wanted: int) -> None:
        for _ in range(200):
            if await status() == wanted:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"the server did not report {health_pb2.HealthCheckResponse.ServingStatus.Name(wanted)}")

    readiness = Readiness(running.health, running.service_names)
    notifications = SwitchedNotifications()
    watch = asyncio.create_task(serve_while(notifications, readiness, poll_seconds=0.01))
    try:
        assert await status() == SERVING
        notifications.up = False
        await until(NOT_SERVING)
        await readiness.report("workers", False)
        notifications.up = True
        await asyncio.sleep(0.1)
        assert await status() == NOT_SERVING, "one condition still fails"
        await readiness.report("workers", True)
        assert await status() == SERVING
        await running.health.enter_graceful_shutdown()
        notifications.up = False
        await asyncio.sleep(0.05)
        notifications.up = True
        await asyncio.sleep(0.05)
        assert await status() == NOT_SERVING, "a server shutting down stays NOT_SERVING"
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        await channel.close()
        await running.server.stop(0)
