"""A run whose engine stopped, resumed by a real engine from its journal (issue 18), with the model's requests
counted: the runs service orphans it when its lease runs out, offers it to the engine connected to it, and the
engine continues it after a resume marker. A model reply once recorded is never requested again; the run's limits
count what earlier attempts did. (The same with real processes and SIGKILL: tests/e2e/test_resume.py.)"""

from pathlib import Path

from agentplatform.runs.v1 import runs_pb2
from services.common.limits import RunLimits
from services.common.usage import Usage
from services.runs.records import ModelCallStats, NewRun, NewStep
from tests.engine.run_helpers import get_run, kinds, wait_final
from tests.engine.test_approvals import wait_state
from tests.engine.test_idempotency_keys import LOCAL, create_pay_tool
from tests.runs.helpers import expire_lease
from tests.support.platform import Platform, start_platform
from tests.support.scripted_llm import ScriptedLLM, text_reply
from tests.tools.http_endpoint import serving_endpoint

LIMITS = RunLimits(max_model_calls=5, max_duration_seconds=60, max_total_tokens=100_000, max_tool_calls=5)
ASKED = {
    "tool_name": "calculator", "tool_call_id": "call_add", "raw_arguments": '{"operation": "add", "x": 5, "y": 10}',
}
MODEL_CALL = ModelCallStats(Usage(100, 20))


async def orphan(platform: Platform, steps: list[NewStep], limits: RunLimits = LIMITS) -> str:
    """A run left by an engine that died with these steps recorded, its lease run out and reaped."""
    store = platform.runs.store
    run = await store.create_run(NewRun(
        user_query="What is 5 + 10?", executor_id="engine-that-died", lease_seconds=60, owner="local",
        limits=limits, steps=(NewStep("user-request", {"text": "What is 5 + 10?"}), *steps),
    ))
    await expire_lease(platform.runs.db, run.id)
    assert await store.reap_expired() == [run.id]
    return run.id


async def test_a_run_stopped_after_a_tool_result_asks_the_model_once_for_the_next_turn(tmp_path: Path) -> None:
    async with ScriptedLLM(text_reply("It is 15.")) as llm, start_platform(tmp_path, llm.base_url) as platform:
        run_id = await orphan(platform, [
            NewStep("agent-thought", {"text": "Adding."}, model_call=MODEL_CALL),
            NewStep("tool-call", ASKED),
            NewStep("tool-result", {"tool_name": "calculator", "tool_call_id": "call_add", "text": "15"}),
        ])
        final = await wait_final(platform, run_id)
        assert final.state == runs_pb2.RUN_STATE_COMPLETED, final.error_message
        assert kinds(list(final.steps)) == ["user_request", "agent_thought", "tool_call", "tool_result", "resumed",
                                "agent_response"]
        assert [step.sequence for step in final.steps] == [1, 2, 3, 4, 5, 6]
        marker = final.steps[4].resumed
        assert (marker.attempt, marker.executor_id.startswith("engine-"), list(marker.held_tool_call_ids)) == (
            1, True, []
        )
        assert (final.attempts, final.lease_epoch) == (1, 2)
        # One model request: the recorded turn was not asked again, and the request carries its tool answer.
        assert len(llm.requests) == 1
        messages = llm.requests[0]["messages"]
        assert messages[-1] == {"role": "tool", "tool_call_id": "call_add", "content": "15"}
        assert [m["role"] for m in messages if m["role"] == "assistant"] == ["assistant"]


async def test_a_run_stopped_after_its_answer_is_finished_without_asking_the_model(tmp_path: Path) -> None:
    async with ScriptedLLM() as llm, start_platform(tmp_path, llm.base_url) as platform:
        run_id = await orphan(platform, [NewStep("agent-response", {"text": "15."}, model_call=MODEL_CALL)])
        final = await wait_final(platform, run_id)
        assert final.state == runs_pb2.RUN_STATE_COMPLETED, final.error_message
        assert kinds(list(final.steps)) == ["user_request", "agent_response", "resumed"]
        assert "finishes" in final.steps[-1].resumed.summary
        assert llm.requests == []


async def test_limits_count_the_model_calls_of_earlier_attempts(tmp_path: Path) -> None:
    async with ScriptedLLM(text_reply("never asked")) as llm, start_platform(tmp_path, llm.base_url) as platform:
        limits = RunLimits(max_model_calls=1, max_duration_seconds=60, max_total_tokens=100_000, max_tool_calls=5)
        run_id = await orphan(platform, [
            NewStep("agent-thought", {"text": "Adding."}, model_call=MODEL_CALL),
            NewStep("tool-call", ASKED),
            NewStep("tool-result", {"tool_name": "calculator", "tool_call_id": "call_add", "text": "15"}),
        ], limits)
        final = await wait_final(platform, run_id)
        assert (final.state, final.error_code) == (runs_pb2.RUN_STATE_FAILED, "max_model_calls")
        assert llm.requests == []
        assert (await get_run(platform, run_id)).attempts == 1


async def test_a_queued_run_of_an_engine_that_died_is_queued_again_and_begins_in_another(tmp_path: Path) -> None:
    async with ScriptedLLM(text_reply("Hello.")) as llm, start_platform(tmp_path, llm.base_url) as platform:
        store = platform.runs.store
        run = await store.create_run(NewRun(
            user_query="Hi", executor_id="engine-that-died", lease_seconds=60, owner="local", limits=LIMITS,
            state="queued",
        ))
        await expire_lease(platform.runs.db, run.id)
        assert await store.reap_expired() == [run.id]
        final = await wait_final(platform, run.id)
        assert final.state == runs_pb2.RUN_STATE_COMPLETED, final.error_message
        # It begins as a queued run does (its user request first), then says where it came from.
        assert kinds(list(final.steps)) == ["user_request", "resumed", "agent_response"]
        assert final.HasField("start_time") and final.lease_epoch == 2
        assert len(llm.requests) == 1


async def test_a_call_cut_off_whose_tool_is_read_only_runs_again_without_asking(tmp_path: Path) -> None:
    """calculator declares itself read-only: its call recorded without a result runs again, no person asked."""
    async with ScriptedLLM(text_reply("It is 15.")) as llm, start_platform(tmp_path, llm.base_url) as platform:
        run_id = await orphan(platform, [
            NewStep("agent-thought", {"text": "Adding."}, model_call=MODEL_CALL), NewStep("tool-call", ASKED),
        ])
        final = await wait_final(platform, run_id)
    assert final.state == runs_pb2.RUN_STATE_COMPLETED, final.error_message
    assert kinds(list(final.steps)) == ["user_request", "agent_thought", "tool_call", "resumed", "tool_result",
                                        "agent_response"]
    marker = final.steps[3].resumed
    assert "runs again" in marker.summary and list(marker.held_tool_call_ids) == []
    assert final.steps[4].tool_result.text.endswith("15") and len(llm.requests) == 1


async def test_a_cut_off_call_of_a_tool_not_safe_to_repeat_waits_and_each_decision_is_obeyed(tmp_path: Path) -> None:
    """A POST is not safe to repeat: the call waits for a person. "Run again" calls the endpoint once, with the key
    of the step recorded before the engine stopped; "continue without it" never calls it."""
    asked = {"tool_name": "http__pay", "tool_call_id": "call_pay", "raw_arguments": '{"amount": 5}'}
    async with serving_endpoint() as endpoint, ScriptedLLM(text_reply("Paid."), text_reply("Not paid.")) as llm, \
            start_platform(tmp_path, llm.base_url, tools_overrides=LOCAL) as platform:
        await create_pay_tool(platform, endpoint)
        runs = [
            await orphan(platform, [
                NewStep("agent-thought", {"text": "Paying."}, model_call=MODEL_CALL), NewStep("tool-call", asked),
            ])
            for _ in range(2)
        ]
        held = [await wait_state(platform, run_id, runs_pb2.RUN_STATE_WAITING) for run_id in runs]
        for run in held:
            assert kinds(list(run.steps))[-2:] == ["resumed", "approval_request"]
            assert list(run.steps[-2].resumed.held_tool_call_ids) == ["call_pay"]
            assert "unknown" in run.steps[-1].approval_request.prompt
        assert endpoint.received == []  # held, not called
        again, without = held
        await platform.runs_stub.ApproveStep(runs_pb2.ApproveStepRequest(run_id=again.id, sequence=again.step_count))
        ran = await wait_final(platform, again.id)
        await platform.runs_stub.RejectStep(
            runs_pb2.RejectStepRequest(run_id=without.id, sequence=without.step_count)
        )
        skipped = await wait_final(platform, without.id)
    assert ran.state == skipped.state == runs_pb2.RUN_STATE_COMPLETED
    # Called once, for the run whose call was approved, with the key of its tool-call step (sequence 3).
    assert [item.headers["idempotency-key"] for item in endpoint.received] == [f"{again.id}:3"]
    assert "unknown" in next(s for s in skipped.steps if s.HasField("tool_result")).tool_result.error
