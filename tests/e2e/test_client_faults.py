"""Faults on the client's side, against the real stack: a StreamChat client killed mid-run (the run goes on with
on_disconnect CONTINUE, or ends CANCELLED, the default, also while the engine is busy sending it deltas), Chat
deadlines that run out while the run is being started (no run left behind), and, in one process, the engine races
the deadline test hits only now and then."""

import asyncio
import select
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest

from agentplatform.engine.v1 import engine_pb2
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from services.common.run_vocabulary import CANCELLED
from services.engine.journal import Appended, Step, UserRequest
from services.engine.loop.steps import StepRecorder
from services.launcher.stack import ProcessSpec
from tests.conftest import free_port
from tests.e2e.conftest import RunningStack
from tests.e2e.faults import (
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
    list_runs,
    wait_for,
)
from tests.support.platform import start_platform
from tests.support.scripted_llm import ScriptedLLM, delayed, text_reply
from tests.support.seed import SEED_QUESTION

# Above the stack start-up bound (STARTUP_TIMEOUT, 60 s), so a stack that does not start fails with its logs.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


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

    async def append_steps(
        self, run_id: str, steps: list[Step], *, epoch: int = 0, check_size: bool = True
    ) -> Appended:
        self.asked.set()
        await self.answer
        return Appended(steps)


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
