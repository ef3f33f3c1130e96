"""RunStore: the runs service's domain layer over the database (no gRPC here).

It takes and returns the plain types of `services.runs.records`, checks every input (`services.runs.checks`),
raises `services.common.errors` exceptions with messages a caller can act on, and tells watchers
(`RunSignals`) and engines (`ExecutorNotices`) about every committed change.

The run lifecycle it enforces: created QUEUED or RUNNING under an engine's lease -> begun (QUEUED -> RUNNING)
-> steps appended -> finished COMPLETED, FAILED or CANCELLED. A cancel is desired state: it is written here
and the engine holding the lease observes it. A lease that runs out ends the run FAILED "interrupted" (or
CANCELLED, when a cancel was pending) through `reap_expired`. Runs are never handed to another engine, so a
run's final state is the fence: an engine that lost its lease finds every later write refused.
"""

import dataclasses
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, delete, func, insert, literal, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.checks import check_text, parse_uuid
from services.common.database import Database, UtcDateTime, runs_to_completion, utcnow
from services.common.errors import AlreadyExists, DomainError, FailedPrecondition, InvalidArgument, NotFound
from services.common.group_commit import GroupCommit, Write
from services.common.pages import (  # noqa: F401 (DEFAULT_PAGE_SIZE and MAX_PAGE_SIZE: the store's listings' bounds)
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    PageTokens,
    checked_page_size,
)
from services.common.run_vocabulary import (
    ACTIVE_STATES,
    CANCELLED,
    COMPLETED,
    FAILED,
    LIVE_STATES,
    QUEUED,
    RUNNING,
    WAITING,
)
from services.runs.appends import APPEND, Append, Progress, plan_append, stored_steps
from services.runs.checks import (
    MAX_CANCEL_REASON_CHARS,
    StoreLimits,
    check_executor_id,
    check_finish,
    check_lease_seconds,
    check_run_state,
    checked_new_run,
    checked_step,
    parse_run_id,
    request_fingerprint,
)
from services.runs.executors import ExecutorNotices
from services.runs.records import (
    TIMED_OUT,
    CancelNotice,
    LeaseRenewal,
    NewRun,
    NewStep,
    RunRecord,
    StepRecord,
    ThreadHistory,
    ThreadRecord,
)
from services.runs.rows import (
    CANCELLED_CODE,
    COLUMN_NAMES,
    INTERRUPTED,
    RUN_COLUMNS,
    RUNS,
    STEPS,
    Cancelled,
    Values,
    add_error_step,
    cancel_message,
    end_changes,
    load_run,
    record_decision,
    request_cancel,
    run_record,
    step_record,
    step_values,
    update_run,
)
from services.runs.threads import (
    LIST_RUNS,
    THREADS,
    earlier_live_turn,
    load_thread,
    place_run,
    thread_page_token,
    thread_record,
    threads_after,
    turn_page_token,
    turns_after,
)
from services.runs.watch import RunSignals

#: A ListRuns page ends early rather than grow past this (gRPC's default message limit is 4 MiB).
MAX_PAGE_BYTES = 1024 * 1024
#: ListRuns returns at most this much of each user query.
LIST_QUERY_CHARS = 1000
#: Steps one AppendSteps call may carry; a bound on the size of one write transaction.
MAX_STEPS_PER_APPEND = 1000
#: Run ids one RenewLeases call may carry.
MAX_LEASES_PER_RENEWAL = 10_000
#: How often an append is retried when a concurrent writer took the same sequence first.
APPEND_ATTEMPTS = 3
#: How many expired runs one reaper pass ends (and approvals it times out, and ready runs it offers again).
REAP_BATCH = 100
#: Longest comment of an approval decision.
MAX_DECISION_COMMENT_CHARS = 2000
#: Turns one GetThreadHistory returns by default and at most, and about how many bytes of them: the engine's
#: context budget cuts far below either, and the answer stays under gRPC's 4 MiB message limit.
DEFAULT_HISTORY_TURNS = 100
MAX_HISTORY_TURNS = 1000
MAX_HISTORY_BYTES = 3 * 1024 * 1024

#: ListRuns reads these, with the user query cut in the database so a huge one is never loaded.
_LIST_COLUMNS = [
    *(column for column in RUN_COLUMNS if column.key != "user_query"),
    func.substr(RUNS.c.user_query, 1, LIST_QUERY_CHARS + 1).label("user_query"),
]

@dataclass(frozen=True)
class _PagePosition:
    """Where a ListRuns page ended: the last run's (created_at, id)."""

    created_at: datetime
    run_id: str


def _listing(state: str | None, owner: str | None) -> dict[str, object]:
    # The filters are part of the token: a position in one filtered listing is meaningless in another.
    return {"state": state, "owner": owner}


def _read_page_token(tokens: PageTokens, token: str, state: str | None, owner: str | None) -> _PagePosition:
    """The position a page token names; InvalidArgument when it is not one this listing issued."""
    position = tokens.read(token, LIST_RUNS, _listing(state, owner))
    return _PagePosition(position.time("created_at"), position.uuid("id"))


def _older_than(position: _PagePosition) -> ColumnElement[bool]:
    """Runs after `position` in newest-first order. A row-value comparison, which SQLite and PostgreSQL both
    serve as a range of the (created_at, id) indexes: the equivalent OR of two conditions made both databases
    scan from the newest run to the page (a page in the middle of 1,000,000 runs took 100-250 ms)."""
    return tuple_(RUNS.c.created_at, RUNS.c.id) < tuple_(
        literal(position.created_at, UtcDateTime()), literal(position.run_id, RUNS.c.id.type)
    )


def _approximate_bytes(record: RunRecord) -> int:
    """About how many bytes a run takes in a ListRuns response (text fields dominate; the rest is small)."""
    labels = sum(len(key) + len(value) for key, value in record.metadata.items())
    return len(record.user_query.encode()) + len(record.error_message.encode()) + labels * 2 + 256


class RunStore:
    """Runs and their steps in a database, with change signals for watchers and notices for engines.

    Every write goes through one `GroupCommit` writer: the appends of many runs share a transaction and an
    INSERT (`_append_batch`), and every other write runs in a savepoint of its own within the batch.
    """

    def __init__(
        self,
        db: Database,
        signals: RunSignals,
        notices: ExecutorNotices | None = None,
        limits: StoreLimits | None = None,
        page_tokens: PageTokens | None = None,
    ) -> None:
        self.database = db
        self.signals = signals
        self.notices = notices or ExecutorNotices()
        self.limits = limits or StoreLimits()
        #: Signs and reads ListRuns' and ListThreads' page tokens; the settings' key in a service (app.py).
        self.page_tokens = page_tokens or PageTokens.for_this_process()
        self._writer = GroupCommit(db, {APPEND: self._append_batch})

    async def close(self) -> None:
        """Commit the writes still queued and stop the writer."""
        await self._writer.close()

    # --- the lifecycle -------------------------------------------------------------------------------------

    async def create_run(self, new: NewRun) -> RunRecord:
        """Create a QUEUED or RUNNING run under `new.executor_id`'s lease, with `new.steps` as its first steps,
        as the first turn of a new thread or the next turn of `new.thread_id`.

        When that thread has a run in progress, `new.multitask` decides: "reject" is FailedPrecondition naming
        it; "enqueue" creates the run QUEUED without steps, to begin when the earlier turns have ended;
        "interrupt" also cancels them, in the same transaction.

        With a request id, a retry of the same request returns the run the first call created (whatever
        state it is in now, with the steps created with it), and the same id with another request is
        AlreadyExists.
        """
        new = checked_new_run(new, self.limits)
        fingerprint = request_fingerprint(new) if new.request_id else ""
        now = utcnow()
        limits = new.limits
        values: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "owner": new.owner,
            "agent_id": new.agent_id,
            "agent_revision": new.agent_revision,
            "workflow_id": new.workflow_id,
            "workflow_revision": new.workflow_revision,
            "user_query": new.user_query,
            "state": new.state,
            "model": new.model,
            "created_at": now,
            "completed_at": None,
            "started_at": now if new.state == RUNNING else None,
            "error_code": "",
            "error_message": "",
            "prompt_tokens": sum(step.model_call.usage.prompt_tokens for step in new.steps if step.model_call),
            "completion_tokens": sum(
                step.model_call.usage.completion_tokens for step in new.steps if step.model_call
            ),
            "labels": dict(new.metadata),
            "step_count": len(new.steps),
            "request_id": new.request_id or None,
            "request_hash": fingerprint,
            "executor_id": new.executor_id,
            "lease_seconds": new.lease_seconds,
            "lease_expires_at": now + timedelta(seconds=new.lease_seconds),
            "cancel_requested_at": None,
            "cancel_reason": "",
            "max_model_calls": limits.max_model_calls,
            "max_duration_ms": round(limits.max_duration_seconds * 1000) if limits.max_duration_seconds else None,
            "max_total_tokens": limits.max_total_tokens,
            "max_tool_calls": limits.max_tool_calls,
        }
        values["total_tokens"] = values["prompt_tokens"] + values["completion_tokens"]
        steps = [step_values(values["id"], step.sequence, step, now) for step in new.steps]

        async def create(connection: AsyncConnection) -> tuple[RunRecord, list[Cancelled]]:
            row, row_steps = dict(values), steps
            # The lease runs from when the store records the run, not from when the request arrived: a create
            # that waited in a deep write queue must not start with its lease half gone.
            row["lease_expires_at"] = utcnow() + timedelta(seconds=new.lease_seconds)
            if new.request_id:
                existing = await self._by_request_id(connection, new.request_id, fingerprint, len(steps))
                if existing is not None:
                    return existing, []
            cancelled = []
            if new.workflow_id:
                # A workflow run is not a turn of a conversation.
                row["thread_id"], row["thread_turn"] = None, None
                place = None
            else:
                place = await place_run(connection, new.thread_id, new.owner, new.user_query, now, RUN_COLUMNS)
                row["thread_id"], row["thread_turn"] = place.thread_id, place.turn
            if place is not None and place.live:
                if new.multitask == "reject":
                    raise FailedPrecondition(
                        f"thread '{place.thread_id}' has a run in progress (run '{place.live[0]['id']}', "
                        f"{place.live[0]['state']}); wait for it to end or cancel it, or start this run with "
                        "multitask_strategy ENQUEUE (after it) or INTERRUPT (cancel it)"
                    )
                # It waits for the earlier turns, so it cannot have begun: QUEUED, its steps recorded at BeginRun.
                row.update(state=QUEUED, started_at=None, step_count=0, prompt_tokens=0, completion_tokens=0,
                           total_tokens=0)
                row_steps = []
                if new.multitask == "interrupt":
                    reason = f"interrupted by run {row['id']} on its thread (multitask_strategy INTERRUPT)"
                    cancelled = [await request_cancel(connection, run, reason) for run in place.live]
            await connection.execute(insert(RUNS).values({COLUMN_NAMES.get(k, k): v for k, v in row.items()}))
            if row_steps:
                await connection.execute(insert(STEPS), row_steps)
            return run_record(row, row_steps), cancelled

        try:
            record, cancelled = await self._writer.write(create)
        except IntegrityError:
            # Another runs replica created a run with the same request id first: answer as its retry would.
            async with self.database.read() as session:
                connection = await session.connection()
                existing = await self._by_request_id(connection, new.request_id, fingerprint, len(steps))
            if existing is None:
                raise
            return existing
        for interrupted in cancelled:
            self._announce(interrupted)
        if record.steps:
            self.signals.steps_stored(record.id, record.steps)
        return record

    @staticmethod
    async def _by_request_id(
        connection: AsyncConnection, request_id: str, fingerprint: str, with_steps: int = 0
    ) -> RunRecord | None:
        """The run a create with this request id made, with its first `with_steps` steps."""
        row = (await connection.execute(select(*RUN_COLUMNS).where(RUNS.c.request_id == request_id))).first()
        if row is None:
            return None
        if row.request_hash != fingerprint:
            # No run id in the message: the first request may have been another user's.
            raise AlreadyExists(
                f"request_id {request_id} was already used for a different request; use a new request_id for a "
                "new request, or resend the first request unchanged to retry it"
            )
        steps: Sequence[Values] = ()
        if with_steps:
            result = await connection.execute(
                select(STEPS)
                .where(STEPS.c.run_id == row.id, STEPS.c.sequence <= with_steps)
                .order_by(STEPS.c.sequence)
            )
            steps = result.mappings().all()
        return run_record(row._mapping, steps)

    async def begin_run(self, run_id: str, executor_id: str) -> RunRecord:
        """Move a QUEUED run to RUNNING for the engine that holds its lease (again: a retry)."""
        run_id = parse_run_id(run_id)
        check_executor_id(executor_id)

        async def begin(connection: AsyncConnection) -> RunRecord:
            run = await load_run(connection, run_id, lock=True)
            if run["state"] not in LIVE_STATES or run["executor_id"] != executor_id:
                raise FailedPrecondition(
                    f"run '{run_id}' is {run['state']} and not held by executor {executor_id!r}; it cannot begin"
                )
            if run["state"] == QUEUED and run["thread_id"]:
                waiting_for = await earlier_live_turn(connection, run["thread_id"], run["thread_turn"])
                if waiting_for is not None:
                    raise FailedPrecondition(
                        f"run '{run_id}' cannot begin before run '{waiting_for}', an earlier turn of its thread, "
                        "has ended"
                    )
            if run["state"] == QUEUED:
                await update_run(connection, run, state=RUNNING, started_at=utcnow())
            return run_record(run)

        record = await self._writer.write(begin)
        self.signals.notify(run_id, record)
        return record

    async def append_steps(self, run_id: str, steps: Sequence[NewStep]) -> list[StepRecord]:
        """Append `steps` to a RUNNING run, all or none, and return them as stored.

        Per step: sequence 0 takes the next one; the next one is stored; an already stored sequence with
        the same type and content is an idempotent retry (the stored step is returned); with other content
        it is AlreadyExists; a sequence past the next one is a gap (FailedPrecondition). A step's model call
        usage is added to the run's, so the run's usage is current while it goes.
        """
        run_id = parse_run_id(run_id)
        if not steps:
            raise InvalidArgument("steps is empty; send at least one step")
        if len(steps) > MAX_STEPS_PER_APPEND:
            raise InvalidArgument(f"at most {MAX_STEPS_PER_APPEND} steps per append, got {len(steps)}")
        checked = [checked_step(position, step, self.limits) for position, step in enumerate(steps, 1)]
        attempt = 0
        while True:
            attempt += 1
            try:
                stored = await self._writer.submit(Append(run_id, checked))
                break
            except IntegrityError:
                # Another runs replica stored one of our sequences first (the run's row lock should prevent it;
                # the unique (run_id, sequence) key is the backstop). A retry sees its steps: sequence 0
                # moves on to the next free one, an explicit sequence turns into a retry or a conflict.
                if attempt >= APPEND_ATTEMPTS:
                    raise AlreadyExists(
                        f"concurrent appends to run '{run_id}' kept taking the same sequences; retry"
                    ) from None
        self.signals.steps_stored(run_id, stored)
        return stored

    async def _append_batch(self, connection: AsyncConnection, appends: Sequence[Write[Any]]) -> None:
        """The appends of a batch in four statements, whatever their number: read their runs, check every append
        against them in order (an append that fails changes nothing), insert all new steps, update the runs."""
        batch = [append for append in appends if isinstance(append, Append)]
        run_ids = sorted({append.run_id for append in batch})  # sorted: PostgreSQL row locks in one order
        rows = await connection.execute(
            select(
                RUNS.c.id,
                RUNS.c.state,
                RUNS.c.step_count,
                RUNS.c.prompt_tokens,
                RUNS.c.completion_tokens,
                RUNS.c.lease_seconds,
            )
            .where(RUNS.c.id.in_(run_ids))
            .order_by(RUNS.c.id)
            .with_for_update()
        )
        runs = {
            row.id: Progress(row.state, row.step_count, row.prompt_tokens, row.completion_tokens, row.lease_seconds)
            for row in rows
        }
        stored: dict[tuple[str, int], dict[str, Any]] = {}  # steps already stored that a retry refers to
        retried = [
            (append.run_id, step.sequence)
            for append in batch
            if append.run_id in runs
            for step in append.steps
            if 0 < step.sequence <= runs[append.run_id].step_count
        ]
        if retried:
            stored = await stored_steps(connection, retried)
        now = utcnow()
        new_rows: list[dict[str, Any]] = []
        for append in batch:
            run = runs.get(append.run_id)
            try:
                if run is None:
                    raise NotFound(f"run '{append.run_id}' not found")
                planned = plan_append(append.run_id, run, append.steps, stored, now)
            except DomainError as exc:
                append.fail(exc)
                continue
            run.apply(planned)
            for row in planned.new_rows:
                stored[(append.run_id, row["sequence"])] = row
            new_rows.extend(planned.new_rows)
            append.succeed([step_record(row) for row in planned.rows])
        if new_rows:
            await connection.execute(insert(STEPS), new_rows)
            # A run its engine is writing to is plainly alive: the append renews its lease too, so a renewal
            # delayed under load (in either process) does not get a working run reaped.
            changed = [
                {
                    "run": id_,
                    "steps": run.step_count,
                    "prompt": run.prompt_tokens,
                    "completion": run.completion_tokens,
                    "lease": now + timedelta(seconds=run.lease_seconds),
                }
                for id_, run in runs.items()
                if run.changed
            ]
            await connection.execute(
                update(RUNS)
                .where(RUNS.c.id == bindparam("run"))
                .values(
                    step_count=bindparam("steps"),
                    prompt_tokens=bindparam("prompt"),
                    completion_tokens=bindparam("completion"),
                    total_tokens=bindparam("prompt") + bindparam("completion"),
                    lease_expires_at=bindparam("lease", type_=UtcDateTime()),
                ),
                changed,
            )

    async def finish_run(self, run_id: str, state: str, error_code: str = "", error_message: str = "") -> RunRecord:
        """End a QUEUED or RUNNING run as `state` (completed, failed or cancelled).

        Finishing it again with the same state and code returns the run (a retry after a lost answer);
        a run that ended otherwise (reaped, cancelled) is FailedPrecondition.
        """
        run_id = parse_run_id(run_id)
        check_finish(state, error_code, error_message)

        async def finish(connection: AsyncConnection) -> tuple[RunRecord, bool]:
            run = await load_run(connection, run_id, lock=True)
            if run["state"] not in LIVE_STATES:
                if run["state"] == state and run["error_code"] == error_code:
                    return run_record(run), False
                raise FailedPrecondition(
                    f"run '{run_id}' already ended {run['state']}"
                    + (f" ({run['error_code']})" if run["error_code"] else "")
                    + "; only a QUEUED or RUNNING run can be finished"
                )
            if run["state"] == QUEUED and state != COMPLETED:
                # A run that never began has no steps to end on; the store records the end the engine reports.
                await add_error_step(connection, run, error_code, error_message)
            ended = end_changes(state, error_code, error_message)
            await update_run(connection, run, step_count=run["step_count"], **ended)
            return run_record(run), True

        record, ended = await self._writer.write(finish)
        if ended:
            self.signals.run_ended(run_id, record)
        return record

    async def cancel_run(
        self, run_id: str, reason: str = "", *, owner: str | None = None, by: str = ""
    ) -> RunRecord:
        """Ask a run to stop. A QUEUED run ends CANCELLED here and now (with its `error` step); for a RUNNING
        run the request is recorded and passed on to the engine executing it, which ends it. Asking again
        is harmless; a finished run is FailedPrecondition. `owner` (None: any) limits it to that user's runs;
        `by` names who asked, for the record."""
        run_id = parse_run_id(run_id)
        check_text("reason", reason, MAX_CANCEL_REASON_CHARS)
        if by:
            reason = f"by {by}: {reason}" if reason else f"by {by}"

        async def cancel(connection: AsyncConnection) -> Cancelled:
            run = await load_run(connection, run_id, lock=True, owner=owner)
            if run["state"] not in ACTIVE_STATES:
                raise FailedPrecondition(f"run '{run_id}' already ended {run['state']}; only a QUEUED, RUNNING or "
                                         "WAITING run can be cancelled")
            return await request_cancel(connection, run, reason)

        cancelled = await self._writer.write(cancel, urgent=True)  # a person waits
        self._announce(cancelled)
        return cancelled.run

    def _announce(self, cancelled: Cancelled) -> None:
        """Tell the engine and the watchers of a committed cancel."""
        record = cancelled.run
        self.notices.cancel(cancelled.executor_id, CancelNotice(record.id, cancelled.reason))
        if record.state == CANCELLED:
            self.signals.run_ended(record.id, record)
        else:
            self.signals.notify(record.id, record)

    async def renew_leases(self, executor_id: str, run_ids: Sequence[str]) -> LeaseRenewal:
        """Extend the leases `executor_id` holds on `run_ids`, each by its own lease duration.

        Runs it does not hold (ended, reaped, deleted, another engine's) come back as lost; runs with a
        pending cancel come back to be cancelled (a fallback for a notice the engine missed).
        """
        check_executor_id(executor_id)
        if len(run_ids) > MAX_LEASES_PER_RENEWAL:
            raise InvalidArgument(f"at most {MAX_LEASES_PER_RENEWAL} run ids per renewal, got {len(run_ids)}")
        ids = list(dict.fromkeys(parse_run_id(run_id) for run_id in run_ids))
        if not ids:
            return LeaseRenewal([], [])

        async def renew(connection: AsyncConnection) -> LeaseRenewal:
            now = utcnow()
            held: set[str] = set()
            cancel: list[CancelNotice] = []
            rows = await connection.execute(
                select(RUNS.c.id, RUNS.c.lease_seconds, RUNS.c.cancel_requested_at, RUNS.c.cancel_reason).where(
                    RUNS.c.id.in_(ids), RUNS.c.executor_id == executor_id, RUNS.c.state.in_(LIVE_STATES)
                )
            )
            by_duration: dict[float, list[str]] = {}
            for row in rows:
                held.add(row.id)
                by_duration.setdefault(row.lease_seconds, []).append(row.id)
                if row.cancel_requested_at is not None:
                    cancel.append(CancelNotice(row.id, row.cancel_reason))
            for seconds, group in by_duration.items():
                await connection.execute(
                    update(RUNS).where(RUNS.c.id.in_(group)).values(lease_expires_at=now + timedelta(seconds=seconds))
                )
            return LeaseRenewal([run_id for run_id in ids if run_id not in held], cancel)

        # Urgent: under a deep queue of appends, a renewal that waited its turn could arrive after the lease ran
        # out, and the reaper would end runs whose engine is alive and renewing.
        return await self._writer.write(renew, urgent=True)

    async def reap_expired(self) -> list[str]:
        """End live runs whose lease ran out: FAILED "interrupted", or CANCELLED when a cancel was pending.
        Returns the ids of the runs it ended."""

        async def reap(connection: AsyncConnection) -> list[RunRecord]:
            now = utcnow()
            ended: list[RunRecord] = []
            # SKIP LOCKED: several runs replicas may reap at once on PostgreSQL without waiting on each other.
            rows = await connection.execute(
                select(*RUN_COLUMNS)
                .where(RUNS.c.state.in_(LIVE_STATES), RUNS.c.lease_expires_at < now)
                .order_by(RUNS.c.lease_expires_at)
                .limit(REAP_BATCH)
                .with_for_update(skip_locked=True)
            )
            for row in rows.all():
                run = dict(row._mapping)
                if run["cancel_requested_at"] is not None:
                    state, code, message = CANCELLED, CANCELLED_CODE, cancel_message(run["cancel_reason"])
                else:
                    state, code = FAILED, INTERRUPTED
                    message = (
                        f"the run was interrupted: its engine ({run['executor_id']}) stopped renewing its lease "
                        "(it was stopped, crashed or lost its connection to the run store)"
                    )
                    if run["state"] == QUEUED:
                        message += " before the run began"
                await add_error_step(connection, run, code, message)
                await update_run(connection, run, step_count=run["step_count"], **end_changes(state, code, message))
                ended.append(run_record(run))
            return ended

        ended = await self._writer.write(reap)
        for record in ended:
            self.signals.run_ended(record.id, record)
        return [record.id for record in ended]

    async def extend_live_leases(self) -> int:
        """Give every live run one full lease period from now; called when the service starts, so engines that
        kept running while the store was away can renew before the reaper looks. Returns how many."""

        async def extend(connection: AsyncConnection) -> int:
            now = utcnow()
            extended = 0
            durations = await connection.execute(
                select(RUNS.c.lease_seconds).where(RUNS.c.state.in_(LIVE_STATES)).distinct()
            )
            for seconds in list(durations.scalars()):
                result = await connection.execute(
                    update(RUNS)
                    .where(RUNS.c.state.in_(LIVE_STATES), RUNS.c.lease_seconds == seconds)
                    .values(lease_expires_at=now + timedelta(seconds=seconds))
                )
                extended += result.rowcount
            return extended

        return await self._writer.write(extend)

    # --- human approval ------------------------------------------------------------------------------------

    async def await_approval(
        self, run_id: str, executor_id: str, step: NewStep, expires_at: datetime | None
    ) -> RunRecord:
        """Append the approval-request `step` to a RUNNING run held by `executor_id` and move it to WAITING: the
        lease ends, so no engine holds it until it is decided and resumed. Retrying with the step already stored
        returns the run."""
        run_id = parse_run_id(run_id)
        check_executor_id(executor_id)
        step = checked_step(1, step, self.limits)
        if step.type != "approval-request":
            raise InvalidArgument(f"a run waits on an approval-request step, not {step.type}")

        async def pause(connection: AsyncConnection) -> tuple[RunRecord, StepRecord | None]:
            run = await load_run(connection, run_id, lock=True)
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
            await connection.execute(insert(STEPS).values(values))
            await update_run(
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

        async def decide(connection: AsyncConnection) -> tuple[RunRecord, StepRecord]:
            run = await load_run(connection, run_id, lock=True, owner=owner)
            if run["state"] != WAITING or run["awaiting_sequence"] != sequence:
                waiting = (
                    f"it waits on step {run['awaiting_sequence']}" if run["awaiting_sequence"]
                    else f"it is {run['state']}" + (" and decided already" if run["state"] == WAITING else "")
                )
                raise FailedPrecondition(f"step {sequence} of run '{run_id}' is not waiting for approval: {waiting}")
            return await record_decision(connection, run, outcome, comment, by)

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

        async def expire(connection: AsyncConnection) -> list[tuple[RunRecord, StepRecord]]:
            rows = await connection.execute(
                select(*RUN_COLUMNS)
                .where(RUNS.c.state == WAITING, RUNS.c.approval_expires_at < utcnow())
                .order_by(RUNS.c.approval_expires_at)
                .limit(REAP_BATCH)
                .with_for_update(skip_locked=True)
            )
            return [await record_decision(connection, dict(row._mapping), TIMED_OUT, "", "") for row in rows.all()]

        decided = await self._writer.write(expire)
        for record, stored in decided:
            self._resumable(record, stored)
        return [record.id for record, _ in decided]

    async def offer_ready_runs(self) -> int:
        """Offer again every WAITING run that was decided but not resumed yet (an offer lost with an engine that
        went away, or made while none was connected); returns how many were offered."""
        if not self.notices.any_connected:
            return 0  # nobody to offer them to; an engine that connects is offered them then
        async with self.database.read() as session:
            rows = await session.execute(
                select(RUNS.c.id)
                .where(RUNS.c.state == WAITING, RUNS.c.awaiting_sequence.is_(None))
                .limit(REAP_BATCH)
            )
            ready = list(rows.scalars())
        return sum(self.notices.offer_resume(run_id) for run_id in ready)

    def _resumable(self, record: RunRecord, stored: StepRecord) -> None:
        self.signals.steps_stored(record.id, [stored])
        self.signals.notify(record.id, record)
        self.notices.offer_resume(record.id)

    async def resume_run(self, run_id: str, executor_id: str, lease_seconds: float) -> RunRecord:
        """Take a decided WAITING run under `executor_id`'s lease (RUNNING again) and return it with all its steps;
        again under the same lease, a retry, returns it too. FailedPrecondition when it is not ready to resume."""
        run_id = parse_run_id(run_id)
        check_executor_id(executor_id)
        check_lease_seconds(lease_seconds)

        async def resume(connection: AsyncConnection) -> RunRecord:
            run = await load_run(connection, run_id, lock=True)
            ready = run["state"] == WAITING and run["awaiting_sequence"] is None
            if not ready and not (run["state"] == RUNNING and run["executor_id"] == executor_id):
                raise FailedPrecondition(
                    f"run '{run_id}' is not ready to resume: it is {run['state']}"
                    + (" and waits for a decision" if run["state"] == WAITING else "")
                )
            if ready:
                await update_run(
                    connection, run, state=RUNNING, executor_id=executor_id, lease_seconds=lease_seconds,
                    lease_expires_at=utcnow() + timedelta(seconds=lease_seconds),
                )
            steps = await connection.execute(select(STEPS).where(STEPS.c.run_id == run_id).order_by(STEPS.c.sequence))
            return run_record(run, steps.mappings().all())

        record = await self._writer.write(resume, urgent=True)
        self.signals.notify(run_id, dataclasses.replace(record, steps=[]))
        return record

    # --- reading -------------------------------------------------------------------------------------------

    @runs_to_completion
    async def get_run(self, run_id: str, with_steps: bool = True, *, owner: str | None = None) -> RunRecord:
        """One run, with its steps in sequence order unless `with_steps` is False; `owner` (None: any) limits it
        to that user's runs."""
        run_id = parse_run_id(run_id)
        async with self.database.read() as session:
            connection = await session.connection()
            run = await load_run(connection, run_id, owner=owner)
            steps: Sequence[Values] = ()
            if with_steps:
                result = await connection.execute(
                    select(STEPS).where(STEPS.c.run_id == run_id).order_by(STEPS.c.sequence)
                )
                steps = result.mappings().all()
            return run_record(run, steps)

    @runs_to_completion
    async def steps_after(self, run_id: str, after_sequence: int, limit: int) -> tuple[RunRecord, list[StepRecord]]:
        """The run (without steps) and up to `limit` of its steps with a sequence above `after_sequence`.

        The run is read BEFORE the steps: if it is finished then, no step can follow the ones read.
        """
        run_id = parse_run_id(run_id)
        async with self.database.read() as session:
            connection = await session.connection()
            run = await load_run(connection, run_id)
            rows = await connection.execute(
                select(STEPS)
                .where(STEPS.c.run_id == run_id, STEPS.c.sequence > after_sequence)
                .order_by(STEPS.c.sequence)
                .limit(limit)
            )
            return run_record(run), [step_record(row) for row in rows.mappings()]

    @runs_to_completion
    async def list_runs(
        self,
        page_size: int = 0,
        page_token: str = "",
        state: str | None = None,
        *,
        owner: str | None = None,
        thread_id: str = "",
    ) -> tuple[list[RunRecord], str]:
        """One page of runs (without steps), newest first, and the token of the next page ("" on the last).

        `state` None lists every state; `owner` None every user's runs. Pagination is by keyset, so runs created
        while paging neither shift nor repeat the pages that follow. User queries are cut to LIST_QUERY_CHARS, and
        a page ends early rather than grow past MAX_PAGE_BYTES, so no page can exceed gRPC's message limit.

        With `thread_id`, only that thread's runs, in turn order (oldest first); NotFound when the thread is
        missing or, with `owner`, someone else's.
        """
        limit = checked_page_size(page_size)
        if state is not None:
            check_run_state(state)
        if thread_id:
            thread_id = parse_uuid(thread_id, "thread_id", "thread")
            query = (
                select(*_LIST_COLUMNS)
                .where(RUNS.c.thread_id == thread_id)
                .order_by(RUNS.c.thread_turn)
                .limit(limit + 1)
            )
            if page_token:
                query = query.where(
                    RUNS.c.thread_turn > turns_after(self.page_tokens, page_token, thread_id, state, owner)
                )
        else:
            query = select(*_LIST_COLUMNS).order_by(RUNS.c.created_at.desc(), RUNS.c.id.desc()).limit(limit + 1)
            if page_token:
                query = query.where(_older_than(_read_page_token(self.page_tokens, page_token, state, owner)))
        if state is not None:
            query = query.where(RUNS.c.state == state)
        if owner is not None:
            query = query.where(RUNS.c.owner == owner)
        async with self.database.read() as session:
            if thread_id:
                await load_thread(await session.connection(), thread_id, owner)
            rows = (await session.execute(query)).mappings().all()
        page: list[RunRecord] = []
        size = 0
        for row in rows[:limit]:
            record = run_record(row, query_cut=len(row["user_query"]) > LIST_QUERY_CHARS)
            if record.user_query_truncated:
                record = dataclasses.replace(record, user_query=record.user_query[:LIST_QUERY_CHARS])
            size += _approximate_bytes(record)
            if page and size > MAX_PAGE_BYTES:
                break
            page.append(record)
        if len(rows) == len(page):
            return page, ""
        if thread_id:
            return page, turn_page_token(self.page_tokens, thread_id, state, owner, page[-1].thread_turn)
        return page, self.page_token_after(page[-1].created_at, page[-1].id, state, owner=owner)

    def page_token_after(
        self, created_at: datetime, run_id: str, state: str | None = None, *, owner: str | None = None
    ) -> str:
        """The ListRuns page token (of all threads) whose page starts after the run (created_at, run_id)."""
        position = {"created_at": created_at.isoformat(), "id": run_id}
        return self.page_tokens.issue(LIST_RUNS, _listing(state, owner), position)

    async def delete_run(self, run_id: str, *, owner: str | None = None) -> None:
        """Delete a run and its steps (ON DELETE CASCADE); watchers of it end with NotFound, and the engine
        executing it finds its lease lost. `owner` (None: any) limits it to that user's runs."""
        run_id = parse_run_id(run_id)
        query = delete(RUNS).where(RUNS.c.id == run_id)
        if owner is not None:
            query = query.where(RUNS.c.owner == owner)

        async def delete_(connection: AsyncConnection) -> None:
            result = await connection.execute(query)
            if result.rowcount == 0:
                raise NotFound(f"run '{run_id}' not found")

        await self._writer.write(delete_)
        self.signals.run_ended(run_id, None)

    # --- threads -------------------------------------------------------------------------------------------

    @runs_to_completion
    async def get_thread(self, thread_id: str, *, owner: str | None = None) -> ThreadRecord:
        """One thread; NotFound when missing or, with `owner`, someone else's."""
        thread_id = parse_uuid(thread_id, "thread_id", "thread")
        async with self.database.read() as session:
            return await load_thread(await session.connection(), thread_id, owner)

    @runs_to_completion
    async def list_threads(
        self, page_size: int = 0, page_token: str = "", *, owner: str | None = None
    ) -> tuple[list[ThreadRecord], str]:
        """One page of threads, most recently active first (by keyset, as list_runs), and the next page's token."""
        limit = checked_page_size(page_size)
        query = select(THREADS).order_by(THREADS.c.updated_at.desc(), THREADS.c.id.desc()).limit(limit + 1)
        if owner is not None:
            query = query.where(THREADS.c.owner == owner)
        if page_token:
            query = query.where(threads_after(self.page_tokens, page_token, owner))
        async with self.database.read() as session:
            rows = (await session.execute(query)).mappings().all()
        page = [thread_record(row) for row in rows[:limit]]
        return page, thread_page_token(self.page_tokens, page[-1], owner) if len(rows) > limit else ""

    async def delete_thread(self, thread_id: str, *, owner: str | None = None) -> None:
        """Delete a thread with its runs and their steps (ON DELETE CASCADE); as delete_run for each run."""
        thread_id = parse_uuid(thread_id, "thread_id", "thread")

        async def delete_(connection: AsyncConnection) -> list[str]:
            await load_thread(connection, thread_id, owner)
            run_ids = list((await connection.execute(select(RUNS.c.id).where(RUNS.c.thread_id == thread_id))).scalars())
            await connection.execute(delete(THREADS).where(THREADS.c.id == thread_id))
            return run_ids

        for run_id in await self._writer.write(delete_):
            self.signals.run_ended(run_id, None)

    @runs_to_completion
    async def thread_history(self, run_id: str, max_turns: int = 0) -> ThreadHistory:
        """The turns of `run_id`'s thread before it, oldest first, with their steps: the latest `max_turns`
        (0: DEFAULT_HISTORY_TURNS) that fit in about MAX_HISTORY_BYTES; `omitted` counts the earlier ones."""
        run_id = parse_run_id(run_id)
        if not 0 <= max_turns <= MAX_HISTORY_TURNS:
            raise InvalidArgument(f"max_turns must be 0 (the default, {DEFAULT_HISTORY_TURNS}) to "
                                  f"{MAX_HISTORY_TURNS}, got {max_turns}")
        async with self.database.read() as session:
            connection = await session.connection()
            run = await load_run(connection, run_id)
            if not run["thread_id"]:
                return ThreadHistory([], 0)
            earlier = (RUNS.c.thread_id == run["thread_id"]) & (RUNS.c.thread_turn < run["thread_turn"])
            total = (await connection.execute(select(func.count()).where(earlier))).scalar_one()
            rows = (
                await connection.execute(
                    select(*RUN_COLUMNS)
                    .where(earlier)
                    .order_by(RUNS.c.thread_turn.desc())
                    .limit(max_turns or DEFAULT_HISTORY_TURNS)
                )
            ).mappings().all()
            steps_by_run: dict[str, list[Values]] = {row["id"]: [] for row in rows}
            if rows:
                result = await connection.execute(
                    select(STEPS).where(STEPS.c.run_id.in_(list(steps_by_run))).order_by(STEPS.c.sequence)
                )
                for step in result.mappings():
                    steps_by_run[step["run_id"]].append(step)
        turns: list[RunRecord] = []
        size = 0
        for row in rows:  # newest first: what does not fit is the oldest
            size += sum(len(json.dumps(step["content"])) for step in steps_by_run[row["id"]]) + len(row["user_query"])
            if turns and size > MAX_HISTORY_BYTES:
                break
            turns.append(run_record(row, steps_by_run[row["id"]]))
        turns.reverse()
        return ThreadHistory(turns, total - len(turns))
