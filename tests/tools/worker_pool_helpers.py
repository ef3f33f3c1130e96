"""Helpers of the tool workers' tests (test_worker_pool, test_worker_pool_health): a tools service with
health stubs, and waiting on processes. The plugin they call is pool_tools_plugin.py."""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.tools.app import ToolsApp, start_tools
from tests.support.stubs import tools_stubs
from tests.tools.conftest import ExecutorEnv, SettingsFactory

MakeExecutor = Callable[..., Awaitable[ExecutorEnv]]

ADD = {"operation": "add", "x": 2.0, "y": 3.0}


def is_running(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@asynccontextmanager
async def running_tools(make_settings: SettingsFactory, **overrides: Any) -> AsyncIterator[tuple[ToolsApp, Any]]:
    """A tools service with the given settings, and stubs of its services (and health) on one channel."""
    app = await start_tools(make_settings(**overrides))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = tools_stubs(channel)
            stub.health = health_pb2_grpc.HealthStub(channel)
            yield app, stub
    finally:
        await app.stop()


async def health_of(stub: Any, service: str) -> int:
    return (await stub.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)).status
