"""Faults against the real stack, as separate processes with real signals: the durable-run promises hold.

- an engine killed (SIGKILL) mid-run with resumes off (RUNS_MAX_ATTEMPTS=0): the run store's lease reaper ends its
  runs FAILED "interrupted" (with resumes on, test_resume.py: the next engine completes them);
- a run waiting for approval outlives a killed engine and finishes in the next;
- the runs service restarted (SIGTERM) mid-run: the engine retries through the outage, runs complete with
  every step exactly once;
- `make run`'s launcher stopped with Ctrl-C under load (runs executing and queued, one queued run cancelled):
  no run is left held by the stopped engine: each ended, or was handed back (live, held by nobody, counted in
  `handbacks`, nothing cut off recorded) for the next engine to continue (test_resume_handback.py).

Each stack runs the runs, tools, model and engine processes (no Envoy: these faults are behind it), mostly with
the demo model slowed by DEMO_MODEL_LATENCY_SECONDS so that runs are in flight when the fault hits. Faults on the
client's side are in test_client_faults.py; what both share is in faults.py.
"""

import signal
import sqlite3
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from agentplatform.tools.v1 import tools_pb2, tools_pb2_grpc
from tests.e2e.conftest import wait_ready, wait_serving
from tests.e2e.faults import (
    FINAL,
    LEASE,
    REAP_MARGIN,
    REAPER_INTERVAL,
    SEED_STEPS,
    assert_ended_on_error,
    assert_seed_answer,
    clients,
    ended,
    explained,
    fault_stack,
    get_runs,
    kill,
    list_runs,
    stack_env,
    start_runs,
    wait_for,
)
from tests.launcher.children import launched
from tests.support.seed import SEED_QUESTION

# Above the stack start-up bound (STARTUP_TIMEOUT, 60 s), so a stack that does not start fails with its logs.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


# --- 1. the engine killed ----------------------------------------------------------------------------------



def test_with_resumes_off_runs_of_a_killed_engine_end_failed_interrupted_within_the_lease(
    tmp_path: Path,
) -> None:
    # RUNS_MAX_ATTEMPTS=0: an operator's way back to runs that are not resumed. With resumes on (the default),
    # tests/e2e/test_resume.py has the same kill end in runs COMPLETED by the next engine.
    with fault_stack(tmp_path, ENGINE_LEASE_SECONDS=LEASE, RUNS_REAPER_INTERVAL_SECONDS=REAPER_INTERVAL,
                     DEMO_MODEL_LATENCY_SECONDS=1.0, RUNS_MAX_ATTEMPTS=0) as stack, \
            clients(stack) as (engine, runs), explained(stack):
        run_ids = start_runs(engine, 4)
        wait_for("the runs to be RUNNING with steps recorded", 10, lambda: all(
            run.state == runs_pb2.RUN_STATE_RUNNING and run.step_count >= 1 for run in get_runs(runs, run_ids)
        ))
        # They outlive one lease period while the engine renews it: the reaper must leave them alone.
        time.sleep(LEASE)
        alive = get_runs(runs, run_ids)
        assert all(run.state == runs_pb2.RUN_STATE_RUNNING and run.step_count < SEED_STEPS for run in alive), [
            (runs_pb2.RunState.Name(run.state), run.step_count) for run in alive
        ]

        kill(stack, "engine")
        killed_at = time.monotonic()
        final = wait_for("the reaper to end the killed engine's runs", LEASE + REAPER_INTERVAL + REAP_MARGIN,
                         lambda: ended(runs, run_ids))
        print(f"runs of the killed engine ended after {time.monotonic() - killed_at:.2f}s")
        for run in final:
            assert_ended_on_error(run, runs_pb2.RUN_STATE_FAILED, "interrupted")
            assert "stopped renewing its lease" in run.error_message
        assert list_runs(runs, runs_pb2.RUN_STATE_RUNNING) == []
        assert list_runs(runs, runs_pb2.RUN_STATE_QUEUED) == []

        # A new engine process takes new runs; this one lives longer than a lease, so it is renewed.
        stack.start(stack.spec("engine"))
        wait_ready(stack, ["engine"])
        (run_id,) = start_runs(engine, 1)
        (run,) = wait_for("the new engine's run to end", 15, lambda: ended(runs, [run_id]))
        assert_seed_answer(run)


def test_a_run_waiting_for_approval_outlives_a_killed_engine_and_finishes_in_the_next(tmp_path: Path) -> None:
    with fault_stack(tmp_path, ENGINE_LEASE_SECONDS=LEASE, RUNS_REAPER_INTERVAL_SECONDS=REAPER_INTERVAL) as stack, \
            clients(stack) as (engine, runs), explained(stack), \
            grpc.insecure_channel(stack.stack.tools_address) as tools_channel:
        tools = tools_pb2_grpc.ToolServiceStub(tools_channel)
        marked = tools_pb2.Tool(id="calculator", requires_approval=True)
        tools.UpdateTool(tools_pb2.UpdateToolRequest(tool=marked, update_mask=FieldMask(paths=["requires_approval"])))
        run_id = engine.StartRun(engine_pb2.StartRunRequest(message=SEED_QUESTION), timeout=10).id
        waiting = wait_for("the run to wait for approval", 10, lambda: next(
            (run for run in get_runs(runs, [run_id]) if run.state == runs_pb2.RUN_STATE_WAITING), None
        ))

        kill(stack, "engine")
        # Past a lease and a reaper pass: a waiting run has no lease to expire, so nothing ends it.
        time.sleep(LEASE + REAPER_INTERVAL + REAP_MARGIN)
        assert get_runs(runs, [run_id])[0].state == runs_pb2.RUN_STATE_WAITING

        request = waiting.step_count
        runs.ApproveStep(runs_pb2.ApproveStepRequest(run_id=run_id, sequence=request), timeout=5)
        stack.start(stack.spec("engine"))
        wait_ready(stack, ["engine"])
        # The seed example asks for two calculator calls: the second waits for approval too.
        second = wait_for("the second approval request", 15, lambda: next(
            (run for run in get_runs(runs, [run_id])
             if run.state == runs_pb2.RUN_STATE_WAITING and run.step_count > request + 1), None
        ))
        runs.ApproveStep(runs_pb2.ApproveStepRequest(run_id=run_id, sequence=second.step_count), timeout=5)
        run = wait_for("the run to end", 15, lambda: next(
            (run for run in get_runs(runs, [run_id]) if run.state in FINAL), None
        ))
        assert run.state == runs_pb2.RUN_STATE_COMPLETED, run.error_message
        assert "45" in run.steps[-1].agent_response.text


# --- 2. the runs service restarted -------------------------------------------------------------------------


def test_runs_complete_through_a_restart_of_the_runs_service(tmp_path: Path) -> None:
    # The outage (SIGTERM, the runs service's grace period, a restart) is longer than the lease: the restarted
    # runs service must give live runs a fresh lease period before it reaps anything.
    lease = 3.0
    with fault_stack(tmp_path, ENGINE_LEASE_SECONDS=lease, RUNS_REAPER_INTERVAL_SECONDS=REAPER_INTERVAL,
                     ENGINE_STORE_OUTAGE_SECONDS=30, DEMO_MODEL_LATENCY_SECONDS=0.7) as stack, \
            clients(stack) as (engine, runs), explained(stack):
        run_ids = start_runs(engine, 4)
        wait_for("the runs to be half-way", 10, lambda: all(
            run.state == runs_pb2.RUN_STATE_RUNNING and run.step_count >= 2 for run in get_runs(runs, run_ids)
        ))

        stopped_at = time.monotonic()
        assert stack.stop("runs") == 0
        time.sleep(max(0.0, stopped_at + lease + 0.5 - time.monotonic()))
        stack.start(stack.spec("runs"))
        wait_ready(stack, ["runs"])
        print(f"runs service away for {time.monotonic() - stopped_at:.2f}s")

        final = wait_for("the runs to end after the restart", 20, lambda: ended(runs, run_ids))
        for run in final:
            assert_seed_answer(run)
        assert "retrying" in stack.log("engine"), "the engine should have met the outage mid-run"


# --- 3. Ctrl-C of `make run` under load --------------------------------------------------------------------


def test_ctrl_c_of_the_launcher_under_load_leaves_no_live_run(tmp_path: Path) -> None:
    # The default lease (10 s) outlives the stop: the runs service's reaper cannot tidy up after the engine, so
    # every run's end or hand-back is the engine's own doing. Four execute at once; the rest wait QUEUED.
    env = stack_env(tmp_path, {"DEMO_MODEL_LATENCY_SECONDS": "1", "ENGINE_MAX_CONCURRENT_RUNS": "4"})
    engine_address = f"127.0.0.1:{env['ENGINE_PORT']}"
    runs_address = f"127.0.0.1:{env['RUNS_PORT']}"
    with launched(tmp_path, env) as launcher:
        try:
            deadline = time.monotonic() + 30
            # Every service, not only those called here: a run started before the tools service is up fails.
            wait_serving(runs_address, "agentplatform.runs.v1.RunService", deadline)
            wait_serving(f"127.0.0.1:{env['TOOLS_PORT']}", "agentplatform.tools.v1.ToolService", deadline)
            wait_serving(f"127.0.0.1:{env['AGENTS_PORT']}", "agentplatform.agents.v1.AgentRegistryService", deadline)
            wait_serving(engine_address, "agentplatform.engine.v1.AgentService", deadline)
            launcher.note_children()
            with grpc.insecure_channel(engine_address) as engine_channel, \
                    grpc.insecure_channel(runs_address) as runs_channel:
                engine = engine_pb2_grpc.AgentServiceStub(engine_channel)
                runs = runs_pb2_grpc.RunServiceStub(runs_channel)
                run_ids = start_runs(engine, 10)
                states = [run.state for run in get_runs(runs, run_ids)]
                assert states == [runs_pb2.RUN_STATE_RUNNING] * 4 + [runs_pb2.RUN_STATE_QUEUED] * 6, states
                # A queued run cancelled from outside frees no slot it never held: still 4 at most execute.
                cancelled_id = run_ids[-1]
                cancelled = runs.CancelRun(runs_pb2.CancelRunRequest(run_id=cancelled_id, reason="no longer needed"),
                                           timeout=5)
                assert cancelled.state == runs_pb2.RUN_STATE_CANCELLED
                watch_until = time.monotonic() + 1
                while time.monotonic() < watch_until:
                    states = [run.state for run in get_runs(runs, run_ids)]
                    assert states.count(runs_pb2.RUN_STATE_RUNNING) <= 4, states
        except (AssertionError, TimeoutError, grpc.RpcError) as exc:
            raise AssertionError(f"{exc}; launcher log:\n{launcher.log_tail()}") from None

        launcher.process.send_signal(signal.SIGINT)
        sigint_at = time.monotonic()
        assert launcher.process.wait(30) == 0, launcher.log_tail()
        print(f"the launcher stopped {time.monotonic() - sigint_at:.2f}s after SIGINT")
        text = launcher.log_path.read_text()
        assert "Traceback" not in text, text[-5000:]

    with sqlite3.connect(tmp_path / "runs.db") as db:
        rows = db.execute("SELECT id, state, error_code, step_count, executor_id, handbacks FROM runs").fetchall()
        steps = dict(db.execute("SELECT run_id, group_concat(sequence) FROM run_steps GROUP BY run_id").fetchall())
        last = dict(db.execute(
            "SELECT run_id, type FROM run_steps s WHERE sequence = (SELECT max(sequence) FROM run_steps "
            "WHERE run_id = s.run_id)"
        ).fetchall())
    assert sorted(row[0] for row in rows) == sorted(run_ids)
    # No run is left to the reaper: every live one was handed back, held by nobody, and counted.
    assert [row for row in rows if row[1] in ("running", "queued") and (row[4] or row[5] != 1)] == []
    for run_id, state, error_code, step_count, _, _ in rows:
        numbered = sorted(map(int, steps[run_id].split(","))) if run_id in steps else []
        assert numbered == list(range(1, step_count + 1))
        if run_id == cancelled_id:
            assert (state, error_code, last[run_id]) == ("cancelled", "cancelled", "error")
            continue
        if state in ("running", "queued"):
            # Handed back as it was: no error step, nothing recorded for what the stop cut off.
            assert error_code == "" and last.get(run_id) != "error", (run_id, state, last.get(run_id))
            continue
        assert (state, error_code, last[run_id]) == ("completed", "", "agent-response"), (run_id, state, error_code)
    assert "queued" in {row[1] for row in rows}, "the queued runs, at least, are handed back"
