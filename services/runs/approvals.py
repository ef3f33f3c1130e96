"""Human approval in the run store: a run waits on an approval-request step, a person (or its timeout) decides it,
and an engine resumes it (no gRPC here). Part of `RunStore`."""

import dataclasses
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, insert, or_, select
from sqlalchemy.engine import Connection

from services.common.checks import check_text
from services.common.db.database import utcnow
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.run_vocabulary import LIVE_STATES, RUNNING, WAITING
from services.runs.checks import (
    check_executor_id,
    check_lease_epoch,
    check_lease_seconds,
    checked_step,
    parse_run_id,
)
from services.runs.leases import NO_EPOCH, REAP_BATCH, check_fence
from services.runs.parts import StoreParts
from services.runs.records import TIMED_OUT, NewStep, RunRecord, StepRecord
from services.runs.rows import (
    RUN_COLUMNS,
    RUNS,
    STEPS,
    load_run,
    record_decision,
    run_record,
    step_record,
    step_values,
    update_run,
)

#: Longest comment of an approval decision.
MAX_DECISION_COMMENT_CHARS = 2000


def ready_to_resume() -> ColumnElement[bool]:
    """Runs no engine holds that one should take and continue: decided WAITING runs, and QUEUED or RUNNING runs
    whose engine stopped (orphaned by the reaper, leases.py)."""
    return or_(
        and_(RUNS.c.state == WAITING, RUNS.c.awaiting_sequence.is_(None)),
        and_(RUNS.c.state.in_(LIVE_STATES), RUNS.c.executor_id == ""),
    )


class RunApprovals(StoreParts):
    """The run store's approval methods (see the module docstring)."""

    async def await_approval(
        self, run_id: str, executor_id: str, step: NewStep, expires_at: datetime | None, *, epoch: int = NO_EPOCH
    ) -> RunRecord:
        """Append the approval-request `step` to a RUNNING run held by `executor_id` at `epoch` and move it to
        WAITING: the lease ends, so no engine holds it until it is decided and resumed. Retrying with the step
        already stored returns the run."""
        run_id = parse_run_id(run_id)
        check_executor_id(executor_id)
        check_lease_epoch(epoch)
        step = checked_step(1, step, self.limits)
        if step.type != "approval-request":
            raise InvalidArgument(f"a run waits on an approval-request step, not {step.type}")

        def pause(connection: Connection) -> tuple[RunRecord, StepRecord | None]:
            run = load_run(connection, run_id, lock=True)
            check_fence(run, epoch, "approval request")
            if run["state"] == WAITING and run["awaiting_sequence"] == (step.sequence or run["awaiting_sequence"]):
                return run_record(run), None  # a retry: the step is stored and the run waits already
            if run["state"] != RUNNING or run["executor_id"] != executor_id:
                raise FailedPrecondition(
                    f"run '{run_id}' is {run['state']} and not held by executor {executor_id!r}; it cannot wait for "
                    "approval"
                )
            sequence = run["step_count"] + 1
            if step.sequence not in (0, sequence):
                raise FailedPrecondition(f"the approval request of run '{run_id}' must be step {sequence} (or 0)")
            values = step_values(run_id, sequence, step, utcnow())
            connection.execute(insert(STEPS).values(values))
            update_run(
                connection, run, state=WAITING, step_count=sequence, executor_id="", lease_expires_at=None,
                awaiting_sequence=sequence, approval_expires_at=expires_at,
            )
            return run_record(run), step_record(values)

        record, stored = await self._writer.write(pause)
        if stored is not None:
            self.signals.steps_stored(run_id, [stored])
        self.signals.notify(run_id, record)
        return record

    async def decide_approval(
        self, run_id: str, sequence: int, outcome: str, comment: str = "", *, by: str = "", owner: str | None = None
    ) -> RunRecord:
        """Decide the approval-request step `sequence` of a WAITING run (`outcome` approved, rejected or timed_out):
        the decision is recorded as an approval-decision step, and the run is offered to an engine to resume.
        FailedPrecondition when that step is not waiting for a decision; `owner` as for get_run."""
        run_id = parse_run_id(run_id)
        check_text("comment", comment, MAX_DECISION_COMMENT_CHARS)

        def decide(connection: Connection) -> tuple[RunRecord, StepRecord]:
            run = load_run(connection, run_id, lock=True, owner=owner)
            if run["state"] != WAITING or run["awaiting_sequence"] != sequence:
                waiting = (
                    f"it waits on step {run['awaiting_sequence']}" if run["awaiting_sequence"]
                    else f"it is {run['state']}" + (" and decided already" if run["state"] == WAITING else "")
                )
                raise FailedPrecondition(f"step {sequence} of run '{run_id}' is not waiting for approval: {waiting}")
            return record_decision(connection, run, outcome, comment, by)

        record, stored = await self._writer.write(decide, urgent=True)  # a person waits
        self._resumable(record, stored)
        return record

    async def expire_approvals(self) -> list[str]:
        """Decide TIMED_OUT the approvals whose timeout passed; returns the ids of their runs."""
        # The reaper asks every pass: a read first, so that a pass with nothing to time out takes no write lock.
        async with self.database.read() as session:
            due = await session.scalar(
                select(RUNS.c.id).where(RUNS.c.state == WAITING, RUNS.c.approval_expires_at < utcnow()).limit(1)
            )
        if due is None:
            return []

        def expire(connection: Connection) -> list[tuple[RunRecord, StepRecord]]:
            rows = connection.execute(
                select(*RUN_COLUMNS)
                .where(RUNS.c.state == WAITING, RUNS.c.approval_expires_at < utcnow())
                .order_by(RUNS.c.approval_expires_at)
                .limit(REAP_BATCH)
                .with_for_update(skip_locked=True)
            )
            return [record_decision(connection, dict(row._mapping), TIMED_OUT, "", "") for row in rows.all()]

        decided = await self._writer.write(expire)
        for record, stored in decided:
            self._resumable(record, stored)
        return [record.id for record, _ in decided]

    async def offer_ready_runs(self) -> int:
        """Offer again every run ready to resume but not resumed yet: WAITING runs that were decided, and runs
        orphaned by their engine (leases.py); an offer lost with an engine that went away, or made while none was
        connected. Returns how many were offered."""
        if not self.notices.any_connected:
            return 0  # nobody to offer them to; an engine that connects is offered them then
        async with self.database.read() as session:
            rows = await session.execute(
                select(RUNS.c.id)
                .where(ready_to_resume())
                .limit(REAP_BATCH)
            )
            ready = list(rows.scalars())
        return sum(self.notices.offer_resume(run_id) for run_id in ready)

    def _resumable(self, record: RunRecord, stored: StepRecord) -> None:
        self.signals.steps_stored(record.id, [stored])
        self.signals.notify(record.id, record)
        self.notices.offer_resume(record.id)

    async def resume_run(self, run_id: str, executor_id: str, lease_seconds: float) -> RunRecord:
        """Take a run ready to resume under `executor_id`'s lease, at the next lease epoch (the engine that held it
        before is fenced off), and return it with all its steps: a decided WAITING run is RUNNING again; an
        orphaned run keeps its state (a QUEUED one begins as any queued run does). Again under the same lease, a
        retry, returns it too. FailedPrecondition when it is not ready to resume."""
        run_id = parse_run_id(run_id)
        check_executor_id(executor_id)
        check_lease_seconds(lease_seconds)

        def resume(connection: Connection) -> RunRecord:
            run = load_run(connection, run_id, lock=True)
            decided = run["state"] == WAITING and run["awaiting_sequence"] is None
            orphaned = run["state"] in LIVE_STATES and not run["executor_id"]
            ready = decided or orphaned
            if not ready and not (run["state"] in LIVE_STATES and run["executor_id"] == executor_id):
                raise FailedPrecondition(
                    f"run '{run_id}' is not ready to resume: it is {run['state']}"
                    + (" and waits for a decision" if run["state"] == WAITING else "")
                )
            if ready:
                update_run(
                    connection, run, state=RUNNING if decided else run["state"], executor_id=executor_id,
                    lease_seconds=lease_seconds,
                    lease_expires_at=utcnow() + timedelta(seconds=lease_seconds), lease_epoch=run["lease_epoch"] + 1,
                )
            steps = connection.execute(select(STEPS).where(STEPS.c.run_id == run_id).order_by(STEPS.c.sequence))
            return run_record(run, steps.mappings().all())

        record = await self._writer.write(resume, urgent=True)
        self.signals.notify(run_id, dataclasses.replace(record, steps=[]))
        return record
