"""A run lives on its own: StartRun returns at once, any client follows it with WatchRun and re-attaches without
losing or repeating a step, a request id makes the start idempotent, tool calls of one turn run concurrently,
every model step carries its usage, and an engine that stops interrupts what it cannot finish."""

import time
import uuid
from pathlib import Path

import grpc
import pytest

from agentplatform.engine.v1 import engine_pb2
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from services.engine.app import start_engine
from tests.engine.run_helpers import (
    get_run,
    is_step,
    is_text_delta,
    kinds,
    read_rest,
    read_until,
    slow_tool_overrides,
    start_run,
    steps_of,
    wait_final,
)
from tests.support.platform import engine_settings, grpc_channel, start_platform
from tests.support.scripted_llm import (
    ScriptedLLM,
    delayed,
    text_reply,
    tool_call_reply,
    tool_calls_reply,
)


async def test_start_run_returns_at_once_and_the_run_completes_in_the_background(tmp_path: Path) -> None:
    async with ScriptedLLM(delayed(text_reply("Here you are."), 1.0)) as llm, \
            start_platform(tmp_path, llm.base_url) as platform:
        started = time.perf_counter()
        run = await start_run(platform, "hello", metadata={"who": "test"})
        assert time.perf_counter() - started < 0.5, "StartRun must not wait for the model"
        assert run.state == runs_pb2.RUN_STATE_RUNNING
        assert run.metadata["who"] == "test"

        # Another client, on its own channel, follows the run to its end.
        async with grpc_channel(platform.runs.port) as channel:
            stub = runs_pb2_grpc.RunServiceStub(channel)
            events = [event async for event in stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id))]

        assert events[0].WhichOneof("event") == "run" and events[0].run.id == run.id
        assert events[-1].run.state == runs_pb2.RUN_STATE_COMPLETED
        assert time.perf_counter() - started >= 1.0, "the run waited for the (slow) model in the background"
        steps = steps_of(events)
        assert kinds(steps) == ["user_request", "agent_response"]
        assert steps[-1].agent_response.text == "Here you are."
        assert len(llm.requests) == 1 and not llm.aborted


async def test_reattaching_with_watch_run_loses_and_repeats_no_step(tmp_path: Path) -> None:
    script = [
        tool_call_reply("calculator", {"operation": "add", "x": 2, "y": 3}, content="Adding."),
        text_reply("The sum is five, " + "and that is all there is to say about it. " * 8),
    ]
    async with ScriptedLLM(*script, chunk_delay_seconds=0.02) as llm, \
            start_platform(tmp_path, llm.base_url) as platform:
        call = platform.engine_stub.StreamChat(engine_pb2.StreamChatRequest(
            message="add 2 and 3", on_disconnect=engine_pb2.DISCONNECT_POLICY_CONTINUE,
        ))
        first: list[runs_pb2.RunEvent] = []
        await read_until(call, is_step("tool_call"), first)
        run_id = first[0].run.id
        call.cancel()  # the client goes away mid-run
        seen = [step.sequence for step in steps_of(first)]
        assert seen == [1, 2, 3]

        second = await read_rest(platform.runs_stub.WatchRun(
            runs_pb2.WatchRunRequest(run_id=run_id, after_sequence=seen[-1])
        ))

        assert second[0].WhichOneof("event") == "run"
        assert second[-1].run.state == runs_pb2.RUN_STATE_COMPLETED
        later = [step.sequence for step in steps_of(second)]
        union = seen + later
        assert len(union) == len(set(union)), f"a step came twice: {union}"
        stored = await get_run(platform, run_id)
        assert union == list(range(1, stored.step_count + 1))
        assert kinds(stored.steps) == [
            "user_request", "agent_thought", "tool_call", "tool_result", "agent_response",
        ]
        assert steps_of(second)[-1] == stored.steps[-1]


async def test_streamchat_disconnect_with_the_default_policy_cancels_the_run(tmp_path: Path) -> None:
    async with ScriptedLLM(text_reply("word " * 200), chunk_delay_seconds=0.02) as llm, \
            start_platform(tmp_path, llm.base_url) as platform:
        call = platform.engine_stub.StreamChat(engine_pb2.StreamChatRequest(message="a long story"))
        first: list[runs_pb2.RunEvent] = []
        await read_until(call, is_text_delta, first)
        call.cancel()

        final = await wait_final(platform, first[0].run.id, timeout=3.0)
        assert final.state == runs_pb2.RUN_STATE_CANCELLED
        assert final.error_code == "cancelled"
        assert kinds(final.steps) == ["user_request", "error"]
        assert await llm.wait_for(lambda: 0 in llm.aborted, timeout=2.0)


async def test_a_late_watcher_gets_the_text_so_far_then_the_rest(tmp_path: Path) -> None:
    answer = " ".join(f"word{i}" for i in range(40)) + "."
    async with ScriptedLLM(text_reply(answer), chunk_delay_seconds=0.03) as llm, \
            start_platform(tmp_path, llm.base_url) as platform:
        run = await start_run(platform, "talk slowly")
        early_call = platform.runs_stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id))
        early: list[runs_pb2.RunEvent] = []
        for _ in range(5):
            await read_until(early_call, is_text_delta, early)
        written = "".join(event.delta.text for event in early if is_text_delta(event))

        late = await read_rest(platform.runs_stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id)))
        early_call.cancel()

        deltas = [event.delta for event in late if is_text_delta(event)]
        first = deltas[0]
        assert first.replace, "a watcher attaching mid-step first gets the text so far, to replace"
        assert first.text.startswith(written) and answer.startswith(first.text)
        assert len(first.text) > 0
        assert any(not delta.replace for delta in deltas[1:]), "then the model's next pieces, to append"
        assert {delta.sequence for delta in deltas} == {2}
        text = ""
        for delta in deltas:
            text = delta.text if delta.replace else text + delta.text
        response = steps_of(late)[-1]
        assert response.sequence == 2
        assert text == response.agent_response.text == answer


async def test_a_request_id_makes_start_run_idempotent(tmp_path: Path) -> None:
    request_id = str(uuid.uuid4())
    async with ScriptedLLM(delayed(text_reply("once"), 0.5), text_reply("twice?")) as llm, \
            start_platform(tmp_path, llm.base_url) as platform:
        first = await start_run(platform, "hello", request_id=request_id)
        retry = await start_run(platform, "hello", request_id=request_id)  # while the first still runs
        assert retry.id == first.id
        final = await wait_final(platform, first.id)
        assert final.state == runs_pb2.RUN_STATE_COMPLETED
        after_end = await start_run(platform, "hello", request_id=request_id)
        assert after_end.id == first.id and after_end.state == runs_pb2.RUN_STATE_COMPLETED

        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await start_run(platform, "something else", request_id=request_id)
        assert failure.value.code() == grpc.StatusCode.ALREADY_EXISTS

        runs = (await platform.runs_stub.ListRuns(runs_pb2.ListRunsRequest())).runs
        assert [run.id for run in runs] == [first.id]
        assert len(llm.requests) == 1, "the model was asked once, for the one run"
        assert kinds(final.steps) == ["user_request", "agent_response"]


async def test_tool_calls_of_one_turn_run_concurrently_and_are_recorded_in_call_order(tmp_path: Path) -> None:
    # The first call is the slower one: results are recorded in the order of the calls, not of their ends.
    script = [
        tool_calls_reply(("slow", {"seconds": 1.0}), ("slow", {"seconds": 0.6}), content="Both at once."),
        text_reply("Both done."),
    ]
    async with ScriptedLLM(*script) as llm, \
            start_platform(tmp_path, llm.base_url, tools_overrides=slow_tool_overrides(tmp_path)) as platform:
        run = await start_run(platform, "wait twice")
        final = await wait_final(platform, run.id)

        assert final.state == runs_pb2.RUN_STATE_COMPLETED
        steps = list(final.steps)
        assert kinds(steps) == [
            "user_request", "agent_thought", "tool_call", "tool_call", "tool_result", "tool_result", "agent_response",
        ]
        calls, results = [s.tool_call for s in steps[2:4]], [s.tool_result for s in steps[4:6]]
        assert [c.tool_call_id for c in calls] == [r.tool_call_id for r in results]
        assert [c.tool_call_id for c in calls] == [c.id for c in script[0].tool_calls]
        assert [r.text for r in results] == ["waited 1.0 s", "waited 0.6 s"]
        tools_time = (steps[5].create_time.ToDatetime() - steps[3].create_time.ToDatetime()).total_seconds()
        assert tools_time < 1.4, f"the two calls took {tools_time:.2f} s: one after the other (1.6 s), not at once"
        assert tools_time >= 0.9
        assert len(llm.requests) == 2


async def test_model_steps_carry_their_usage_and_run_usage_is_current_while_running(tmp_path: Path) -> None:
    script = [
        tool_call_reply("calculator", {"operation": "add", "x": 1, "y": 2}, content="Let me add."),
        delayed(text_reply("It is three."), 1.0),
    ]
    async with ScriptedLLM(*script) as llm, start_platform(tmp_path, llm.base_url) as platform:
        run = await start_run(platform, "add 1 and 2")
        follow = platform.runs_stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id))
        await read_until(follow, is_step("tool_result"), [])
        assert await llm.wait_for(lambda: len(llm.requests) == 2)

        during = await get_run(platform, run.id)  # the second (slow) model call is under way
        first_usage = llm.usages[0]
        assert first_usage is not None and first_usage.total_tokens > 0
        assert during.state == runs_pb2.RUN_STATE_RUNNING
        assert during.usage.total_tokens == first_usage.total_tokens
        assert during.usage.prompt_tokens == first_usage.prompt_tokens
        await read_rest(follow)

        final = await get_run(platform, run.id)
        thought, response = final.steps[1], final.steps[-1]
        assert kinds([thought, response]) == ["agent_thought", "agent_response"]
        for step, usage in ((thought, llm.usages[0]), (response, llm.usages[1])):
            assert usage is not None
            assert step.HasField("model_call")
            assert (step.model_call.usage.prompt_tokens, step.model_call.usage.completion_tokens,
                    step.model_call.usage.total_tokens) == (usage.prompt_tokens, usage.completion_tokens,
                                                            usage.total_tokens)
            latency = step.model_call.latency.ToTimedelta().total_seconds()
            first_token = step.model_call.time_to_first_token.ToTimedelta().total_seconds()
            assert step.model_call.HasField("time_to_first_token")
            assert 0 < first_token <= latency
        assert response.model_call.latency.ToTimedelta().total_seconds() >= 1.0  # the delayed reply
        assert not final.steps[2].HasField("model_call")  # a tool call is not a model call
        assert final.usage.total_tokens == sum(u.total_tokens for u in llm.usages if u is not None)


async def test_engine_stop_hands_running_and_queued_runs_back_for_the_next_engine(tmp_path: Path) -> None:
    # The first two model calls outlast the grace; whatever asks after them is answered at once.
    script = [delayed(text_reply("too late"), 5.0), delayed(text_reply("too late"), 5.0), *[text_reply("done")] * 3]
    async with ScriptedLLM(*script) as llm, start_platform(
        tmp_path, llm.base_url, ENGINE_MAX_CONCURRENT_RUNS=2
    ) as platform:
        runs = [await start_run(platform, f"question {i}") for i in range(3)]
        assert [run.state for run in runs] == [runs_pb2.RUN_STATE_RUNNING] * 2 + [runs_pb2.RUN_STATE_QUEUED]
        assert await llm.wait_for(lambda: len(llm.requests) == 2)
        stopping = platform.engine.scheduler.executor_id

        started = time.perf_counter()
        await platform.engine.stop(grace=0.5)
        assert time.perf_counter() - started < 3.0
        assert await llm.wait_for(lambda: llm.aborted == {0, 1}, timeout=2.0)

        # Handed back, not ended: live, held by nobody, nothing recorded for the cut-off calls, no attempt used.
        for run, state in zip(runs, [runs_pb2.RUN_STATE_RUNNING] * 2 + [runs_pb2.RUN_STATE_QUEUED], strict=True):
            stored = await get_run(platform, run.id)
            assert (stored.state, stored.executor_id, stored.attempts, stored.handbacks, stored.handed_back_by) == (
                state, "", 0, 1, stopping
            ), stored
            assert kinds(list(stored.steps)) == (["user_request"] if state == runs_pb2.RUN_STATE_RUNNING else [])

        successor = await start_engine(engine_settings(platform.runs.port, platform.tools.port, llm.base_url))
        try:
            for run in runs:
                final = await wait_final(platform, run.id)
                assert final.state == runs_pb2.RUN_STATE_COMPLETED, final.error_message
                assert kinds(list(final.steps)) == ["user_request", "resumed", "agent_response"]
                assert [step.sequence for step in final.steps] == [1, 2, 3]
                marker = final.steps[1].resumed
                assert marker.handed_back_by == stopping and marker.executor_id == successor.scheduler.executor_id
                assert f"handed back by engine {stopping} at its shutdown" in marker.summary
                assert (final.attempts, final.handbacks, final.lease_epoch) == (0, 1, 2)
                assert final.steps[-1].agent_response.text == "done"
        finally:
            await successor.stop()
        # The two cut-off calls asked again, once each, and the queued run's first call: nothing more.
        assert len(llm.requests) == 5
