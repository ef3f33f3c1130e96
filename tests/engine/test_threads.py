"""Conversations through the engine: a run continues a thread and the model sees the earlier turns exactly as it
saw them, cut to the context budget by whole turns; a busy thread rejects, enqueues or interrupts; threads are
listed, read and deleted through RunService, each user only their own."""

from pathlib import Path
from typing import Any

import grpc
import pytest

from agentplatform.engine.v1 import engine_pb2
from agentplatform.runs.v1 import runs_pb2
from tests.engine.run_helpers import get_run, start_run, wait_final
from tests.support.keys import ALICE, AUTH, BOB, as_
from tests.support.platform import Platform, start_platform
from tests.support.scripted_llm import ScriptedLLM, delayed, text_reply, tool_call_reply


async def chat(platform: Platform, message: str, **fields: Any) -> engine_pb2.ChatResponse:
    return await platform.engine_stub.Chat(engine_pb2.ChatRequest(message=message, **fields))


def user_request(run: runs_pb2.Run) -> runs_pb2.UserRequest:
    assert run.steps[0].HasField("user_request")
    return run.steps[0].user_request


async def test_a_second_turn_sends_the_model_the_first_exactly_as_it_saw_it(tmp_path: Path) -> None:
    script = [
        # Tool calls without text: the timeline shows a placeholder thought, the model's context has none.
        tool_call_reply("calculator", {"operation": "add", "x": 5, "y": 10}),
        text_reply("The result is 15."),
        text_reply("45"),
    ]
    async with ScriptedLLM(*script) as llm, start_platform(tmp_path, llm.base_url) as platform:
        first = await chat(platform, "What is 5 + 10?")
        second = await chat(platform, "Multiply that by 3", thread_id=first.thread_id)

        assert second.response == "45" and second.thread_id == first.thread_id
        seen_last_in_first_turn = llm.requests[1]["messages"]
        assert llm.requests[2]["messages"] == [
            *seen_last_in_first_turn,
            {"role": "assistant", "content": "The result is 15."},
            {"role": "user", "content": "Multiply that by 3"},
        ]
        assert seen_last_in_first_turn[2]["content"] is None  # not the placeholder text
        run = await get_run(platform, second.run_id)
        assert (run.thread_id, run.thread_turn) == (first.thread_id, 2)
        assert (user_request(run).context_turns, user_request(run).omitted_turns) == (1, 0)
        first_run = await get_run(platform, first.run_id)
        assert first_run.steps[1].agent_thought.placeholder
        assert first_run.steps[1].agent_thought.text == "Using tool: calculator"


async def test_the_context_budget_leaves_out_the_oldest_turns_whole(tmp_path: Path) -> None:
    # Each earlier turn is about 48 tokens by the engine's estimate (80 characters each way, plus 4 per message);
    # the instructions and the new message about 8. A budget of 110 holds two earlier turns, not three.
    turns = [("a" * 80, "A" * 80), ("b" * 80, "B" * 80), ("c" * 80, "C" * 80)]
    script = [text_reply(answer) for _, answer in turns] + [text_reply("done")]
    async with ScriptedLLM(*script) as llm, start_platform(
        tmp_path, llm.base_url, ENGINE_CONTEXT_BUDGET_TOKENS=110, ENGINE_SYSTEM_PROMPT="Be brief."
    ) as platform:
        thread_id = ""
        for question, _ in turns:
            thread_id = (await chat(platform, question, thread_id=thread_id)).thread_id
        last = await chat(platform, "next", thread_id=thread_id)

        assert llm.requests[-1]["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "b" * 80},
            {"role": "assistant", "content": "B" * 80},
            {"role": "user", "content": "c" * 80},
            {"role": "assistant", "content": "C" * 80},
            {"role": "user", "content": "next"},
        ]
        request = user_request(await get_run(platform, last.run_id))
        assert (request.context_turns, request.omitted_turns) == (2, 1)


async def test_a_busy_thread_rejects_by_default_and_enqueues_when_asked(tmp_path: Path) -> None:
    script = [delayed(text_reply("The result is 15."), 1.5), text_reply("45")]
    async with ScriptedLLM(*script) as llm, start_platform(tmp_path, llm.base_url) as platform:
        first = await start_run(platform, "What is 5 + 10?")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await start_run(platform, "Multiply that by 3", thread_id=first.thread_id)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"run '{first.id}'" in (refused.value.details() or "")

        queued = await start_run(
            platform, "Multiply that by 3", thread_id=first.thread_id,
            multitask_strategy=runs_pb2.MULTITASK_STRATEGY_ENQUEUE,
        )
        assert queued.state == runs_pb2.RUN_STATE_QUEUED and queued.thread_turn == 2
        done = await wait_final(platform, queued.id)
        assert done.state == runs_pb2.RUN_STATE_COMPLETED
        assert (await get_run(platform, first.id)).state == runs_pb2.RUN_STATE_COMPLETED  # it waited, untouched
        # It began after the first ended, so the model saw the first turn's answer.
        assert llm.requests[1]["messages"][-2] == {"role": "assistant", "content": "The result is 15."}
        assert done.start_time.ToDatetime() >= (await get_run(platform, first.id)).complete_time.ToDatetime()


async def test_interrupt_cancels_the_running_turn_and_then_runs(tmp_path: Path) -> None:
    script = [delayed(text_reply("too late"), 30), text_reply("ok")]
    async with ScriptedLLM(*script) as llm, start_platform(tmp_path, llm.base_url) as platform:
        slow = await start_run(platform, "Tell me a long story")
        await llm.wait_for(lambda: len(llm.requests) == 1)
        fresh = await start_run(
            platform, "Never mind", thread_id=slow.thread_id, multitask_strategy=runs_pb2.MULTITASK_STRATEGY_INTERRUPT
        )
        interrupted = await wait_final(platform, slow.id)
        assert interrupted.state == runs_pb2.RUN_STATE_CANCELLED
        assert f"interrupted by run {fresh.id}" in interrupted.error_message
        done = await wait_final(platform, fresh.id)
        assert done.state == runs_pb2.RUN_STATE_COMPLETED
        # The interrupted turn stays in the conversation with what it got through: its user message.
        assert llm.requests[1]["messages"][-2:] == [
            {"role": "user", "content": "Tell me a long story"},
            {"role": "user", "content": "Never mind"},
        ]




async def test_threads_are_listed_read_and_deleted_by_their_owner_only(tmp_path: Path) -> None:
    async with ScriptedLLM(text_reply("1"), text_reply("2"), text_reply("3")) as llm, start_platform(
        tmp_path, llm.base_url, auth=AUTH
    ) as platform:
        engine, runs = platform.engine_stub, platform.runs_stub
        first = await engine.Chat(engine_pb2.ChatRequest(message="one"), metadata=as_(ALICE))
        again = engine_pb2.ChatRequest(message="two", thread_id=first.thread_id)
        second = await engine.Chat(again, metadata=as_(ALICE))
        await engine.Chat(engine_pb2.ChatRequest(message="bob's"), metadata=as_(BOB))

        listed = await runs.ListThreads(runs_pb2.ListThreadsRequest(), metadata=as_(ALICE))
        assert [(t.id, t.title, t.turn_count, t.owner) for t in listed.threads] == [
            (first.thread_id, "one", 2, "alice")
        ]
        turns = await runs.ListRuns(runs_pb2.ListRunsRequest(thread_id=first.thread_id), metadata=as_(ALICE))
        assert [run.id for run in turns.runs] == [first.run_id, second.run_id]

        # Bob can neither see nor continue Alice's thread: the same NOT_FOUND as a thread that does not exist.
        for call in (
            runs.GetThread(runs_pb2.GetThreadRequest(thread_id=first.thread_id), metadata=as_(BOB)),
            runs.ListRuns(runs_pb2.ListRunsRequest(thread_id=first.thread_id), metadata=as_(BOB)),
            runs.DeleteThread(runs_pb2.DeleteThreadRequest(thread_id=first.thread_id), metadata=as_(BOB)),
            engine.Chat(engine_pb2.ChatRequest(message="hi", thread_id=first.thread_id), metadata=as_(BOB)),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
            # (The engine names the service that answered: "runs service: thread ... not found".)
            assert (refused.value.details() or "").endswith(f"thread '{first.thread_id}' not found")
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await runs.ListThreads(runs_pb2.ListThreadsRequest(all_users=True), metadata=as_(BOB))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

        await runs.DeleteThread(runs_pb2.DeleteThreadRequest(thread_id=first.thread_id), metadata=as_(ALICE))
        for run_id in (first.run_id, second.run_id):
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                await runs.GetRun(runs_pb2.GetRunRequest(run_id=run_id), metadata=as_(ALICE))
            assert gone.value.code() == grpc.StatusCode.NOT_FOUND
        assert (await runs.ListThreads(runs_pb2.ListThreadsRequest(), metadata=as_(ALICE))).threads == []


async def test_a_bad_thread_id_or_strategy_is_invalid_argument(tmp_path: Path) -> None:
    async with ScriptedLLM() as llm, start_platform(tmp_path, llm.base_url) as platform:
        for fields, words in (
            ({"thread_id": "not-a-uuid"}, "thread_id 'not-a-uuid' is not a valid thread id"),
            ({"multitask_strategy": 42}, "unknown multitask_strategy 42"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await start_run(platform, "hello", **fields)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in (refused.value.details() or "")
        assert llm.requests == []
