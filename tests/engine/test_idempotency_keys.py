"""Every tool call a run makes carries the idempotency key "<run id>:<sequence of its tool-call step>", made from
the journal alone, so a repeat of the call (by this engine or another) carries the same key: real engine, runs and
tools services (and agents, for a workflow), a scripted model, and a real HTTP server recording the Idempotency-Key
header of each request."""

import json
from pathlib import Path

from google.protobuf import struct_pb2

from agentplatform.agents.v1 import workflows_pb2
from agentplatform.runs.v1 import runs_pb2
from agentplatform.tools.v1 import tools_pb2
from services.common.identity import Caller
from services.common.rpc.protoconv import dict_from_struct
from services.engine.upstream.tools_client import ToolsClient
from services.tools.app import start_tools
from tests.agents.workflow_helpers import edge, node
from tests.engine.run_helpers import start_run, wait_final
from tests.engine.test_approvals import approval_step, require_approval, wait_state
from tests.engine.test_workflows import run_workflow, save, workflow_platform
from tests.support.platform import Platform, grpc_channel, start_platform, tools_settings
from tests.support.scripted_llm import ScriptedLLM, text_reply, tool_call_reply, tool_calls_reply
from tests.tools.http_endpoint import Endpoint, serving_endpoint

#: Lets the tools service reach the test's HTTP server.
LOCAL = {"TOOLS_HTTP_ALLOWED_HOSTS": "127.0.0.1"}


async def create_pay_tool(platform: Platform, endpoint: Endpoint) -> None:
    parameters = struct_pb2.Struct()
    parameters.update({"type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]})
    spec = tools_pb2.HttpToolSpec(
        name="pay", description="Pays an amount.", url=endpoint.url("/echo"), method=tools_pb2.HTTP_METHOD_POST,
        parameters=parameters,
    )
    created = await platform.tools_stub.CreateTool(tools_pb2.CreateToolRequest(http=spec))
    assert not created.repeat_safe  # a POST: the run would not repeat it without a person


def keys_by_amount(endpoint: Endpoint) -> dict[float, str]:
    return {json.loads(item.body)["amount"]: item.headers["idempotency-key"] for item in endpoint.received}


def expected_keys(run: runs_pb2.Run) -> dict[float, str]:
    """Each call's key as the journal alone gives it: the run's id and the sequence of the call's step."""
    return {
        dict_from_struct(step.tool_call.params)["amount"]: f"{run.id}:{step.sequence}"
        for step in run.steps if step.HasField("tool_call")
    }


async def test_each_tool_call_carries_its_runs_id_and_the_sequence_of_its_step(tmp_path: Path) -> None:
    script = [
        tool_calls_reply(("http__pay", {"amount": 1}), ("http__pay", {"amount": 2})),  # two calls in one turn
        tool_call_reply("http__pay", {"amount": 3}),
        text_reply("Paid three times."),
    ]
    async with serving_endpoint() as endpoint, ScriptedLLM(*script) as llm, start_platform(
        tmp_path, llm.base_url, tools_overrides=LOCAL
    ) as platform:
        await create_pay_tool(platform, endpoint)
        run = await start_run(platform, "Pay 1, 2, then 3.")
        final = await wait_final(platform, run.id)

    assert final.state == runs_pb2.RUN_STATE_COMPLETED
    expected = expected_keys(final)
    assert sorted(expected) == [1, 2, 3] and len(set(expected.values())) == 3
    assert keys_by_amount(endpoint) == expected


async def test_a_call_run_after_an_approval_carries_the_key_of_the_step_recorded_before_the_pause(
    tmp_path: Path,
) -> None:
    script = [tool_call_reply("http__pay", {"amount": 5}, id="call_pay"), text_reply("Paid.")]
    async with serving_endpoint() as endpoint, ScriptedLLM(*script) as llm, start_platform(
        tmp_path, llm.base_url, tools_overrides=LOCAL
    ) as platform:
        await create_pay_tool(platform, endpoint)
        await require_approval(platform, "http__pay")
        run = await start_run(platform, "Pay 5.")
        request = approval_step(await wait_state(platform, run.id, runs_pb2.RUN_STATE_WAITING))
        assert endpoint.received == []
        await platform.runs_stub.ApproveStep(runs_pb2.ApproveStepRequest(run_id=run.id, sequence=request.sequence))
        final = await wait_final(platform, run.id)

    assert final.state == runs_pb2.RUN_STATE_COMPLETED
    # Rebuilt from the journal when the run resumed (the approval request's step came after the call's).
    [call_step] = [step for step in final.steps if step.HasField("tool_call")]
    assert call_step.sequence < request.sequence
    assert keys_by_amount(endpoint) == {5: f"{run.id}:{call_step.sequence}"}


async def test_a_workflows_tool_node_carries_the_key_of_its_tool_call_step(tmp_path: Path) -> None:
    workflow = workflows_pb2.Workflow(
        display_name="Pay", description="Pays seven.",
        nodes=[
            node("start", start=workflows_pb2.StartNode()),
            node("pay", tool=workflows_pb2.ToolNode(tool_id="http__pay", arguments={"amount": "7"}, output="paid")),
            node("done", end=workflows_pb2.EndNode(output="paid")),
        ],
        edges=[edge("start", "pay"), edge("pay", "done")],
    )
    async with serving_endpoint() as endpoint, ScriptedLLM() as llm, workflow_platform(
        tmp_path, llm, tools_overrides=LOCAL
    ) as (platform, workflows):
        await create_pay_tool(platform, endpoint)
        saved = await save(workflows, workflow)
        run = await run_workflow(platform, saved.id)
        final = await wait_final(platform, run.id)

    assert final.state == runs_pb2.RUN_STATE_COMPLETED, final.error_message
    assert keys_by_amount(endpoint) == expected_keys(final) == {7: f"{run.id}:{expected_sequence(final)}"}


def expected_sequence(run: runs_pb2.Run) -> int:
    [step] = [step for step in run.steps if step.HasField("tool_call")]
    return step.sequence


async def test_the_engine_knows_which_calls_it_may_repeat_from_the_listing_alone(tmp_path: Path) -> None:
    tools = await start_tools(tools_settings(tmp_path, TOOLS_HOST="127.0.0.1"))
    try:
        async with grpc_channel(tools.port) as channel:
            client = ToolsClient(channel, list_timeout=10, execute_timeout=10, service_token="")
            offered = {tool.name: tool for tool in await client.enabled_tools(Caller("alice"))}
    finally:
        await tools.stop()
    assert offered["calculator"].repeats_safely({"operation": "add", "x": 1, "y": 2})
    file_io = offered["file_io"]
    assert not file_io.repeat_safe
    # Decided from a call's recorded arguments: reading and writing may be repeated, appending may not.
    assert file_io.repeats_safely({"operation": "read", "path": "a.txt"})
    assert file_io.repeats_safely({"operation": "write", "path": "a.txt", "content": "x"})
    assert not file_io.repeats_safely({"operation": "append", "path": "a.txt", "content": "x"})
    assert not file_io.repeats_safely({"operation": "delete", "path": "a.txt"})
    assert not file_io.repeats_safely(None) and not file_io.repeats_safely({"operation": 3})
