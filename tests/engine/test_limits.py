"""The engine's bounds: concurrent runs and the queue behind them (RESOURCE_EXHAUSTED with a RetryInfo past it),
and each per-run limit, which ends the run FAILED with the limit's name as its code."""

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from agentplatform.runs.v1 import runs_pb2
from services.common.identity import LOCAL_USER
from tests.engine.run_helpers import get_run, kinds, start_run, wait_final
from tests.support.platform import Platform, start_platform
from tests.support.scripted_llm import ScriptedLLM, delayed, text_reply, tool_call_reply, tool_calls_reply


def user_messages(llm: ScriptedLLM) -> list[str]:
    """The user's message of each request the model got, in order."""
    return [next(m["content"] for m in request["messages"] if m["role"] == "user") for request in llm.requests]


async def start_when_room(platform: Platform, message: str, timeout: float = 2.0) -> runs_pb2.Run:
    """StartRun, retried while the engine answers RESOURCE_EXHAUSTED (a queue place frees up asynchronously)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await start_run(platform, message)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
            await asyncio.sleep(0.02)


async def test_runs_beyond_the_concurrency_bound_queue_then_run_in_order(tmp_path: Path) -> None:
    script = [delayed(text_reply("A done"), 1.0), text_reply("B done"), text_reply("E done")]
    async with ScriptedLLM(*script) as llm, start_platform(
        tmp_path, llm.base_url, ENGINE_MAX_CONCURRENT_RUNS=1, ENGINE_MAX_QUEUED_RUNS=2
    ) as platform:
        a = await start_run(platform, "A")
        b = await start_run(platform, "B")
        c = await start_run(platform, "C")
        assert [run.state for run in (a, b, c)] == [
            runs_pb2.RUN_STATE_RUNNING, runs_pb2.RUN_STATE_QUEUED, runs_pb2.RUN_STATE_QUEUED,
        ]
        queued = await platform.runs_stub.ListRuns(runs_pb2.ListRunsRequest(state=runs_pb2.RUN_STATE_QUEUED))
        assert {run.id for run in queued.runs} == {b.id, c.id}

        # The queue is full: the fourth start is refused with a standard retry hint.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await start_run(platform, "D")
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(refused.value)
        assert status is not None
        retry_info = error_details_pb2.RetryInfo()
        assert any(detail.Unpack(retry_info) for detail in status.details)
        assert retry_info.retry_delay.ToTimedelta().total_seconds() > 0

        # A queued run is cancelled at once, and never reaches the model.
        cancelled = await platform.runs_stub.CancelRun(runs_pb2.CancelRunRequest(run_id=c.id, reason="not needed"))
        assert cancelled.state == runs_pb2.RUN_STATE_CANCELLED
        e = await start_when_room(platform, "E")
        assert e.state == runs_pb2.RUN_STATE_QUEUED, "A still holds the only slot"

        finals = {run.id: await wait_final(platform, run.id) for run in (a, b, e)}
        assert all(run.state == runs_pb2.RUN_STATE_COMPLETED for run in finals.values())
        assert user_messages(llm) == ["A", "B", "E"]
        # One at a time: each queued run began only after the one before it ended.
        assert finals[b.id].start_time.ToDatetime() >= finals[a.id].complete_time.ToDatetime()
        assert finals[e.id].start_time.ToDatetime() >= finals[b.id].complete_time.ToDatetime()

        stored_c = await get_run(platform, c.id)
        assert stored_c.state == runs_pb2.RUN_STATE_CANCELLED and stored_c.error_code == "cancelled"
        assert kinds(stored_c.steps) == ["error"]
        assert "not needed" in stored_c.steps[0].error.message
        assert not stored_c.HasField("start_time")
        assert platform.engine.scheduler.held_runs == 0


async def test_cancelling_a_queued_run_keeps_the_concurrency_bound(tmp_path: Path) -> None:
    # A holds the one slot; cancelling C (queued behind B) must not let B start before A ends.
    script = [delayed(text_reply("A done"), 1.0), text_reply("B done")]
    async with ScriptedLLM(*script) as llm, start_platform(
        tmp_path, llm.base_url, ENGINE_MAX_CONCURRENT_RUNS=1, ENGINE_MAX_QUEUED_RUNS=2
    ) as platform:
        a, b, c = [await start_run(platform, name) for name in "ABC"]
        await platform.runs_stub.CancelRun(runs_pb2.CancelRunRequest(run_id=c.id))
        await asyncio.sleep(0.3)
        assert (await get_run(platform, b.id)).state == runs_pb2.RUN_STATE_QUEUED
        assert len(llm.requests) == 1

        final_a, final_b = await wait_final(platform, a.id), await wait_final(platform, b.id)
        assert final_a.state == final_b.state == runs_pb2.RUN_STATE_COMPLETED
        assert final_b.start_time.ToDatetime() >= final_a.complete_time.ToDatetime()
        assert user_messages(llm) == ["A", "B"]


async def test_max_model_calls_ends_the_run(tmp_path: Path) -> None:
    calls = [tool_call_reply("calculator", {"operation": "add", "x": i, "y": 1}) for i in range(3)]
    async with ScriptedLLM(*calls) as llm, start_platform(tmp_path, llm.base_url) as platform:
        run = await start_run(platform, "count", limits=runs_pb2.RunLimits(max_model_calls=2))
        assert run.limits.max_model_calls == 2
        final = await wait_final(platform, run.id)

        assert final.state == runs_pb2.RUN_STATE_FAILED
        assert final.error_code == final.steps[-1].error.code == "max_model_calls"
        assert "limits.max_model_calls" in final.error_message
        assert len(llm.requests) == 2
        assert kinds(final.steps).count("tool_result") == 2


async def test_max_tool_calls_ends_the_run_before_the_call_over_the_limit(tmp_path: Path) -> None:
    script = [
        tool_call_reply("calculator", {"operation": "add", "x": 1, "y": 1}),
        tool_calls_reply(("calculator", {"operation": "add", "x": 2, "y": 2}),
                         ("calculator", {"operation": "add", "x": 3, "y": 3})),
        text_reply("never"),
    ]
    async with ScriptedLLM(*script) as llm, start_platform(tmp_path, llm.base_url) as platform:
        run = await start_run(platform, "add a lot", limits=runs_pb2.RunLimits(max_tool_calls=2))
        final = await wait_final(platform, run.id)

        assert final.state == runs_pb2.RUN_STATE_FAILED
        assert final.error_code == final.steps[-1].error.code == "max_tool_calls"
        assert "limits.max_tool_calls" in final.error_message
        assert kinds(final.steps) == [
            "user_request", "agent_thought", "tool_call", "tool_result", "agent_thought", "error",
        ]
        assert len(llm.requests) == 2


async def test_max_total_tokens_ends_the_run(tmp_path: Path) -> None:
    script = [tool_call_reply("calculator", {"operation": "add", "x": 1, "y": 1}), text_reply("never")]
    async with ScriptedLLM(*script) as llm, start_platform(tmp_path, llm.base_url) as platform:
        run = await start_run(platform, "add", limits=runs_pb2.RunLimits(max_total_tokens=10))
        final = await wait_final(platform, run.id)

        used = llm.usages[0]
        assert used is not None and used.total_tokens >= 10
        assert final.state == runs_pb2.RUN_STATE_FAILED
        assert final.error_code == final.steps[-1].error.code == "max_total_tokens"
        assert "limits.max_total_tokens" in final.error_message
        assert final.usage.total_tokens == used.total_tokens
        assert len(llm.requests) == 1, "no model call after the limit was reached"
        assert "tool_result" not in kinds(final.steps)


async def test_max_duration_ends_a_run_waiting_on_a_slow_model(tmp_path: Path) -> None:
    async with ScriptedLLM(delayed(text_reply("too late"), 5.0)) as llm, \
            start_platform(tmp_path, llm.base_url) as platform:
        started = time.perf_counter()
        run = await start_run(
            platform, "hello", limits=runs_pb2.RunLimits(max_duration=duration_pb2.Duration(nanos=300_000_000))
        )
        final = await wait_final(platform, run.id)

        assert time.perf_counter() - started < 2.0
        assert final.state == runs_pb2.RUN_STATE_FAILED
        assert final.error_code == final.steps[-1].error.code == "max_duration"
        assert "limits.max_duration" in final.error_message
        assert kinds(final.steps) == ["user_request", "error"]
        assert await llm.wait_for(lambda: 0 in llm.aborted, timeout=2.0)


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        (runs_pb2.RunLimits(max_model_calls=51), "max_model_calls"),
        (runs_pb2.RunLimits(max_duration=duration_pb2.Duration(seconds=3601)), "max_duration"),
        (runs_pb2.RunLimits(max_total_tokens=2_000_001), "max_total_tokens"),
        (runs_pb2.RunLimits(max_tool_calls=501), "max_tool_calls"),
        (runs_pb2.RunLimits(max_tool_calls=-1), "max_tool_calls"),
        # Beyond what a timedelta holds: once an OverflowError, answered INTERNAL.
        (runs_pb2.RunLimits(max_duration=duration_pb2.Duration(seconds=2**62)), "max_duration"),
        # Mixed signs, which protobuf's rules refuse (once normalised to 0.999999999 s and run).
        (runs_pb2.RunLimits(max_duration=duration_pb2.Duration(seconds=1, nanos=-1)), "max_duration"),
    ],
)
async def test_a_limit_above_the_engines_maximum_is_invalid_argument(
    tmp_path: Path, limits: runs_pb2.RunLimits, field: str
) -> None:
    async with ScriptedLLM() as llm, start_platform(tmp_path, llm.base_url) as platform:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await start_run(platform, "hello", limits=limits)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"limits.{field}" in failure.value.details()
        assert not (await platform.runs_stub.ListRuns(runs_pb2.ListRunsRequest())).runs
        assert llm.requests == []


async def test_a_run_that_spends_its_users_budget_stops_after_that_step_and_the_next_is_refused(
    tmp_path: Path,
) -> None:
    script = [tool_call_reply("calculator", {"operation": "add", "x": 1, "y": 1}), text_reply("never")]
    async with ScriptedLLM(*script) as llm, start_platform(tmp_path, llm.base_url) as platform:
        budget = runs_pb2.Budget(
            scope=runs_pb2.BUDGET_SCOPE_USER, subject=LOCAL_USER, metric=runs_pb2.BUDGET_METRIC_TOKENS,
            period=runs_pb2.BUDGET_PERIOD_DAY, limit=10,
        )
        await platform.runs_stub.SetBudget(runs_pb2.SetBudgetRequest(budget=budget))
        refusals = {when: REGISTRY.get_sample_value(
            "agentplatform_budget_refusals_total", {"scope": "user", "when": when}
        ) or 0 for when in ("start", "running")}
        run = await start_run(platform, "add")
        final = await wait_final(platform, run.id)

        assert final.state == runs_pb2.RUN_STATE_FAILED
        assert final.error_code == final.steps[-1].error.code == "budget_exceeded"
        assert f"10 tokens per day for user '{LOCAL_USER}' is spent" in final.error_message
        # Stopped after the step that spent it: the model's tool call is recorded, the tool never ran.
        assert kinds(final.steps)[-2:] == ["tool_call", "error"] and len(llm.requests) == 1

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await start_run(platform, "add again")
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "cannot start: the budget of 10 tokens per day" in (refused.value.details() or "")
        # Counted once each (the runs service runs in this process here).
        assert {when: (REGISTRY.get_sample_value(
            "agentplatform_budget_refusals_total", {"scope": "user", "when": when}
        ) or 0) - before for when, before in refusals.items()} == {"start": 1, "running": 1}
