"""RunStore: the runs service's domain layer over the database (no gRPC here), and a run's lifecycle: create,
begin, finish, cancel, delete.

It takes and returns the plain types of `services.runs.records`, checks every input (`services.runs.checks`),
raises `services.common.errors` exceptions with messages a caller can act on, and tells watchers
(`RunSignals`) and engines (`ExecutorNotices`) about every committed change.

The run lifecycle it enforces: created QUEUED or RUNNING under an engine's lease -> begun (QUEUED -> RUNNING)
-> steps appended -> finished COMPLETED, FAILED or CANCELLED. A cancel is desired state: it is written here
and the engine holding the lease observes it. A lease that runs out ends the run FAILED "interrupted" (or
CANCELLED, when a cancel was pending) through `reap_expired`. Leases are fenced by an epoch (`leases.check_fence`):
taking a lease (create, resume) increments the run's epoch, and an engine's write that carries an older one is
refused, so an engine that lost its lease while another took the run finds every later write refused.

The rest of the store is in parts of its own, one per concern, that `RunStore` is made of: appending steps
(`appends.StepAppends`), leases (`leases.RunLeases`), human approval (`approvals.RunApprovals`), reading runs
(`queries.RunQueries`), threads (`threads.ThreadStore`), the bulk import of ended runs
(`imports.RunImports`), feedback scores (`scores.RunScores`), retention (`retention.RunRetention`), model prices
(`prices.RunPrices`), usage summaries (`usage_summary.RunUsage`) and budgets (`budgets.RunBudgets`);
`parts.StoreParts` is the state they share.
"""

import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from services.common.checks import check_text
from services.common.db.database import Database, utcnow
from services.common.db.group_commit import GroupCommit, Write, each_in_savepoint
from services.common.errors import AlreadyExists, FailedPrecondition, NotFound
from services.common.pages import PageTokens
from services.common.run_vocabulary import ACTIVE_STATES, CANCELLED, COMPLETED, LIVE_STATES, QUEUED, RUNNING
from services.runs.appends import APPEND, StepAppends
from services.runs.approvals import RunApprovals
from services.runs.budget_book import Budget, BudgetBook
from services.runs.budgets import RunBudgets, Start, start_refused
from services.runs.checks import (
    MAX_CANCEL_REASON_CHARS,
    StoreLimits,
    check_executor_id,
    check_finish,
    check_lease_epoch,
    checked_new_run,
    parse_run_id,
    request_fingerprint,
)
from services.runs.executors import ExecutorNotices
from services.runs.imports import RunImports
from services.runs.leases import NO_EPOCH, RunLeases, check_fence
from services.runs.price_book import PriceBook
from services.runs.prices import RunPrices
from services.runs.queries import RunQueries
from services.runs.records import CancelNotice, NewRun, RunRecord
from services.runs.retention import RunRetention
from services.runs.rows import (
    CANCELLED_CODE,
    COLUMN_NAMES,
    RUN_COLUMNS,
    RUNS,
    STEPS,
    Cancelled,
    Values,
    add_error_step,
    cancel_message,
    end_run,
    limit_values,
    load_run,
    request_cancel,
    run_record,
    step_values,
    update_run,
)
from services.runs.scores import RunScores
from services.runs.signals import RunSignals
from services.runs.threads import ThreadStore, earlier_live_turn, insert_new_threads, new_thread, place_run
from services.runs.usage_summary import RunUsage


def _run_values(new: NewRun, fingerprint: str, now: datetime) -> dict[str, Any]:
    """The row of the run `new` creates, as created with its first steps (RUNNING) or QUEUED."""
    limits = new.limits
    values: dict[str, Any] = {
            "id": str(uuid.uuid4()),
        "owner": new.owner,
        "agent_id": new.agent_id,
        "agent_revision": new.agent_revision,
        "workflow_id": new.workflow_id,
        "workflow_revision": new.workflow_revision,
        "trace_id": new.trace_id,
        "trace_span_id": new.trace_span_id,
        "retention_hold": False,
        "cost_nanos": 0,
        "unpriced_calls": 0,
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
        # The first lease taken on the run.
        "lease_epoch": 1,
        "attempts": 0,
        "handbacks": 0,
        "handed_back_by": "",
        "cancel_requested_at": None,
        "cancel_reason": "",
        **limit_values(limits),
    }
    values["total_tokens"] = values["prompt_tokens"] + values["completion_tokens"]
    return values


def _place_on_thread(
    connection: Connection, new: NewRun, row: dict[str, Any], now: datetime
) -> list[dict[str, Any]]:
    """Give the run `row` its thread and turn (none for a workflow run); returns the runs in progress on that
    thread, which the new run has to wait for (or reject, or interrupt)."""
    if new.workflow_id:
        # A workflow run is not a turn of a conversation.
        row["thread_id"], row["thread_turn"] = None, None
        return []
    place = place_run(connection, new.thread_id, new.owner, new.user_query, now, RUN_COLUMNS)
    row["thread_id"], row["thread_turn"] = place.thread_id, place.turn
    return list(place.live)


def _wait_for_earlier_turns(
    connection: Connection, new: NewRun, row: dict[str, Any], live: list[dict[str, Any]]
) -> list[Cancelled]:
    """Apply `new.multitask` to a run whose thread has the `live` runs in progress: refuse it ("reject"), or make
    it QUEUED without steps, and for "interrupt" cancel the live runs too; returns the runs cancelled."""
    if new.multitask == "reject":
        raise FailedPrecondition(
            f"thread '{row['thread_id']}' has a run in progress (run '{live[0]['id']}', "
            f"{live[0]['state']}); wait for it to end or cancel it, or start this run with "
            "multitask_strategy ENQUEUE (after it) or INTERRUPT (cancel it)"
        )
    # It waits for the earlier turns, so it cannot have begun: QUEUED, its steps recorded at BeginRun.
    row.update(state=QUEUED, started_at=None, step_count=0, prompt_tokens=0, completion_tokens=0, total_tokens=0)
    if new.multitask == "interrupt":
        reason = f"interrupted by run {row['id']} on its thread (multitask_strategy INTERRUPT)"
        return [request_cancel(connection, run, reason) for run in live]
    return []


class Create(Write[tuple[RunRecord, list[Cancelled]]]):
    """A create_run waiting for the writer, with its run's row and first steps (see `RunStore._create_batch`); its
    `work` is the create alone, in a savepoint of its own, for what the batch does not take together."""

    __slots__ = ("new", "steps", "values")

    def __init__(
        self,
        new: NewRun,
        values: dict[str, Any],
        steps: list[dict[str, Any]],
        work: Callable[[Connection], tuple[RunRecord, list[Cancelled]]],
    ) -> None:
        super().__init__(CREATE, work)
        self.new = new
        self.values = values
        self.steps = steps


CREATE = "create"


#: Built once: `insert(RUNS).values(row)` made a statement of the row's values on every create (a bind parameter
#: and a cache key per column), a quarter of the writer thread's time in py-spy with 6,000 creates at once; the row
#: as parameters compiles once per set of columns.
_INSERT_RUN = insert(RUNS)
_INSERT_STEPS = insert(STEPS)
_STORED_REQUEST_IDS = select(RUNS.c.request_id).where(RUNS.c.request_id.in_(bindparam("ids", expanding=True)))


class RunStore(
    StepAppends, RunLeases, RunApprovals, RunQueries, ThreadStore, RunImports, RunScores, RunRetention, RunPrices,
    RunUsage, RunBudgets,
):
    """Runs and their steps in a database, with change signals for watchers and notices for engines.

    Every write goes through one `GroupCommit` writer: the appends of many runs share a transaction and an
    INSERT (`StepAppends._append_batch`), so do the creates of new chats (`_create_batch`), and every other write
    runs in a savepoint of its own within the batch.
    """

    # --- the lifecycle -------------------------------------------------------------------------------------

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
        self.price_book = PriceBook()
        self.budget_book = BudgetBook()
        self._writer = GroupCommit(db, {APPEND: self._append_batch, CREATE: self._create_batch})

    async def close(self) -> None:
        """Commit the writes still queued and stop the writer."""
        await self._writer.close()

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
        values = _run_values(new, fingerprint, now)
        steps = [step_values(values["id"], step.sequence, step, now) for step in new.steps]

        def create(connection: Connection) -> tuple[RunRecord, list[Cancelled]]:
            return self._insert_run(connection, new, fingerprint, now, values, steps)

        try:
            record, cancelled = await self._writer.submit(Create(new, values, steps, create))
        except IntegrityError:
            # Another runs replica created a run with the same request id first: answer as its retry would.
            async with self.database.read() as session:
                connection = await session.connection()
                existing = await connection.run_sync(self._by_request_id, new.request_id, fingerprint, len(steps))
            if existing is None:
                raise
            return existing
        for interrupted in cancelled:
            self._announce(interrupted)
        if record.steps:
            self.signals.steps_stored(record.id, record.steps)
        return record

    def _insert_run(
        self,
        connection: Connection,
        new: NewRun,
        fingerprint: str,
        now: datetime,
        values: dict[str, Any],
        steps: list[dict[str, Any]],
    ) -> tuple[RunRecord, list[Cancelled]]:
        """create_run's transaction: the run a retry names, or the new run placed on its thread and inserted
        with its first steps (none when it waits for earlier turns), and the runs it interrupted."""
        row, row_steps = dict(values), steps
        # The lease runs from when the store records the run, not from when the request arrived: a create
        # that waited in a deep write queue must not start with its lease half gone.
        row["lease_expires_at"] = utcnow() + timedelta(seconds=new.lease_seconds)
        if new.request_id:
            existing = self._by_request_id(connection, new.request_id, fingerprint, len(steps))
            if existing is not None:
                return existing, []
        self.refuse_if_spent(connection, new.owner, new.agent_id)
        cancelled = []
        live = _place_on_thread(connection, new, row, now)
        if live:
            cancelled = _wait_for_earlier_turns(connection, new, row, live)
            row_steps = []
        connection.execute(_INSERT_RUN, {COLUMN_NAMES.get(k, k): v for k, v in row.items()})
        if row_steps:
            connection.execute(_INSERT_STEPS, row_steps)
        return run_record(row, row_steps), cancelled

    def _create_batch(self, connection: Connection, writes: Sequence[Write[Any]]) -> None:
        """The creates of a batch: those that start a thread of their own (or are workflow runs) with a new
        request id, checked and inserted together in a few statements (one lookup of their request ids, one read
        of each budget's spend, one executemany each for their threads, runs and first steps); the others each
        through `_insert_run` in a savepoint of its own, as each create went before.

        Why: a create alone was a savepoint and several statements, so the store created about 200 runs/s in a
        burst of new chats (docs/performance.md, "Issue 22: admission ahead of execution").

        The answers are those of the creates one by one, in arrival order: the creates taken together cannot see
        one another but through their budgets, whose spend is carried from one to the next (a run created with
        model calls in its first steps spends them for the next create); what they would see of the others goes
        the one-by-one way: a request id already stored or used twice in the batch (all its creates, in order: the
        first creates, the next are its retries), and a create whose budget a create going alone before it shares.
        If the statements taken together fail (a concurrent replica stored one of the request ids first: the
        unique key), they roll back and each create of them runs alone too, which answers as it always did.
        """
        creates = [write for write in writes if isinstance(write, Create)]
        try:
            with connection.begin_nested():
                together, alone = self._sort_creates(connection, creates)
                refusals = self.spent_in_turn(connection, [
                    Start(budgets, create.values["total_tokens"], create.values["created_at"])
                    for create, budgets in together
                ])
                starting = [create for (create, _), refusal in zip(together, refusals, strict=True) if refusal is None]
                results = iter(self._insert_together(connection, starting) if starting else [])
        except Exception as exc:
            if isinstance(exc, DBAPIError) and exc.connection_invalidated:
                raise  # not the creates' fault: the whole batch is retried on a new connection
            # Anything unusual: each create alone answers as it always did.
            together, alone, refusals = [], creates, []
        for (create, _), refusal in zip(together, refusals, strict=True):
            if refusal is None:
                create.succeed(next(results))
            else:
                create.fail(start_refused(refusal))
        each_in_savepoint(connection, alone)

    def _sort_creates(
        self, connection: Connection, creates: list[Create]
    ) -> tuple[list[tuple[Create, list[Budget]]], list[Create]]:
        """`creates` split into those the batch takes together, with their budgets, and those that go alone
        (`_create_batch`)."""
        request_ids = [create.new.request_id for create in creates if create.new.request_id]
        times_used = Counter(request_ids)
        stored = set(connection.execute(_STORED_REQUEST_IDS, {"ids": request_ids}).scalars()) if request_ids else set()
        together: list[tuple[Create, list[Budget]]] = []
        alone: list[Create] = []
        shared: set[str] = set()  # the budgets of the creates that go alone so far
        for create in creates:
            new = create.new
            budgets = self.applying_budgets(connection, new.owner, new.agent_id)
            ids = {budget.id for budget in budgets}
            if (
                new.thread_id
                or (new.request_id and (times_used[new.request_id] > 1 or new.request_id in stored))
                or ids & shared
            ):
                alone.append(create)
                shared |= ids
            else:
                together.append((create, budgets))
        return together, alone

    @staticmethod
    def _insert_together(connection: Connection, creates: list[Create]) -> list[tuple[RunRecord, list[Cancelled]]]:
        """Insert the runs of `creates` (new threads, new request ids, within their budgets) with their threads and
        first steps, as `_insert_run` would one by one; their records."""
        expires = utcnow()  # each lease from when the store records its run, as in _insert_run
        threads: list[dict[str, Any]] = []
        runs: list[dict[str, Any]] = []
        steps: list[dict[str, Any]] = []
        results: list[tuple[RunRecord, list[Cancelled]]] = []
        for create in creates:
            new, row = create.new, dict(create.values)
            row["lease_expires_at"] = expires + timedelta(seconds=new.lease_seconds)
            if new.workflow_id:
                row["thread_id"], row["thread_turn"] = None, None  # not a turn of a conversation
            else:
                thread = new_thread(new.owner, new.user_query, row["created_at"])
                threads.append(thread)
                row["thread_id"], row["thread_turn"] = thread["id"], 1
            runs.append({COLUMN_NAMES.get(k, k): v for k, v in row.items()})
            steps.extend(create.steps)
            results.append((run_record(row, create.steps), []))
        if threads:
            insert_new_threads(connection, threads)
        connection.execute(_INSERT_RUN, runs)
        if steps:
            connection.execute(_INSERT_STEPS, steps)
        return results

    @staticmethod
    def _by_request_id(
        connection: Connection, request_id: str, fingerprint: str, with_steps: int = 0
    ) -> RunRecord | None:
        """The run a create with this request id made, with its first `with_steps` steps."""
        row = connection.execute(select(*RUN_COLUMNS).where(RUNS.c.request_id == request_id)).first()
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
            result = connection.execute(
                select(STEPS)
                .where(STEPS.c.run_id == row.id, STEPS.c.sequence <= with_steps)
                .order_by(STEPS.c.sequence)
            )
            steps = result.mappings().all()
        return run_record(row._mapping, steps)

    async def begin_run(self, run_id: str, executor_id: str, *, epoch: int = NO_EPOCH) -> RunRecord:
        """Move a QUEUED run to RUNNING for the engine that holds its lease, at `epoch` (again: a retry)."""
        run_id = parse_run_id(run_id)
        check_executor_id(executor_id)
        check_lease_epoch(epoch)

        def begin(connection: Connection) -> RunRecord:
            run = load_run(connection, run_id, lock=True)
            check_fence(run, epoch, "begin")
            if run["state"] not in LIVE_STATES or run["executor_id"] != executor_id:
                raise FailedPrecondition(
                    f"run '{run_id}' is {run['state']} and not held by executor {executor_id!r}; it cannot begin"
                )
            if run["state"] == QUEUED and run["thread_id"]:
                waiting_for = earlier_live_turn(connection, run["thread_id"], run["thread_turn"])
                if waiting_for is not None:
                    raise FailedPrecondition(
                        f"run '{run_id}' cannot begin before run '{waiting_for}', an earlier turn of its thread, "
                        "has ended"
                    )
            if run["state"] == QUEUED:
                update_run(connection, run, state=RUNNING, started_at=utcnow())
            return run_record(run)

        record = await self._writer.write(begin)
        self.signals.notify(run_id, record)
        return record

    async def finish_run(
        self, run_id: str, state: str, error_code: str = "", error_message: str = "", *, epoch: int = NO_EPOCH
    ) -> RunRecord:
        """End a QUEUED or RUNNING run as `state` (completed, failed or cancelled), for the engine holding its lease
        at `epoch` (FailedPrecondition "lease lost" when the run is at another one; NO_EPOCH: not checked).

        A cancel is final: a run whose cancel was recorded ends CANCELLED (with the cancel's `error` step) even when
        its engine reports it COMPLETED, as it may when the cancel reached the store through another replica while
        the engine wrote its answer. Finishing it again with the same state and code returns the run (a retry
        after a lost answer, the completion turned into a cancel included); a run that ended otherwise (reaped,
        cancelled) is FailedPrecondition.
        """
        run_id = parse_run_id(run_id)
        check_finish(state, error_code, error_message)
        check_lease_epoch(epoch)

        def finish(connection: Connection) -> tuple[RunRecord, bool]:
            run = load_run(connection, run_id, lock=True)
            check_fence(run, epoch, "finish")
            overruled = state == COMPLETED and run["cancel_requested_at"] is not None
            if run["state"] not in LIVE_STATES:
                if (run["state"] == state and run["error_code"] == error_code) or (
                    overruled and run["state"] == CANCELLED
                ):
                    return run_record(run), False
                raise FailedPrecondition(
                    f"run '{run_id}' already ended {run['state']}"
                    + (f" ({run['error_code']})" if run["error_code"] else "")
                    + "; only a QUEUED or RUNNING run can be finished"
                )
            if overruled:
                ending = (CANCELLED, CANCELLED_CODE, cancel_message(run["cancel_reason"]))
                add_error_step(connection, run, *ending[1:])
            else:
                ending = (state, error_code, error_message)
                if run["state"] == QUEUED and state != COMPLETED:
                    # A run that never began has no steps to end on; the store records the end the engine reports.
                    add_error_step(connection, run, error_code, error_message)
            end_run(connection, run, *ending)
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

        def cancel(connection: Connection) -> Cancelled:
            run = load_run(connection, run_id, lock=True, owner=owner)
            if run["state"] not in ACTIVE_STATES:
                raise FailedPrecondition(f"run '{run_id}' already ended {run['state']}; only a QUEUED, RUNNING or "
                                         "WAITING run can be cancelled")
            return request_cancel(connection, run, reason)

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

    async def delete_run(self, run_id: str, *, owner: str | None = None) -> None:
        """Delete a run and its steps (ON DELETE CASCADE); watchers of it end with NotFound, and the engine
        executing it finds its lease lost. `owner` (None: any) limits it to that user's runs."""
        run_id = parse_run_id(run_id)
        query = delete(RUNS).where(RUNS.c.id == run_id)
        if owner is not None:
            query = query.where(RUNS.c.owner == owner)

        def delete_(connection: Connection) -> None:
            result = connection.execute(query)
            if result.rowcount == 0:
                raise NotFound(f"run '{run_id}' not found")

        await self._writer.write(delete_)
        self.signals.run_ended(run_id, None)
