"""Runs belong to users: over real gRPC with API keys configured, each user sees and touches only their own runs,
an admin any run by id and everyone's in a list only when asking, and the internal API is for the platform's
own services. The store's own filters are checked on SQLite and PostgreSQL alike."""

from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from agentplatform.runs.internal.v1 import execution_pb2
from agentplatform.runs.v1 import runs_pb2
from services.common.errors import NotFound
from services.common.identity import SERVICE_TOKEN_KEY
from services.runs.app import RunsApp
from services.runs.search import RunFilter
from services.runs.store import RunStore
from tests.runs.helpers import create_request, new_run
from tests.runs.service_helpers import ADMIN, ALICE, BOB, SERVICE, as_, create_for, status_of


async def test_another_users_run_is_not_found_everywhere_and_absent_from_lists(keyed_stub: Any) -> None:
    alices = await create_for(keyed_stub, "alice")
    bobs = await create_for(keyed_stub, "bob")

    got = await keyed_stub.GetRun(runs_pb2.GetRunRequest(run_id=alices.id), metadata=as_(ALICE))
    assert got.owner == "alice"
    for call in (
        keyed_stub.GetRun(runs_pb2.GetRunRequest(run_id=alices.id), metadata=as_(BOB)),
        keyed_stub.CancelRun(runs_pb2.CancelRunRequest(run_id=alices.id), metadata=as_(BOB)),
        keyed_stub.DeleteRun(runs_pb2.DeleteRunRequest(run_id=alices.id), metadata=as_(BOB)),
    ):
        assert await status_of(call) == grpc.StatusCode.NOT_FOUND
    watch = keyed_stub.WatchRun(runs_pb2.WatchRunRequest(run_id=alices.id), metadata=as_(BOB))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await anext(aiter(watch))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    assert exc.value.details() == f"run '{alices.id}' not found"  # the same words as for no run at all

    listed = await keyed_stub.ListRuns(runs_pb2.ListRunsRequest(), metadata=as_(BOB))
    assert [run.id for run in listed.runs] == [bobs.id]
    # Bob's attempts changed nothing of Alice's run.
    still = await keyed_stub.GetRun(runs_pb2.GetRunRequest(run_id=alices.id), metadata=as_(ALICE))
    assert still.state == runs_pb2.RUN_STATE_RUNNING and not still.cancel_requested


async def test_an_admin_sees_everyones_runs_only_when_asking(keyed_stub: Any) -> None:
    alices = await create_for(keyed_stub, "alice")
    bobs = await create_for(keyed_stub, "bob")

    own = await keyed_stub.ListRuns(runs_pb2.ListRunsRequest(), metadata=as_(ADMIN))
    assert list(own.runs) == []
    everyone = await keyed_stub.ListRuns(runs_pb2.ListRunsRequest(all_users=True), metadata=as_(ADMIN))
    assert {(run.id, run.owner) for run in everyone.runs} == {(alices.id, "alice"), (bobs.id, "bob")}
    got = await keyed_stub.GetRun(runs_pb2.GetRunRequest(run_id=alices.id), metadata=as_(ADMIN))
    assert got.owner == "alice"

    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await keyed_stub.ListRuns(runs_pb2.ListRunsRequest(all_users=True), metadata=as_(BOB))
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "only an admin" in (exc.value.details() or "")


async def test_every_all_users_read_is_for_admins_only(keyed_stub: Any) -> None:
    """Each listing or summary with all_users: PERMISSION_DENIED naming it for a user, answered for an admin."""
    day = {"start_time": Timestamp(seconds=0), "end_time": Timestamp(seconds=86_400)}
    reads = [
        (keyed_stub.ListRuns, runs_pb2.ListRunsRequest(all_users=True)),
        (keyed_stub.ListThreads, runs_pb2.ListThreadsRequest(all_users=True)),
        (keyed_stub.SummarizeScores, runs_pb2.SummarizeScoresRequest(all_users=True)),
        (keyed_stub.SummarizeUsage, runs_pb2.SummarizeUsageRequest(
            all_users=True, group_by=runs_pb2.USAGE_GROUPING_USER, interval=runs_pb2.USAGE_INTERVAL_DAY, **day
        )),
    ]
    for method, request in reads:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await method(request, metadata=as_(BOB))
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED, method
        assert (exc.value.details() or "").startswith("all_users "), exc.value.details()
        await method(request, metadata=as_(ADMIN))


async def test_only_an_admin_searches_another_users_runs(keyed_stub: Any) -> None:
    alices = await create_for(keyed_stub, "alice")
    await create_for(keyed_stub, "bob")
    by_user = runs_pb2.ListRunsRequest(user="alice", text="5 10")
    assert [run.id for run in (await keyed_stub.ListRuns(by_user, metadata=as_(ADMIN))).runs] == [alices.id]
    assert [run.id for run in (await keyed_stub.ListRuns(by_user, metadata=as_(ALICE))).runs] == [alices.id]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await keyed_stub.ListRuns(by_user, metadata=as_(BOB))
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert exc.value.details() == "user names another user's runs: only an admin may search them"
    # Bob's own search of the same words finds only his run.
    mine = await keyed_stub.ListRuns(runs_pb2.ListRunsRequest(text="5 10"), metadata=as_(BOB))
    assert [run.owner for run in mine.runs] == ["bob"]


async def test_cancel_says_who_asked(keyed_stub: Any) -> None:
    run = await create_for(keyed_stub, "alice")
    await keyed_stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id, reason="too slow"), metadata=as_(ADMIN))
    renewal = await keyed_stub.RenewLeases(
        execution_pb2.RenewLeasesRequest(executor_id=run.executor_id, run_ids=[run.id]), metadata=SERVICE
    )
    assert [notice.reason for notice in renewal.cancel] == ["by root: too slow"]


async def test_without_a_valid_key_every_call_is_unauthenticated_and_nothing_is_written(keyed_stub: Any) -> None:
    for metadata in ((), as_("apk_wrong"), ((SERVICE_TOKEN_KEY, "guessed"),)):
        assert await status_of(keyed_stub.ListRuns(runs_pb2.ListRunsRequest(), metadata=metadata)) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        assert await status_of(keyed_stub.CreateRun(create_request(owner="alice"), metadata=metadata)) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
    everyone = await keyed_stub.ListRuns(runs_pb2.ListRunsRequest(all_users=True), metadata=as_(ADMIN))
    assert list(everyone.runs) == []


async def test_the_internal_api_is_for_the_platforms_services_only(keyed_stub: Any) -> None:
    """A user, even an admin, cannot write a run's record: only the engine (holding the service token) can."""
    run = await create_for(keyed_stub, "alice")
    forged = execution_pb2.AppendStepsRequest(
        run_id=run.id, steps=[runs_pb2.Step(agent_response=runs_pb2.AgentResponse(text="forged"))]
    )
    for key in (ALICE, ADMIN):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await keyed_stub.AppendSteps(forged, metadata=as_(key))
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "agentplatform.runs.internal.v1.ExecutionService is an internal API" in (exc.value.details() or "")
        assert await status_of(keyed_stub.CreateRun(create_request(owner="alice"), metadata=as_(key))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    got = await keyed_stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id), metadata=as_(ALICE))
    assert got.step_count == 0


async def test_a_run_needs_an_owner(keyed_stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await keyed_stub.CreateRun(create_request(owner=""), metadata=SERVICE)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "owner" in (exc.value.details() or "")


async def test_a_body_that_is_not_the_message_is_invalid_argument(secured: RunsApp) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        get_run = channel.unary_unary("/agentplatform.runs.v1.RunService/GetRun")
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await get_run(b"\xff\xff\xff garbage", metadata=as_(ALICE))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details() == (
        "the request body is not a valid agentplatform.runs.v1.GetRunRequest message (protobuf)"
    )


async def test_the_store_filters_by_owner(store: RunStore) -> None:
    """The same answers on SQLite and PostgreSQL (the `store` fixture runs on both)."""
    alices = await store.create_run(new_run("a", owner="alice"))
    bobs = await store.create_run(new_run("b", owner="bob"))
    assert (await store.get_run(alices.id, owner="alice")).owner == "alice"
    with pytest.raises(NotFound, match=f"run '{alices.id}' not found"):
        await store.get_run(alices.id, owner="bob")
    with pytest.raises(NotFound):
        await store.cancel_run(alices.id, owner="bob")
    with pytest.raises(NotFound):
        await store.delete_run(alices.id, owner="bob")
    runs, _ = await store.list_runs(owner="bob")
    assert [run.id for run in runs] == [bobs.id]
    runs, _ = await store.list_runs(search=RunFilter(states=("running",)), owner="alice")
    assert [run.id for run in runs] == [alices.id]
    runs, _ = await store.list_runs()
    assert {run.id for run in runs} == {alices.id, bobs.id}
    await store.delete_run(alices.id, owner="alice")
    with pytest.raises(NotFound):
        await store.get_run(alices.id)
