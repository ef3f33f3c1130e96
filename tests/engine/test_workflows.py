"""Running saved workflows: node after node, every node's work recorded as steps tagged with its id; conditions,
bounded loops, state and tool nodes in CEL; approval nodes that pause the run WAITING and resume it in whichever
engine is there after the decision; timeouts that take their branch; failures that name the node."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2

from agentplatform.agents.v1 import agents_pb2, workflows_pb2, workflows_pb2_grpc
from agentplatform.engine.v1 import engine_pb2
from agentplatform.runs.v1 import runs_pb2
from services.engine.app import start_engine
from tests.agents.workflow_helpers import edge, every_kind, find, node, two_agents
from tests.engine.run_helpers import get_run, wait_final
from tests.support.platform import Platform, engine_settings, grpc_channel, start_platform
from tests.support.scripted_llm import ScriptedLLM, text_reply


@asynccontextmanager
async def workflow_platform(tmp_path: Path, llm: ScriptedLLM, **engine: Any) -> AsyncIterator[tuple[Platform, Any]]:
    """The platform with the agents service, and a WorkflowRegistryService stub."""
    async with start_platform(tmp_path, llm.base_url, with_agents=True, **engine) as platform:
        assert platform.agents is not None
        async with grpc_channel(platform.agents.port) as channel:
            yield platform, workflows_pb2_grpc.WorkflowRegistryServiceStub(channel)


async def agent(platform: Platform, name: str, instructions: str) -> str:
    assert platform.agents_stub is not None
    created = await platform.agents_stub.CreateAgent(agents_pb2.CreateAgentRequest(
        agent=agents_pb2.Agent(display_name=name, instructions=instructions, model="demo", tools=["calculator"])
    ))
    return created.id


async def save(workflows: Any, workflow: workflows_pb2.Workflow) -> workflows_pb2.Workflow:
    return await workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=workflow))


async def run_workflow(platform: Platform, workflow_id: str, **inputs: Any) -> runs_pb2.Run:
    values = struct_pb2.Struct()
    values.update(inputs)
    request = engine_pb2.StartWorkflowRunRequest(workflow_id=workflow_id, inputs=values)
    return await platform.engine_stub.StartWorkflowRun(request)


async def wait_waiting(platform: Platform, run_id: str, timeout: float = 10.0) -> runs_pb2.Run:
    call = platform.runs_stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run_id))
    try:
        async with asyncio.timeout(timeout):
            async for event in call:
                if event.HasField("run") and event.run.state == runs_pb2.RUN_STATE_WAITING:
                    break
    finally:
        call.cancel()
    return await get_run(platform, run_id)


def path(run: runs_pb2.Run) -> list[tuple[str, str]]:
    """The nodes the run went through, with the branch each took."""
    return [(step.node_id, step.node_outcome.branch) for step in run.steps if step.HasField("node_outcome")]


def approval(run: runs_pb2.Run) -> runs_pb2.Step:
    return [step for step in run.steps if step.HasField("approval_request")][-1]


async def test_a_two_agent_workflow_runs_to_its_approval_and_on_after_an_engine_restart(tmp_path: Path) -> None:
    replies = [text_reply("Thanks, we will refund you."), text_reply("OK, friendly and correct.")]
    async with ScriptedLLM(*replies) as llm, workflow_platform(tmp_path, llm) as (platform, workflows):
        drafter = await agent(platform, "Drafter", "You draft replies.")
        reviewer = await agent(platform, "Reviewer", "You review replies.")
        saved = await save(workflows, two_agents(drafter, reviewer))

        run = await run_workflow(platform, saved.id, ticket="My order arrived broken")
        assert (run.workflow_id, run.workflow_revision, run.thread_id) == (saved.id, 1, "")
        waiting = await wait_waiting(platform, run.id)
        assert path(waiting) == [("start", ""), ("draft", ""), ("review", ""), ("passed", "true")]
        request = approval(waiting)
        assert request.node_id == "approve" and request.approval_request.node_id == "approve"
        assert request.approval_request.prompt == "Send this reply?\n\nThanks, we will refund you."
        # Each agent ran as itself, on the message its node computed; its steps carry the node's id.
        assert llm.requests[0]["messages"][0]["content"] == "You draft replies."
        assert llm.requests[0]["messages"][-1]["content"] == "Draft a reply to: My order arrived broken"
        assert llm.requests[1]["messages"][-1]["content"] == (
            "Answer OK or say what is wrong: Thanks, we will refund you."
        )
        draft_steps = [step for step in waiting.steps if step.node_id == "draft"]
        kinds = [step.WhichOneof("content") for step in draft_steps]
        assert kinds == ["user_request", "agent_response", "node_outcome"]

        await platform.engine.stop(grace=0)  # the engine that paused the run is gone
        await platform.runs_stub.ApproveStep(runs_pb2.ApproveStepRequest(run_id=run.id, sequence=request.sequence))
        successor = await start_engine(engine_settings(
            platform.runs.port, platform.tools.port, llm.base_url, AGENTS_ADDR=f"127.0.0.1:{platform.agents.port}"
        ))
        try:
            final = await wait_final(platform, run.id)
        finally:
            await successor.stop()
        assert final.state == runs_pb2.RUN_STATE_COMPLETED, final.error_message
        assert path(final)[-2:] == [("approve", "approved"), ("sent", "")]
        assert final.steps[-1].agent_response.text == '{"reply": "Thanks, we will refund you.", "sent": true}'


async def test_a_rejected_approval_takes_its_branch(tmp_path: Path) -> None:
    replies = [text_reply("Draft."), text_reply("OK")]
    async with ScriptedLLM(*replies) as llm, workflow_platform(tmp_path, llm) as (platform, workflows):
        saved = await save(workflows, two_agents(await agent(platform, "A", "a"), await agent(platform, "B", "b")))
        run = await run_workflow(platform, saved.id, ticket="hi")
        request = approval(await wait_waiting(platform, run.id))
        await platform.runs_stub.RejectStep(
            runs_pb2.RejectStepRequest(run_id=run.id, sequence=request.sequence, comment="too short")
        )
        final = await wait_final(platform, run.id)
        assert path(final)[-2:] == [("approve", "rejected"), ("held", "")]
        assert final.steps[-1].agent_response.text == '{"reply": "Draft.", "review": "OK", "sent": false}'


async def test_loops_state_tools_and_a_timed_out_approval(tmp_path: Path) -> None:
    async with ScriptedLLM(text_reply("forty-two")) as llm, workflow_platform(tmp_path, llm) as (platform, workflows):
        workflow = every_kind(await agent(platform, "A", "a"))
        find(workflow, "approve").approval.timeout.CopyFrom(duration_pb2.Duration(nanos=300_000_000))
        find(workflow, "calc").tool.arguments["operation"] = '"expression"'
        saved = await save(workflows, workflow)
        run = await run_workflow(platform, saved.id, question="What is it?", tone="dry")
        final = await wait_final(platform, run.id)
        assert final.state == runs_pb2.RUN_STATE_COMPLETED, final.error_message
        # Three turns of the loop, each a calculator call and a state update; then the agent, the check, and the
        # approval nobody gave in time.
        assert path(final) == [
            ("start", ""), ("init", ""),
            ("loop", "body"), ("calc", ""), ("bump", ""),
            ("loop", "body"), ("calc", ""), ("bump", ""),
            ("loop", "body"), ("calc", ""), ("bump", ""),
            ("loop", "done"), ("draft", ""), ("check", "true"), ("approve", "timeout"), ("refused", ""),
        ]
        outcomes = [s.node_outcome for s in final.steps if s.HasField("node_outcome")]
        iterations = [o.iteration for o in outcomes if o.kind == "while_loop"]
        assert iterations == [1, 2, 3, 0]
        results = [s.tool_result.text for s in final.steps if s.HasField("tool_result")]
        assert results == ["2 + 0 = 2", "2 + 1 = 3", "2 + 2 = 4"]
        assert llm.requests[0]["messages"][-1]["content"] == "Answer: What is it? (dry)"
        assert final.steps[-1].agent_response.text == "null"


async def test_a_loop_past_its_bound_fails_naming_the_node(tmp_path: Path) -> None:
    async with ScriptedLLM() as llm, workflow_platform(tmp_path, llm) as (platform, workflows):
        forever = workflows_pb2.Workflow(
            display_name="Forever",
            nodes=[
                node("start", start=workflows_pb2.StartNode()),
                node("spin", while_loop=workflows_pb2.WhileNode(condition="true", max_iterations=3)),
                node("tick", set_state=workflows_pb2.SetStateNode(assignments={"n": "1"})),
                node("end", end=workflows_pb2.EndNode(output="'never'")),
            ],
            edges=[
                edge("start", "spin"), edge("spin", "tick", "body"), edge("tick", "spin"), edge("spin", "end", "done")
            ],
        )
        run = await run_workflow(platform, (await save(workflows, forever)).id)
        final = await wait_final(platform, run.id)
        assert (final.state, final.error_code) == (runs_pb2.RUN_STATE_FAILED, "max_iterations")
        assert "node 'spin'" in final.error_message and len([s for s in final.steps if s.node_id == "tick"]) == 3


async def test_an_expression_that_fails_on_the_state_fails_the_run_naming_node_and_field(tmp_path: Path) -> None:
    async with ScriptedLLM() as llm, workflow_platform(tmp_path, llm) as (platform, workflows):
        broken = workflows_pb2.Workflow(
            display_name="Broken",
            inputs=[workflows_pb2.WorkflowInput(name="n", required=True)],
            nodes=[
                node("start", start=workflows_pb2.StartNode()),
                node("half", set_state=workflows_pb2.SetStateNode(assignments={"h": "100 / n"})),
                node("end", end=workflows_pb2.EndNode(output="h")),
            ],
            edges=[edge("start", "half"), edge("half", "end")],
        )
        saved = await save(workflows, broken)
        assert (await wait_final(platform, (await run_workflow(platform, saved.id, n=4)).id)).steps[-1] \
            .agent_response.text == "25"
        final = await wait_final(platform, (await run_workflow(platform, saved.id, n=0)).id)
        assert (final.state, final.error_code) == (runs_pb2.RUN_STATE_FAILED, "expression_failed")
        assert "node 'half' assignments.h" in final.error_message and "divide by zero" in final.error_message


async def test_bad_starts_are_refused_before_any_run_exists(tmp_path: Path) -> None:
    async with ScriptedLLM() as llm, workflow_platform(tmp_path, llm) as (platform, workflows):
        saved = await save(workflows, two_agents(await agent(platform, "A", "a"), await agent(platform, "B", "b")))
        for workflow_id, inputs, code, words in (
            (saved.id, {}, grpc.StatusCode.INVALID_ARGUMENT, "inputs.ticket is required"),
            (saved.id, {"ticket": "t", "extra": 1}, grpc.StatusCode.INVALID_ARGUMENT, "'extra' are not inputs"),
            ("00000000-0000-4000-8000-000000000000", {}, grpc.StatusCode.NOT_FOUND, "not found"),
            ("nope", {}, grpc.StatusCode.INVALID_ARGUMENT, "workflow_id 'nope' is not a valid workflow id"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await run_workflow(platform, workflow_id, **inputs)
            assert refused.value.code() == code and words in (refused.value.details() or "")
        assert (await platform.runs_stub.ListRuns(runs_pb2.ListRunsRequest())).runs == []
