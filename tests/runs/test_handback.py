"""Runs handed back by an engine at its shutdown (HandBackRuns), on a real store (SQLite and PostgreSQL) and over
real gRPC: offered to the other engines at once, not counted as attempts, fenced by the lease epoch."""

import grpc
import pytest

from agentplatform.runs.internal.v1 import execution_pb2
from services.common.db.database import Database
from services.common.errors import FailedPrecondition, InvalidArgument
from services.runs.checks import StoreLimits
from services.runs.records import HandBack, NewStep
from services.runs.store import RunStore
from tests.runs.helpers import EXECUTOR, UNKNOWN_RUN, expire_lease, new_run
from tests.runs.service_helpers import Stub, create_run


def thought(text: str) -> NewStep:
    return NewStep("agent-thought", {"text": text})


async def test_a_handed_back_run_is_offered_to_another_engine_at_once_without_burning_an_attempt(
    store: RunStore,
) -> None:
    running = await store.create_run(new_run())
    await store.append_steps(running.id, [thought("working")], epoch=1)
    queued = await store.create_run(new_run(state="queued"))
    with (
        store.notices.connect(EXECUTOR) as stopping,
        store.notices.connect("engine-b") as offers,
        store.signals.subscribe(running.id) as subscription,
    ):
        handed = await store.hand_back(EXECUTOR, {running.id: 1, queued.id: 1})
        assert await subscription.wait(0.01) is True  # watchers see it lose its engine
        offered = {offers.get_nowait().run_id for _ in range(offers.qsize())}
        assert stopping.empty()  # never offered back to the engine that is stopping
    assert sorted(handed.handed_back_run_ids) == sorted([running.id, queued.id])
    assert (handed.ended_run_ids, handed.refused_run_ids) == ([], [])
    assert offered == {running.id, queued.id}

    # Live, held by nobody, its steps as they were; a hand-back, not an attempt.
    orphan = await store.get_run(running.id)
    assert (orphan.state, orphan.executor_id, orphan.attempts, orphan.handbacks, orphan.handed_back_by) == (
        "running", "", 0, 1, EXECUTOR
    )
    assert [(s.sequence, s.type) for s in orphan.steps] == [(1, "agent-thought")]
    requeued = await store.get_run(queued.id)
    assert (requeued.state, requeued.executor_id, requeued.handbacks) == ("queued", "", 1)
    # The stopping engine cannot write any more, and the store does not wait for a lease to run out.
    with pytest.raises(FailedPrecondition, match="lease lost"):
        await store.append_steps(running.id, [thought("late")], epoch=1)
    assert await store.reap_expired() == []

    taken = await store.resume_run(running.id, "engine-b", 30.0)
    assert (taken.state, taken.executor_id, taken.lease_epoch, taken.handbacks) == ("running", "engine-b", 2, 1)
    assert [s.sequence for s in await store.append_steps(running.id, [thought("on b")], epoch=2)] == [2]
    assert (await store.resume_run(queued.id, "engine-b", 30.0)).state == "queued"


async def test_hand_backs_never_use_up_the_attempts_that_stop_a_crashing_run(
    store: RunStore, database: Database
) -> None:
    run = await store.create_run(new_run())
    holder = EXECUTOR
    for epoch in range(1, 6):  # five deploys in a row: more than RUNS_MAX_ATTEMPTS (3)
        assert (await store.hand_back(holder, {run.id: epoch})).handed_back_run_ids == [run.id]
        holder = f"engine-{epoch + 1}"
        await store.resume_run(run.id, holder, 30.0)
    again = await store.get_run(run.id)
    assert (again.state, again.attempts, again.handbacks, again.handed_back_by) == ("running", 0, 5, "engine-5")
    # A crash still counts.
    await expire_lease(database, run.id)
    assert await store.reap_expired() == [run.id]
    assert ((await store.get_run(run.id)).attempts, (await store.get_run(run.id)).state) == (1, "running")


async def test_a_stale_epoch_hand_back_is_refused_and_changes_nothing(store: RunStore) -> None:
    run = await store.create_run(new_run())
    await store.hand_back(EXECUTOR, {run.id: 1})
    await store.resume_run(run.id, "engine-b", 30.0)  # epoch 2, engine-b's
    # The first engine, paused, comes back and hands back the run it held at epoch 1; so does a wrong engine.
    assert await store.hand_back(EXECUTOR, {run.id: 1}) == HandBack([], [], [run.id])
    assert await store.hand_back("engine-c", {run.id: 2}) == HandBack([], [], [run.id])
    assert await store.hand_back("engine-b", {UNKNOWN_RUN: 2}) == HandBack([], [], [UNKNOWN_RUN])
    kept = await store.get_run(run.id)
    assert (kept.executor_id, kept.lease_epoch, kept.handbacks, kept.handed_back_by) == ("engine-b", 2, 1, EXECUTOR)
    # An ended run is not handed back either.
    await store.finish_run(run.id, "completed", epoch=2)
    assert await store.hand_back("engine-b", {run.id: 2}) == HandBack([], [], [run.id])
    assert (await store.get_run(run.id)).state == "completed"


async def test_a_handed_back_run_with_a_cancel_pending_ends_cancelled(store: RunStore) -> None:
    run = await store.create_run(new_run())
    await store.cancel_run(run.id, "frank")
    assert await store.hand_back(EXECUTOR, {run.id: 1}) == HandBack([], [run.id], [])
    ended = await store.get_run(run.id)
    assert (ended.state, ended.error_message, ended.handbacks) == ("cancelled", "cancelled: frank", 0)
    assert ended.steps[-1].content == {"code": "cancelled", "message": "cancelled: frank"}


async def test_a_handed_back_workflow_run_fares_as_its_reaped_twin(store: RunStore, database: Database) -> None:
    # Whether a run can be resumed is one rule (leases.py `_take_from_engine`) for the reaper and the hand-back.
    workflow = {"workflow_id": "11111111-2222-4333-8444-555555555555", "workflow_revision": 1}
    handed = await store.create_run(new_run(**workflow))
    reaped = await store.create_run(new_run(**workflow))
    await store.hand_back(EXECUTOR, {handed.id: 1})
    await expire_lease(database, reaped.id)
    await store.reap_expired()
    after, twin = await store.get_run(handed.id), await store.get_run(reaped.id)
    assert (after.state, after.error_code, after.executor_id) == (twin.state, twin.error_code, twin.executor_id)
    assert after.state in ("failed", "running")
    if after.state == "failed":
        assert f"its engine ({EXECUTOR}) shut down, and it cannot be resumed" in after.error_message


async def test_with_resumes_off_a_handed_back_run_ends_failed_interrupted(store: RunStore) -> None:
    store.limits = StoreLimits(max_attempts=0)
    run = await store.create_run(new_run(state="queued"))
    assert await store.hand_back(EXECUTOR, {run.id: 1}) == HandBack([], [run.id], [])
    failed = await store.get_run(run.id)
    assert (failed.state, failed.error_code, failed.handbacks) == ("failed", "interrupted", 0)
    assert failed.error_message == (
        f"the run was interrupted: its engine ({EXECUTOR}) shut down before the run began, and it cannot be resumed "
        "(RUNS_MAX_ATTEMPTS=0: resumes are off)"
    )


async def test_hand_backs_are_validated(store: RunStore) -> None:
    run = await store.create_run(new_run())
    with pytest.raises(InvalidArgument, match="without the epoch"):
        await store.hand_back(EXECUTOR, {run.id: 0})
    with pytest.raises(InvalidArgument, match="executor_id"):
        await store.hand_back("", {run.id: 1})
    with pytest.raises(InvalidArgument):
        await store.hand_back(EXECUTOR, {"not-a-run-id": 1})
    assert await store.hand_back(EXECUTOR, {}) == HandBack([], [], [])
    assert (await store.get_run(run.id)).executor_id == EXECUTOR


async def test_hand_back_runs_over_grpc(stub: Stub) -> None:
    mine = await create_run(stub)
    other = await create_run(stub, executor_id="engine-other")
    lease = execution_pb2.HeldLease
    answer = await stub.HandBackRuns(execution_pb2.HandBackRunsRequest(
        executor_id=EXECUTOR, leases=[lease(run_id=mine.id, lease_epoch=1), lease(run_id=other.id, lease_epoch=1)]
    ))
    assert (list(answer.handed_back_run_ids), list(answer.ended_run_ids), list(answer.refused_run_ids)) == (
        [mine.id], [], [other.id]
    )
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.HandBackRuns(execution_pb2.HandBackRunsRequest(
            executor_id=EXECUTOR, leases=[lease(run_id=mine.id, lease_epoch=1), lease(run_id=mine.id, lease_epoch=1)]
        ))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
