"""Tool workers: blocking, crashing, memory- and CPU-hungry tools cost a worker, never the service; domain errors
cross the process boundary intact.

Health, start and closing of the pool are in test_worker_pool_health.py."""

import asyncio
import os
import signal
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from prometheus_client import REGISTRY

from agentplatform.tools.v1 import tools_pb2
from services.common.errors import DeadlineExceeded, Internal, InvalidArgument, NotFound, ResourceExhausted
from services.tools.servicer import SERVICE_NAME
from tests.tools.conftest import SettingsFactory, execute_request, write_plugin
from tests.tools.worker_pool_helpers import ADD, MakeExecutor, eventually, health_of, is_running, running_tools

pytestmark = pytest.mark.usefixtures("pool_tools")


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
    replaced = REGISTRY.get_sample_value("agentplatform_tool_worker_replacements_total") or 0.0
    errors = REGISTRY.get_sample_value("agentplatform_tool_calls_total", {"tool": "crash", "outcome": "error"}) or 0.0
    with pytest.raises(Internal) as caught:
        await env.executor.execute("crash", {"how": how})
    assert str(caught.value) == f"tool 'crash' crashed its worker process: it ended with {ending}"
    output, _ = await env.executor.execute("pid", {})
    assert output.result != pid
    assert env.executor.usage.usage("crash").errors == 1
    # The crash is counted by the metrics too: the call as an error, its worker as replaced; the pool's load is
    # read when scraped (one worker, idle again).
    assert REGISTRY.get_sample_value("agentplatform_tool_calls_total", {"tool": "crash", "outcome": "error"}) == (
        errors + 1
    )
    assert REGISTRY.get_sample_value("agentplatform_tool_worker_replacements_total") == replaced + 1
    assert env.workers.load() == (1, 0, 0)


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
