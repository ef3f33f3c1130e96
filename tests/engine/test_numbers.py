"""Numbers and sizes the run store cannot take, refused where they enter, so the run ends FAILED at once with a code
that says why (never left RUNNING for the reaper to end "interrupted" half a minute later): NaN and infinities from
the model (bad_model_response), from a tool (the tool's error, which the model is told) and from a workflow's
expressions (expression_failed); values too large for a step (step_too_large, naming the node and field); and no
run can break the engine's link to the store for the others."""

import asyncio
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from agentplatform.agents.v1 import workflows_pb2
from agentplatform.engine.v1 import engine_pb2
from agentplatform.runs.internal.v1 import execution_pb2
from agentplatform.runs.v1 import runs_pb2
from services.common import errors
from services.common.identity import LOCAL_USER, Caller
from services.common.rpc.channels import channel_options
from services.demo_model.app import create_app, start_model_server
from services.demo_model.planner import plan_reply
from services.engine.app import MAX_RUNS_ANSWER_BYTES
from services.engine.journal import AgentThought, NewRun, Step
from services.engine.upstream.calls import CallError
from services.engine.upstream.runs_client import RunsClient
from services.runs.app import start_runs
from tests.agents.workflow_helpers import edge, node
from tests.engine.run_helpers import start_run, wait_final
from tests.engine.test_workflows import save, workflow_platform
from tests.runs.helpers import EXECUTOR, LEASE_SECONDS
from tests.support.platform import Platform, runs_settings, start_platform
from tests.support.scripted_llm import ScriptedLLM, text_reply, tool_call_reply

#: A run refused for what it carries ends within this many seconds, on a loaded machine too (the reaper, which
#: ended such runs before, takes the 30 s lease and more).
PROMPTLY = 15.0


async def ended(platform: Platform, run_id: str, started: float) -> runs_pb2.Run:
    final = await wait_final(platform, run_id, timeout=PROMPTLY)
    assert time.monotonic() - started < PROMPTLY
    return final


def error_step(run: runs_pb2.Run) -> runs_pb2.StepError:
    [step] = [step for step in run.steps if step.HasField("error")]
    return step.error


@pytest.mark.parametrize("arguments", [
    '{"expression": Infinity}', '{"expression": -Infinity}', '{"expression": NaN}', '{"expression": 1e999}',
    '{"a": [1, {"b": -1e400}]}', '{"a": ' + "[" * 25 + "]" * 25 + "}", "[" * 100_000 + "]" * 100_000,
])
async def test_model_arguments_no_step_can_record_fail_the_run_as_a_bad_model_response(
    tmp_path: Path, arguments: str
) -> None:
    async with ScriptedLLM(tool_call_reply("calculator", arguments), text_reply("never asked")) as llm:
        async with start_platform(tmp_path, llm.base_url) as platform:
            started = time.monotonic()
            run = await start_run(platform, "What is 10 ^ 999 times 10 ^ 999?")
            final = await ended(platform, run.id, started)
    assert final.state == runs_pb2.RUN_STATE_FAILED
    assert final.error_code == "bad_model_response", final.error_message
    assert "calculator" in final.error_message
    assert error_step(final).code == "bad_model_response"
    assert len(llm.requests) == 1


NAN_TOOL_PLUGIN = textwrap.dedent('''
    from services.tools.base import BaseTool


    class Overflowing(BaseTool):
        name = "overflowing"
        display_name = "Overflowing"
        description = "Answers with numbers JSON has no form for"
        parameters = {"type": "object", "properties": {}}

        async def run(self, arguments, context):
            return {"total": [1.0, float("nan")], "big": 1e308 * 10}


    class Deep(BaseTool):
        name = "deep"
        display_name = "Deep"
        description = "Answers with a value nested 25 levels deep"
        parameters = {"type": "object", "properties": {}}

        async def run(self, arguments, context):
            value = {}
            for _ in range(25):
                value = {"a": value}
            return value
''')


async def test_a_tool_result_with_non_finite_numbers_is_the_tools_error_and_the_model_is_told(
    tmp_path: Path
) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "overflowing.py").write_text(NAN_TOOL_PLUGIN)
    replies = [tool_call_reply("overflowing", {}), text_reply("The tool failed.")]
    async with ScriptedLLM(*replies) as llm, start_platform(
        tmp_path, llm.base_url, tools_overrides={"TOOLS_PLUGIN_DIRS": str(folder)}
    ) as platform:
        started = time.monotonic()
        run = await start_run(platform, "overflow please")
        final = await ended(platform, run.id, started)
    assert final.state == runs_pb2.RUN_STATE_COMPLETED, final.error_message
    [result] = [step.tool_result for step in final.steps if step.HasField("tool_result")]
    assert "result.total[1] is nan" in result.error or "result.big is inf" in result.error, result.error
    told = llm.requests[1]["messages"][-1]
    assert told["role"] == "tool" and told["content"].startswith("Error: ") and "JSON" in told["content"]


async def test_a_tool_result_nested_deeper_than_a_step_carries_is_the_tools_error(tmp_path: Path) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "overflowing.py").write_text(NAN_TOOL_PLUGIN)
    replies = [tool_call_reply("deep", {}), text_reply("Too deep.")]
    async with ScriptedLLM(*replies) as llm, start_platform(
        tmp_path, llm.base_url, tools_overrides={"TOOLS_PLUGIN_DIRS": str(folder)}
    ) as platform:
        started = time.monotonic()
        run = await start_run(platform, "go deep")
        final = await ended(platform, run.id, started)
        assert platform.engine.link.connections == 1
    assert final.state == runs_pb2.RUN_STATE_COMPLETED, final.error_message
    [result] = [step.tool_result for step in final.steps if step.HasField("tool_result")]
    assert "nests deeper than 20 levels" in result.error, result.error


@pytest.mark.parametrize(("inputs", "shown"), [
    ({"s": float("nan")}, "inputs.s is not a finite number"),
    ({"s": [[[[[[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]]]]]}, "nests deeper than 20 levels"),
])
async def test_workflow_inputs_a_step_cannot_carry_are_invalid_argument(
    tmp_path: Path, inputs: dict[str, Any], shown: str
) -> None:
    async with ScriptedLLM() as llm, workflow_platform(tmp_path, llm) as (platform, workflows):
        saved = await save(workflows, state_workflow({"n": "1"}))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await start_workflow(platform, saved.id, **inputs)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert shown in (refused.value.details() or "")


def state_workflow(assignments: dict[str, str], *, loop: str = "", max_iterations: int = 5) -> workflows_pb2.Workflow:
    """start (input s) -> set_state "grow" [-> back to a while node "loop" while `loop`] -> end (output size)."""
    nodes = [
        node("start", start=workflows_pb2.StartNode()),
        node("grow", set_state=workflows_pb2.SetStateNode(assignments=assignments)),
        node("done", end=workflows_pb2.EndNode(output='"done"')),
    ]
    edges = [edge("start", "grow"), edge("grow", "done")]
    if loop:
        nodes.append(node("loop", while_loop=workflows_pb2.WhileNode(condition=loop, max_iterations=max_iterations)))
        edges = [
            edge("start", "loop"), edge("loop", "grow", "body"), edge("grow", "loop"), edge("loop", "done", "done")
        ]
    return workflows_pb2.Workflow(
        display_name="State",
        inputs=[workflows_pb2.WorkflowInput(name="s"), workflows_pb2.WorkflowInput(name="items")],
        nodes=nodes,
        edges=edges,
    )


async def start_workflow(platform: Platform, workflow_id: str, **inputs: Any) -> runs_pb2.Run:
    values = struct_pb2.Struct()
    values.update(inputs)
    return await platform.engine_stub.StartWorkflowRun(
        engine_pb2.StartWorkflowRunRequest(workflow_id=workflow_id, inputs=values)
    )


@pytest.mark.parametrize(("expression", "shown"), [
    ("1e308 * 10.0", "is inf"), ("-1e308 * 10.0", "is -inf"), ("0.0 / 0.0", "is "), ("[1.0, 1e308 * 1e308]", "[1]"),
    ('{"a": {"b": 1e308 * 10.0}}', "value.a.b"),
])
async def test_a_workflow_value_that_is_not_finite_fails_the_run_naming_node_and_field(
    tmp_path: Path, expression: str, shown: str
) -> None:
    async with ScriptedLLM() as llm, workflow_platform(tmp_path, llm) as (platform, workflows):
        saved = await save(workflows, state_workflow({"total": expression}))
        started = time.monotonic()
        run = await start_workflow(platform, saved.id, s="x")
        final = await ended(platform, run.id, started)
    assert final.state == runs_pb2.RUN_STATE_FAILED
    assert final.error_code == "expression_failed", final.error_message
    assert "node 'grow' assignments.total" in final.error_message and shown in final.error_message
    assert "finite" in final.error_message


async def test_a_cel_list_built_from_a_large_input_stops_at_the_size_bound(tmp_path: Path) -> None:
    # 600 references to a 100 KB input: 600 steps to the cost budget, 60 MB as JSON.
    async with ScriptedLLM() as llm, workflow_platform(tmp_path, llm) as (platform, workflows):
        thirty, twenty = str(list(range(30))), str(list(range(20)))
        saved = await save(workflows, state_workflow({"xs": f"{thirty}.map(a, {twenty}.map(b, s))"}))
        started = time.monotonic()
        run = await start_workflow(platform, saved.id, s="x" * 100_000)
        final = await ended(platform, run.id, started)
    assert final.state == runs_pb2.RUN_STATE_FAILED
    assert final.error_code == "expression_failed", final.error_message
    assert "node 'grow' assignments.xs" in final.error_message and "built values larger" in final.error_message


async def test_a_value_too_large_for_a_step_fails_the_run_naming_node_and_field(tmp_path: Path) -> None:
    # Within the CEL size bound, but 1.2 MB as the node's step: over the store's 1 MiB.
    async with ScriptedLLM() as llm, workflow_platform(tmp_path, llm) as (platform, workflows):
        saved = await save(workflows, state_workflow({"xs": "[" + ", ".join(["s"] * 12) + "]", "n": "1"}))
        started = time.monotonic()
        run = await start_workflow(platform, saved.id, s="x" * 100_000)
        final = await ended(platform, run.id, started)
    assert final.state == runs_pb2.RUN_STATE_FAILED
    assert final.error_code == "step_too_large", final.error_message
    assert "node 'grow'" in final.error_message and "node_outcome.assigned.xs" in final.error_message
    assert "RUNS_MAX_STEP_BYTES" in final.error_message
    assert error_step(final).code == "step_too_large"


async def test_the_engine_checks_steps_against_the_limit_it_is_given(tmp_path: Path) -> None:
    # The engine's RUNS_MAX_STEP_BYTES (4 KB) below the store's (1 MiB): the engine refuses, before sending.
    async with ScriptedLLM() as llm, workflow_platform(tmp_path, llm, RUNS_MAX_STEP_BYTES=4096) as (platform, wfs):
        saved = await save(wfs, state_workflow({"xs": "[s, s]"}))
        run = await start_workflow(platform, saved.id, s="y" * 3_000)
        final = await ended(platform, run.id, time.monotonic())
    assert final.error_code == "step_too_large", final.error_message
    assert "at most 4,096 bytes" in final.error_message


async def test_a_list_doubled_in_a_loop_ends_the_run_at_once(tmp_path: Path) -> None:
    async with ScriptedLLM() as llm, workflow_platform(tmp_path, llm) as (platform, workflows):
        saved = await save(workflows, state_workflow({"s": "s + s"}, loop="true", max_iterations=100))
        started = time.monotonic()
        run = await start_workflow(platform, saved.id, s="x" * 10_000)
        final = await ended(platform, run.id, started)
    assert final.state == runs_pb2.RUN_STATE_FAILED
    assert final.error_code in ("step_too_large", "expression_failed"), final.error_message
    assert "node 'grow'" in final.error_message


async def test_a_hostile_run_fails_alone_and_an_honest_one_at_the_same_time_completes(tmp_path: Path) -> None:
    """A model answering 5 MB of text: as a delta and as a step, past gRPC's 4 MiB limit on a message. Sent, it
    would end the link's stream, and with it the writes of every run; here it ends its own run, and a workflow
    run at the same time completes."""
    async with ScriptedLLM(text_reply("z" * 5_000_000)) as llm, workflow_platform(tmp_path, llm) as (
        platform, workflows
    ):
        saved = await save(workflows, state_workflow({"n": "1"}))
        started = time.monotonic()
        hostile, honest = await asyncio.gather(
            start_run(platform, "Say a lot."), start_workflow(platform, saved.id, s="x")
        )
        hostile_final, honest_final = await asyncio.gather(
            ended(platform, hostile.id, started), ended(platform, honest.id, started)
        )
        assert hostile_final.error_code == "step_too_large", hostile_final.error_message
        assert "agent-response step" in hostile_final.error_message
        assert honest_final.state == runs_pb2.RUN_STATE_COMPLETED, honest_final.error_message
        assert platform.engine.link.connected and platform.engine.link.connections == 1  # it never broke


async def test_a_call_too_large_for_the_link_fails_alone_and_the_link_goes_on(tmp_path: Path) -> None:
    """Past the engine's step check (a store with a larger limit, a bug): a message over gRPC's limit would end
    the stream every run's writes share. The link refuses it before sending; the next call goes through."""
    async with ScriptedLLM(text_reply("hi")) as llm, start_platform(tmp_path, llm.base_url) as platform:
        run = await start_run(platform, "hello")
        await wait_final(platform, run.id)
        link = platform.engine.link
        huge = runs_pb2.Step(run_id=run.id, sequence=99, agent_thought=runs_pb2.AgentThought(text="z" * 5_000_000))
        with pytest.raises(CallError) as refused:
            await link.call("append_steps", execution_pb2.AppendStepsRequest(run_id=run.id, steps=[huge]), 5.0)
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert link.connected and link.connections == 1
        answer = await link.call("finish_run", execution_pb2.FinishRunRequest(
            run_id=run.id, state=runs_pb2.RUN_STATE_COMPLETED
        ), 5.0)
        assert answer.state == runs_pb2.RUN_STATE_COMPLETED  # the link answered: it is still up


async def test_model_arguments_the_store_refuses_end_the_run_at_once(tmp_path: Path) -> None:
    # A NUL in a JSON string is valid JSON, but no database here stores it: the store refuses the tool-call step,
    # and the run ends with that refusal (its own error step quoting the NUL's escape is stored), not the reaper.
    async with ScriptedLLM(tool_call_reply("calculator", '{"expression": "1 + \\u0000"}')) as llm:
        async with start_platform(tmp_path, llm.base_url) as platform:
            started = time.monotonic()
            run = await start_run(platform, "compute")
            final = await ended(platform, run.id, started)
    assert final.state == runs_pb2.RUN_STATE_FAILED
    assert final.error_code == "step_refused", final.error_message
    assert "NUL" in error_step(final).message


async def test_the_demo_model_asked_for_10_to_the_999_squared_ends_the_run_at_once(tmp_path: Path) -> None:
    """The attack round's question to the offline demo model, which carried Infinity from one calculation into the
    next tool call."""
    model = await start_model_server(create_app(plan_reply))
    try:
        async with start_platform(tmp_path, model.base_url, LLM_MODEL="demo") as platform:
            started = time.monotonic()
            run = await start_run(platform, "What is 10 ^ 999 times 10 ^ 999?")
            final = await ended(platform, run.id, started)
    finally:
        await model.stop()
    assert final.state == runs_pb2.RUN_STATE_FAILED
    assert final.error_code == "bad_model_response", final.error_message
    assert "arguments.x is inf" in final.error_message


async def test_the_engine_reads_back_runs_larger_than_a_default_grpc_message(tmp_path: Path) -> None:
    """A run resumed after an approval comes with all its steps: 6 steps of 900 KB are past gRPC's default 4 MiB
    limit on a received message, which the engine's channel to the store raises."""
    runs = await start_runs(runs_settings(tmp_path))
    try:
        async with runs_channel(runs.port, channel_options(MAX_RUNS_ANSWER_BYTES)) as channel:
            client = RunsClient(channel, timeout=10, outage_seconds=1, service_token="")
            new = NewRun("big", LOCAL_USER, EXECUTOR, LEASE_SECONDS, queued=False, model="demo")
            run = await client.create_run(new)
            for first in range(1, 7, 2):
                steps = [Step(AgentThought(str(n) * 900_000), sequence=first + n - 1) for n in (1, 2)]
                await client.append_steps(run.id, steps, epoch=run.lease_epoch)
            whole = await client.get_run(run.id, Caller(LOCAL_USER))
            assert len(whole.steps) == 6
        async with runs_channel(runs.port, channel_options()) as channel:
            client = RunsClient(channel, timeout=10, outage_seconds=1, service_token="")
            with pytest.raises(errors.ResourceExhausted):
                await client.get_run(run.id, Caller(LOCAL_USER))
    finally:
        await runs.stop()


@asynccontextmanager
async def runs_channel(port: int, options: Any) -> AsyncIterator[grpc.aio.Channel]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
    try:
        yield channel
    finally:
        await channel.close()


async def test_an_approval_request_too_large_for_a_step_ends_the_run_at_once(tmp_path: Path) -> None:
    # The engine's limit (4 KB) below the store's: the approval node's prompt makes a step larger than it.
    workflow = workflows_pb2.Workflow(
        display_name="Ask",
        inputs=[workflows_pb2.WorkflowInput(name="s")],
        nodes=[
            node("start", start=workflows_pb2.StartNode()),
            node("ask", approval=workflows_pb2.ApprovalNode(prompt="s")),
            node("done", end=workflows_pb2.EndNode(output='"done"')),
        ],
        edges=[edge("start", "ask")] + [edge("ask", "done", branch) for branch in ("approved", "rejected")],
    )
    async with ScriptedLLM() as llm, workflow_platform(tmp_path, llm, RUNS_MAX_STEP_BYTES=4096) as (platform, wfs):
        saved = await save(wfs, workflow)
        started = time.monotonic()
        run = await start_workflow(platform, saved.id, s="y" * 5_000)
        final = await ended(platform, run.id, started)
    assert final.state == runs_pb2.RUN_STATE_FAILED
    assert final.error_code == "step_too_large", final.error_message
    assert "node 'ask'" in final.error_message and "approval-request" in final.error_message


def raw_model(chunk: str) -> Starlette:
    """A chat-completions server that streams `chunk` (as written, NaN and all) and ends."""

    async def complete(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield f"data: {chunk}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", complete, methods=["POST"])])


@pytest.mark.parametrize("count", ["NaN", "1e999", "-5", "1000000000000000000000000000000", "1.5", "true"])
async def test_token_counts_that_are_not_counts_are_a_bad_model_response(tmp_path: Path, count: str) -> None:
    choice = '{"index": 0, "delta": {"content": "hi"}}'
    chunk = f'{{"choices": [{choice}], "usage": {{"prompt_tokens": {count}, "completion_tokens": 1}}}}'
    model = await start_model_server(raw_model(chunk))
    try:
        async with start_platform(tmp_path, model.base_url) as platform:
            started = time.monotonic()
            run = await start_run(platform, "count")
            final = await ended(platform, run.id, started)
    finally:
        await model.stop()
    assert final.state == runs_pb2.RUN_STATE_FAILED
    assert final.error_code == "bad_model_response", final.error_message
