"""Tool workers: blocking, crashing, memory- and CPU-hungry tools cost a worker, never the service; domain errors
cross the process boundary intact; health follows whether workers can start."""

import asyncio
import errno
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentplatform.tools.v1 import tools_pb2
from services.common.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from services.tools.app import ToolsApp, start_tools
from services.tools.base import ToolContext
from services.tools.execution_servicer import SERVICE_NAME as EXECUTION_SERVICE_NAME
from services.tools.results import DEFAULT_MAX_RESULT_BYTES
from services.tools.servicer import SERVICE_NAME
from services.tools.workers.lifecycle import WorkerStartError
from services.tools.workers.pool import ToolWorkerPool
from services.tools.workers.protocol import WorkerConfig
from tests.support.stubs import tools_stubs
from tests.tools.conftest import ExecutorEnv, SettingsFactory, execute_request, write_plugin

MakeExecutor = Callable[..., Awaitable[ExecutorEnv]]

POOL_TOOLS = '''
    import asyncio
    import os
    import signal
    import time
    from pathlib import Path

    from services.common.errors import NotFound, ResourceExhausted
    from services.tools.base import BaseTool

    ANY = {"type": "object"}


    class Block(BaseTool):
        name = "block"
        display_name = "Block"
        description = "Sleeps for an hour in its thread (a blocking call)"
        parameters = ANY

        def execute(self):
            time.sleep(3600)


    class ReadFifo(BaseTool):
        name = "read_fifo"
        display_name = "Read FIFO"
        description = "Opens a FIFO nobody writes to: blocks in the kernel"
        parameters = ANY

        def execute(self, path):
            with open(path) as fifo:
                return fifo.read()


    class Crash(BaseTool):
        name = "crash"
        display_name = "Crash"
        description = "Ends its own process"
        parameters = ANY

        def execute(self, how):
            if how == "exit":
                os._exit(1)
            os.kill(os.getpid(), signal.SIGKILL)


    class Hog(BaseTool):
        name = "hog"
        display_name = "Hog"
        description = "Allocates 2 GiB"
        parameters = ANY

        def execute(self):
            return len(bytearray(2 * 1024 * 1024 * 1024))


    class Spin(BaseTool):
        name = "spin"
        display_name = "Spin"
        description = "Loops for ever on the CPU"
        parameters = ANY

        def execute(self):
            while True:
                pass


    class NoSuchThing(NotFound):
        """A plugin's own error class: it reaches the service as NotFound."""


    class Picky(BaseTool):
        name = "picky"
        display_name = "Picky"
        description = "Raises domain errors"
        parameters = ANY

        def execute(self, kind):
            if kind == "not_found":
                raise NoSuchThing("no thing called 'x'; list the things first")
            raise ResourceExhausted("too many searches; wait a little", retry_after=7.0)


    class Pid(BaseTool):
        name = "pid"
        display_name = "Pid"
        description = "Says which process ran it"
        parameters = ANY

        def execute(self):
            return os.getpid()


    class Touch(BaseTool):
        name = "touch"
        display_name = "Touch"
        description = "Writes a file: shows whether it ran"
        parameters = ANY

        def execute(self, path):
            Path(path).write_text("ran")
            return "touched"


    class Linger(BaseTool):
        name = "linger"
        display_name = "Linger"
        description = "Waits, telling a file whether it started and whether it was cancelled"
        parameters = ANY

        async def run(self, arguments, context):
            marker = Path(arguments["marker"])
            marker.write_text("started")
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                marker.write_text("cancelled")
                raise
'''

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


@pytest.fixture(autouse=True)
def pool_tools(plugin_dir: Path) -> None:
    write_plugin(plugin_dir, "pool_tools.py", POOL_TOOLS)


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


# --- Blocking tools ------------------------------------------------------------------------------------------------


async def test_more_blocking_calls_than_workers_are_each_killed_at_their_limit(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """The issue's starvation: three calls that block for ever on two workers. Each is DEADLINE_EXCEEDED at its
    1 s limit (the third never got a worker), the blocked workers are killed and replaced, health stayed
    SERVING, and a calculator call right after answers at once."""
    fifo = tmp_path / "nobody-writes"
    os.mkfifo(fifo)
    async with running_tools(make_settings, TOOLS_WORKERS=2, TOOLS_TIMEOUT_SECONDS=1) as (app, stub):
        before = app.workers.worker_pids()
        assert len(before) == 2
        started = time.monotonic()
        calls = [
            stub.ExecuteTool(execute_request("block")),
            stub.ExecuteTool(execute_request("read_fifo", path=str(fifo))),
            stub.ExecuteTool(execute_request("block")),
        ]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        elapsed = time.monotonic() - started

        for outcome in outcomes:
            assert isinstance(outcome, grpc.aio.AioRpcError), outcome
            assert outcome.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "did not finish within 1 s" in (outcome.details() or "")
        assert elapsed < 2.5  # at their limit, not one after the other
        assert await health_of(stub, SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING

        asked = time.monotonic()
        response = await stub.ExecuteTool(execute_request("calculator", **ADD))
        assert response.text == "2 + 3 = 5"
        assert time.monotonic() - asked < 2.0

        assert await eventually(lambda: len(app.workers.worker_pids()) == 2)
        assert not set(app.workers.worker_pids()) & set(before)  # both blocked workers were replaced
        assert await eventually(lambda: not any(is_running(pid) for pid in before))
        usage = (await stub.GetTool(tools_pb2.GetToolRequest(tool_id="block"))).usage
        assert (usage.calls, usage.timeouts) == (2, 2)


async def test_a_call_whose_caller_gave_up_while_it_waited_never_runs(
    make_executor: MakeExecutor, tmp_path: Path
) -> None:
    """The caller gives up (its RPC cancelled, or its own time limit: the same cancellation) while the one worker
    is busy; when the worker frees up, the abandoned call is not run. The caller gives up by cancelling here, not
    by a time limit: two calls' limits start when each has been validated (on a thread), so which one ends first
    would be a race."""
    env = await make_executor(timeout_seconds=0.5, workers=1)
    marker = tmp_path / "touched"
    block = asyncio.create_task(env.executor.execute("block", {}))
    touch = asyncio.create_task(env.executor.execute("touch", {"path": str(marker)}))
    await asyncio.sleep(0.2)  # both validated; "touch" waits for the worker "block" holds
    assert not touch.done()
    touch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await touch
    with pytest.raises(DeadlineExceeded):
        await block
    output, _ = await env.executor.execute("calculator", ADD)
    assert output.text == "2 + 3 = 5"
    assert not marker.exists()  # the worker that freed up did not run the abandoned call


async def test_a_cancelled_call_lets_an_async_tool_clean_up_and_its_worker_is_replaced(
    make_executor: MakeExecutor, tmp_path: Path
) -> None:
    """A cancelled RPC (the engine cancelling a run) cancels the tool inside its worker, so its cleanup runs;
    then the worker goes."""
    env = await make_executor(timeout_seconds=30, workers=1)
    [pid] = env.workers.worker_pids()
    marker = tmp_path / "marker"
    call = asyncio.create_task(env.executor.execute("linger", {"marker": str(marker)}))
    assert await eventually(lambda: marker.exists() and marker.read_text() == "started")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await eventually(lambda: marker.read_text() == "cancelled")
    assert await eventually(lambda: not is_running(pid))
    output, _ = await env.executor.execute("pid", {})
    assert output.result != pid


# --- Crashes and limits --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "ending"),
    [("exit", "exit code 1"), ("kill", "signal SIGKILL (the out-of-memory killer, or an operator)")],
)
async def test_a_crashing_worker_is_internal_naming_the_tool_and_the_next_call_works(
    make_executor: MakeExecutor, how: str, ending: str
) -> None:
    env = await make_executor(workers=1)
    [pid] = env.workers.worker_pids()
    with pytest.raises(Internal) as caught:
        await env.executor.execute("crash", {"how": how})
    assert str(caught.value) == f"tool 'crash' crashed its worker process: it ended with {ending}"
    output, _ = await env.executor.execute("pid", {})
    assert output.result != pid
    assert env.executor.usage.usage("crash").errors == 1


async def test_an_idle_worker_killed_from_outside_is_replaced_without_failing_a_call(
    make_executor: MakeExecutor,
) -> None:
    """pebble's pool breaks for good on this; ours starts another worker, and the call right after works."""
    env = await make_executor(workers=1)
    [pid] = env.workers.worker_pids()
    os.kill(pid, signal.SIGKILL)
    output, _ = await env.executor.execute("pid", {})
    assert output.result != pid
    assert env.workers.serving


async def test_a_tool_allocating_past_the_memory_limit_fails_and_the_service_answers(
    make_settings: SettingsFactory,
) -> None:
    async with running_tools(make_settings, TOOLS_WORKERS=1, TOOLS_WORKER_MEMORY_MB=256) as (app, stub):
        [pid] = app.workers.worker_pids()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ExecuteTool(execute_request("hog"))
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert caught.value.details() == (
            "tool 'hog' ran out of memory (its worker may use 256 MiB: TOOLS_WORKER_MEMORY_MB)"
        )
        response = await stub.ExecuteTool(execute_request("calculator", **ADD))
        assert response.text == "2 + 3 = 5"
        assert await eventually(lambda: not is_running(pid))  # retired after the failed allocation


async def test_a_busy_loop_is_stopped_by_the_cpu_limit_before_its_time_limit(make_executor: MakeExecutor) -> None:
    env = await make_executor(timeout_seconds=20, workers=1, cpu_seconds=1)
    started = time.monotonic()
    with pytest.raises(
        Internal, match=r"^tool 'spin' used more than its 1 s of CPU time \(TOOLS_WORKER_CPU_SECONDS\)$"
    ):
        await env.executor.execute("spin", {})
    assert time.monotonic() - started < 6  # stopped for its CPU use, long before the 20 s limit
    output, _ = await env.executor.execute("calculator", ADD)
    assert output.text == "2 + 3 = 5"


async def test_cpu_time_is_allowed_per_call_not_per_worker_life(make_executor: MakeExecutor, plugin_dir: Path) -> None:
    """RLIMIT_CPU counts a process's whole life: the pool gives every call its own allowance, so a worker that
    served many calls does not die on a small one."""
    write_plugin(
        plugin_dir,
        "burn.py",
        """
        import time

        from services.tools.base import BaseTool


        class Burn(BaseTool):
            name = "burn"
            display_name = "Burn"
            description = "Uses 0.6 s of CPU"
            parameters = {"type": "object"}

            def execute(self):
                end = time.process_time() + 0.6
                while time.process_time() < end:
                    pass
                return "burnt"
        """,
    )
    env = await make_executor(timeout_seconds=10, workers=1, cpu_seconds=1)
    for _ in range(4):  # 2.4 s of CPU in one worker, 0.6 s per call
        output, _ = await env.executor.execute("burn", {})
        assert output.text == "burnt"


# --- Errors --------------------------------------------------------------------------------------------------------


async def test_domain_errors_raised_in_a_worker_keep_their_class_message_and_retry_hint(
    make_executor: MakeExecutor,
) -> None:
    env = await make_executor(workers=1)
    with pytest.raises(NotFound) as not_found:
        await env.executor.execute("picky", {"kind": "not_found"})
    assert type(not_found.value) is NotFound  # the plugin's own subclass arrives as its services.common class
    assert str(not_found.value) == "no thing called 'x'; list the things first"
    with pytest.raises(ResourceExhausted) as exhausted:
        await env.executor.execute("picky", {"kind": "busy"})
    assert str(exhausted.value) == "too many searches; wait a little"
    assert exhausted.value.retry_after == 7.0


async def test_domain_errors_from_a_worker_have_their_status_over_grpc(make_settings: SettingsFactory) -> None:
    async with running_tools(make_settings, TOOLS_WORKERS=1) as (_, stub):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ExecuteTool(execute_request("picky", kind="not_found"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert caught.value.details() == "no thing called 'x'; list the things first"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ExecuteTool(execute_request("picky", kind="busy"))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_arguments_are_checked_in_the_service_before_any_worker_runs(make_executor: MakeExecutor) -> None:
    env = await make_executor(workers=1)
    with pytest.raises(InvalidArgument, match="arguments do not match pid's parameters"):
        await env.executor.execute("pid", {"unexpected": 1})
    assert env.executor.usage.usage("pid").errors == 1


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
