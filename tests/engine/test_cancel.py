"""RunService.CancelRun stops a run the engine executes wherever it is: waiting for the model's first byte, while
the model streams, inside a slow tool call; and refuses what cannot be cancelled."""

import time
from pathlib import Path

import grpc
import pytest

from agentplatform.runs.v1 import runs_pb2
from tests.engine.run_helpers import (
    get_run,
    is_step,
    is_text_delta,
    kinds,
    read_rest,
    read_until,
    slow_tool_overrides,
    start_run,
    wait_final,
    wait_for_file,
)
from tests.support.platform import Platform, start_platform
from tests.support.scripted_llm import ScriptedLLM, delayed, text_reply, tool_call_reply

#: The feature's bound: CancelRun answers with the run ended CANCELLED within this much of being called.
CANCEL_BOUND_SECONDS = 1.0


async def cancel_and_time(platform: Platform, run_id: str, reason: str) -> tuple[runs_pb2.Run, float]:
    """Cancel the run; the run CancelRun answered with and the seconds from the call to that answer."""
    started = time.perf_counter()
    answered = await platform.runs_stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run_id, reason=reason))
    return answered, time.perf_counter() - started


def assert_cancelled(run: runs_pb2.Run, reason: str) -> None:
    assert run.state == runs_pb2.RUN_STATE_CANCELLED, runs_pb2.RunState.Name(run.state)
    assert run.error_code == "cancelled"
    assert reason in run.error_message
    assert run.steps[-1].error.code == "cancelled"
    assert reason in run.steps[-1].error.message
    assert [step.sequence for step in run.steps] == list(range(1, len(run.steps) + 1))


async def test_cancel_while_waiting_for_the_models_first_byte(tmp_path: Path) -> None:
    async with ScriptedLLM(delayed(text_reply("too late"), 5.0)) as llm, \
            start_platform(tmp_path, llm.base_url) as platform:
        run = await start_run(platform, "hello")
        assert await llm.wait_for(lambda: len(llm.requests) == 1)

        answered, elapsed = await cancel_and_time(platform, run.id, "user pressed stop")

        assert answered.state == runs_pb2.RUN_STATE_CANCELLED
        assert elapsed < CANCEL_BOUND_SECONDS
        stored = await get_run(platform, run.id)
        assert_cancelled(stored, "user pressed stop")
        assert kinds(stored.steps) == ["user_request", "error"]
        # The engine hung up on the model instead of waiting for the answer it no longer wants.
        assert await llm.wait_for(lambda: 0 in llm.aborted, timeout=2.0)


async def test_cancel_while_the_model_streams(tmp_path: Path) -> None:
    answer = "word " * 200
    async with ScriptedLLM(text_reply(answer), chunk_delay_seconds=0.02) as llm, \
            start_platform(tmp_path, llm.base_url) as platform:
        run = await start_run(platform, "tell me a long story")
        follow = platform.runs_stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id))
        events: list[runs_pb2.RunEvent] = []
        await read_until(follow, is_text_delta, events)

        answered, elapsed = await cancel_and_time(platform, run.id, "enough words")

        assert answered.state == runs_pb2.RUN_STATE_CANCELLED
        assert elapsed < CANCEL_BOUND_SECONDS
        rest = await read_rest(follow)
        assert rest[-1].run.state == runs_pb2.RUN_STATE_CANCELLED
        stored = await get_run(platform, run.id)
        assert_cancelled(stored, "enough words")
        assert kinds(stored.steps) == ["user_request", "error"]  # no half answer recorded as the response
        assert await llm.wait_for(lambda: 0 in llm.aborted, timeout=2.0)


async def test_cancel_while_a_slow_tool_runs(tmp_path: Path) -> None:
    marker = tmp_path / "slow-tool-marker"
    script = [tool_call_reply("slow", {"seconds": 5, "marker": str(marker)}), text_reply("never asked for")]
    async with ScriptedLLM(*script) as llm, \
            start_platform(tmp_path, llm.base_url, tools_overrides=slow_tool_overrides(tmp_path)) as platform:
        run = await start_run(platform, "wait for me")
        assert await wait_for_file(marker, "started", timeout=5.0)

        answered, elapsed = await cancel_and_time(platform, run.id, "tool takes too long")

        assert answered.state == runs_pb2.RUN_STATE_CANCELLED
        assert elapsed < CANCEL_BOUND_SECONDS
        stored = await get_run(platform, run.id)
        assert_cancelled(stored, "tool takes too long")
        assert kinds(stored.steps) == ["user_request", "agent_thought", "tool_call", "error"]
        # The tool call was abandoned: its execution was cancelled in the tools service, no result recorded,
        # and the model was not asked again.
        assert await wait_for_file(marker, "cancelled")
        assert len(llm.requests) == 1


async def test_cancel_of_a_finished_run_is_failed_precondition(tmp_path: Path) -> None:
    async with ScriptedLLM(text_reply("done")) as llm, start_platform(tmp_path, llm.base_url) as platform:
        run = await start_run(platform, "hello")
        assert (await wait_final(platform, run.id)).state == runs_pb2.RUN_STATE_COMPLETED

        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await platform.runs_stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id, reason="too late"))
        assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        stored = await get_run(platform, run.id)
        assert stored.state == runs_pb2.RUN_STATE_COMPLETED
        assert not stored.cancel_requested
        assert kinds(stored.steps) == ["user_request", "agent_response"]


@pytest.mark.parametrize(
    ("run_id", "code"),
    [
        ("5f0c6a4e-8d1b-4c57-9a43-2f1d7e9b6c10", grpc.StatusCode.NOT_FOUND),
        ("not-a-uuid", grpc.StatusCode.INVALID_ARGUMENT),
    ],
    ids=["unknown", "malformed"],
)
async def test_cancel_of_an_unknown_or_malformed_run_id(tmp_path: Path, run_id: str, code: grpc.StatusCode) -> None:
    async with ScriptedLLM() as llm, start_platform(tmp_path, llm.base_url) as platform:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await platform.runs_stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run_id))
        assert failure.value.code() == code


async def test_cancel_on_the_watch_stream_ends_the_followers_stream_too(tmp_path: Path) -> None:
    # A follower attached before the cancel sees the run end: the error step, then the final run.
    async with ScriptedLLM(delayed(text_reply("too late"), 5.0)) as llm, \
            start_platform(tmp_path, llm.base_url) as platform:
        run = await start_run(platform, "hello")
        follow = platform.runs_stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id))
        events: list[runs_pb2.RunEvent] = []
        await read_until(follow, is_step("user_request"), events)

        await platform.runs_stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id, reason="changed my mind"))
        events += await read_rest(follow, timeout=CANCEL_BOUND_SECONDS)

        steps = [event.step for event in events if event.WhichOneof("event") == "step"]
        assert kinds(steps) == ["user_request", "error"]
        assert "changed my mind" in steps[-1].error.message
        assert events[-1].run.state == runs_pb2.RUN_STATE_CANCELLED


async def test_a_run_deleted_while_it_executes_is_stopped_by_the_lease_renewals(tmp_path: Path) -> None:
    # Lease 1 s: renewals every third of a second; the engine stops a run the store reports lost twice running.
    async with ScriptedLLM(delayed(text_reply("too late"), 10.0)) as llm, \
            start_platform(tmp_path, llm.base_url, ENGINE_LEASE_SECONDS=1) as platform:
        run = await start_run(platform, "hello")
        assert await llm.wait_for(lambda: len(llm.requests) == 1)
        await platform.runs_stub.DeleteRun(runs_pb2.DeleteRunRequest(run_id=run.id))
        assert await llm.wait_for(lambda: 0 in llm.aborted, timeout=3.0)
        assert platform.engine.scheduler.held_runs == 0

