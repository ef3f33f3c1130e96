"""Faults against the real stack, as separate processes with real signals: the durable-run promises hold.

- an engine killed (SIGKILL) mid-run: the run store's lease reaper ends its runs FAILED "interrupted";
- the runs service restarted (SIGTERM) mid-run: the engine retries through the outage, runs complete with
  every step exactly once;
- `make run`'s launcher stopped with Ctrl-C under load (runs executing and queued, one queued run cancelled):
  no run is left RUNNING or QUEUED in the database;
- a StreamChat client killed mid-run: the run goes on (on_disconnect CONTINUE) or ends CANCELLED (the default),
  also when the client goes while the engine is busy sending it deltas;
- Chat calls whose deadline runs out while the run is being started: no run is left behind.

Each stack runs the runs, tools, model and engine processes (no Envoy: these faults are behind it), mostly with
the demo model slowed by DEMO_MODEL_LATENCY_SECONDS so that runs are in flight when the fault hits. The last two
tests pin, in one process, the engine races the deadline test hits only now and then.
"""

import asyncio
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import grpc
import httpx
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from agentplatform.tools.v1 import tools_pb2, tools_pb2_grpc
from services.common.run_vocabulary import CANCELLED
from services.engine.journal import Step, UserRequest
from services.engine.loop.steps import StepRecorder
from services.launcher.stack import ProcessSpec
from tests.conftest import free_port
from tests.e2e.conftest import RunningStack, build_stack_in, stack_environment, wait_ready, wait_serving
from tests.launcher.children import launched
from tests.support.platform import start_platform
from tests.support.scripted_llm import ScriptedLLM, delayed, text_reply
from tests.support.seed import SEED_QUESTION, SEED_TIMELINE, timeline

# Above the stack start-up bound (STARTUP_TIMEOUT, 60 s), so a stack that does not start fails with its logs.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

LIVE = (runs_pb2.RUN_STATE_QUEUED, runs_pb2.RUN_STATE_RUNNING)
FINAL = (runs_pb2.RUN_STATE_COMPLETED, runs_pb2.RUN_STATE_FAILED, runs_pb2.RUN_STATE_CANCELLED)
#: Steps of the seed example: user request, then (thought, tool call, tool result) twice, then the answer.
SEED_STEPS = 8
#: How often the tests look at the runs while they wait.
POLL_SECONDS = 0.05
T = TypeVar("T")


# --- the stack ---------------------------------------------------------------------------------------------


def stack_env(workdir: Path, settings: dict[str, str]) -> dict[str, str]:
    """The environment of a stack on free 127.0.0.1 ports with its databases in `workdir`, plus `settings`."""
    return stack_environment(workdir, DEMO_MODEL_CHUNK_DELAY_SECONDS="0.01", **settings)


@contextmanager
def fault_stack(workdir: Path, *extra: ProcessSpec, **settings: str | float) -> Iterator[RunningStack]:
    """Runs, tools, demo model (unless LLM_BASE_URL is set) and engine as separate processes (the launcher's
    definitions), after the `extra` ones; every one killed on the way out."""
    env = stack_env(workdir, {key: str(value) for key, value in settings.items()})
    stack = build_stack_in(workdir, env)
    running = RunningStack(stack, workdir, env, page_port=0)
    names = [spec.name for spec in stack.processes if spec.name != "gateway"]
    try:
        for spec in [*extra, *(running.spec(name) for name in names)]:
            running.start(spec)
        wait_ready(running, names)
        yield running
    finally:
        for name in list(running.processes):
            kill(running, name)


def kill(stack: RunningStack, name: str) -> None:
    """SIGKILL a process of the stack and reap it."""
    process = stack.processes.pop(name)
    process.kill()
    process.wait()


def logs(stack: RunningStack, *names: str) -> str:
    names = names or tuple(sorted(path.stem for path in stack.workdir.glob("*.log")))
    return "\n".join(f"--- {name} log\n{stack.log(name)[-4000:]}" for name in names)


@contextmanager
def explained(stack: RunningStack, *names: str) -> Iterator[None]:
    """A failed assertion or wait inside the block comes with the tails of the processes' logs."""
    try:
        yield
    except (AssertionError, TimeoutError, grpc.RpcError) as exc:
        raise AssertionError(f"{exc}\n{logs(stack, *names)}") from exc


@contextmanager
def clients(stack: RunningStack) -> Iterator[tuple[engine_pb2_grpc.AgentServiceStub, runs_pb2_grpc.RunServiceStub]]:
    with grpc.insecure_channel(stack.stack.engine_address) as engine, \
            grpc.insecure_channel(stack.stack.runs_address) as runs:
        yield engine_pb2_grpc.AgentServiceStub(engine), runs_pb2_grpc.RunServiceStub(runs)


# --- looking at runs ---------------------------------------------------------------------------------------


def wait_for(what: str, timeout: float, look: Callable[[], T | None]) -> T:
    """Call `look` until it returns something other than None (or False); TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        found = look()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(POLL_SECONDS)


def get_runs(runs: runs_pb2_grpc.RunServiceStub, run_ids: list[str]) -> list[runs_pb2.Run]:
    return [runs.GetRun(runs_pb2.GetRunRequest(run_id=run_id), timeout=5) for run_id in run_ids]


def list_runs(runs: runs_pb2_grpc.RunServiceStub, state: "runs_pb2.RunState" = runs_pb2.RUN_STATE_UNSPECIFIED
              ) -> list[runs_pb2.Run]:
    found, token = [], ""
    while True:
        page = runs.ListRuns(runs_pb2.ListRunsRequest(page_size=1000, page_token=token, state=state), timeout=5)
        found += page.runs
        if not (token := page.next_page_token):
            return found


def ended(runs: runs_pb2_grpc.RunServiceStub, run_ids: list[str]) -> list[runs_pb2.Run] | None:
    """The runs with their steps once every one of them has ended; None while one is live."""
    found = get_runs(runs, run_ids)
    return found if all(run.state not in LIVE for run in found) else None


def assert_numbered(run: runs_pb2.Run) -> None:
    """Steps 1..N, no gap, no duplicate, N the run's step count."""
    sequences = [step.sequence for step in run.steps]
    assert sequences == list(range(1, len(sequences) + 1)), f"run {run.id} has steps {sequences}"
    assert run.step_count == len(sequences)


def assert_seed_answer(run: runs_pb2.Run) -> None:
    assert run.state == runs_pb2.RUN_STATE_COMPLETED, (run.id, runs_pb2.RunState.Name(run.state), run.error_message)
    assert_numbered(run)
    assert len(run.steps) == SEED_STEPS
    assert timeline(list(run.steps)) == SEED_TIMELINE
    assert "45" in run.steps[-1].agent_response.text


def assert_ended_on_error(run: runs_pb2.Run, state: "runs_pb2.RunState", code: str) -> None:
    """A run ended `state` with `code`, its last step the matching `error` step, its lease gone."""
    assert (runs_pb2.RunState.Name(run.state), run.error_code) == (runs_pb2.RunState.Name(state), code), (
        run.id, run.error_message
    )
    assert_numbered(run)
    last = run.steps[-1]
    assert last.WhichOneof("content") == "error", f"run {run.id} ends on a {last.WhichOneof('content')} step"
    assert (last.error.code, last.error.message) == (code, run.error_message)
    assert [step.WhichOneof("content") for step in run.steps].count("error") == 1
    assert run.HasField("complete_time") and not run.executor_id


def start_runs(engine: engine_pb2_grpc.AgentServiceStub, count: int) -> list[str]:
    return [
        engine.StartRun(engine_pb2.StartRunRequest(message=SEED_QUESTION, metadata={"n": str(n)}), timeout=10).id
        for n in range(count)
    ]


# --- 1. the engine killed ----------------------------------------------------------------------------------

LEASE = 2.0
REAPER_INTERVAL = 0.5
#: Time for the reaper's write and our polling, beyond the lease and one reaper interval.
REAP_MARGIN = 2.0


def test_runs_of_a_killed_engine_end_failed_interrupted_within_the_lease(tmp_path: Path) -> None:
    with fault_stack(tmp_path, ENGINE_LEASE_SECONDS=LEASE, RUNS_REAPER_INTERVAL_SECONDS=REAPER_INTERVAL,
                     DEMO_MODEL_LATENCY_SECONDS=1.0) as stack, clients(stack) as (engine, runs), explained(stack):
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
    # every run's end is the engine's own doing. Four execute at once; the rest wait QUEUED.
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
        rows = db.execute("SELECT id, state, error_code, step_count FROM runs").fetchall()
        steps = dict(db.execute("SELECT run_id, group_concat(sequence) FROM run_steps GROUP BY run_id").fetchall())
        last = dict(db.execute(
            "SELECT run_id, type FROM run_steps s WHERE sequence = (SELECT max(sequence) FROM run_steps "
            "WHERE run_id = s.run_id)"
        ).fetchall())
    assert sorted(row[0] for row in rows) == sorted(run_ids)
    assert [row for row in rows if row[1] in ("running", "queued")] == []
    for run_id, state, error_code, step_count in rows:
        assert sorted(map(int, steps[run_id].split(","))) == list(range(1, step_count + 1))
        if run_id == cancelled_id:
            assert (state, error_code, last[run_id]) == ("cancelled", "cancelled", "error")
            continue
        assert (state, error_code, last[run_id]) in (("completed", "", "agent-response"),
                                                    ("failed", "interrupted", "error")), (run_id, state, error_code)
    assert "failed" in {row[1] for row in rows}, "the queued runs, at least, are interrupted"


# --- 4. a client that vanishes -----------------------------------------------------------------------------

#: A StreamChat client as its own process: prints "run <id>" and "step <sequence>" as the events come.
STREAM_CLIENT = """
import sys
import grpc
from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc

address, policy, message = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with grpc.insecure_channel(address) as channel:
    call = engine_pb2_grpc.AgentServiceStub(channel).StreamChat(
        engine_pb2.StreamChatRequest(message=message, on_disconnect=policy)
    )
    for event in call:
        if event.HasField("run"):
            print("run", event.run.id, flush=True)
        elif event.HasField("step"):
            print("step", event.step.sequence, flush=True)
"""


def follow_until_step(stack: RunningStack, policy: "engine_pb2.DisconnectPolicy", sequence: int) -> str:
    """Start a StreamChat client process, SIGKILL it once it has seen step `sequence`; returns the run id."""
    client = subprocess.Popen(
        [sys.executable, "-c", STREAM_CLIENT, stack.stack.engine_address, str(policy), SEED_QUESTION],
        stdout=subprocess.PIPE, bufsize=0,
    )
    assert client.stdout is not None
    run_id, seen, deadline = "", 0, time.monotonic() + 15
    try:
        while seen < sequence:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([client.stdout], [], [], left)[0], "the client saw no step in time"
            line = client.stdout.readline().decode().split()
            assert line, f"the client ended early (exit code {client.wait()})"
            if line[0] == "run":
                run_id = line[1]
            else:
                seen = int(line[1])
    finally:
        client.kill()
        client.wait()
        client.stdout.close()
    return run_id


def watch(runs: runs_pb2_grpc.RunServiceStub, run_id: str, timeout: float) -> list[runs_pb2.RunEvent]:
    return list(runs.WatchRun(runs_pb2.WatchRunRequest(run_id=run_id, after_sequence=0), timeout=timeout))


def test_a_run_outlives_its_killed_client_or_is_cancelled_by_default(tmp_path: Path) -> None:
    with fault_stack(tmp_path, DEMO_MODEL_LATENCY_SECONDS=0.5) as stack, clients(stack) as (_, runs), \
            explained(stack):
        # CONTINUE: re-attached from the start, the run is whole.
        run_id = follow_until_step(stack, engine_pb2.DISCONNECT_POLICY_CONTINUE, 2)
        events = watch(runs, run_id, 15)
        assert events[0].WhichOneof("event") == "run" and events[-1].WhichOneof("event") == "run"
        steps = [event.step for event in events if event.WhichOneof("event") == "step"]
        assert [step.sequence for step in steps] == list(range(1, SEED_STEPS + 1))
        final = events[-1].run
        assert final.state == runs_pb2.RUN_STATE_COMPLETED
        assert_seed_answer(get_runs(runs, [run_id])[0])

        # The default (CANCEL): the engine notices the client is gone and cancels the run.
        run_id = follow_until_step(stack, engine_pb2.DISCONNECT_POLICY_UNSPECIFIED, 2)
        gone_at = time.monotonic()
        events = watch(runs, run_id, 10)
        print(f"run of the killed client ended {time.monotonic() - gone_at:.2f}s after the kill")
        (run,) = get_runs(runs, [run_id])
        assert events[-1].run.state == runs_pb2.RUN_STATE_CANCELLED
        assert_ended_on_error(run, runs_pb2.RUN_STATE_CANCELLED, "cancelled")
        assert "went away" in run.error_message
        assert run.step_count < SEED_STEPS


#: A model that talks long and fast: one plain answer of thousands of words, streamed word by word.
CHATTY_MODEL = """
import asyncio
import sys

from services.demo_model.app import create_app, start_model_server
from services.demo_model.openai_wire import ModelReply


async def main() -> None:
    app = create_app(lambda body: ModelReply(content="word " * 4000), chunk_delay_seconds=0.0003)
    await start_model_server(app, "127.0.0.1", int(sys.argv[1]))
    await asyncio.Event().wait()


asyncio.run(main())
"""


def serving_http(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_clients_gone_while_events_pour_out_have_their_runs_cancelled(tmp_path: Path) -> None:
    """The default CANCEL holds also when the client goes away while the engine is busy sending it deltas (not
    waiting for the next event): then the engine's StreamChat is closed rather than cancelled."""
    port = free_port()
    model = ProcessSpec("chatty-model", [sys.executable, "-c", CHATTY_MODEL, str(port)])
    with fault_stack(tmp_path, model, LLM_BASE_URL=f"http://127.0.0.1:{port}/v1") as stack, \
            clients(stack) as (engine, runs), explained(stack):
        wait_for("the chatty model", 10, lambda: serving_http(f"http://127.0.0.1:{port}/health"))
        run_ids = []
        for attempt in range(10):
            call = engine.StreamChat(engine_pb2.StreamChatRequest(message="talk to me"), timeout=20)
            leave_after = 20 + 37 * attempt  # events: the run, the user request, then the answer's deltas
            for count, event in enumerate(call, 1):
                if event.HasField("run"):
                    run_ids.append(event.run.id)
                if count == leave_after:
                    break
            call.cancel()
        final = wait_for("the runs of the clients gone to end", 5, lambda: ended(runs, run_ids))
        for run in final:
            assert_ended_on_error(run, runs_pb2.RUN_STATE_CANCELLED, "cancelled")
            assert "went away" in run.error_message


# --- 5. deadlines that run out while the run starts --------------------------------------------------------


def test_chat_deadlines_expiring_during_the_start_leave_no_live_run(tmp_path: Path) -> None:
    # Two execute at once, so some abandoned runs are still QUEUED when they are cancelled.
    with fault_stack(tmp_path, ENGINE_LEASE_SECONDS=LEASE, RUNS_REAPER_INTERVAL_SECONDS=REAPER_INTERVAL,
                     ENGINE_MAX_CONCURRENT_RUNS=2, DEMO_MODEL_LATENCY_SECONDS=0.3) as stack, \
            clients(stack) as (engine, runs), explained(stack):
        deadlines_ms = [1, 2, 3, 5, 8, 12, 20, 30, 50, 100] * 3
        for attempt, milliseconds in enumerate(deadlines_ms):
            request = engine_pb2.ChatRequest(message=SEED_QUESTION, metadata={"attempt": str(attempt)})
            with pytest.raises(grpc.RpcError) as failure:
                engine.Chat(request, timeout=milliseconds / 1000)
            assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        last_call = time.monotonic()

        created = list_runs(runs)
        print(f"{len(created)} of {len(deadlines_ms)} abandoned calls had created a run")
        assert created, "no call got as far as creating its run: make the deadlines longer"
        final = wait_for("every abandoned run to end", LEASE + REAPER_INTERVAL + REAP_MARGIN,
                         lambda: ended(runs, [run.id for run in created]))
        print(f"the abandoned runs ended within {time.monotonic() - last_call:.2f}s of the last call")
        for run in final:
            # Cancelled by the engine because their client went away, not reaped as lost.
            assert_ended_on_error(run, runs_pb2.RUN_STATE_CANCELLED, "cancelled")
        assert list_runs(runs, runs_pb2.RUN_STATE_RUNNING) == []
        assert list_runs(runs, runs_pb2.RUN_STATE_QUEUED) == []

        # The engine has its slots back: a Chat with time to spare gets the answer.
        answer = engine.Chat(engine_pb2.ChatRequest(message=SEED_QUESTION), timeout=15)
        assert "45" in answer.response
        assert "Traceback" not in stack.log("engine")


# --- the races behind two of the faults, in one process where they can be made to happen every time ---------


class _AnswerOnCue:
    """A run store client whose append answers when the test says so."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def append_steps(self, run_id: str, steps: list[Step], *, check_size: bool = True) -> list[Step]:
        self.asked.set()
        await self.answer
        return steps


async def test_a_stop_arriving_with_the_answer_of_an_append_counts_the_stored_step() -> None:
    """A Chat abandoned as its user request was stored (test 5): the run's end step must be step 2, not a second
    step 1 (refused by the store, leaving the run to the reaper as "interrupted" instead of CANCELLED)."""
    runs = _AnswerOnCue()
    recorder = StepRecorder(runs, "run")  # type: ignore[arg-type]

    async def execute() -> int:
        try:
            await recorder.record(UserRequest(SEED_QUESTION))
        except asyncio.CancelledError:
            await recorder.settle()
        return recorder.next_sequence

    task = asyncio.create_task(execute())
    await runs.asked.wait()
    runs.answer.set_result(None)  # the store's answer arrives ...
    task.cancel()  # ... in the loop iteration the stop does
    assert await task == 2


async def test_a_queued_run_stopped_as_it_gets_its_slot_ends_cancelled(tmp_path: Path) -> None:
    """A queued run given a slot and cancelled before its task resumed has not begun in the store: it ends there
    CANCELLED, not with an `error` step refused on a QUEUED run and then reaped as "interrupted"."""
    async with ScriptedLLM(delayed(text_reply("first"), 2), text_reply("second")) as llm, \
            start_platform(tmp_path, llm.base_url, ENGINE_MAX_CONCURRENT_RUNS=1) as platform:
        first = await platform.engine_stub.StartRun(engine_pb2.StartRunRequest(message="first"))
        second = await platform.engine_stub.StartRun(engine_pb2.StartRunRequest(message="second"))
        assert (first.state, second.state) == (runs_pb2.RUN_STATE_RUNNING, runs_pb2.RUN_STATE_QUEUED)
        scheduler = platform.engine.scheduler
        # What the first run's end does (free its slot, admit the next), then a cancel in the same iteration.
        scheduler._executing -= 1
        scheduler._admit_next()
        assert scheduler.cancel(second.id, "the client went away")
        outcome = await scheduler.outcome(second.id)
        assert outcome is not None and outcome.run.state == CANCELLED
        run = await platform.runs_stub.GetRun(runs_pb2.GetRunRequest(run_id=second.id))
        assert_ended_on_error(run, runs_pb2.RUN_STATE_CANCELLED, "cancelled")
        assert len(run.steps) == 1
        scheduler._executing += 1  # the first run still holds its slot
