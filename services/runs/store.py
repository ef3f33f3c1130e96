"""RunStore: the runs service's domain layer over the database (no gRPC here).

It returns plain dataclasses, raises `services.common.errors` exceptions with messages a caller can act on,
and signals watchers (`RunSignals.notify`) after every committed change.
"""

import base64
import dataclasses
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, or_, select
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from services.common.database import Database, runs_to_completion, utcnow
from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.runs.models import (
    COMPLETED,
    FAILED,
    FINAL_STATES,
    RUN_STATES,
    RUNNING,
    STEP_TYPES,
    RunRow,
    RunStepRow,
)
from services.runs.watch import RunSignals

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: Steps one AppendSteps call may carry; a bound on the size of one write transaction.
MAX_STEPS_PER_APPEND = 1000
#: How often an append is retried when a concurrent writer took the same sequence first.
APPEND_ATTEMPTS = 3

INVALID_PAGE_TOKEN = "page_token is not valid for this request; start again without a page_token"


@dataclass(frozen=True)
class Usage:
    """Token counts of a run, summed over its model calls."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True)
class NewStep:
    """A step to append. `sequence` 0 means "the next one"; `content` must be JSON-serialisable."""

    type: str
    content: dict[str, Any]
    sequence: int = 0
    duration_ms: float | None = None


@dataclass(frozen=True)
class StepRecord:
    """A stored step."""

    run_id: str
    sequence: int
    type: str
    content: dict[str, Any]
    created_at: datetime
    duration_ms: float | None


@dataclass(frozen=True)
class RunRecord:
    """A stored run; `steps` is filled only by `RunStore.get_run`."""

    id: str
    user_query: str
    state: str
    model: str
    created_at: datetime
    completed_at: datetime | None
    error_message: str
    usage: Usage
    metadata: dict[str, str]
    step_count: int
    steps: list[StepRecord] = field(default_factory=list)


def parse_run_id(run_id: str) -> str:
    """The canonical form of a run id (a UUID); InvalidArgument when it is empty or not a UUID."""
    if not run_id:
        raise InvalidArgument("run_id is required")
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        raise InvalidArgument(f"run_id {run_id[:100]!r} is not a valid run id") from None


def _check_run_state(state: str) -> None:
    if state not in RUN_STATES:
        raise InvalidArgument(f"unknown run state {state!r}; use one of {', '.join(RUN_STATES)}")


def _checked_step(position: int, step: NewStep) -> NewStep:
    """`step` validated, with its content in the form the database hands back (for idempotency checks)."""
    if step.type not in STEP_TYPES:
        raise InvalidArgument(f"step {position} has unknown type {step.type!r}; use one of {', '.join(STEP_TYPES)}")
    if step.sequence < 0:
        raise InvalidArgument(f"step {position} has sequence {step.sequence}; use 0 (assign the next) or >= 1")
    if step.duration_ms is not None and step.duration_ms < 0:
        raise InvalidArgument(f"step {position} has a negative duration ({step.duration_ms} ms)")
    try:
        # Round-tripped so that a retried step compares equal to what a JSON column returned (tuples become
        # lists and so on), and so that content that cannot be stored fails here with a clear message.
        content = json.loads(json.dumps(step.content, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"step {position} content is not JSON-serialisable: {exc}") from None
    if not isinstance(content, dict):
        raise InvalidArgument(f"step {position} content must be a JSON object")
    return dataclasses.replace(step, content=content)


def _checked_usage(usage: Usage) -> Usage:
    """`usage` validated; a missing total is the sum of prompt and completion tokens."""
    if min(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) < 0:
        raise InvalidArgument(f"usage token counts must be >= 0, got {usage}")
    if usage.total_tokens == 0:
        return dataclasses.replace(usage, total_tokens=usage.prompt_tokens + usage.completion_tokens)
    return usage


def _step_record(row: RunStepRow) -> StepRecord:
    return StepRecord(
        run_id=row.run_id,
        sequence=row.sequence,
        type=row.type,
        content=row.content,
        created_at=row.created_at,
        duration_ms=row.duration_ms,
    )


def _run_record(row: RunRow, steps: Sequence[RunStepRow] = ()) -> RunRecord:
    return RunRecord(
        id=row.id,
        user_query=row.user_query,
        state=row.state,
        model=row.model,
        created_at=row.created_at,
        completed_at=row.completed_at,
        error_message=row.error_message,
        usage=Usage(row.prompt_tokens, row.completion_tokens, row.total_tokens),
        metadata=dict(row.labels),
        step_count=row.step_count,
        steps=[_step_record(step) for step in steps],
    )


@dataclass(frozen=True)
class _PagePosition:
    """Where a ListRuns page ended: the last run's (created_at, id)."""

    created_at: datetime
    run_id: str


def _encode_page_token(last: RunRow, state: str | None) -> str:
    # The filter is part of the token: a position in one filtered listing is meaningless in another.
    payload = {"created_at": last.created_at.isoformat(), "id": last.id, "state": state or ""}
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode("ascii")


def _decode_page_token(token: str, state: str | None) -> _PagePosition:
    """The position a page token names; InvalidArgument when it is garbled or was made for another filter."""
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
        position = _PagePosition(datetime.fromisoformat(payload["created_at"]), str(uuid.UUID(payload["id"])))
        token_state = payload["state"]
    except (ValueError, KeyError, TypeError):  # binascii.Error and JSONDecodeError are ValueErrors
        raise InvalidArgument(INVALID_PAGE_TOKEN) from None
    if position.created_at.tzinfo is None or token_state != (state or ""):
        raise InvalidArgument(INVALID_PAGE_TOKEN)
    return position


def _older_than(position: _PagePosition) -> ColumnElement[bool]:
    """Runs after `position` in newest-first order (a keyset condition, served by ix_runs_created_at_id)."""
    return or_(
        RunRow.created_at < position.created_at,
        and_(RunRow.created_at == position.created_at, RunRow.id < position.run_id),
    )


def _checked_page_size(page_size: int) -> int:
    if page_size < 0:
        raise InvalidArgument(f"page_size must be >= 0, got {page_size}")
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


async def _load_run(session: AsyncSession, run_id: str, *, lock: bool = False, with_steps: bool = False) -> RunRow:
    """The run row; NotFound if missing. `lock` holds its row lock for the transaction (PostgreSQL; SQLite's
    BEGIN IMMEDIATE already serialises writers), so appenders and finishers of one run take turns."""
    query = select(RunRow).where(RunRow.id == run_id)
    if lock:
        query = query.with_for_update()
    if with_steps:
        query = query.options(selectinload(RunRow.steps))
    row = await session.scalar(query)
    if row is None:
        raise NotFound(f"run '{run_id}' not found")
    return row


class RunStore:
    """Runs and their steps in a database, with change signals for watchers."""

    def __init__(self, db: Database, signals: RunSignals) -> None:
        self.database = db
        self.signals = signals

    @runs_to_completion
    async def create_run(self, user_query: str, model: str = "", metadata: dict[str, str] | None = None) -> RunRecord:
        """Create a RUNNING run for `user_query` (which must not be blank)."""
        if not user_query.strip():
            raise InvalidArgument("user_query is required and must not be blank")
        row = RunRow(
            id=str(uuid.uuid4()),
            user_query=user_query,
            state=RUNNING,
            model=model,
            created_at=utcnow(),
            completed_at=None,
            error_message="",
            prompt_tokens=0,
            completion_tokens=0,
            total_tokens=0,
            labels=dict(metadata or {}),
            step_count=0,
        )
        async with self.database.write() as session:
            session.add(row)
        return _run_record(row)

    @runs_to_completion
    async def append_steps(self, run_id: str, steps: Sequence[NewStep]) -> list[StepRecord]:
        """Append `steps` to a RUNNING run in one transaction and return them as stored.

        Per step: sequence 0 takes the next one; the next one is stored; an already stored sequence with
        the same type and content is an idempotent retry (the stored step is returned); with other content
        it is AlreadyExists; a sequence past the next one is a gap (FailedPrecondition).
        """
        run_id = parse_run_id(run_id)
        if not steps:
            raise InvalidArgument("steps is empty; send at least one step")
        if len(steps) > MAX_STEPS_PER_APPEND:
            raise InvalidArgument(f"at most {MAX_STEPS_PER_APPEND} steps per append, got {len(steps)}")
        checked = [_checked_step(position, step) for position, step in enumerate(steps, 1)]
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self.database.write() as session:
                    stored = await self._append_in(session, run_id, checked)
                break
            except IntegrityError:
                # Another writer stored one of our sequences first (the run's row lock should prevent it;
                # the unique (run_id, sequence) key is the backstop). A retry sees its steps: sequence 0
                # moves on to the next free one, an explicit sequence turns into a retry or a conflict.
                if attempt >= APPEND_ATTEMPTS:
                    raise AlreadyExists(
                        f"concurrent appends to run '{run_id}' kept taking the same sequences; retry"
                    ) from None
        self.signals.notify(run_id)
        return stored

    async def _append_in(self, session: AsyncSession, run_id: str, steps: list[NewStep]) -> list[StepRecord]:
        run = await _load_run(session, run_id, lock=True)
        if run.state != RUNNING:
            raise FailedPrecondition(f"run '{run_id}' is {run.state}; steps can only be appended to a RUNNING run")
        retried = [step.sequence for step in steps if 0 < step.sequence <= run.step_count]
        known: dict[int, RunStepRow] = {}
        if retried:
            rows = await session.scalars(
                select(RunStepRow).where(RunStepRow.run_id == run_id, RunStepRow.sequence.in_(retried))
            )
            known = {row.sequence: row for row in rows}
        now = utcnow()
        result: list[RunStepRow] = []
        for step in steps:
            next_sequence = run.step_count + 1
            sequence = step.sequence or next_sequence
            if sequence > next_sequence:
                raise FailedPrecondition(
                    f"step sequence {sequence} would leave a gap in run '{run_id}': the next sequence is "
                    f"{next_sequence} (or send 0 to have it assigned)"
                )
            if sequence < next_sequence:
                stored = known[sequence]
                if stored.type != step.type or stored.content != step.content:
                    raise AlreadyExists(
                        f"step {sequence} of run '{run_id}' is already stored with other content "
                        f"({stored.type}); resend it unchanged to retry, or append new steps with "
                        f"sequence 0 or {next_sequence}"
                    )
                result.append(stored)
                continue
            row = RunStepRow(
                run_id=run_id,
                sequence=sequence,
                type=step.type,
                content=step.content,
                created_at=now,
                duration_ms=step.duration_ms,
            )
            session.add(row)
            known[sequence] = row
            run.step_count = sequence
            result.append(row)
        await session.flush()
        return [_step_record(row) for row in result]

    @runs_to_completion
    async def finish_run(
        self, run_id: str, state: str, error_message: str = "", usage: Usage | None = None
    ) -> RunRecord:
        """Move a RUNNING run to `state` (completed, failed or cancelled); FAILED needs an error_message."""
        run_id = parse_run_id(run_id)
        if state not in FINAL_STATES:
            raise InvalidArgument(f"a run can only be finished as {', '.join(FINAL_STATES)}, got {state!r}")
        if state == FAILED and not error_message.strip():
            raise InvalidArgument("error_message is required to finish a run as failed; say what went wrong")
        if state == COMPLETED and error_message:
            raise InvalidArgument("error_message must be empty for a completed run")
        usage = _checked_usage(usage or Usage())
        async with self.database.write() as session:
            run = await _load_run(session, run_id, lock=True)
            if run.state != RUNNING:
                raise FailedPrecondition(f"run '{run_id}' is already {run.state}; only a RUNNING run can be finished")
            run.state = state
            run.error_message = error_message
            run.completed_at = utcnow()
            run.prompt_tokens = usage.prompt_tokens
            run.completion_tokens = usage.completion_tokens
            run.total_tokens = usage.total_tokens
            record = _run_record(run)
        self.signals.notify(run_id)
        return record

    @runs_to_completion
    async def get_run(self, run_id: str, with_steps: bool = True) -> RunRecord:
        """One run, with its steps in sequence order unless `with_steps` is False."""
        run_id = parse_run_id(run_id)
        async with self.database.read() as session:
            run = await _load_run(session, run_id, with_steps=with_steps)
            return _run_record(run, run.steps if with_steps else ())

    @runs_to_completion
    async def steps_after(self, run_id: str, after_sequence: int, limit: int) -> tuple[RunRecord, list[StepRecord]]:
        """The run (without steps) and up to `limit` of its steps with a sequence above `after_sequence`.

        The run is read BEFORE the steps: if it is finished then, no step can follow the ones read.
        """
        run_id = parse_run_id(run_id)
        async with self.database.read() as session:
            run = await _load_run(session, run_id)
            rows = await session.scalars(
                select(RunStepRow)
                .where(RunStepRow.run_id == run_id, RunStepRow.sequence > after_sequence)
                .order_by(RunStepRow.sequence)
                .limit(limit)
            )
            return _run_record(run), [_step_record(row) for row in rows]

    @runs_to_completion
    async def list_runs(
        self, page_size: int = 0, page_token: str = "", state: str | None = None
    ) -> tuple[list[RunRecord], str]:
        """One page of runs (without steps), newest first, and the token of the next page ("" on the last).

        `state` None lists every state. Pagination is by keyset, so runs created while paging neither
        shift nor repeat the pages that follow.
        """
        limit = _checked_page_size(page_size)
        if state is not None:
            _check_run_state(state)
        query = select(RunRow).order_by(RunRow.created_at.desc(), RunRow.id.desc()).limit(limit + 1)
        if state is not None:
            query = query.where(RunRow.state == state)
        if page_token:
            query = query.where(_older_than(_decode_page_token(page_token, state)))
        async with self.database.read() as session:
            rows = list(await session.scalars(query))
        page = rows[:limit]
        next_token = _encode_page_token(page[-1], state) if len(rows) > limit else ""
        return [_run_record(row) for row in page], next_token

    @runs_to_completion
    async def delete_run(self, run_id: str) -> None:
        """Delete a run and its steps (ON DELETE CASCADE); watchers of it end with NotFound."""
        run_id = parse_run_id(run_id)
        async with self.database.write() as session:
            result = await session.execute(delete(RunRow).where(RunRow.id == run_id))
            if not isinstance(result, CursorResult) or result.rowcount == 0:
                raise NotFound(f"run '{run_id}' not found")
        self.signals.notify(run_id)
