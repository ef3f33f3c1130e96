"""WatchRun over real gRPC: cursors, replays of finished runs, live and resumed watches, heartbeats, and a watched
run deleted."""

import asyncio

import grpc
import pytest

from agentplatform.runs.v1 import runs_pb2
from services.runs.app import RunsApp
from tests.runs.conftest import StartRuns
from tests.runs.helpers import connect, thought
from tests.runs.service_helpers import PROMPTLY, Stub, append, create_run, finish, next_event, rest_of


async def test_watch_rejects_a_cursor_out_of_the_sequence_range(stub: Stub) -> None:
    run = await create_run(stub)
    for after in (-1, 2**31, 2**62):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await rest_of(stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id, after_sequence=after)))
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert exc.value.details() == f"after_sequence must be 0 to 2147483647 (0 replays every step), got {after}"


async def test_watch_replays_a_finished_run_after_a_sequence(stub: Stub) -> None:
    run = await create_run(stub)
    await append(stub, run.id, thought("a"), thought("b"), thought("c"))
    await finish(stub, run.id)
    events = await rest_of(stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id, after_sequence=1)))
    assert [e.WhichOneof("event") for e in events] == ["run", "step", "step", "run"]
    assert events[0].run.id == run.id and not events[0].run.steps
    assert [e.step.sequence for e in events[1:-1]] == [2, 3]
    assert [e.step.agent_thought.text for e in events[1:-1]] == ["b", "c"]
    assert events[-1].run.state == runs_pb2.RUN_STATE_COMPLETED


async def test_watch_past_the_end_of_a_finished_run_is_out_of_range(stub: Stub) -> None:
    run = await create_run(stub)
    await append(stub, run.id, thought("a"))
    await finish(stub, run.id)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await rest_of(stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id, after_sequence=2)))
    assert exc.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "resume from 1 or lower" in exc.value.details()


async def test_live_watch_sees_a_new_step_at_once_then_the_final_run(start_app: StartRuns) -> None:
    # No heartbeat for 30 s: the step can only arrive in time if AppendSteps wakes the watcher.
    app = await start_app(heartbeat_seconds=30)
    async with connect(app) as stub:
        run = await create_run(stub)
        await append(stub, run.id, thought("first"))
        call = stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id))
        events = aiter(call)
        assert (await next_event(events)).run.state == runs_pb2.RUN_STATE_RUNNING
        assert (await next_event(events)).step.sequence == 1
        await append(stub, run.id, thought("live"))
        live = await next_event(events)  # before FinishRun is called
        assert (live.step.sequence, live.step.agent_thought.text) == (2, "live")
        await finish(stub, run.id)
        final = await next_event(events)
        assert final.run.id == run.id and final.run.state == runs_pb2.RUN_STATE_COMPLETED
        assert final.run.step_count == 2 and not final.run.steps
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(events), PROMPTLY)


async def test_resumed_watch_loses_and_repeats_nothing(stub: Stub, runs_app: RunsApp) -> None:
    run = await create_run(stub)
    await append(stub, run.id, *(thought(str(i)) for i in range(1, 5)))
    call = stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id))
    events = aiter(call)
    assert (await next_event(events)).WhichOneof("event") == "run"
    seen = [(await next_event(events)).step.sequence for _ in range(2)]
    call.cancel()
    # The server drops the disconnected watcher's subscription (no leak per watcher).
    for _ in range(100):
        if runs_app.store.signals.watcher_count(run.id) == 0:
            break
        await asyncio.sleep(0.02)
    assert runs_app.store.signals.watcher_count(run.id) == 0

    await append(stub, run.id, thought("5"))
    resumed = stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id, after_sequence=seen[-1]))
    resumed_events = aiter(resumed)
    assert (await next_event(resumed_events)).WhichOneof("event") == "run"
    seen += [(await next_event(resumed_events)).step.sequence for _ in range(3)]
    await finish(stub, run.id)
    assert (await next_event(resumed_events)).run.state == runs_pb2.RUN_STATE_COMPLETED
    assert seen == [1, 2, 3, 4, 5]


async def test_quiet_watch_gets_heartbeats_with_the_cursor(stub: Stub) -> None:
    run = await create_run(stub)
    await append(stub, run.id, thought("a"), thought("b"))
    call = stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id))
    try:
        events = aiter(call)
        kinds = [(await asyncio.wait_for(anext(events), PROMPTLY)).WhichOneof("event") for _ in range(3)]
        assert kinds == ["run", "step", "step"]
        event = await asyncio.wait_for(anext(events), PROMPTLY)
        assert event.WhichOneof("event") == "heartbeat" and event.heartbeat.time.seconds > 0
        assert event.heartbeat.last_sequence == 2
    finally:
        call.cancel()


async def test_deleting_a_watched_run_ends_the_stream_with_not_found(stub: Stub) -> None:
    run = await create_run(stub)
    call = stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id))
    events = aiter(call)
    assert (await asyncio.wait_for(anext(events), PROMPTLY)).WhichOneof("event") == "run"
    assert (await asyncio.wait_for(anext(events), PROMPTLY)).WhichOneof("event") == "heartbeat"  # the watch is live
    await stub.DeleteRun(runs_pb2.DeleteRunRequest(run_id=run.id))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await asyncio.wait_for(rest_of(call), PROMPTLY)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
