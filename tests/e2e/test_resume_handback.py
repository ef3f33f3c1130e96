"""A SIGTERMed engine hands its runs back (issue 18), against the real stack as separate processes with real
signals: its runs continue elsewhere at once, without waiting for their lease to run out.

- two engines; the first, with a run mid-flight and another queued behind it, gets SIGTERM with a short grace: the
  second engine holds both well before the first one's lease would have run out, and they end COMPLETED with the
  seed timeline plus one `resumed` marker naming the hand-back, steps 1..n with no gap and no repeat, no attempt
  counted;
- one engine SIGTERMed while both its runs are inside a tool call (the tools service held with SIGSTOP) and
  started again: the runs are handed back as the engine stops (live, held by nobody), the restarted engine
  continues them at once, and the cut-off calculator call (read-only) runs again with one result.

The stack is the fault tests' (tests/e2e/faults.py) with the demo model slowed so that runs are in flight.
"""

import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from agentplatform.engine.v1 import engine_pb2_grpc
from agentplatform.runs.v1 import runs_pb2
from tests.e2e.conftest import RunningStack, wait_serving
from tests.e2e.faults import (
    assert_numbered,
    clients,
    ended,
    explained,
    fault_stack,
    get_runs,
    start_runs,
    wait_for,
)
from tests.e2e.resumes import kinds, restart_engine, without_markers
from tests.support.seed import SEED_TIMELINE, timeline

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

#: Long enough for a SIGTERM to land while the model streams; short enough for a run of four turns to finish.
MODEL_LATENCY = 1.0
#: A lease far longer than a hand-back takes: a run that moved before it could have run out was handed back.
LEASE = 12.0
#: The engines' grace period (GRPC_GRACE_SECONDS): short, so that a run outlasts it and is stopped mid-flight.
GRACE = 0.5
#: From the SIGTERM to the other engine holding the runs: the grace, the stop, the hand-back, an offer, margin.
MOVED_WITHIN = 5.0


def markers(run: runs_pb2.Run) -> list[runs_pb2.Resumed]:
    return [step.resumed for step in run.steps if step.WhichOneof("content") == "resumed"]


def assert_handed_back_seed_run(run: runs_pb2.Run, stopped_engine: str) -> runs_pb2.Resumed:
    """COMPLETED with the seed's timeline and answer, steps 1..n, one resume marker: the hand-back's."""
    assert run.state == runs_pb2.RUN_STATE_COMPLETED, (run.id, runs_pb2.RunState.Name(run.state), run.error_message)
    assert_numbered(run)
    assert timeline(without_markers(run)) == SEED_TIMELINE, timeline(list(run.steps))
    assert "45" in run.steps[-1].agent_response.text
    (marker,) = markers(run)
    assert marker.handed_back_by == stopped_engine and marker.executor_id not in ("", stopped_engine)
    assert f"handed back by engine {stopped_engine} at its shutdown" in marker.summary
    assert (run.attempts, run.handbacks, run.handed_back_by) == (0, 1, stopped_engine)
    return marker


def sigterm(stack: RunningStack, name: str) -> float:
    """SIGTERM a process of the stack, as a deploy does, and wait for it to exit 0; returns when it was sent."""
    sent = time.monotonic()
    assert stack.stop(name, timeout=20) == 0, stack.log(name)[-3000:]
    return sent


def test_a_sigtermed_engine_hands_its_runs_to_the_other_engine_well_before_its_lease_runs_out(
    tmp_path: Path,
) -> None:
    with fault_stack(tmp_path, ENGINE_REPLICAS=2, ENGINE_LEASE_SECONDS=LEASE, RUNS_REAPER_INTERVAL_SECONDS=0.5,
                     DEMO_MODEL_LATENCY_SECONDS=MODEL_LATENCY, GRPC_GRACE_SECONDS=GRACE,
                     ENGINE_MAX_CONCURRENT_RUNS=1) as stack, \
            clients(stack) as (_, runs), explained(stack):
        first, second = stack.stack.engine_addresses
        for address in (first, second):
            wait_serving(address, "agentplatform.engine.v1.AgentService", time.monotonic() + 30)
        with grpc.insecure_channel(first) as channel:
            # One slot: the first run executes, the second waits QUEUED behind it on the engine to be stopped.
            run_ids = start_runs(engine_pb2_grpc.AgentServiceStub(channel), 2)
        mid_flight, queued = run_ids
        wait_for("the first run to be past its first tool result", 15, lambda: "tool_result" in kinds(
            get_runs(runs, [mid_flight])[0]
        ))
        at_stop = get_runs(runs, run_ids)
        assert [run.state for run in at_stop] == [runs_pb2.RUN_STATE_RUNNING, runs_pb2.RUN_STATE_QUEUED]
        stopped_engine = at_stop[0].executor_id
        assert stopped_engine and at_stop[1].executor_id == stopped_engine

        sent = sigterm(stack, "engine-1")
        moved = wait_for("the other engine to hold both runs", MOVED_WITHIN, lambda: all(
            run.executor_id not in ("", stopped_engine) or run.state not in (runs_pb2.RUN_STATE_RUNNING,
                                                                            runs_pb2.RUN_STATE_QUEUED)
            for run in get_runs(runs, run_ids)
        ))
        took = time.monotonic() - sent
        print(f"the runs moved to the other engine {took:.2f}s after the SIGTERM (lease {LEASE:g}s)")
        assert moved and took < LEASE / 2

        final = wait_for("both runs to end", 60, lambda: ended(runs, run_ids))
        for run in final:
            assert_handed_back_seed_run(run, stopped_engine)
        # The queued run began on the other engine: nothing of it was recorded before the marker but its request.
        (queued_run,) = [run for run in final if run.id == queued]
        assert kinds(queued_run)[:2] == ["user_request", "resumed"], kinds(queued_run)
        # The run stopped mid-flight has the marker right after what the stopped engine recorded.
        (moved_run,) = [run for run in final if run.id == mid_flight]
        before = kinds(at_stop[0])
        assert kinds(moved_run)[: len(before)] == before
        assert not markers(moved_run)[0].held_tool_call_ids  # the seed's only tool is read-only
        assert "handed" in stack.log("engine-1") and "Traceback" not in stack.log("engine-1")


def test_a_single_engine_sigtermed_inside_tool_calls_and_started_again_continues_its_runs(tmp_path: Path) -> None:
    with fault_stack(tmp_path, ENGINE_LEASE_SECONDS=LEASE, RUNS_REAPER_INTERVAL_SECONDS=0.5,
                     DEMO_MODEL_LATENCY_SECONDS=MODEL_LATENCY, GRPC_GRACE_SECONDS=GRACE) as stack, \
            clients(stack) as (engine, runs), explained(stack):
        run_ids = start_runs(engine, 2)
        wait_for("the runs to begin", 10, lambda: all(run.step_count >= 1 for run in get_runs(runs, run_ids)))
        stopped_engine = get_runs(runs, run_ids)[0].executor_id
        # The engine has listed the tools (before the first model call); the tools service now stops answering,
        # so each run's calculator call is recorded and never returns: the grace ends with the calls in flight.
        tools = stack.processes["tools"]
        time.sleep(0.3)
        os.kill(tools.pid, signal.SIGSTOP)
        try:
            wait_for("both runs to be inside their first tool call", 10, lambda: all(
                kinds(run)[-1] == "tool_call" for run in get_runs(runs, run_ids)
            ))
            sent = sigterm(stack, "engine")
        finally:
            os.kill(tools.pid, signal.SIGCONT)
        # Handed back as the engine stopped, long before the lease would have run out: live, held by nobody.
        handed = get_runs(runs, run_ids)
        print(f"the engine stopped {time.monotonic() - sent:.2f}s after the SIGTERM (grace {GRACE:g}s)")
        for run in handed:
            assert (run.state, run.executor_id, run.handbacks, run.attempts) == (
                runs_pb2.RUN_STATE_RUNNING, "", 1, 0
            ), run
            assert kinds(run)[-1] == "tool_call"  # nothing recorded for the cut-off call

        restarted_at = time.monotonic()
        restart_engine(stack)
        wait_for("the restarted engine to take both runs", MOVED_WITHIN, lambda: all(
            "resumed" in kinds(run) for run in get_runs(runs, run_ids)
        ))
        print(f"the restarted engine took the runs {time.monotonic() - restarted_at:.2f}s after it was started")

        final = wait_for("both runs to end", 60, lambda: ended(runs, run_ids))
        for run in final:
            marker = assert_handed_back_seed_run(run, stopped_engine)
            # The calculator declares itself read-only: the cut-off call runs again, once, without asking.
            assert "runs again, safe to repeat: calculator" in marker.summary and not marker.held_tool_call_ids
            position = kinds(run).index("resumed")
            cut_off = run.steps[position - 1]
            assert cut_off.WhichOneof("content") == "tool_call", kinds(run)
            results = [step for step in run.steps if step.WhichOneof("content") == "tool_result"
                       and step.tool_result.tool_call_id == cut_off.tool_call.tool_call_id]
            assert len(results) == 1 and results[0].sequence == cut_off.sequence + 2, kinds(run)
