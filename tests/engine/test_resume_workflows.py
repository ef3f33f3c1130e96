"""A workflow run whose engine stopped, resumed node by node by a real engine from its journal (issue 18): the
position is rebuilt from the steps (the finished nodes' outcomes, the node in flight and what of it was recorded),
finished nodes are never run again, a node in flight goes on from its steps, and one resume marker names the node
and what was retried or held. The runs are made as an engine that died would leave them: created with their steps
in the store, their lease run out and reaped. (The same with real processes and SIGKILL:
tests/e2e/test_resume_workflows.py.)"""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agentplatform.agents.v1 import agents_pb2, workflows_pb2
from agentplatform.runs.v1 import runs_pb2
from services.common.limits import RunLimits
from services.common.usage import Usage
from services.engine.journal import AgentResponse, Step, ToolCall, ToolResult, UserRequest
from services.engine.loop.run_progress import progress_from_steps
from services.runs.records import ModelCallStats, NewRun, NewStep
from tests.agents.workflow_helpers import edge, node
from tests.engine.run_helpers import kinds, wait_final
from tests.engine.test_approvals import wait_state
from tests.engine.test_idempotency_keys import LOCAL, create_pay_tool
from tests.engine.test_workflows import agent, save, workflow_platform
from tests.runs.helpers import expire_lease
from tests.support.platform import Platform
from tests.support.scripted_llm import ScriptedLLM, text_reply
from tests.tools.http_endpoint import serving_endpoint

LIMITS = RunLimits(max_model_calls=5, max_duration_seconds=60, max_total_tokens=100_000, max_tool_calls=5)
MODEL_CALL = ModelCallStats(Usage(100, 20))
START = NewStep("node-outcome", {"kind": "start", "assigned": {"topic": "tides"}}, node_id="start")
ADD = {
    "tool_name": "calculator", "tool_call_id": "calc-6",
    "raw_arguments": '{"expression": "2 + 3", "operation": "expression"}',
}


def chain(writer: str, reviewer: str) -> workflows_pb2.Workflow:
    """start > first (agent) > calc (calculator) > second (agent) > done."""
    return workflows_pb2.Workflow(
        display_name="Chain",
        inputs=[workflows_pb2.WorkflowInput(name="topic", required=True)],
        nodes=[
            node("start", start=workflows_pb2.StartNode()),
            node("first", agent=workflows_pb2.AgentNode(agent_id=writer, input='"Write about " + topic',
                                                        output="draft")),
            node("calc", tool=workflows_pb2.ToolNode(
                tool_id="calculator", arguments={"operation": '"expression"', "expression": '"2 + 3"'}, output="sum"
            )),
            node("second", agent=workflows_pb2.AgentNode(agent_id=reviewer, input='"Review: " + draft',
                                                         output="review")),
            node("done", end=workflows_pb2.EndNode(output='{"draft": draft, "review": review}')),
        ],
        edges=[edge("start", "first"), edge("first", "calc"), edge("calc", "second"), edge("second", "done")],
    )


def paying() -> workflows_pb2.Workflow:
    """start > pay (a POST: not safe to repeat) > done."""
    return workflows_pb2.Workflow(
        display_name="Pay",
        nodes=[
            node("start", start=workflows_pb2.StartNode()),
            node("pay", tool=workflows_pb2.ToolNode(tool_id="http__pay", arguments={"amount": "5"}, output="receipt")),
            node("done", end=workflows_pb2.EndNode(output='{"receipt": receipt}')),
        ],
        edges=[edge("start", "pay"), edge("pay", "done")],
    )


def at(node_id: str, kind: str, content: dict[str, Any], **fields: Any) -> NewStep:
    return NewStep(kind, content, node_id=node_id, **fields)


#: The first node, finished: its user request, the answer, its outcome.
FIRST_DONE = [
    at("first", "user-request", {"text": "Write about tides"}),
    at("first", "agent-response", {"text": "Tides rise."}, model_call=MODEL_CALL),
    at("first", "node-outcome", {"kind": "agent", "assigned": {"draft": "Tides rise."}}),
]
CALC_DONE = [
    at("calc", "tool-call", ADD),
    at("calc", "tool-result", {"tool_name": "calculator", "tool_call_id": "calc-6", "text": "2 + 3 = 5"}),
    at("calc", "node-outcome", {"kind": "tool", "assigned": {"sum": "2 + 3 = 5"}}),
]


# --- the position read back from a node's steps (plain domain code) --------------------------------------------


def test_a_tool_nodes_call_without_a_result_is_held_or_run_again_and_one_with_its_result_is_kept() -> None:
    call = Step(ToolCall("http__pay", "pay-2", '{"amount": 5}'), sequence=2, node_id="pay")
    held = progress_from_steps([call])
    marker = held.take_over("engine-b", 1, lambda _: False, idle="begins it")
    assert (marker.held_tool_call_ids, held.unknown, held.pending_sequences) == (("pay-2",), {"pay-2"}, {"pay-2": 2})
    rerun = progress_from_steps([call])
    assert "runs again" in rerun.take_over("engine-b", 1, lambda _: True, idle="begins it").summary
    assert rerun.unknown == set()
    answered = progress_from_steps([call, Step(ToolResult("http__pay", "pay-2", text="ok"), sequence=3)])
    marker = answered.take_over("engine-b", 1, lambda _: False, idle="goes on with the tool's recorded result")
    assert (marker.summary, marker.held_tool_call_ids, answered.pending) == (
        "goes on with the tool's recorded result", (), []
    )


def test_an_agent_nodes_recorded_answer_is_kept_and_the_time_left_counts_from_the_stretch() -> None:
    began = datetime.now(UTC) - timedelta(seconds=20)
    steps = [
        Step(UserRequest("Write"), sequence=2, node_id="first", created_at=began),
        Step(AgentResponse("Tides rise."), sequence=3, node_id="first"),
    ]
    progress = progress_from_steps(steps)
    assert (progress.answer, progress.pending) == ("Tides rise.", [])
    left = progress.time_left(60.0)
    assert left is not None and 39.0 < left <= 40.0
    assert progress.time_left(None) is None and progress.time_left(5.0) == 0.0
    assert progress_from_steps([]).time_left(60.0) == 60.0


async def orphan(platform: Platform, workflow_id: str, steps: list[NewStep], start: NewStep = START) -> str:
    """A run of the workflow left by an engine that died with these steps recorded, its lease run out and
    reaped."""
    store = platform.runs.store
    run = await store.create_run(NewRun(
        user_query="Chain", executor_id="engine-that-died", lease_seconds=60, owner="local", limits=LIMITS,
        workflow_id=workflow_id, workflow_revision=1, steps=(start,),
    ))
    await store.append_steps(run.id, steps, epoch=run.lease_epoch)
    await expire_lease(platform.runs.db, run.id)
    # The runs service's own reaper (every second) may take it first on a loaded machine, and the live engine
    # resume it at once: either way, the dead engine no longer holds it.
    assert await store.reap_expired() in ([run.id], [])
    assert (await store.get_run(run.id)).executor_id != "engine-that-died", "the dead engine still holds the run"
    return run.id


def assert_resumed(run: runs_pb2.Run, before: int, summary: str) -> runs_pb2.Resumed:
    """COMPLETED, steps 1..n, one marker right after the `before` steps the engine that died recorded."""
    assert run.state == runs_pb2.RUN_STATE_COMPLETED, (run.error_code, run.error_message, kinds(list(run.steps)))
    assert [step.sequence for step in run.steps] == list(range(1, len(run.steps) + 1))
    assert kinds(list(run.steps)).count("resumed") == 1 and run.steps[before].HasField("resumed"), kinds(
        list(run.steps)
    )
    marker = run.steps[before].resumed
    assert (marker.attempt, run.attempts) == (1, 1)
    assert summary in marker.summary, marker.summary
    return marker


def outcomes(run: runs_pb2.Run) -> list[str]:
    """The nodes whose outcome is recorded, in order."""
    return [step.node_id for step in run.steps if step.HasField("node_outcome")]


async def test_killed_between_two_nodes_the_run_goes_on_at_the_next_without_redoing_the_first(tmp_path: Path) -> None:
    async with ScriptedLLM(text_reply("Fine.")) as llm, workflow_platform(tmp_path, llm) as (platform, workflows):
        saved = await save(workflows, chain(await agent(platform, "W", "w"), await agent(platform, "R", "r")))
        run_id = await orphan(platform, saved.id, FIRST_DONE)
        final = await wait_final(platform, run_id)
    marker = assert_resumed(final, 4, "node 'calc': begins it")
    assert final.steps[4].node_id == "calc" and not marker.held_tool_call_ids
    assert outcomes(final) == ["start", "first", "calc", "second", "done"]
    # The first agent was not asked again: the one request is the second node's, on the recorded draft.
    assert len(llm.requests) == 1 and llm.requests[0]["messages"][-1]["content"] == "Review: Tides rise."
    assert final.steps[-1].agent_response.text == '{"draft": "Tides rise.", "review": "Fine."}'


async def test_killed_while_an_agent_node_waits_for_its_model_the_call_is_made_again_once(tmp_path: Path) -> None:
    async with ScriptedLLM(text_reply("Tides rise."), text_reply("Fine.")) as llm, \
            workflow_platform(tmp_path, llm) as (platform, workflows):
        saved = await save(workflows, chain(await agent(platform, "W", "w"), await agent(platform, "R", "r")))
        run_id = await orphan(platform, saved.id, FIRST_DONE[:1])
        final = await wait_final(platform, run_id)
    assert_resumed(final, 2, "node 'first': requests the model call again")
    assert final.steps[2].node_id == "first"
    assert kinds([s for s in final.steps if s.node_id == "first"]) == [
        "user_request", "resumed", "agent_response", "node_outcome"
    ]
    # The node's conversation is its recorded user request, not a second one.
    assert [m["content"] for m in llm.requests[0]["messages"] if m["role"] == "user"] == ["Write about tides"]
    assert len(llm.requests) == 2  # the first node's call, then the second node's
    assert final.steps[-1].agent_response.text == '{"draft": "Tides rise.", "review": "Fine."}'


async def test_an_agent_nodes_recorded_answer_is_kept_and_a_recorded_end_only_finishes(tmp_path: Path) -> None:
    async with ScriptedLLM(text_reply("Fine.")) as llm, workflow_platform(tmp_path, llm) as (platform, workflows):
        saved = await save(workflows, chain(await agent(platform, "W", "w"), await agent(platform, "R", "r")))
        answered = await orphan(platform, saved.id, FIRST_DONE[:2])
        final = await wait_final(platform, answered)
        assert_resumed(final, 3, "node 'first': goes on with the agent's recorded answer")
        assert outcomes(final) == ["start", "first", "calc", "second", "done"] and len(llm.requests) == 1

        end = at("done", "node-outcome", {"kind": "end", "output": {"draft": "D", "review": "R"}, "has_output": True})
        second_done = [
            at("second", "user-request", {"text": "Review: D"}),
            at("second", "agent-response", {"text": "R"}, model_call=MODEL_CALL),
            at("second", "node-outcome", {"kind": "agent", "assigned": {"review": "R"}}),
        ]
        ended = await orphan(platform, saved.id, [*FIRST_DONE, *CALC_DONE, *second_done, end])
        finished = await wait_final(platform, ended)
    assert_resumed(finished, 11, "node 'done': finishes the run")
    assert kinds(list(finished.steps))[-2:] == ["resumed", "agent_response"]
    assert finished.steps[-1].agent_response.text == '{"draft": "D", "review": "R"}'
    assert len(llm.requests) == 1  # only the first run's second node


async def test_a_read_only_tool_node_cut_off_runs_again_once(tmp_path: Path) -> None:
    async with ScriptedLLM(text_reply("Fine.")) as llm, workflow_platform(tmp_path, llm) as (platform, workflows):
        saved = await save(workflows, chain(await agent(platform, "W", "w"), await agent(platform, "R", "r")))
        run_id = await orphan(platform, saved.id, [*FIRST_DONE, CALC_DONE[0]])
        final = await wait_final(platform, run_id)
    marker = assert_resumed(final, 5, "node 'calc': runs again, safe to repeat: calculator (calc-6)")
    assert not marker.held_tool_call_ids
    calc = [s for s in final.steps if s.node_id == "calc"]
    assert kinds(calc) == ["tool_call", "resumed", "tool_result", "node_outcome"]
    assert "5" in calc[2].tool_result.text and len(llm.requests) == 1


async def test_a_tool_node_not_safe_to_repeat_waits_for_a_person_and_each_decision_finishes_it(
    tmp_path: Path
) -> None:
    """A POST cut off by the engine's death is held: "run again" calls the endpoint once, with the key of the
    step recorded before; "continue without it" never calls it and the node's output is null."""
    call = {"tool_name": "http__pay", "tool_call_id": "pay-2", "raw_arguments": '{"amount": 5}', "params": {
        "amount": 5}}
    start = NewStep("node-outcome", {"kind": "start"}, node_id="start")
    async with serving_endpoint() as endpoint, ScriptedLLM() as llm, \
            workflow_platform(tmp_path, llm, tools_overrides=LOCAL) as (platform, workflows):
        await create_pay_tool(platform, endpoint)
        saved = await save(workflows, paying())
        runs = [await orphan(platform, saved.id, [at("pay", "tool-call", call)], start) for _ in range(2)]
        held = [await wait_state(platform, run_id, runs_pb2.RUN_STATE_WAITING) for run_id in runs]
        for run in held:
            assert kinds(list(run.steps)) == ["node_outcome", "tool_call", "resumed", "approval_request"]
            assert list(run.steps[2].resumed.held_tool_call_ids) == ["pay-2"]
            assert "node 'pay': holds for a decision" in run.steps[2].resumed.summary
            assert "unknown" in run.steps[3].approval_request.prompt and run.steps[3].node_id == "pay"
        assert endpoint.received == []  # held, not called
        again, without = held
        await platform.runs_stub.ApproveStep(runs_pb2.ApproveStepRequest(run_id=again.id, sequence=4))
        ran = await wait_final(platform, again.id)
        await platform.runs_stub.RejectStep(runs_pb2.RejectStepRequest(run_id=without.id, sequence=4))
        skipped = await wait_final(platform, without.id)
    assert ran.state == skipped.state == runs_pb2.RUN_STATE_COMPLETED, (ran.error_message, skipped.error_message)
    assert [item.headers["idempotency-key"] for item in endpoint.received] == [f"{again.id}:2"]
    assert json.loads(ran.steps[-1].agent_response.text)["receipt"]  # the endpoint's answer
    assert skipped.steps[-1].agent_response.text == '{"receipt": null}'
    assert "unknown" in next(s for s in skipped.steps if s.HasField("tool_result")).tool_result.error
    for run in (ran, skipped):
        assert kinds(list(run.steps)).count("resumed") == 1 and run.attempts == 1
        assert [step.sequence for step in run.steps] == list(range(1, len(run.steps) + 1))


async def test_an_agent_nodes_cut_off_call_not_safe_to_repeat_waits_and_runs_once_when_approved(
    tmp_path: Path
) -> None:
    """Inside an agent node, as in an agent run: the held call waits with the node's id; "run again" calls the
    endpoint once with the key of the step recorded before the engine stopped, then the model is asked once."""
    asked = {"tool_name": "http__pay", "tool_call_id": "call_pay", "raw_arguments": '{"amount": 5}'}
    payer = workflows_pb2.Workflow(
        display_name="Payer",
        nodes=[
            node("start", start=workflows_pb2.StartNode()),
            node("payer", agent=workflows_pb2.AgentNode(agent_id="", input='"Pay 5"', output="answer")),
            node("done", end=workflows_pb2.EndNode(output="answer")),
        ],
        edges=[edge("start", "payer"), edge("payer", "done")],
    )
    async with serving_endpoint() as endpoint, ScriptedLLM(text_reply("Paid.")) as llm, \
            workflow_platform(tmp_path, llm, tools_overrides=LOCAL) as (platform, workflows):
        await create_pay_tool(platform, endpoint)
        assert platform.agents_stub is not None
        created = await platform.agents_stub.CreateAgent(agents_pb2.CreateAgentRequest(
            agent=agents_pb2.Agent(display_name="Payer", instructions="You pay.", model="demo", tools=["http__pay"])
        ))
        payer.nodes[1].agent.agent_id = created.id
        saved = await save(workflows, payer)
        run_id = await orphan(platform, saved.id, [
            at("payer", "user-request", {"text": "Pay 5"}),
            at("payer", "agent-thought", {"text": "Paying."}, model_call=MODEL_CALL),
            at("payer", "tool-call", asked),
        ], NewStep("node-outcome", {"kind": "start"}, node_id="start"))
        held = await wait_state(platform, run_id, runs_pb2.RUN_STATE_WAITING)
        assert kinds(list(held.steps))[-2:] == ["resumed", "approval_request"]
        assert list(held.steps[-2].resumed.held_tool_call_ids) == ["call_pay"]
        assert held.steps[-2].resumed.summary.startswith("node 'payer': holds for a decision")
        assert held.steps[-1].node_id == "payer" and endpoint.received == []
        await platform.runs_stub.ApproveStep(runs_pb2.ApproveStepRequest(run_id=run_id, sequence=held.step_count))
        final = await wait_final(platform, run_id)
    assert final.state == runs_pb2.RUN_STATE_COMPLETED, final.error_message
    assert [item.headers["idempotency-key"] for item in endpoint.received] == [f"{run_id}:4"]
    assert len(llm.requests) == 1 and llm.requests[0]["messages"][-1]["role"] == "tool"
    assert final.steps[-1].agent_response.text == "Paid."
    assert [step.sequence for step in final.steps] == list(range(1, len(final.steps) + 1))
