"""Tool workers' health and start: health follows whether workers can start, a memory limit too small for Python
fails the start, and closing the pool kills busy workers at once."""

import asyncio
import errno
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2

from services.common.errors import Unavailable
from services.tools.base import ToolContext
from services.tools.execution_servicer import SERVICE_NAME as EXECUTION_SERVICE_NAME
from services.tools.results import DEFAULT_MAX_RESULT_BYTES
from services.tools.servicer import SERVICE_NAME
from services.tools.workers.lifecycle import WorkerStartError
from services.tools.workers.pool import ToolWorkerPool
from services.tools.workers.protocol import WorkerConfig
from tests.tools.conftest import SettingsFactory, execute_request
from tests.tools.worker_pool_helpers import ADD, health_of, is_running, running_tools

pytestmark = pytest.mark.usefixtures("pool_tools")


# --- Health and start ----------------------------------------------------------------------------------------------


class _NoProcesses:
    """A multiprocessing context whose processes cannot be created, like fork() failing with EAGAIN."""

    class Process:
        def __init__(self, **_: Any) -> None:
            self.pid = None

        def start(self) -> None:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")


async def test_health_is_not_serving_while_no_worker_can_start_and_serving_once_one_can(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_tools(make_settings, TOOLS_WORKERS=2) as (app, stub):
        real_context = app.workers._context
        monkeypatch.setattr(app.workers, "_context", _NoProcesses())
        for pid in app.workers.worker_pids():
            os.kill(pid, signal.SIGKILL)  # the workers this test's service started

        async def all_health() -> set[int]:
            return {await health_of(stub, name) for name in ("", SERVICE_NAME, EXECUTION_SERVICE_NAME)}

        deadline = time.monotonic() + 10
        while await all_health() != {health_pb2.HealthCheckResponse.NOT_SERVING}:
            assert time.monotonic() < deadline, "health never went NOT_SERVING"
            await asyncio.sleep(0.05)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ExecuteTool(execute_request("calculator", **ADD))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "cannot start tool workers (the process could not be created: [Errno 11]" in (
            caught.value.details() or ""
        )

        monkeypatch.setattr(app.workers, "_context", real_context)
        deadline = time.monotonic() + 15
        while await all_health() != {health_pb2.HealthCheckResponse.SERVING}:
            assert time.monotonic() < deadline, "health never came back to SERVING"
            await asyncio.sleep(0.05)
        response = await stub.ExecuteTool(execute_request("calculator", **ADD))
        assert response.text == "2 + 3 = 5"


async def test_a_memory_limit_too_small_for_python_itself_fails_the_start(context: ToolContext) -> None:
    """Workers that cannot even load the tools: the pool refuses to start, so the service exits saying why."""
    config = WorkerConfig((), context, DEFAULT_MAX_RESULT_BYTES, memory_bytes=16 * 1024 * 1024, cpu_seconds=5)
    pool = ToolWorkerPool(config, 1)
    with pytest.raises(WorkerStartError, match=r"no tool worker could start: the worker ended while starting"):
        await pool.start()
    assert pool.worker_pids() == []


@pytest_asyncio.fixture
async def started_pool(context: ToolContext, plugin_dir: Path) -> AsyncIterator[ToolWorkerPool]:
    pool = ToolWorkerPool(WorkerConfig((plugin_dir,), context, DEFAULT_MAX_RESULT_BYTES, None, None), 2)
    await pool.start()
    yield pool
    await pool.close()


async def test_closing_the_pool_kills_busy_workers_at_once(started_pool: ToolWorkerPool) -> None:
    pids = started_pool.worker_pids()
    calls = [asyncio.create_task(started_pool.run("block", {})) for _ in range(2)]
    await asyncio.sleep(0.3)  # both workers are in time.sleep(3600) now
    started = time.monotonic()
    await started_pool.close()
    assert time.monotonic() - started < 1.0
    assert not any(is_running(pid) for pid in pids)
    for call in calls:
        with pytest.raises(Unavailable, match="the tools service is stopping"):
            await call
