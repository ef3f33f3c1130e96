"""Durable execution (issue 18) against the real stack, as separate processes with real signals: a run whose
engine is SIGKILLed is resumed by the next engine from its steps, not failed.

- killed while the model works on its first reply, and after a tool result while the next model call is in flight
  (both held in place by stopping the model process with SIGSTOP): each run ends COMPLETED with the seed timeline
  plus one `resumed` marker right after what the killed engine recorded, steps 1..n with no gap and no repeat;
- killed while a tool runs (the tools service held with SIGSTOP, so the tool-call step is recorded and its
  result is not): calculator declares itself read-only, so the resumed run calls it again (same idempotency key)
  without asking anyone, and ends COMPLETED with one result for the call. A tool not safe to repeat waits for a
  person instead, and both decisions finish the run: tests/engine/test_resume.py, with an HTTP tool (a POST) on a
  counting server that sees the call once for "run again" and never for "continue without it";
- killed again every time it is resumed: after its third resume (RUNS_MAX_ATTEMPTS) it ends FAILED
  `interrupted`, the message naming the resumes, with a marker for each.

The stack is the fault tests' (tests/e2e/faults.py) with the demo model slowed so that runs are in flight; the
tests share one (a start costs more than most tests), made whole again before each.
"""

import os
import signal
import time
from collections.abc import Iterator

import pytest

from agentplatform.runs.v1 import runs_pb2
from tests.e2e.conftest import RunningStack
from tests.e2e.faults import (
    assert_numbered,
    clients,
    ended,
    explained,
    fault_stack_processes,
    get_runs,
    kill,
    list_runs,
    made_whole,
    start_runs,
    wait_for,
)
from tests.e2e.resumes import (
    ORPHANED_WITHIN,
    assert_resumed_seed_run,
    done,
    kinds,
    model_latency,
    restart_engine,
    resume_stack,
    without_markers,
)
from tests.support.seed import SEED_TIMELINE, timeline

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

#: Long enough for a kill to land while the model streams; short enough for a run of four turns to finish.
MODEL_LATENCY = 1.0


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with resume_stack(tmp_path_factory.mktemp("stack"), DEMO_MODEL_LATENCY_SECONDS=MODEL_LATENCY) as stack:
        yield stack


@pytest.fixture
def stack(shared_stack: RunningStack) -> RunningStack:
    """The shared stack, whole again after the test before (its engine killed, a process stopped)."""
    made_whole(shared_stack, fault_stack_processes(shared_stack))
    return shared_stack


def test_runs_of_a_killed_engine_are_resumed_by_the_next_one_and_complete(stack: RunningStack) -> None:
    with clients(stack) as (engine, runs), explained(stack):
        # Two kill points at once, held in place by stopping the model (SIGSTOP): one run past its first tool
        # result, its next model call in flight; one at its first model call, its user request alone recorded.
        (later,) = start_runs(engine, 1)
        wait_for("the first run to have a tool result", 15, lambda: "tool_result" in kinds(get_runs(runs, [later])[0]))
        (first,) = start_runs(engine, 1)
        wait_for("the second run to begin", 10, lambda: get_runs(runs, [first])[0].step_count >= 1)
        model = stack.processes["model"]
        os.kill(model.pid, signal.SIGSTOP)
        try:
            time.sleep(0.3)
            at_kill = {run.id: kinds(run) for run in get_runs(runs, [later, first])}
            assert at_kill[first] == ["user_request"], at_kill
            assert at_kill[later][-1] == "tool_result", at_kill
            kill(stack, "engine")
        finally:
            os.kill(model.pid, signal.SIGCONT)
        killed_at = time.monotonic()
        run_ids = [later, first]
        wait_for("the killed engine's runs to be orphaned", ORPHANED_WITHIN, lambda: all(
            run.attempts == 1 and not run.executor_id for run in get_runs(runs, run_ids)
        ))
        # Not ended: no engine is connected, so they wait, live, for one.
        assert {run.state for run in get_runs(runs, run_ids)} == {runs_pb2.RUN_STATE_RUNNING}

        restart_engine(stack)
        final = wait_for("the resumed runs to end", 30, lambda: ended(runs, run_ids))
        print(f"runs of the killed engine ended {time.monotonic() - killed_at:.2f}s after the kill")
        for run in final:
            assert_resumed_seed_run(run)
            # The marker comes right after what the killed engine recorded: nothing of it was lost or redone.
            before = at_kill[run.id]
            assert kinds(run)[: len(before) + 1] == [*before, "resumed"], kinds(run)
            marker = run.steps[len(before)].resumed
            assert "model call again" in marker.summary and not marker.held_tool_call_ids
        assert list_runs(runs, runs_pb2.RUN_STATE_RUNNING) == []


def test_a_read_only_tool_call_cut_off_by_the_kill_runs_again_without_asking(stack: RunningStack) -> None:
    with clients(stack) as (engine, runs), explained(stack):
        run_ids = start_runs(engine, 2)
        wait_for("the runs to begin", 10, lambda: all(run.step_count >= 1 for run in get_runs(runs, run_ids)))
        # The engine has listed the tools (before the first model call); the tools service now stops answering,
        # so the calculator call is recorded and never returns: the engine dies with the call in flight.
        tools = stack.processes["tools"]
        time.sleep(0.3)
        os.kill(tools.pid, signal.SIGSTOP)
        try:
            wait_for("both runs to be inside their first tool call", 10, lambda: all(
                kinds(run)[-1] == "tool_call" for run in get_runs(runs, run_ids)
            ))
            time.sleep(0.3)
            kill(stack, "engine")
        finally:
            os.kill(tools.pid, signal.SIGCONT)
        wait_for("the runs to be orphaned", ORPHANED_WITHIN, lambda: all(
            run.attempts == 1 for run in get_runs(runs, run_ids)
        ))
        restart_engine(stack)

        final = wait_for("both runs to end", 30, lambda: done(runs, run_ids))
        for run in final:
            assert run.state == runs_pb2.RUN_STATE_COMPLETED, (kinds(run), run.error_message)
            assert_numbered(run)
            marker = next(step for step in run.steps if step.WhichOneof("content") == "resumed")
            cut_off = run.steps[marker.sequence - 2]
            assert cut_off.WhichOneof("content") == "tool_call", kinds(run)
            assert "runs again" in marker.resumed.summary and not marker.resumed.held_tool_call_ids
            results = [step for step in run.steps if step.WhichOneof("content") == "tool_result"
                       and step.tool_result.tool_call_id == cut_off.tool_call.tool_call_id]
            assert len(results) == 1 and results[0].sequence == marker.sequence + 1, kinds(run)
            assert timeline(without_markers(run)) == SEED_TIMELINE


def test_a_run_killed_four_times_ends_failed_interrupted_after_its_third_resume(stack: RunningStack) -> None:
    # A slow model: every engine is killed while the run waits on its model call.
    with model_latency(stack, 30), clients(stack) as (engine, runs), explained(stack):
        (run_id,) = start_runs(engine, 1)
        for attempt in range(1, 4):
            # Each engine killed once it holds the run and has recorded its marker (the first: its user request).
            wait_for(f"engine {attempt} to hold the run", 15, lambda a=attempt: (
                (run := get_runs(runs, [run_id])[0]).executor_id and kinds(run).count("resumed") == a - 1
            ))
            kill(stack, "engine")
            wait_for(f"resume {attempt} to be offered", ORPHANED_WITHIN, lambda a=attempt: (
                get_runs(runs, [run_id])[0].attempts == a
            ))
            restart_engine(stack)
        wait_for("the last engine to record its marker", 15, lambda: kinds(get_runs(runs, [run_id])[0]).count(
            "resumed") == 3)
        kill(stack, "engine")
        (run,) = wait_for("the run to end", ORPHANED_WITHIN, lambda: ended(runs, [run_id]))
        assert (run.state, run.error_code, run.attempts) == (runs_pb2.RUN_STATE_FAILED, "interrupted", 3)
        assert run.error_message.endswith("after 3 resume(s) (RUNS_MAX_ATTEMPTS)"), run.error_message
        assert_numbered(run)
        assert kinds(run) == ["user_request", "resumed", "resumed", "resumed", "error"], kinds(run)
        assert [step.resumed.attempt for step in run.steps if step.WhichOneof("content") == "resumed"] == [1, 2, 3]
