"""Human approval of tool calls: a call of a tool that requires approval pauses the run WAITING (held by no engine)
until ApproveStep or RejectStep, from any client; the run then resumes where it paused, in whichever engine the
store offers it to, even one started after the decision; a timeout refuses the call; a waiting run can be
cancelled."""

import asyncio
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2

from agentplatform.engine.v1 import engine_pb2
from agentplatform.runs.v1 import runs_pb2
from agentplatform.tools.v1 import tools_pb2
from services.engine.app import start_engine
from tests.engine.run_helpers import get_run, kinds, start_run, wait_final
from tests.support.platform import Platform, engine_settings, start_platform
from tests.support.scripted_llm import ScriptedLLM, text_reply, tool_call_reply

ADD = {"operation": "add", "x": 5, "y": 10}


async def require_approval(platform: Platform, tool_id: str = "calculator") -> None:
    tool = tools_pb2.Tool(id=tool_id, requires_approval=True)
    request = tools_pb2.UpdateToolRequest(tool=tool, update_mask=field_mask_pb2.FieldMask(paths=["requires_approval"]))
    assert (await platform.tools_stub.UpdateTool(request)).requires_approval


async def wait_state(
    platform: Platform, run_id: str, state: "runs_pb2.RunState", timeout: float = 10.0
) -> runs_pb2.Run:
    """The run (with its steps) once WatchRun has shown it in `state`."""
    call = platform.runs_stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run_id))
    try:
        async with asyncio.timeout(timeout):
            async for event in call:
                if event.HasField("run") and event.run.state == state:
                    break
    finally:
        call.cancel()
    return await get_run(platform, run_id)


def approval_step(run: runs_pb2.Run) -> runs_pb2.Step:
    [step] = [step for step in run.steps if step.HasField("approval_request")]
    return step


async def test_an_approved_call_runs_after_the_pause_and_the_run_completes(tmp_path: Path) -> None:
    script = [tool_call_reply("calculator", ADD, id="call_add"), text_reply("It is 15.")]
    async with ScriptedLLM(*script) as llm, start_platform(tmp_path, llm.base_url) as platform:
        await require_approval(platform)
        run = await start_run(platform, "What is 5 + 10?")
        waiting = await wait_state(platform, run.id, runs_pb2.RUN_STATE_WAITING)
        assert waiting.executor_id == ""  # held by no engine while it waits
        request = approval_step(waiting)
        asked = request.approval_request
        assert (asked.tool_call_id, asked.tool_name) == ("call_add", "calculator")
        assert '"x": 5' in request.approval_request.prompt
        calculator = await platform.tools_stub.GetTool(tools_pb2.GetToolRequest(tool_id="calculator"))
        assert calculator.usage.calls == 0  # nothing ran before the approval
        assert len(llm.requests) == 1

        decided = await platform.runs_stub.ApproveStep(
            runs_pb2.ApproveStepRequest(run_id=run.id, sequence=request.sequence, comment="fine")
        )
        assert decided.steps == [] and decided.step_count == request.sequence + 1
        final = await wait_final(platform, run.id)
        assert final.state == runs_pb2.RUN_STATE_COMPLETED
        assert kinds(list(final.steps)) == [
            "user_request", "agent_thought", "tool_call", "approval_request", "approval_decision", "tool_result",
            "agent_response",
        ]
        assert final.steps[5].tool_result.text == "5 + 10 = 15"
        # The model's second turn saw exactly the call and its result, as without a pause.
        assert [m["role"] for m in llm.requests[1]["messages"]] == ["system", "user", "assistant", "tool"]
        assert llm.requests[1]["messages"][3] == {"role": "tool", "tool_call_id": "call_add", "content": "5 + 10 = 15"}
        assert (final.usage.total_tokens, final.limits.max_model_calls) == (
            sum(step.model_call.usage.total_tokens for step in final.steps), run.limits.max_model_calls
        )


async def test_a_rejected_call_is_refused_to_the_model_with_the_comment(tmp_path: Path) -> None:
    script = [tool_call_reply("calculator", ADD, id="call_add"), text_reply("OK, I won't.")]
    async with ScriptedLLM(*script) as llm, start_platform(tmp_path, llm.base_url) as platform:
        await require_approval(platform)
        run = await start_run(platform, "What is 5 + 10?")
        request = approval_step(await wait_state(platform, run.id, runs_pb2.RUN_STATE_WAITING))
        await platform.runs_stub.RejectStep(
            runs_pb2.RejectStepRequest(run_id=run.id, sequence=request.sequence, comment="use your head")
        )
        final = await wait_final(platform, run.id)
        assert final.state == runs_pb2.RUN_STATE_COMPLETED
        result = final.steps[5].tool_result
        assert "not approved (rejected by local): use your head" in result.error
        assert llm.requests[1]["messages"][-1]["content"].startswith("Error: the call was not approved")
        calculator = await platform.tools_stub.GetTool(tools_pb2.GetToolRequest(tool_id="calculator"))
        assert calculator.usage.calls == 0
        # The decision is taken once: deciding again is FAILED_PRECONDITION.
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await platform.runs_stub.ApproveStep(runs_pb2.ApproveStepRequest(run_id=run.id, sequence=request.sequence))
        assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_run_approved_while_no_engine_runs_resumes_in_the_next_engine(tmp_path: Path) -> None:
    script = [tool_call_reply("calculator", ADD, id="call_add"), text_reply("It is 15.")]
    async with ScriptedLLM(*script) as llm, start_platform(tmp_path, llm.base_url) as platform:
        await require_approval(platform)
        run = await start_run(platform, "What is 5 + 10?")
        request = approval_step(await wait_state(platform, run.id, runs_pb2.RUN_STATE_WAITING))
        await platform.engine.stop(grace=0)  # the engine that paused the run is gone

        await platform.runs_stub.ApproveStep(runs_pb2.ApproveStepRequest(run_id=run.id, sequence=request.sequence))
        await asyncio.sleep(0.3)
        assert (await get_run(platform, run.id)).state == runs_pb2.RUN_STATE_WAITING  # nobody to resume it yet

        successor = await start_engine(engine_settings(platform.runs.port, platform.tools.port, llm.base_url))
        try:
            final = await wait_final(platform, run.id)
            assert final.state == runs_pb2.RUN_STATE_COMPLETED
            assert final.steps[-1].agent_response.text == "It is 15."
        finally:
            await successor.stop()


async def test_an_approval_nobody_gives_in_time_refuses_the_call(tmp_path: Path) -> None:
    script = [tool_call_reply("calculator", ADD, id="call_add"), text_reply("Nobody answered.")]
    async with ScriptedLLM(*script) as llm, start_platform(
        tmp_path, llm.base_url, ENGINE_TOOL_APPROVAL_TIMEOUT_SECONDS=0.5
    ) as platform:
        await require_approval(platform)
        run = await start_run(platform, "What is 5 + 10?")
        request = approval_step(await wait_state(platform, run.id, runs_pb2.RUN_STATE_WAITING))
        assert request.approval_request.HasField("expire_time")
        final = await wait_final(platform, run.id)
        decision = final.steps[4].approval_decision
        assert (decision.outcome, decision.decided_by) == (runs_pb2.APPROVAL_OUTCOME_TIMED_OUT, "")
        assert "not approved (timed out)" in final.steps[5].tool_result.error
        assert final.state == runs_pb2.RUN_STATE_COMPLETED


async def test_chat_answers_once_the_approved_run_completes(tmp_path: Path) -> None:
    script = [tool_call_reply("calculator", ADD, id="call_add"), text_reply("It is 15.")]
    async with ScriptedLLM(*script) as llm, start_platform(tmp_path, llm.base_url) as platform:
        await require_approval(platform)
        chat = asyncio.ensure_future(platform.engine_stub.Chat(engine_pb2.ChatRequest(message="What is 5 + 10?")))
        assert await llm.wait_for(lambda: len(llm.requests) == 1)
        [started] = (await platform.runs_stub.ListRuns(runs_pb2.ListRunsRequest())).runs
        run = await wait_state(platform, started.id, runs_pb2.RUN_STATE_WAITING)
        # ListRuns shows who waits on a person.
        listed = runs_pb2.ListRunsRequest(state=runs_pb2.RUN_STATE_WAITING)
        assert [r.id for r in (await platform.runs_stub.ListRuns(listed)).runs] == [run.id]
        await platform.runs_stub.ApproveStep(
            runs_pb2.ApproveStepRequest(run_id=run.id, sequence=approval_step(run).sequence)
        )
        answer = await asyncio.wait_for(chat, 10)
        assert (answer.response, answer.run_id) == ("It is 15.", run.id)


async def test_stream_chat_follows_the_run_through_its_pause(tmp_path: Path) -> None:
    script = [tool_call_reply("calculator", ADD, id="call_add"), text_reply("It is 15.")]
    async with ScriptedLLM(*script) as llm, start_platform(tmp_path, llm.base_url) as platform:
        await require_approval(platform)
        call = platform.engine_stub.StreamChat(engine_pb2.StreamChatRequest(message="What is 5 + 10?"))
        events: list[runs_pb2.RunEvent] = []
        async with asyncio.timeout(10):
            async for event in call:
                events.append(event)
                if event.HasField("step") and event.step.HasField("approval_request"):
                    await platform.runs_stub.ApproveStep(
                        runs_pb2.ApproveStepRequest(run_id=event.step.run_id, sequence=event.step.sequence)
                    )
        steps = [event.step for event in events if event.HasField("step")]
        assert [step.sequence for step in steps] == list(range(1, 8))  # each step once, in order
        states = [event.run.state for event in events if event.HasField("run")]
        assert runs_pb2.RUN_STATE_WAITING in states and states[-1] == runs_pb2.RUN_STATE_COMPLETED


async def test_a_waiting_run_can_be_cancelled(tmp_path: Path) -> None:
    script = [tool_call_reply("calculator", ADD)]
    async with ScriptedLLM(*script) as llm, start_platform(tmp_path, llm.base_url) as platform:
        await require_approval(platform)
        run = await start_run(platform, "What is 5 + 10?")
        await wait_state(platform, run.id, runs_pb2.RUN_STATE_WAITING)
        cancelled = await platform.runs_stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id, reason="never mind"))
        assert (cancelled.state, cancelled.error_code) == (runs_pb2.RUN_STATE_CANCELLED, "cancelled")
