"""Cancelling runs, engines' leases and the reaper's pass, on a real store (SQLite and PostgreSQL)."""

import asyncio
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from services.common.db.database import Database, utcnow
from services.common.errors import FailedPrecondition, InvalidArgument
from services.runs.models import RunRow
from services.runs.records import CancelNotice, LeaseRenewal, NewStep
from services.runs.store import RunStore
from tests.runs.helpers import EXECUTOR, expire_lease, new_run, set_columns

UNKNOWN_RUN = "00000000-0000-4000-8000-000000000000"


def thought(text: str) -> NewStep:
    return NewStep("agent-thought", {"text": text})


async def lease_expiry(database: Database, run_id: str) -> datetime | None:
    async with database.read() as session:
        return await session.scalar(select(RunRow.lease_expires_at).where(RunRow.id == run_id))


# --- cancel ------------------------------------------------------------------------------------------------


async def test_cancelling_a_queued_run_ends_it_at_once_with_an_error_step(store: RunStore) -> None:
    run = await store.create_run(new_run(state="queued"))
    with store.signals.subscribe(run.id) as subscription:
        cancelled = await store.cancel_run(run.id, "alice pressed stop")
        assert await subscription.wait(0.01) is True  # watchers learn of the end
    assert (cancelled.state, cancelled.error_code, cancelled.error_message) == (
        "cancelled", "cancelled", "cancelled: alice pressed stop"
    )
    assert cancelled.cancel_requested and cancelled.completed_at is not None and cancelled.executor_id == ""
    stored = await store.get_run(run.id)
    assert [(s.sequence, s.type, s.content) for s in stored.steps] == [
        (1, "error", {"code": "cancelled", "message": "cancelled: alice pressed stop"})
    ]
    assert (await store.renew_leases(EXECUTOR, [run.id])).lost_run_ids == [run.id]
    with pytest.raises(FailedPrecondition, match="already ended cancelled; only a QUEUED, RUNNING or WAITING run"):
        await store.cancel_run(run.id)


async def test_a_cancel_without_a_reason_says_so(store: RunStore) -> None:
    run = await store.create_run(new_run(state="queued"))
    assert (await store.cancel_run(run.id)).error_message == "cancelled on request"


async def test_cancelling_a_running_run_asks_the_engine_that_executes_it(store: RunStore) -> None:
    run = await store.create_run(new_run())
    with (
        store.notices.connect(EXECUTOR) as mine,
        store.notices.connect("engine-2") as theirs,
        store.signals.subscribe(run.id) as subscription,
    ):
        requested = await store.cancel_run(run.id, "bob: wrong question")
        assert (requested.state, requested.cancel_requested, requested.completed_at) == ("running", True, None)
        assert mine.get_nowait() == CancelNotice(run.id, "bob: wrong question")
        assert theirs.empty()
        assert await subscription.wait(0.01) is True  # watchers see cancel_requested
    assert (await store.get_run(run.id)).cancel_requested
    # The fallback for a notice the engine missed: every renewal repeats it, with the first reason.
    await store.cancel_run(run.id, "carol")
    renewal = await store.renew_leases(EXECUTOR, [run.id])
    assert renewal == LeaseRenewal([], [CancelNotice(run.id, "bob: wrong question")])
    # The engine stops the run and ends it; then it is finished for good.
    await store.append_steps(run.id, [NewStep("error", {"code": "cancelled", "message": "cancelled: bob"})])
    ended = await store.finish_run(run.id, "cancelled", "cancelled", "cancelled: bob")
    assert ended.state == "cancelled" and ended.cancel_requested
    with pytest.raises(FailedPrecondition, match="already ended cancelled"):
        await store.cancel_run(run.id, "too late")


async def test_cancelling_a_finished_run_is_a_failed_precondition(store: RunStore) -> None:
    run = await store.create_run(new_run())
    await store.finish_run(run.id, "completed")
    with store.notices.connect(EXECUTOR) as notices:
        with pytest.raises(FailedPrecondition, match="already ended completed; only a QUEUED, RUNNING or WAITING run"):
            await store.cancel_run(run.id, "too late")
        assert notices.empty()
    stored = await store.get_run(run.id)
    assert (stored.state, stored.cancel_requested) == ("completed", False)


# --- leases ------------------------------------------------------------------------------------------------


async def test_renewing_extends_the_lease_by_its_own_duration(store: RunStore, database: Database) -> None:
    run = await store.create_run(new_run(lease_seconds=10))
    short = await store.create_run(new_run(lease_seconds=2))
    await expire_lease(database, run.id)
    await expire_lease(database, short.id)
    before = utcnow()
    assert await store.renew_leases(EXECUTOR, [run.id, short.id, run.id]) == LeaseRenewal([], [])
    after = utcnow()
    expiry, short_expiry = await lease_expiry(database, run.id), await lease_expiry(database, short.id)
    assert expiry is not None and before + timedelta(seconds=10) <= expiry <= after + timedelta(seconds=10)
    assert short_expiry is not None and before + timedelta(seconds=2) <= short_expiry <= after + timedelta(seconds=2)
    assert await store.reap_expired() == []  # renewed in time
    assert (await store.get_run(run.id)).state == "running"


async def test_a_renewal_reports_the_runs_the_engine_no_longer_holds(store: RunStore, database: Database) -> None:
    held = await store.create_run(new_run())
    finished = await store.create_run(new_run())
    await store.finish_run(finished.id, "completed")
    deleted = await store.create_run(new_run())
    await store.delete_run(deleted.id)
    theirs = await store.create_run(new_run(executor_id="engine-2"))
    await expire_lease(database, theirs.id)
    renewal = await store.renew_leases(EXECUTOR, [held.id, finished.id, deleted.id, theirs.id, UNKNOWN_RUN])
    # Another engine's run is fenced too: its lease was taken, not merely ended.
    assert renewal == LeaseRenewal([finished.id, deleted.id, theirs.id, UNKNOWN_RUN], [], [theirs.id])
    # Another engine's lease is not renewed by a claim on it.
    assert await store.reap_expired() == [theirs.id]


async def test_renewals_are_validated(store: RunStore) -> None:
    assert await store.renew_leases(EXECUTOR, []) == LeaseRenewal([], [])
    with pytest.raises(InvalidArgument, match="executor_id is required"):
        await store.renew_leases("", [UNKNOWN_RUN])
    with pytest.raises(InvalidArgument, match="run_id 'r1' is not a valid run id"):
        await store.renew_leases(EXECUTOR, ["r1"])


async def test_a_lease_that_is_not_renewed_runs_out(store: RunStore) -> None:
    # Real time, short leases: the lease set at create, and the one a renewal sets, are what the reaper reads.
    renewed = await store.create_run(new_run(lease_seconds=1))
    abandoned = await store.create_run(new_run(lease_seconds=1))
    await asyncio.sleep(0.6)
    assert await store.reap_expired() == []
    await store.renew_leases(EXECUTOR, [renewed.id])
    await asyncio.sleep(0.6)
    assert await store.reap_expired() == [abandoned.id]
    assert (await store.get_run(renewed.id)).state == "running"


# --- reaping -----------------------------------------------------------------------------------------------


async def test_reaping_orphans_expired_runs_for_another_engine_and_leaves_valid_leases_alone(
    store: RunStore, database: Database
) -> None:
    running = await store.create_run(new_run())
    await store.append_steps(running.id, [thought("working")])
    queued = await store.create_run(new_run(state="queued"))
    cancelling = await store.create_run(new_run())
    await store.cancel_run(cancelling.id, "dave")
    valid = await store.create_run(new_run())
    for run in (running, queued, cancelling):
        await expire_lease(database, run.id)

    with store.notices.connect("engine-b") as offers, store.signals.subscribe(running.id) as subscription:
        reaped = await store.reap_expired()
        assert await subscription.wait(0.01) is True  # watchers learn it lost its engine
        offered = {offers.get_nowait().run_id for _ in range(offers.qsize())}
    assert sorted(reaped) == sorted([running.id, queued.id, cancelling.id])
    assert offered == {running.id, queued.id}  # offered to the connected engines, as a decided approval is

    # Not ended: live, held by nobody, one attempt more, its steps as they were (no error step).
    orphan = await store.get_run(running.id)
    assert (orphan.state, orphan.executor_id, orphan.attempts, orphan.lease_epoch) == ("running", "", 1, 1)
    assert [(s.sequence, s.type) for s in orphan.steps] == [(1, "agent-thought")]
    requeued = await store.get_run(queued.id)
    assert (requeued.state, requeued.executor_id, requeued.attempts, requeued.steps) == ("queued", "", 1, [])

    cancelled = await store.get_run(cancelling.id)
    assert (cancelled.state, cancelled.error_code, cancelled.error_message) == ("cancelled", "cancelled",
                                                                                "cancelled: dave")
    assert cancelled.steps[-1].content == {"code": "cancelled", "message": "cancelled: dave"}

    assert (await store.get_run(valid.id)).state == "running"
    assert await store.reap_expired() == []  # an orphan has no lease to run out: it waits to be taken
    assert await store.extend_live_leases() == 1  # a restarted store gives no lease to runs nobody holds
    # The engine that lost the lease finds every later write refused, and its renewal tells it so.
    with pytest.raises(FailedPrecondition, match=r"lease lost: .* held by no executor"):
        await store.append_steps(running.id, [thought("late")], epoch=1)
    assert (await store.renew_leases(EXECUTOR, [running.id])).lost_run_ids == [running.id]

    # Another engine takes it at the next epoch, with its steps; the dead engine's epoch is fenced from then on.
    taken = await store.resume_run(running.id, "engine-b", 30.0)
    assert (taken.state, taken.executor_id, taken.lease_epoch, len(taken.steps)) == ("running", "engine-b", 2, 1)
    with pytest.raises(FailedPrecondition, match="lease lost"):
        await store.append_steps(running.id, [thought("late")], epoch=1)
    stored = await store.append_steps(running.id, [thought("on engine-b")], epoch=2)
    assert [step.sequence for step in stored] == [2]
    # A queued orphan is taken still QUEUED, and begins as a queued run does.
    taken_queued = await store.resume_run(queued.id, "engine-b", 30.0)
    assert (taken_queued.state, taken_queued.lease_epoch) == ("queued", 2)
    assert (await store.begin_run(queued.id, "engine-b", epoch=2)).state == "running"


async def test_a_run_resumed_max_attempts_times_ends_failed_interrupted_naming_them(
    store: RunStore, database: Database
) -> None:
    run = await store.create_run(new_run())
    for attempt in range(1, 4):
        await expire_lease(database, run.id)
        assert await store.reap_expired() == [run.id]
        assert (await store.get_run(run.id)).attempts == attempt
        await store.resume_run(run.id, f"engine-{attempt}", 30.0)
    await expire_lease(database, run.id)
    with store.signals.subscribe(run.id) as subscription:
        assert await store.reap_expired() == [run.id]
        assert await subscription.wait(0.01) is True
    failed = await store.get_run(run.id)
    assert (failed.state, failed.error_code, failed.attempts) == ("failed", "interrupted", 3)
    assert "its engine (engine-3) stopped renewing its lease" in failed.error_message
    assert failed.error_message.endswith("after 3 resume(s) (RUNS_MAX_ATTEMPTS)")
    assert failed.steps[-1].content == {"code": "interrupted", "message": failed.error_message}
    with pytest.raises(FailedPrecondition, match="not ready to resume"):
        await store.resume_run(run.id, "engine-4", 30.0)


async def test_an_orphaned_run_cancelled_before_an_engine_takes_it_ends_cancelled_at_once(
    store: RunStore, database: Database
) -> None:
    run = await store.create_run(new_run())
    await expire_lease(database, run.id)
    await store.reap_expired()
    cancelled = await store.cancel_run(run.id, "erin")
    assert (cancelled.state, cancelled.error_message) == ("cancelled", "cancelled: erin")
    assert (await store.get_run(run.id)).steps[-1].content == {"code": "cancelled", "message": "cancelled: erin"}
    with pytest.raises(FailedPrecondition, match="not ready to resume"):
        await store.resume_run(run.id, "engine-b", 30.0)


WORKFLOW = "11111111-2222-4333-8444-555555555555"


async def test_a_workflow_run_whose_engine_stops_is_orphaned_to_be_resumed_node_by_node(
    store: RunStore, database: Database
) -> None:
    start = NewStep("node-outcome", {"kind": "start", "assigned": {"n": 1}}, node_id="start")
    run = await store.create_run(new_run(workflow_id=WORKFLOW, workflow_revision=1, steps=(start,)))
    await expire_lease(database, run.id)
    assert await store.reap_expired() == [run.id]
    orphaned = await store.get_run(run.id)
    assert (orphaned.state, orphaned.executor_id, orphaned.attempts) == ("running", "", 1)
    taken = await store.resume_run(run.id, "engine-b", 30.0)
    assert (taken.executor_id, taken.lease_epoch, [step.node_id for step in taken.steps]) == ("engine-b", 2, ["start"])


async def test_a_workflow_run_whose_engine_stops_before_it_began_ends_failed_interrupted(
    store: RunStore, database: Database
) -> None:
    """Created QUEUED, it has no steps: its inputs were only in the engine that died."""
    run = await store.create_run(new_run(workflow_id=WORKFLOW, workflow_revision=1, state="queued"))
    await expire_lease(database, run.id)
    assert await store.reap_expired() == [run.id]
    failed = await store.get_run(run.id)
    assert (failed.state, failed.error_code, failed.attempts) == ("failed", "interrupted", 0)
    assert failed.error_message.endswith("a workflow run whose inputs were never recorded cannot be resumed")


async def test_start_up_gives_live_runs_a_fresh_lease(store: RunStore, database: Database) -> None:
    live = await store.create_run(new_run())
    finished = await store.create_run(new_run())
    await store.finish_run(finished.id, "completed")
    await expire_lease(database, live.id)
    assert await store.extend_live_leases() == 1
    assert await store.reap_expired() == []
    assert await lease_expiry(database, finished.id) is None


async def test_an_append_renews_the_runs_lease_so_a_late_renewal_does_not_get_it_reaped(
    store: RunStore, database: Database
) -> None:
    run = await store.create_run(new_run(lease_seconds=30))
    await expire_lease(database, run.id)  # as if the engine's renewals had been delayed past the lease
    before = utcnow()
    await store.append_steps(run.id, [thought("still working")])
    renewed = await lease_expiry(database, run.id)
    assert renewed is not None and renewed >= before + timedelta(seconds=29)
    assert await store.reap_expired() == []


async def test_an_append_keeps_a_lease_renewed_within_a_tenth_of_it_and_renews_an_older_one(
    store: RunStore, database: Database
) -> None:
    run = await store.create_run(new_run(lease_seconds=30))
    created = await lease_expiry(database, run.id)
    await store.append_steps(run.id, [thought("at once")])
    # Not rewritten (an unchanged lease lets PostgreSQL update the row in place), and still nearly a full lease.
    assert await lease_expiry(database, run.id) == created
    assert created is not None and created >= utcnow() + timedelta(seconds=27)
    await set_columns(database, run.id, lease_expires_at=utcnow() + timedelta(seconds=26))
    before = utcnow()
    await store.append_steps(run.id, [thought("later")])
    renewed = await lease_expiry(database, run.id)
    assert renewed is not None and renewed >= before + timedelta(seconds=30)
