"""Workflow runs resumed node by node after their engine is SIGKILLed (issue 18), against the real stack as
separate processes: runs, tools, agents and engine, the model a scripted one served by this test (so every request
it saw is counted). The workflow is start > first (agent) > calc (calculator) > second (agent) > done; each kill
point is held in place by the test:

- between two nodes: the agents service stopped (SIGSTOP) while the first agent's model call is delayed, so the
  first node and the tool node finish and the second agent node cannot begin (its engine asks the agents service
  for the agent before it records anything);
- inside an agent node: the first agent's model call delayed, the engine killed while it waits; and the first
  agent's calculator call cut off (the tools service stopped), which runs again as in an agent run;
- inside the tool node: the tools service stopped, so the call's step is recorded and its result is not
  (calculator declares itself read-only: it runs again with the same key).

Each run ends COMPLETED, steps 1..n with no gap and no repeat, the node outcomes in order with none twice, one
resume marker right after what the killed engine recorded, and the model saw each turn once except the interrupted
call (twice).

And a tool node not safe to repeat (a POST to a slow counting server, the engine killed while the server holds the
call): the resumed run waits for a person, its call's outcome unknown; "continue without it" finishes it without a
second call (both decisions, the key of "run again": tests/engine/test_resume_workflows.py).

The tests share one stack and one scripted model (a stack's start costs more than most tests), made whole again
and the model's script and counts cleared before each.
"""

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import TypeVar

import grpc
import pytest
from google.protobuf import struct_pb2

from agentplatform.agents.v1 import agents_pb2, agents_pb2_grpc, workflows_pb2, workflows_pb2_grpc
from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from agentplatform.tools.v1 import tools_pb2, tools_pb2_grpc
from tests.agents.workflow_helpers import edge, node
from tests.e2e.conftest import RunningStack, wait_ready
from tests.e2e.faults import (
    FINAL,
    LEASE,
    REAP_MARGIN,
    REAPER_INTERVAL,
    assert_numbered,
    clients,
    ended,
    explained,
    fault_stack,
    fault_stack_processes,
    get_runs,
    kill,
    made_whole,
    wait_for,
)
from tests.support.scripted_llm import ScriptedLLM, delayed, text_reply, tool_call_reply
from tests.tools.http_endpoint import serving_endpoint

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

#: The time a killed engine's runs take to be offered again: the lease, a reaper pass, margin.
ORPHANED_WITHIN = LEASE + REAPER_INTERVAL + REAP_MARGIN
#: How long the first agent's model call is held: long enough to stop a service or kill the engine meanwhile.
HELD = 1.5
T = TypeVar("T")
ANSWER = '{"draft": "Tides rise.", "review": "Fine.", "sum": "5"}'


@contextmanager
def in_background(manager: AbstractAsyncContextManager[T]) -> Iterator[T]:
    """An async context (a test server) entered on an event loop of its own, so this synchronous test's processes
    can call it while the test waits."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-server", daemon=True)
    thread.start()
    try:
        value = asyncio.run_coroutine_threadsafe(manager.__aenter__(), loop).result(10)
        try:
            yield value
        finally:
            asyncio.run_coroutine_threadsafe(manager.__aexit__(None, None, None), loop).result(15)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def chain(writer: str, reviewer: str) -> workflows_pb2.Workflow:
    return workflows_pb2.Workflow(
        display_name="Chain",
        inputs=[workflows_pb2.WorkflowInput(name="topic", required=True)],
        nodes=[
            node("start", start=workflows_pb2.StartNode()),
            node("first", agent=workflows_pb2.AgentNode(
                agent_id=writer, input='"Write about " + topic', output="draft"
            )),
            node("calc", tool=workflows_pb2.ToolNode(
                tool_id="calculator", arguments={"operation": '"expression"', "expression": '"2 + 3"'}, output="sum"
            )),
            node("second", agent=workflows_pb2.AgentNode(
                agent_id=reviewer, input='"Review: " + draft', output="review"
            )),
            node("done", end=workflows_pb2.EndNode(output='{"draft": draft, "sum": string(sum), "review": review}')),
        ],
        edges=[edge("start", "first"), edge("first", "calc"), edge("calc", "second"), edge("second", "done")],
    )


def start_workflow_run(stack: RunningStack) -> str:
    """Two saved agents, the chain workflow, and a run of it; returns the run's id."""
    with grpc.insecure_channel(stack.stack.agents_address) as channel:
        agents = agents_pb2_grpc.AgentRegistryServiceStub(channel)
        ids = [
            agents.CreateAgent(agents_pb2.CreateAgentRequest(
                agent=agents_pb2.Agent(display_name=name, instructions=name, model="demo", tools=["calculator"])
            ), timeout=10).id
            for name in ("Writer", "Reviewer")
        ]
        workflows = workflows_pb2_grpc.WorkflowRegistryServiceStub(channel)
        saved = workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=chain(*ids)), timeout=10)
    inputs = struct_pb2.Struct()
    inputs.update({"topic": "tides"})
    with grpc.insecure_channel(stack.stack.engine_address) as channel:
        engine = engine_pb2_grpc.AgentServiceStub(channel)
        return engine.StartWorkflowRun(
            engine_pb2.StartWorkflowRunRequest(workflow_id=saved.id, inputs=inputs), timeout=10
        ).id


def journal(run: runs_pb2.Run) -> list[tuple[str, str]]:
    """(node id, step kind) of every step."""
    return [(step.node_id, str(step.WhichOneof("content"))) for step in run.steps]


def user_turns(request: dict[str, object]) -> list[object]:
    messages = request["messages"]
    assert isinstance(messages, list)
    return [message["content"] for message in messages if message["role"] == "user"]


@contextmanager
def stopped(stack: RunningStack, name: str) -> Iterator[None]:
    """The stack's process `name` stopped (SIGSTOP) inside the block, continued after it."""
    process = stack.processes[name]
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


def resumed_run(stack: RunningStack, runs: runs_pb2_grpc.RunServiceStub, run_id: str,
                at_kill: list[tuple[str, str]], summary: str) -> runs_pb2.Run:
    """Once the killed engine's run is orphaned, start another engine and wait for the run to end; check it
    COMPLETED with one marker right after what the killed engine recorded, each node's outcome once, in order."""
    wait_for("the run to be orphaned", ORPHANED_WITHIN, lambda: get_runs(runs, [run_id])[0].attempts == 1)
    killed_at = time.monotonic()
    stack.start(stack.spec("engine"))
    wait_ready(stack, ["engine"])
    (run,) = wait_for("the resumed run to end", 30, lambda: ended(runs, [run_id]))
    print(f"workflow run resumed and ended {time.monotonic() - killed_at:.2f}s after the next engine started")
    assert run.state == runs_pb2.RUN_STATE_COMPLETED, (run.error_code, run.error_message, journal(run))
    assert_numbered(run)
    steps = journal(run)
    assert steps[: len(at_kill)] == at_kill and steps[len(at_kill)][1] == "resumed", steps
    assert [kind for _, kind in steps].count("resumed") == 1
    marker = run.steps[len(at_kill)].resumed
    assert (marker.attempt, run.attempts) == (1, 1) and marker.executor_id
    assert summary in marker.summary, marker.summary
    outcomes = [node_id for node_id, kind in steps if kind == "node_outcome"]
    assert outcomes == ["start", "first", "calc", "second", "done"], steps
    assert run.steps[-1].agent_response.text == ANSWER
    return run


@pytest.fixture(scope="module")
def shared_llm() -> Iterator[ScriptedLLM]:
    with in_background(ScriptedLLM()) as llm:
        yield llm


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory, shared_llm: ScriptedLLM) -> Iterator[RunningStack]:
    """One stack for the module (a start costs more than most tests), its engines on the shared scripted model,
    HTTP tools allowed to call the counting server on 127.0.0.1."""
    with fault_stack(tmp_path_factory.mktemp("stack"), LLM_BASE_URL=shared_llm.base_url,
                     TOOLS_HTTP_ALLOWED_HOSTS="127.0.0.1", ENGINE_LEASE_SECONDS=LEASE,
                     RUNS_REAPER_INTERVAL_SECONDS=REAPER_INTERVAL) as stack:
        yield stack


@pytest.fixture
def stack(shared_stack: RunningStack) -> RunningStack:
    """The shared stack, whole again after the test before (its engine killed, a service stopped)."""
    made_whole(shared_stack, fault_stack_processes(shared_stack))
    return shared_stack


@pytest.fixture
def llm(shared_llm: ScriptedLLM, stack: RunningStack) -> ScriptedLLM:
    """The shared model with nothing seen and nothing scripted: the test scripts its replies."""
    shared_llm.reset()
    return shared_llm


def test_killed_between_two_nodes_the_run_goes_on_at_the_next_node(stack: RunningStack, llm: ScriptedLLM) -> None:
    llm.script(delayed(text_reply("Tides rise."), HELD), text_reply("Fine."))
    with clients(stack) as (_, runs), explained(stack):
        run_id = start_workflow_run(stack)
        wait_for("the first agent's model call", 15, lambda: len(llm.requests) == 1)
        with stopped(stack, "agents"):
            # The first node ends, the tool node runs; the second agent node waits for the agents service.
            wait_for("the tool node's outcome", 15, lambda: ("calc", "node_outcome") in journal(
                get_runs(runs, [run_id])[0]
            ))
            time.sleep(0.3)
            at_kill = journal(get_runs(runs, [run_id])[0])
            assert at_kill[-1] == ("calc", "node_outcome"), at_kill
            kill(stack, "engine")
        run = resumed_run(stack, runs, run_id, at_kill, "node 'second': begins it")
        assert run.steps[len(at_kill)].node_id == "second"
        # Each agent's turn was asked once: the finished first node was not run again.
        assert [user_turns(request) for request in llm.requests] == [["Write about tides"], ["Review: Tides rise."]]


def test_killed_inside_an_agent_node_while_its_model_works_the_call_is_made_again_once(
    stack: RunningStack, llm: ScriptedLLM
) -> None:
    llm.script(delayed(text_reply("never sent"), 60), text_reply("Tides rise."), text_reply("Fine."))
    with clients(stack) as (_, runs), explained(stack):
        run_id = start_workflow_run(stack)
        wait_for("the first agent's model call", 15, lambda: len(llm.requests) == 1)
        time.sleep(0.2)
        at_kill = journal(get_runs(runs, [run_id])[0])
        assert at_kill == [("start", "node_outcome"), ("first", "user_request")], at_kill
        kill(stack, "engine")
        run = resumed_run(stack, runs, run_id, at_kill, "node 'first': requests the model call again")
        assert run.steps[len(at_kill)].node_id == "first"
        # The interrupted call was made twice (the same conversation), every other turn once.
        assert len(llm.requests) == 3
        assert llm.requests[0]["messages"] == llm.requests[1]["messages"]
        assert user_turns(llm.requests[2]) == ["Review: Tides rise."]


def test_killed_while_a_tool_node_runs_its_read_only_call_runs_again_with_its_key(
    stack: RunningStack, llm: ScriptedLLM
) -> None:
    llm.script(delayed(text_reply("Tides rise."), HELD), text_reply("Fine."))
    with clients(stack) as (_, runs), explained(stack):
        run_id = start_workflow_run(stack)
        wait_for("the first agent's model call", 15, lambda: len(llm.requests) == 1)
        with stopped(stack, "tools"):
            wait_for("the tool node's call", 15, lambda: ("calc", "tool_call") in journal(get_runs(runs, [run_id])[0]))
            time.sleep(0.3)
            at_kill = journal(get_runs(runs, [run_id])[0])
            assert at_kill[-1] == ("calc", "tool_call"), at_kill
            kill(stack, "engine")
        run = resumed_run(stack, runs, run_id, at_kill, "node 'calc': runs again, safe to repeat: calculator")
        calc = [kind for node_id, kind in journal(run) if node_id == "calc"]
        assert calc == ["tool_call", "resumed", "tool_result", "node_outcome"]
        assert not run.steps[len(at_kill)].resumed.held_tool_call_ids
        assert [user_turns(request) for request in llm.requests] == [["Write about tides"], ["Review: Tides rise."]]


def test_killed_while_an_agent_nodes_tool_runs_the_read_only_call_runs_again_and_no_turn_is_asked_twice(
    stack: RunningStack, llm: ScriptedLLM
) -> None:
    add = tool_call_reply("calculator", {"operation": "add", "x": 2, "y": 3}, id="call_add")
    llm.script(delayed(add, HELD), text_reply("Tides rise."), text_reply("Fine."))
    with clients(stack) as (_, runs), explained(stack):
        run_id = start_workflow_run(stack)
        # The engine has listed the tools before its first model call: the tools service may stop now.
        wait_for("the first agent's model call", 15, lambda: len(llm.requests) == 1)
        with stopped(stack, "tools"):
            wait_for("the agent's tool call", 15, lambda: ("first", "tool_call") in journal(
                get_runs(runs, [run_id])[0]
            ))
            time.sleep(0.3)
            at_kill = journal(get_runs(runs, [run_id])[0])
            assert at_kill[-1] == ("first", "tool_call"), at_kill
            kill(stack, "engine")
        summary = "node 'first': runs again, safe to repeat: calculator (call_add)"
        run = resumed_run(stack, runs, run_id, at_kill, summary)
        first = [kind for node_id, kind in journal(run) if node_id == "first"]
        assert first == [
            "user_request", "agent_thought", "tool_call", "resumed", "tool_result", "agent_response", "node_outcome"
        ]
        # Three turns, each asked once: the recorded tool-call turn was not requested again.
        assert len(llm.requests) == 3
        assert llm.requests[1]["messages"][-1]["role"] == "tool" and "5" in llm.requests[1]["messages"][-1]["content"]
        assert user_turns(llm.requests[2]) == ["Review: Tides rise."]


def test_killed_while_a_post_tool_node_runs_the_run_waits_for_a_person_and_never_calls_it_again(
    stack: RunningStack
) -> None:
    paying = workflows_pb2.Workflow(
        display_name="Pay",
        nodes=[
            node("start", start=workflows_pb2.StartNode()),
            node("pay", tool=workflows_pb2.ToolNode(tool_id="http__pay", arguments={"amount": "5"}, output="receipt")),
            node("done", end=workflows_pb2.EndNode(output='{"receipt": receipt}')),
        ],
        edges=[edge("start", "pay"), edge("pay", "done")],
    )
    with in_background(serving_endpoint()) as endpoint, clients(stack) as (_, runs), explained(stack):
        parameters = struct_pb2.Struct()
        parameters.update({"type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]})
        # /slow records the request, then answers after 3 s: the engine dies meanwhile.
        spec = tools_pb2.HttpToolSpec(name="pay", description="Pays.", url=endpoint.url("/slow"),
                                      method=tools_pb2.HTTP_METHOD_POST, parameters=parameters)
        with grpc.insecure_channel(stack.stack.tools_address) as channel:
            created = tools_pb2_grpc.ToolServiceStub(channel).CreateTool(tools_pb2.CreateToolRequest(http=spec),
                                                                          timeout=10)
        assert not created.repeat_safe
        with grpc.insecure_channel(stack.stack.agents_address) as channel:
            saved = workflows_pb2_grpc.WorkflowRegistryServiceStub(channel).CreateWorkflow(
                workflows_pb2.CreateWorkflowRequest(workflow=paying), timeout=10
            )
        with grpc.insecure_channel(stack.stack.engine_address) as channel:
            run_id = engine_pb2_grpc.AgentServiceStub(channel).StartWorkflowRun(
                engine_pb2.StartWorkflowRunRequest(workflow_id=saved.id), timeout=10
            ).id
        wait_for("the endpoint to receive the call", 15, lambda: len(endpoint.received) == 1)
        at_kill = journal(get_runs(runs, [run_id])[0])
        assert at_kill == [("start", "node_outcome"), ("pay", "tool_call")], at_kill
        kill(stack, "engine")
        wait_for("the run to be orphaned", ORPHANED_WITHIN, lambda: get_runs(runs, [run_id])[0].attempts == 1)
        stack.start(stack.spec("engine"))
        wait_ready(stack, ["engine"])
        held = wait_for("the run to wait for a person", 30, lambda: (
            run if (run := get_runs(runs, [run_id])[0]).state == runs_pb2.RUN_STATE_WAITING else None
        ))
        assert journal(held)[2:] == [("pay", "resumed"), ("pay", "approval_request")], journal(held)
        assert list(held.steps[2].resumed.held_tool_call_ids) == [held.steps[1].tool_call.tool_call_id]
        assert "unknown" in held.steps[3].approval_request.prompt
        runs.RejectStep(runs_pb2.RejectStepRequest(run_id=run_id, sequence=4, comment="it went through"), timeout=10)
        run = wait_for("the run to end", 30, lambda: (
            run if (run := get_runs(runs, [run_id])[0]).state in FINAL else None
        ))
        assert run.state == runs_pb2.RUN_STATE_COMPLETED, (run.error_code, run.error_message, journal(run))
        assert_numbered(run)
        assert [kind for _, kind in journal(run)].count("resumed") == 1
        assert run.steps[-1].agent_response.text == '{"receipt": null}'
        # The counting server saw the non-idempotent call once: the one the killed engine made.
        assert len(endpoint.received) == 1
        assert endpoint.received[0].headers["idempotency-key"] == f"{run_id}:2"
