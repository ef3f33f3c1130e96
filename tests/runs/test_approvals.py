"""Human approval in the run store (SQLite and PostgreSQL): a run pauses WAITING with no engine holding it, a person
decides from anywhere, a timeout decides for them, and any engine resumes the decided run."""

from datetime import timedelta

import pytest

from services.common.db.database import Database, utcnow
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.runs.records import APPROVED, REJECTED, NewStep, ResumeNotice, RunRecord
from services.runs.store import RunStore
from tests.runs.helpers import EXECUTOR, LEASE_SECONDS, expire_lease, new_run

OTHER_ENGINE = "engine-test-2"


def approval_request(prompt: str = "May I write notes.txt?", sequence: int = 0) -> NewStep:
    return NewStep("approval-request", {"prompt": prompt, "tool_call_id": "call_1", "tool_name": "file_io"}, sequence)


async def waiting_run(store: RunStore, expires_in: float | None = None) -> RunRecord:
    """A run that recorded its request and a tool call, then paused for approval (step 3)."""
    run = await store.create_run(new_run("write my notes", steps=(NewStep("user-request", {"text": "write"}),)))
    await store.append_steps(run.id, [NewStep("tool-call", {"tool_name": "file_io", "tool_call_id": "call_1"})])
    expires = utcnow() + timedelta(seconds=expires_in) if expires_in is not None else None
    return await store.await_approval(run.id, EXECUTOR, approval_request(), expires)


async def test_a_run_waiting_for_approval_is_held_by_no_engine(store: RunStore) -> None:
    run = await waiting_run(store)
    assert (run.state, run.executor_id, run.step_count) == ("waiting", "", 3)
    # Its engine's renewals no longer hold it, and the reaper has no lease to expire.
    assert (await store.renew_leases(EXECUTOR, [run.id])).lost_run_ids == [run.id]
    assert await store.reap_expired() == []
    stored = await store.get_run(run.id)
    assert stored.steps[-1].type == "approval-request"
    assert stored.steps[-1].content["prompt"] == "May I write notes.txt?"
    # A retry of the pause is answered with the run; the step is not stored twice.
    again = await store.await_approval(run.id, EXECUTOR, approval_request(sequence=3), None)
    assert (again.state, again.step_count) == ("waiting", 3)


async def test_only_the_engine_holding_a_running_run_may_pause_it(store: RunStore) -> None:
    run = await store.create_run(new_run("q"))
    with pytest.raises(FailedPrecondition, match="not held by executor 'engine-test-2'"):
        await store.await_approval(run.id, OTHER_ENGINE, approval_request(), None)
    with pytest.raises(InvalidArgument, match="waits on an approval-request step, not agent-thought"):
        await store.await_approval(run.id, EXECUTOR, NewStep("agent-thought", {"text": "t"}), None)


async def test_a_decision_is_recorded_and_the_run_offered_to_an_engine(store: RunStore) -> None:
    run = await waiting_run(store)
    with store.notices.connect(OTHER_ENGINE) as notices:
        decided = await store.decide_approval(run.id, 3, APPROVED, "go ahead", by="alice")
        assert notices.get_nowait() == ResumeNotice(run.id)
    assert (decided.state, decided.step_count) == ("waiting", 4)
    step = (await store.get_run(run.id)).steps[-1]
    assert (step.type, step.content) == (
        "approval-decision",
        {"outcome": "APPROVAL_OUTCOME_APPROVED", "request_sequence": 3, "comment": "go ahead", "decided_by": "alice"},
    )
    # Any engine may take it; then it is that engine's, RUNNING under its lease, with every step so far.
    resumed = await store.resume_run(run.id, OTHER_ENGINE, LEASE_SECONDS)
    assert (resumed.state, resumed.executor_id, len(resumed.steps)) == ("running", OTHER_ENGINE, 4)
    assert (await store.resume_run(run.id, OTHER_ENGINE, LEASE_SECONDS)).state == "running"  # a retry
    with pytest.raises(FailedPrecondition, match="is not ready to resume: it is running"):
        await store.resume_run(run.id, EXECUTOR, LEASE_SECONDS)
    await store.append_steps(run.id, [NewStep("agent-response", {"text": "written"})])
    assert (await store.finish_run(run.id, "completed")).state == "completed"


async def test_deciding_a_step_that_is_not_waiting_is_failed_precondition(store: RunStore) -> None:
    run = await waiting_run(store)
    with pytest.raises(FailedPrecondition, match=f"step 2 of run '{run.id}' is not waiting for approval: it waits on"):
        await store.decide_approval(run.id, 2, APPROVED)
    with pytest.raises(FailedPrecondition, match="is not ready to resume: it is waiting and waits for a decision"):
        await store.resume_run(run.id, EXECUTOR, LEASE_SECONDS)
    await store.decide_approval(run.id, 3, REJECTED, "not now", by="alice")
    with pytest.raises(FailedPrecondition, match="not waiting for approval: it is waiting and decided already"):
        await store.decide_approval(run.id, 3, APPROVED)
    running = await store.create_run(new_run("q"))
    with pytest.raises(FailedPrecondition, match="not waiting for approval: it is running"):
        await store.decide_approval(running.id, 1, APPROVED)
    with pytest.raises(InvalidArgument, match="comment"):
        await store.decide_approval(run.id, 3, APPROVED, "x" * 2001)


async def test_another_users_waiting_run_is_not_found(store: RunStore) -> None:
    run = await waiting_run(store)
    with pytest.raises(NotFound, match=f"run '{run.id}' not found"):
        await store.decide_approval(run.id, 3, APPROVED, owner="mallory")
    assert (await store.get_run(run.id)).step_count == 3


async def test_a_waiting_run_is_cancelled_by_the_store_itself(store: RunStore) -> None:
    run = await waiting_run(store)
    cancelled = await store.cancel_run(run.id, "no longer needed", by="alice")
    assert (cancelled.state, cancelled.error_code) == ("cancelled", "cancelled")
    assert (await store.get_run(run.id)).steps[-1].type == "error"
    with pytest.raises(FailedPrecondition, match="not waiting for approval: it is cancelled"):
        await store.decide_approval(run.id, 3, APPROVED)


async def test_an_approval_past_its_timeout_is_decided_timed_out(store: RunStore, database: Database) -> None:
    patient = await waiting_run(store)
    hurried = await waiting_run(store, expires_in=-1)
    assert await store.expire_approvals() == [hurried.id]
    step = (await store.get_run(hurried.id)).steps[-1]
    assert step.content["outcome"] == "APPROVAL_OUTCOME_TIMED_OUT" and step.content["decided_by"] == ""
    assert (await store.get_run(patient.id)).step_count == 3  # no timeout: it waits
    assert await store.expire_approvals() == []


async def test_decided_runs_are_offered_again_to_an_engine_that_connects_later(store: RunStore) -> None:
    run = await waiting_run(store)
    await store.decide_approval(run.id, 3, APPROVED)  # no engine connected: the offer finds nobody
    with store.notices.connect(OTHER_ENGINE) as notices:
        assert await store.offer_ready_runs() == 1
        assert notices.get_nowait() == ResumeNotice(run.id)
        await store.resume_run(run.id, OTHER_ENGINE, LEASE_SECONDS)
        assert await store.offer_ready_runs() == 0


async def test_a_resumed_run_whose_engine_dies_is_orphaned_as_any_other(store: RunStore, database: Database) -> None:
    run = await waiting_run(store)
    await store.decide_approval(run.id, 3, APPROVED)
    await store.resume_run(run.id, OTHER_ENGINE, LEASE_SECONDS)
    await expire_lease(database, run.id)
    assert await store.reap_expired() == [run.id]
    orphan = await store.get_run(run.id)
    assert (orphan.state, orphan.executor_id, orphan.attempts, orphan.error_code) == ("running", "", 1, "")
    taken = await store.resume_run(run.id, EXECUTOR, LEASE_SECONDS)
    assert (taken.executor_id, taken.lease_epoch) == (EXECUTOR, run.lease_epoch + 2)
