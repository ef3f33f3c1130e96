"""Durable execution (issue 18), kill point by kill point, with what the model and the tools saw counted: the
engine process is SIGKILLed at a known point of its runs, started again, and each finished run is checked against
the requests the scripted model served for each of its turns and the calls a counting HTTP server received.

1. while the model streams its first reply (a reply that streams for seconds): that one request is made again,
   the cut-off stream seen closed by the model;
2. after the tool-call step is recorded, before the tool starts (the tools service held with SIGSTOP while the
   engine dies, then let go): a POST tool, not safe to repeat, is never called by itself; its run waits "outcome
   unknown", and "run again" calls it once with the key of the recorded step, "continue without it" never. A PUT
   tool, idempotent, runs exactly once, with that key, without asking anyone;
3. while a tool runs (a POST to an endpoint that takes seconds to answer): the counting server saw the call once
   and is not called again by itself; the run waits "outcome unknown", and "run again" calls it a second time with
   the same key, "continue without it" never (the same for a read-only tool, run again without asking:
   tests/e2e/test_resume.py, with the run killed four times);
4. after a tool result, before the next model call (the model holds its answer): that request is made again.

Every run ends COMPLETED, steps 1..n with one `resumed` marker; every other turn was asked exactly once.

The tests share one stack (a start costs more than most tests) and one scripted model, streaming every reply at
CHUNK_SECONDS a piece; before each test the stack is made whole again and the model given the test's TurnModel.
"""

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import replace

import grpc
import pytest
from google.protobuf import struct_pb2

from agentplatform.runs.v1 import runs_pb2
from agentplatform.tools.v1 import tools_pb2, tools_pb2_grpc
from tests.e2e.conftest import RunningStack
from tests.e2e.faults import (
    assert_numbered,
    clients,
    explained,
    fault_stack_processes,
    get_runs,
    kill,
    made_whole,
    wait_for,
)
from tests.e2e.resumes import (
    ORPHANED_WITHIN,
    TurnModel,
    assert_resumed_seed_run,
    done,
    in_state,
    kinds,
    markers,
    question_of,
    restart_engine,
    resume_stack,
    seed_question,
    start_asking,
    turn_of,
)
from tests.support.background_loop import BackgroundLoop, background_loop
from tests.support.scripted_llm import ModelReply, ScriptedLLM, delayed, text_reply, tool_call_reply
from tests.tools.http_endpoint import Endpoint, serving_endpoint

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

#: Between streamed pieces of every reply: the slow first reply of kill point 1 streams for 80 x this.
CHUNK_SECONDS = 0.05
SLOW_THOUGHT = " ".join(["thinking"] * 80)
#: How long the model holds back the answer a kill point waits in (it is cut off long before).
HELD_SECONDS = 60.0
#: Lets the tools service reach the test's HTTP server.
LOCAL_HTTP = {"TOOLS_HTTP_ALLOWED_HOSTS": "127.0.0.1"}


@pytest.fixture(scope="module")
def loop() -> Iterator[BackgroundLoop]:
    with background_loop() as running:
        yield running


@pytest.fixture(scope="module")
def shared_llm(loop: BackgroundLoop) -> Iterator[ScriptedLLM]:
    with loop.entered(ScriptedLLM(chunk_delay_seconds=CHUNK_SECONDS)) as llm:
        yield llm


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory, shared_llm: ScriptedLLM) -> Iterator[RunningStack]:
    with resume_stack(tmp_path_factory.mktemp("stack"), LLM_BASE_URL=shared_llm.base_url, **LOCAL_HTTP) as stack:
        yield stack


@pytest.fixture
def stack(shared_stack: RunningStack) -> RunningStack:
    """The shared stack, whole again after the test before (its engine killed, the tools service stopped)."""
    made_whole(shared_stack, fault_stack_processes(shared_stack))
    return shared_stack


@pytest.fixture
def llm(shared_llm: ScriptedLLM, stack: RunningStack) -> ScriptedLLM:
    """The shared model with nothing seen: the test gives it its TurnModel (`reset(pick=...)`)."""
    shared_llm.reset()
    return shared_llm


def test_killed_while_the_model_streams_and_after_a_tool_result_each_cut_off_turn_is_asked_once_more(
    stack: RunningStack, llm: ScriptedLLM
) -> None:
    streaming, after_result = seed_question(1), seed_question(2)
    model = TurnModel(first_time={
        # Kill point 1: the first reply streams for seconds the first time it is asked.
        (streaming, 0): lambda reply: replace(reply, content=SLOW_THOUGHT),
        # Kill point 4: the model holds its second answer back the first time it is asked.
        (after_result, 1): lambda reply: delayed(reply, HELD_SECONDS),
    })
    llm.reset(pick=model)
    with clients(stack) as (engine, runs), explained(stack):
        (later,) = start_asking(engine, after_result)
        wait_for("the first run's next model call after its tool result", 30, lambda: (
            model.counts(after_result)[1] == 1 and kinds(get_runs(runs, [later])[0])[-1] == "tool_result"
        ))
        (first,) = start_asking(engine, streaming)
        wait_for("the second run's first reply to stream", 10, lambda: model.counts(streaming)[0] == 1)
        time.sleep(20 * CHUNK_SECONDS)  # a quarter of the slow reply streamed
        at_kill = {run.id: kinds(run) for run in get_runs(runs, [later, first])}
        assert at_kill[first] == ["user_request"], at_kill
        assert at_kill[later][-1] == "tool_result", at_kill
        kill(stack, "engine")
        restart_engine(stack)  # offered the runs once the dead engine's lease runs out
        final = wait_for("the resumed runs to end", ORPHANED_WITHIN + 30, lambda: done(runs, [later, first]))
        requests = list(llm.requests)
        aborted = set(llm.aborted)

    for run in final:
        assert_resumed_seed_run(run)
        before = at_kill[run.id]
        assert kinds(run)[: len(before) + 1] == [*before, "resumed"], kinds(run)
    # Each turn asked once, but the one the kill cut off: asked again, once.
    assert model.counts(streaming) == [2, 1, 1]
    assert model.counts(after_result) == [1, 2, 1]
    # The requests the kill cut off are the ones whose connection the dead engine dropped before the answer ended.

    def first_asked(question: str, turn: int) -> int:
        return next(i for i, body in enumerate(requests) if (question_of(body), turn_of(body)) == (question, turn))

    assert aborted == {first_asked(streaming, 0), first_asked(after_result, 1)}


# --- kill point 2: the tool-call step recorded, the tool not started ---------------------------------------


def create_http_tool(
    stack: RunningStack, endpoint: Endpoint, name: str, method: "tools_pb2.HttpMethod", path: str = "/echo"
) -> bool:
    """An HTTP tool calling the counting server's `path` with `method`; whether the tools service deems it
    repeat-safe."""
    parameters = struct_pb2.Struct()
    parameters.update({"type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]})
    spec = tools_pb2.HttpToolSpec(
        name=name, description=f"Sends an amount ({tools_pb2.HttpMethod.Name(method)}).", url=endpoint.url(path),
        method=method, parameters=parameters,
    )
    with grpc.insecure_channel(stack.stack.tools_address) as channel:
        created = tools_pb2_grpc.ToolServiceStub(channel).CreateTool(tools_pb2.CreateToolRequest(http=spec), timeout=10)
    return created.repeat_safe


def http_turns(tool: str, amount: int) -> tuple[ModelReply, ...]:
    return tool_call_reply(tool, {"amount": amount}, content="Sending it."), text_reply("Done.")


def test_killed_between_recording_a_tool_call_and_starting_it_an_unsafe_call_waits_and_a_safe_one_runs_once(
    loop: BackgroundLoop, stack: RunningStack, llm: ScriptedLLM
) -> None:
    # Three runs: two call a POST tool (not safe to repeat), one a PUT tool (idempotent), each its own amount.
    again, without, safe = "Pay 1 (run again)", "Pay 2 (continue without it)", "Put 3"
    amounts = {again: 1, without: 2, safe: 3}
    model = TurnModel(
        turns_for=lambda question: http_turns("http__put" if question == safe else "http__pay", amounts[question]),
        latency=1.0,  # time to stop the tools service between listing the tools and calling one
    )
    llm.reset(pick=model)
    with loop.entered(serving_endpoint()) as endpoint, clients(stack) as (engine, runs), explained(stack):
        assert not create_http_tool(stack, endpoint, "pay", tools_pb2.HTTP_METHOD_POST)
        assert create_http_tool(stack, endpoint, "put", tools_pb2.HTTP_METHOD_PUT)
        run_ids = start_asking(engine, again, without, safe)
        # Each run has listed its tools and waits on its first model call; the tools service now stops answering,
        # so each tool call is recorded and never reaches a tool.
        wait_for("every run's first model call", 10, lambda: all(model.counts(q)[0] == 1 for q in amounts))
        tools = stack.processes["tools"]
        os.kill(tools.pid, signal.SIGSTOP)
        try:
            wait_for("every run's tool call to be recorded", 10, lambda: all(
                kinds(run)[-1] == "tool_call" for run in get_runs(runs, run_ids)
            ))
            time.sleep(0.3)
            kill(stack, "engine")
        finally:
            os.kill(tools.pid, signal.SIGCONT)
        restart_engine(stack)
        calls_recorded = {run.id: next(s for s in run.steps if s.HasField("tool_call")).sequence
                          for run in get_runs(runs, run_ids)}

        # The POSTs wait for a person, the endpoint never called; the PUT ran again, once, and its run finished.
        held = wait_for("the unsafe calls to be held", ORPHANED_WITHIN + 15, lambda: in_state(
            runs, run_ids[:2], runs_pb2.RUN_STATE_WAITING
        ))
        for run in held:
            assert kinds(run)[-2:] == ["resumed", "approval_request"], kinds(run)
            assert "unknown" in run.steps[-1].approval_request.prompt
            assert list(run.steps[-2].resumed.held_tool_call_ids) == [run.steps[calls_recorded[run.id] - 1].tool_call
                                                                      .tool_call_id]
        assert [item.method for item in endpoint.received if item.method == "POST"] == []
        runs.ApproveStep(runs_pb2.ApproveStepRequest(run_id=held[0].id, sequence=held[0].step_count), timeout=10)
        runs.RejectStep(runs_pb2.RejectStepRequest(run_id=held[1].id, sequence=held[1].step_count), timeout=10)
        final = wait_for("every run to end", 30, lambda: done(runs, run_ids))
        received = list(endpoint.received)

    for run in final:
        assert run.state == runs_pb2.RUN_STATE_COMPLETED, (kinds(run), run.error_message)
        assert_numbered(run)
        assert len(markers(run)) == 1 and run.attempts == 1
        assert kinds(run).count("tool_call") == 1 and kinds(run).count("tool_result") == 1, kinds(run)
    # Each model turn asked once: the kill fell between model calls.
    assert [model.counts(question) for question in amounts] == [[1, 1]] * 3
    # The counting server: the approved POST once, the rejected one never, the PUT once; each with the key of
    # the tool-call step its engine recorded before it died.
    ran_again, went_without, put = final
    calls = sorted((item.method, json.loads(item.body)["amount"], item.headers["idempotency-key"])
                   for item in received)
    assert calls == [
        ("POST", 1, f"{ran_again.id}:{calls_recorded[ran_again.id]}"),
        ("PUT", 3, f"{put.id}:{calls_recorded[put.id]}"),
    ]
    assert "unknown" in next(s for s in went_without.steps if s.HasField("tool_result")).tool_result.error
    assert "runs again" in markers(put)[0].resumed.summary


# --- kill point 3: a tool not safe to repeat cut off while it runs -------------------------------------------


def test_killed_while_a_post_runs_the_call_is_not_repeated_by_itself_and_each_decision_finishes_the_run(
    loop: BackgroundLoop, stack: RunningStack, llm: ScriptedLLM
) -> None:
    again, without = "Pay 1 slowly (run again)", "Pay 2 slowly (continue without it)"
    amounts = {again: 1, without: 2}
    model = TurnModel(turns_for=lambda question: http_turns("http__pay_slowly", amounts[question]))
    llm.reset(pick=model)
    with loop.entered(serving_endpoint()) as endpoint, clients(stack) as (engine, runs), explained(stack):
        assert not create_http_tool(stack, endpoint, "pay_slowly", tools_pb2.HTTP_METHOD_POST, "/slow")
        run_ids = start_asking(engine, again, without)
        # The endpoint records each call as it arrives and answers seconds later: the engine dies meanwhile.
        wait_for("both calls to reach the endpoint", 15, lambda: len(endpoint.received) == 2)
        kill(stack, "engine")
        restart_engine(stack)
        held = wait_for("both cut-off calls to be held", ORPHANED_WITHIN + 15, lambda: in_state(
            runs, run_ids, runs_pb2.RUN_STATE_WAITING
        ))
        for run in held:
            assert kinds(run)[-2:] == ["resumed", "approval_request"], kinds(run)
            assert "unknown" in run.steps[-1].approval_request.prompt
        assert len(endpoint.received) == 2  # not called again by the engine that took over
        runs.ApproveStep(runs_pb2.ApproveStepRequest(run_id=held[0].id, sequence=held[0].step_count), timeout=10)
        runs.RejectStep(runs_pb2.RejectStepRequest(run_id=held[1].id, sequence=held[1].step_count), timeout=10)
        final = wait_for("both runs to end", 30, lambda: done(runs, run_ids))
        received = list(endpoint.received)

    ran_again, went_without = final
    for run in final:
        assert run.state == runs_pb2.RUN_STATE_COMPLETED, (kinds(run), run.error_message)
        assert_numbered(run)
        assert len(markers(run)) == 1 and kinds(run).count("tool_result") == 1, kinds(run)
    assert [model.counts(question) for question in amounts] == [[1, 1]] * 2
    # Per run, the key of its one tool-call step: twice for the run a person told to run it again (the same key,
    # so an endpoint that honours it can deduplicate), once for the other.
    key = {run.id: f"{run.id}:{next(s for s in run.steps if s.HasField('tool_call')).sequence}" for run in final}
    assert sorted(item.headers["idempotency-key"] for item in received) == sorted(
        [key[ran_again.id], key[ran_again.id], key[went_without.id]]
    )
    assert "unknown" in next(s for s in went_without.steps if s.HasField("tool_result")).tool_result.error
