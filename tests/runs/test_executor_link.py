"""The engine-facing RPCs over real gRPC: CancelRun, ConnectExecutor, RenewLeases and the lease reaper."""

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from agentplatform.runs.internal.v1 import execution_pb2
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from services.runs import execution_servicer as servicer_module
from services.runs.app import RunsApp
from tests.runs.conftest import StartRuns
from tests.runs.helpers import EXECUTOR, connect, create_request, eventually, thought

Stub = runs_pb2_grpc.RunServiceStub
Link = grpc.aio.StreamStreamCall
#: How long a test waits for something that should happen at once.
PROMPTLY = 2.0


async def open_link(stub: Stub, app: RunsApp, executor_id: str = EXECUTOR) -> Link:
    """A ConnectExecutor stream of `executor_id`, registered with the store."""
    link = stub.ConnectExecutor()
    await link.write(execution_pb2.ConnectExecutorRequest(executor_id=executor_id))
    await eventually(lambda: app.store.notices.is_connected(executor_id))
    return link


async def next_event(events: AsyncIterator[runs_pb2.RunEvent], timeout: float = PROMPTLY) -> runs_pb2.RunEvent:
    """The next event of a watch stream that is not a heartbeat, within `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            event = await anext(events)
            if event.WhichOneof("event") != "heartbeat":
                return event


def cancelled_step(reason: str) -> runs_pb2.Step:
    return runs_pb2.Step(error=runs_pb2.StepError(code="cancelled", message=f"cancelled: {reason}"))


# --- CancelRun ---------------------------------------------------------------------------------------------


async def test_cancel_reaches_the_connected_engine_and_returns_the_run_it_ends(stub: Stub, runs_app: RunsApp) -> None:
    run = await stub.CreateRun(create_request())
    link = await open_link(stub, runs_app)
    other = await open_link(stub, runs_app, "engine-2")
    cancelling = asyncio.ensure_future(stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id, reason="alice")))

    notice = await asyncio.wait_for(link.read(), PROMPTLY)
    # The reason says who asked: the tests call as the development-mode user.
    assert notice.cancel == execution_pb2.CancelNotice(run_id=run.id, reason="by local: alice")
    await asyncio.sleep(0.05)
    assert not cancelling.done()  # CancelRun waits for the engine to end the run

    # The engine stops the run and ends it; CancelRun answers with the ended run.
    await stub.AppendSteps(execution_pb2.AppendStepsRequest(run_id=run.id, steps=[cancelled_step("alice")]))
    await stub.FinishRun(
        execution_pb2.FinishRunRequest(
            run_id=run.id, state=runs_pb2.RUN_STATE_CANCELLED, error_code="cancelled", error_message="cancelled: alice"
        )
    )
    ended = await asyncio.wait_for(cancelling, PROMPTLY)
    assert (ended.state, ended.error_code, ended.cancel_requested) == (runs_pb2.RUN_STATE_CANCELLED, "cancelled", True)

    # Only the engine holding the run was told; closing the link ends its stream cleanly.
    await other.done_writing()
    assert await asyncio.wait_for(other.code(), PROMPTLY) == grpc.StatusCode.OK
    other_notices = [notice async for notice in other]
    assert other_notices == []
    await link.done_writing()
    assert await asyncio.wait_for(link.code(), PROMPTLY) == grpc.StatusCode.OK
    await eventually(lambda: not runs_app.store.notices.is_connected(EXECUTOR))


async def test_cancel_of_a_run_nobody_ends_returns_it_running_after_the_wait(start_app: StartRuns) -> None:
    app = await start_app(RUNS_CANCEL_WAIT_SECONDS=0.2)
    async with connect(app) as stub:
        run = await stub.CreateRun(create_request())
        loop = asyncio.get_running_loop()
        started = loop.time()
        requested = await stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id, reason="bob"))
        assert loop.time() - started >= 0.2
        assert (requested.state, requested.cancel_requested) == (runs_pb2.RUN_STATE_RUNNING, True)
        # The engine was not connected: its next lease renewal tells it.
        renewal = await stub.RenewLeases(execution_pb2.RenewLeasesRequest(executor_id=EXECUTOR, run_ids=[run.id]))
        assert list(renewal.cancel) == [execution_pb2.CancelNotice(run_id=run.id, reason="by local: bob")]
        assert list(renewal.lost_run_ids) == []


async def test_cancel_of_a_queued_run_ends_it_at_once(stub: Stub) -> None:
    run = await stub.CreateRun(create_request(state=runs_pb2.RUN_STATE_QUEUED))
    cancelled = await asyncio.wait_for(
        stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id, reason="carol")), PROMPTLY
    )
    assert (cancelled.state, cancelled.error_code, cancelled.error_message) == (
        runs_pb2.RUN_STATE_CANCELLED, "cancelled", "cancelled: by local: carol"
    )
    got = await stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id))
    steps = [(s.sequence, s.error.code, s.error.message) for s in got.steps]
    assert steps == [(1, "cancelled", "cancelled: by local: carol")]


async def test_cancel_of_a_finished_run_is_failed_precondition(stub: Stub) -> None:
    run = await stub.CreateRun(create_request())
    await stub.FinishRun(execution_pb2.FinishRunRequest(run_id=run.id, state=runs_pb2.RUN_STATE_COMPLETED))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id))
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already ended completed" in (exc.value.details() or "")


async def test_a_watcher_sees_the_cancel_request_then_the_end(stub: Stub) -> None:
    run = await stub.CreateRun(create_request())
    call = stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id))
    events = aiter(call)
    assert not (await next_event(events)).run.cancel_requested
    cancelling = asyncio.ensure_future(stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id, reason="dave")))
    requested = await next_event(events)
    assert requested.run.state == runs_pb2.RUN_STATE_RUNNING and requested.run.cancel_requested
    await stub.FinishRun(
        execution_pb2.FinishRunRequest(
            run_id=run.id, state=runs_pb2.RUN_STATE_CANCELLED, error_code="cancelled", error_message="cancelled: dave"
        )
    )
    final = await next_event(events)
    assert final.run.state == runs_pb2.RUN_STATE_CANCELLED
    assert (await asyncio.wait_for(cancelling, PROMPTLY)).state == runs_pb2.RUN_STATE_CANCELLED


# --- ConnectExecutor ---------------------------------------------------------------------------------------


async def test_connect_executor_must_start_with_an_executor_id(stub: Stub, runs_app: RunsApp) -> None:
    not_first = "the first message of ConnectExecutor must be the engine's executor_id"
    cases = [
        (execution_pb2.ConnectExecutorRequest(delta=runs_pb2.StepDelta(sequence=1, text="hi")), not_first),
        (None, not_first),  # the stream closed without a message
        (execution_pb2.ConnectExecutorRequest(executor_id="   "), "executor_id is required and must not be blank"),
    ]
    for first, expected in cases:
        link = stub.ConnectExecutor()
        if first is not None:
            await link.write(first)
        await link.done_writing()
        assert await asyncio.wait_for(link.code(), PROMPTLY) == grpc.StatusCode.INVALID_ARGUMENT
        assert await link.details() == expected
    assert not runs_app.store.notices.is_connected("   ")


async def test_a_delta_sent_by_the_engine_reaches_a_watcher(stub: Stub, runs_app: RunsApp) -> None:
    run = await stub.CreateRun(create_request())
    await stub.AppendSteps(execution_pb2.AppendStepsRequest(run_id=run.id, steps=[thought("1")]))
    link = await open_link(stub, runs_app)
    call = stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id))
    events = aiter(call)
    assert [(await next_event(events)).WhichOneof("event") for _ in range(2)] == ["run", "step"]

    tool = runs_pb2.ToolCallDelta(tool_call_id="call_1", tool_name="calculator", arguments='{"x": 5')
    for delta in (
        runs_pb2.StepDelta(run_id=run.id, sequence=2, text="Hel"),
        runs_pb2.StepDelta(run_id=run.id, sequence=3, tool_call=tool),
    ):
        await link.write(execution_pb2.ConnectExecutorRequest(delta=delta))
    text = await next_event(events)
    assert text.delta == runs_pb2.StepDelta(run_id=run.id, sequence=2, text="Hel")
    assert (await next_event(events)).delta == runs_pb2.StepDelta(run_id=run.id, sequence=3, tool_call=tool)

    # A watcher that comes later gets the forming steps coalesced.
    late = aiter(stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id, after_sequence=1)))
    assert (await next_event(late)).WhichOneof("event") == "run"
    assert (await next_event(late)).delta == runs_pb2.StepDelta(run_id=run.id, sequence=2, text="Hel", replace=True)
    call.cancel()
    await link.done_writing()


async def test_deltas_sent_together_reach_a_watcher_in_order(stub: Stub, runs_app: RunsApp) -> None:
    run = await stub.CreateRun(create_request())
    link = await open_link(stub, runs_app)
    events = aiter(stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id)))
    assert (await next_event(events)).WhichOneof("event") == "run"
    sent = [runs_pb2.StepDelta(run_id=run.id, sequence=1, text="Hel"),
            runs_pb2.StepDelta(run_id=run.id, sequence=2, text="lo")]
    await link.write(execution_pb2.ConnectExecutorRequest(deltas=execution_pb2.StepDeltas(deltas=sent)))
    assert [(await next_event(events)).delta for _ in sent] == sent
    await link.done_writing()


async def test_appends_and_finishes_over_the_link_answer_as_the_unary_calls_do(stub: Stub, runs_app: RunsApp) -> None:
    run = await stub.CreateRun(create_request())
    link = await open_link(stub, runs_app)
    finish = execution_pb2.FinishRunRequest(run_id=run.id, state=runs_pb2.RUN_STATE_COMPLETED)
    calls = [
        execution_pb2.ExecutorCall(call_id=1, append_steps=execution_pb2.AppendStepsRequest(
            run_id=run.id, steps=[thought("a", 1), thought("b", 2)])),
        execution_pb2.ExecutorCall(call_id=2, append_steps=execution_pb2.AppendStepsRequest(
            run_id=run.id, steps=[thought("other", 1)])),  # step 1 again, with other content
        execution_pb2.ExecutorCall(call_id=3, finish_run=execution_pb2.FinishRunRequest(run_id=run.id)),  # no state
        execution_pb2.ExecutorCall(call_id=4),  # no request
    ]
    for call in calls:
        await link.write(execution_pb2.ConnectExecutorRequest(call=call))
    results = {}
    for _ in calls:
        result = (await asyncio.wait_for(link.read(), PROMPTLY)).call_result
        results[result.call_id] = result
    assert [step.sequence for step in results[1].append_steps.steps] == [1, 2]
    assert results[2].error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert "already stored with other content" in results[2].error.message
    assert results[3].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "state is required" in results[3].error.message
    assert results[4].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]

    call = execution_pb2.ExecutorCall(call_id=5, finish_run=finish)
    await link.write(execution_pb2.ConnectExecutorRequest(call=call))
    finished = (await asyncio.wait_for(link.read(), PROMPTLY)).call_result
    assert finished.call_id == 5 and finished.finish_run.state == runs_pb2.RUN_STATE_COMPLETED
    stored = await stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id))
    assert [step.agent_thought.text for step in stored.steps] == ["a", "b"]

    # Creates and begins too; a create retried with its request id is answered with the same run.
    create = create_request(request_id="7d8f3a52-2c3e-4f6b-9a51-0d6c2f1e8b47", state=runs_pb2.RUN_STATE_QUEUED)
    for call_id in (6, 7):
        call = execution_pb2.ExecutorCall(call_id=call_id, create_run=create)
        await link.write(execution_pb2.ConnectExecutorRequest(call=call))
    created = [(await asyncio.wait_for(link.read(), PROMPTLY)).call_result for _ in range(2)]
    assert created[0].create_run.id == created[1].create_run.id != ""
    begin = execution_pb2.BeginRunRequest(run_id=created[0].create_run.id, executor_id=EXECUTOR)
    await link.write(execution_pb2.ConnectExecutorRequest(call=execution_pb2.ExecutorCall(call_id=8, begin_run=begin)))
    begun = (await asyncio.wait_for(link.read(), PROMPTLY)).call_result
    assert begun.call_id == 8 and begun.begin_run.state == runs_pb2.RUN_STATE_RUNNING
    await link.done_writing()


# --- leases and the reaper ---------------------------------------------------------------------------------


async def test_renew_leases_reports_lost_runs(stub: Stub) -> None:
    held = await stub.CreateRun(create_request())
    ended = await stub.CreateRun(create_request())
    await stub.FinishRun(execution_pb2.FinishRunRequest(run_id=ended.id, state=runs_pb2.RUN_STATE_COMPLETED))
    theirs = await stub.CreateRun(create_request(executor_id="engine-2"))
    renewal = await stub.RenewLeases(
        execution_pb2.RenewLeasesRequest(executor_id=EXECUTOR, run_ids=[held.id, ended.id, theirs.id])
    )
    assert list(renewal.lost_run_ids) == [ended.id, theirs.id] and not renewal.cancel
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.RenewLeases(execution_pb2.RenewLeasesRequest(executor_id=EXECUTOR, run_ids=["not-a-run"]))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_reaper_orphans_a_run_whose_engine_stopped_renewing(start_app: StartRuns) -> None:
    app = await start_app(RUNS_REAPER_INTERVAL_SECONDS=0.05)
    async with connect(app) as stub:
        abandoned = await stub.CreateRun(create_request(lease_seconds=1))
        await stub.AppendSteps(execution_pb2.AppendStepsRequest(run_id=abandoned.id, steps=[thought("working")]))
        kept = await stub.CreateRun(create_request(lease_seconds=1))
        watch = aiter(stub.WatchRun(runs_pb2.WatchRunRequest(run_id=abandoned.id, after_sequence=1)))
        assert (await next_event(watch)).run.state == runs_pb2.RUN_STATE_RUNNING

        async def renew_kept() -> None:
            while True:
                await stub.RenewLeases(execution_pb2.RenewLeasesRequest(executor_id=EXECUTOR, run_ids=[kept.id]))
                await asyncio.sleep(0.3)

        renewing = asyncio.create_task(renew_kept())
        try:
            # Nobody calls anything on the abandoned run: the reaper orphans it once its 1 s lease has run out,
            # for another engine to resume (none is connected here), recording no step.
            orphaned = await next_event(watch, timeout=3)
            assert (orphaned.run.state, orphaned.run.executor_id, orphaned.run.attempts) == (
                runs_pb2.RUN_STATE_RUNNING, "", 1
            )
            late = execution_pb2.AppendStepsRequest(run_id=abandoned.id, steps=[thought("late", 2)], lease_epoch=1)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.AppendSteps(late)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "lease lost" in (refused.value.details() or "")
            still = await stub.GetRun(runs_pb2.GetRunRequest(run_id=kept.id))
            assert still.state == runs_pb2.RUN_STATE_RUNNING  # renewed in time
        finally:
            renewing.cancel()


async def test_a_link_answers_at_most_so_many_calls_at_once_and_the_rest_in_turn(
    stub: Stub, runs_app: RunsApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servicer_module, "MAX_CALLS_IN_FLIGHT", 2)
    in_flight = peak = 0
    store = runs_app.store
    get_run = store.get_run
    append = store.append_steps

    async def slow_append(run_id: str, steps: list, *, epoch: int = 0) -> list:  # type: ignore[type-arg]
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        try:
            return await append(run_id, steps, epoch=epoch)
        finally:
            in_flight -= 1

    monkeypatch.setattr(store, "append_steps", slow_append)
    runs = [await stub.CreateRun(create_request()) for _ in range(6)]
    link = await open_link(stub, runs_app)
    for call_id, run in enumerate(runs, 1):
        request = execution_pb2.AppendStepsRequest(run_id=run.id, steps=[thought("x", 1)])
        call = execution_pb2.ExecutorCall(call_id=call_id, append_steps=request)
        await link.write(execution_pb2.ConnectExecutorRequest(call=call))
    answered = {(await asyncio.wait_for(link.read(), PROMPTLY)).call_result.call_id for _ in runs}
    assert answered == set(range(1, 7)) and peak == 2
    assert [(await get_run(run.id)).step_count for run in runs] == [1] * 6
    await link.done_writing()
