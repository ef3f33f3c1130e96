"""RunService over real gRPC: a runs server on a free port, a real channel and the generated stub."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from services.runs.app import RunsApp
from tests.runs.conftest import StartRuns
from tests.runs.helpers import connect, thought

Stub = runs_pb2_grpc.RunServiceStub
UNKNOWN_RUN = "00000000-0000-4000-8000-000000000000"
#: How long a test waits for an event that should come at once.
PROMPTLY = 2.0


async def create_run(stub: Stub, query: str = "what is 5 + 10?") -> runs_pb2.Run:
    return await stub.CreateRun(runs_pb2.CreateRunRequest(user_query=query, model="demo"))


async def append(stub: Stub, run_id: str, *steps: runs_pb2.Step) -> list[runs_pb2.Step]:
    response = await stub.AppendSteps(runs_pb2.AppendStepsRequest(run_id=run_id, steps=steps))
    return list(response.steps)


async def finish(stub: Stub, run_id: str, state: int = runs_pb2.RUN_STATE_COMPLETED, error: str = "") -> runs_pb2.Run:
    return await stub.FinishRun(runs_pb2.FinishRunRequest(run_id=run_id, state=state, error_message=error))


async def next_event(events: AsyncIterator[runs_pb2.RunEvent]) -> runs_pb2.RunEvent:
    """The next step or run event of a watch stream, skipping heartbeats."""
    while True:
        event = await asyncio.wait_for(anext(events), PROMPTLY)
        if event.WhichOneof("event") != "heartbeat":
            return event


async def rest_of(call: grpc.aio.UnaryStreamCall) -> list[runs_pb2.RunEvent]:
    """The remaining step and run events of a watch stream (it must end)."""
    return [event async for event in call if event.WhichOneof("event") != "heartbeat"]


def calculator_call(sequence: int = 0) -> runs_pb2.Step:
    params = struct_pb2.Struct()
    params.update({"operation": "add", "x": 5, "y": 10})
    return runs_pb2.Step(
        sequence=sequence,
        tool_call=runs_pb2.ToolCall(tool_name="calculator", tool_call_id="call_1", params=params),
    )


async def test_create_append_get_round_trips_steps_in_order(stub: Stub) -> None:
    run = await create_run(stub)
    assert run.state == runs_pb2.RUN_STATE_RUNNING and run.id and run.create_time.seconds > 0
    result = runs_pb2.Step(
        tool_result=runs_pb2.ToolResult(
            tool_name="calculator", tool_call_id="call_1", result=struct_pb2.Value(number_value=15), text="5 + 10 = 15"
        )
    )
    result.duration.FromMilliseconds(3)
    stored = await append(
        stub, run.id, runs_pb2.Step(user_request=runs_pb2.UserRequest(text="what is 5 + 10?")), calculator_call()
    )
    stored += await append(stub, run.id, result, runs_pb2.Step(agent_response=runs_pb2.AgentResponse(text="15")))
    assert [s.sequence for s in stored] == [1, 2, 3, 4]

    got = await stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id))
    assert [s.WhichOneof("content") for s in got.steps] == [
        "user_request",
        "tool_call",
        "tool_result",
        "agent_response",
    ]
    assert [s.sequence for s in got.steps] == [1, 2, 3, 4] and got.step_count == 4
    assert json_format.MessageToDict(got.steps[1].tool_call.params) == {"operation": "add", "x": 5, "y": 10}
    assert got.steps[2].tool_result.result.number_value == 15 and got.steps[2].duration.ToMilliseconds() == 3
    assert all(step.run_id == run.id for step in got.steps)


async def test_reappend_is_idempotent_and_conflicts_are_already_exists(stub: Stub) -> None:
    run = await create_run(stub)
    await append(stub, run.id, calculator_call(), thought("adding"))
    [again] = await append(stub, run.id, calculator_call(sequence=1))
    assert again.sequence == 1 and again.tool_call.tool_name == "calculator"
    assert (await stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id))).step_count == 2

    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await append(stub, run.id, thought("something else", sequence=2))
    assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "step 2 of run" in exc.value.details() and "already stored with other content" in exc.value.details()


async def test_append_rejects_gaps_finished_runs_and_empty_steps(stub: Stub) -> None:
    run = await create_run(stub)
    await append(stub, run.id, thought("a"))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await append(stub, run.id, thought("b", sequence=5))
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "the next sequence is 2" in exc.value.details()

    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await append(stub, run.id, runs_pb2.Step())
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details().startswith("step 1 has no content; set one of user_request")

    await finish(stub, run.id)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await append(stub, run.id, thought("late"))
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert exc.value.details() == f"run '{run.id}' is completed; steps can only be appended to a RUNNING run"


async def test_finish_run_once_and_failed_needs_a_message(stub: Stub) -> None:
    run = await create_run(stub)
    for state, error, expected in [
        (runs_pb2.RUN_STATE_FAILED, "", "error_message is required"),
        (runs_pb2.RUN_STATE_UNSPECIFIED, "", "state is required"),
        (runs_pb2.RUN_STATE_RUNNING, "", "can only be finished as completed, failed, cancelled"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await finish(stub, run.id, state, error)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and expected in exc.value.details()

    usage = runs_pb2.Usage(prompt_tokens=12, completion_tokens=3)
    done = await stub.FinishRun(
        runs_pb2.FinishRunRequest(run_id=run.id, state=runs_pb2.RUN_STATE_COMPLETED, usage=usage)
    )
    assert done.state == runs_pb2.RUN_STATE_COMPLETED and done.HasField("complete_time")
    assert done.usage.total_tokens == 15
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await finish(stub, run.id, runs_pb2.RUN_STATE_CANCELLED, "stop")
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already completed" in exc.value.details()


async def test_list_runs_newest_first_with_filter_and_pagination(stub: Stub) -> None:
    created = [await create_run(stub, f"q{i}") for i in range(6)]
    for run in created[1::2]:
        await finish(stub, run.id, runs_pb2.RUN_STATE_FAILED, "boom")

    pages: list[list[str]] = []
    token = ""
    while True:
        response = await stub.ListRuns(runs_pb2.ListRunsRequest(page_size=2, page_token=token))
        pages.append([run.id for run in response.runs])
        token = response.next_page_token
        if not token:
            break
    assert len(pages) == 3 and all(len(page) == 2 for page in pages)
    assert [run_id for page in pages for run_id in page] == [run.id for run in reversed(created)]
    assert not response.runs[0].steps  # listings leave steps out

    failed = await stub.ListRuns(runs_pb2.ListRunsRequest(page_size=2, state=runs_pb2.RUN_STATE_FAILED))
    rest = await stub.ListRuns(
        runs_pb2.ListRunsRequest(page_size=2, state=runs_pb2.RUN_STATE_FAILED, page_token=failed.next_page_token)
    )
    assert [r.id for r in [*failed.runs, *rest.runs]] == [created[5].id, created[3].id, created[1].id]
    assert all(r.state == runs_pb2.RUN_STATE_FAILED for r in [*failed.runs, *rest.runs])
    assert rest.next_page_token == ""


async def test_list_runs_rejects_bad_tokens_and_page_sizes(stub: Stub) -> None:
    for i in range(2):
        await create_run(stub, f"q{i}")
    unfiltered_token = (await stub.ListRuns(runs_pb2.ListRunsRequest(page_size=1))).next_page_token
    for request, expected in [
        (
            runs_pb2.ListRunsRequest(page_token="not-a-token"),
            "page_token is not valid for this request; start again without a page_token",
        ),
        # A token is only valid with the filter it was made for.
        (
            runs_pb2.ListRunsRequest(page_token=unfiltered_token, state=runs_pb2.RUN_STATE_RUNNING),
            "page_token is not valid for this request; start again without a page_token",
        ),
        (runs_pb2.ListRunsRequest(page_size=-1), "page_size must be >= 0, got -1"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.ListRuns(request)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert exc.value.details() == expected


async def test_delete_then_get_is_not_found(stub: Stub) -> None:
    run = await create_run(stub)
    await append(stub, run.id, thought("a"))
    await stub.DeleteRun(runs_pb2.DeleteRunRequest(run_id=run.id))
    for call in (
        stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id)),
        stub.DeleteRun(runs_pb2.DeleteRunRequest(run_id=run.id)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND and exc.value.details() == f"run '{run.id}' not found"


@pytest.mark.parametrize(
    ("run_id", "code", "expected"),
    [
        ("", grpc.StatusCode.INVALID_ARGUMENT, "run_id is required"),
        ("../etc/passwd", grpc.StatusCode.INVALID_ARGUMENT, "run_id '../etc/passwd' is not a valid run id"),
        (UNKNOWN_RUN, grpc.StatusCode.NOT_FOUND, f"run '{UNKNOWN_RUN}' not found"),
    ],
)
async def test_run_ids_are_validated(stub: Stub, run_id: str, code: grpc.StatusCode, expected: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.GetRun(runs_pb2.GetRunRequest(run_id=run_id))
    assert exc.value.code() == code and exc.value.details() == expected
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await rest_of(stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run_id)))
    assert exc.value.code() == code and exc.value.details() == expected


async def test_watch_rejects_a_negative_cursor(stub: Stub) -> None:
    run = await create_run(stub)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await rest_of(stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id, after_sequence=-1)))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details() == "after_sequence must be >= 0, got -1"


async def test_watch_replays_a_finished_run_after_a_sequence(stub: Stub) -> None:
    run = await create_run(stub)
    await append(stub, run.id, thought("a"), thought("b"), thought("c"))
    await finish(stub, run.id)
    events = await rest_of(stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id, after_sequence=1)))
    assert [e.step.sequence for e in events[:-1]] == [2, 3]
    assert [e.step.agent_thought.text for e in events[:-1]] == ["b", "c"]
    assert events[-1].WhichOneof("event") == "run" and events[-1].run.state == runs_pb2.RUN_STATE_COMPLETED


async def test_live_watch_sees_a_new_step_at_once_then_the_final_run(start_app: StartRuns) -> None:
    # No heartbeat for 30 s: the step can only arrive in time if AppendSteps wakes the watcher.
    app = await start_app(heartbeat_seconds=30)
    async with connect(app) as stub:
        run = await create_run(stub)
        await append(stub, run.id, thought("first"))
        call = stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id))
        events = aiter(call)
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
    seen += [(await next_event(resumed_events)).step.sequence for _ in range(3)]
    await finish(stub, run.id)
    assert (await next_event(resumed_events)).run.state == runs_pb2.RUN_STATE_COMPLETED
    assert seen == [1, 2, 3, 4, 5]


async def test_quiet_watch_gets_heartbeats(stub: Stub) -> None:
    run = await create_run(stub)
    call = stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id))
    try:
        event = await asyncio.wait_for(anext(aiter(call)), PROMPTLY)
        assert event.WhichOneof("event") == "heartbeat" and event.heartbeat.time.seconds > 0
    finally:
        call.cancel()


async def test_deleting_a_watched_run_ends_the_stream_with_not_found(stub: Stub) -> None:
    run = await create_run(stub)
    call = stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id))
    await asyncio.wait_for(anext(aiter(call)), PROMPTLY)  # a heartbeat: the watch is live
    await stub.DeleteRun(runs_pb2.DeleteRunRequest(run_id=run.id))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await asyncio.wait_for(rest_of(call), PROMPTLY)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


async def test_steps_survive_a_restart(start_app: StartRuns, tmp_path: Path) -> None:
    database = tmp_path / "persistent.db"
    first = await start_app(database=database)
    async with connect(first) as stub:
        run = await create_run(stub)
        await append(stub, run.id, calculator_call(), thought("b"))
    await first.stop()

    second = await start_app(database=database)
    async with connect(second) as stub:
        got = await stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id))
    assert [s.sequence for s in got.steps] == [1, 2] and got.steps[0].tool_call.params["x"] == 5


async def test_concurrent_appends_take_consecutive_sequences(stub: Stub) -> None:
    run = await create_run(stub)
    responses = await asyncio.gather(*(append(stub, run.id, thought(str(i))) for i in range(10)))
    assert sorted(step.sequence for [step] in responses) == list(range(1, 11))
    got = await stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id))
    assert [s.sequence for s in got.steps] == list(range(1, 11)) and got.step_count == 10
    assert sorted(s.agent_thought.text for s in got.steps) == [str(i) for i in range(10)]
