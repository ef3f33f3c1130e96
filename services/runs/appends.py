"""Where a step is persisted: AppendSteps in the run store (`StepAppends`, a part of `RunStore`), in batches. One
transaction of the store's writer checks and writes the appends of many runs together (`_append_batch`, which
`plan_append` serves); no gRPC here.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from services.common.db.database import UtcDateTime, utcnow
from services.common.db.group_commit import Write
from services.common.errors import AlreadyExists, DomainError, FailedPrecondition, InvalidArgument, NotFound
from services.common.run_vocabulary import RUNNING
from services.runs import metrics, pg_appends
from services.runs.checks import check_lease_epoch, checked_step, parse_run_id
from services.runs.leases import NO_EPOCH, check_fence
from services.runs.parts import StoreParts
from services.runs.price_book import ModelPrice
from services.runs.records import NewStep, StepRecord
from services.runs.rows import RUNS, STEPS, Values, step_record, step_values


class Append(Write[list[StepRecord]]):
    """An AppendSteps waiting for the writer (see `_append_batch`)."""

    __slots__ = ("epoch", "run_id", "steps")

    def __init__(self, run_id: str, steps: list[NewStep], epoch: int) -> None:
        super().__init__(APPEND)
        self.run_id = run_id
        self.steps = steps
        self.epoch = epoch


APPEND = "append"


class Progress:
    """What an append batch tracks of one run: its state and lease, last sequence and usage so far."""

    __slots__ = (
        "changed", "completion_tokens", "cost_nanos", "lease", "lease_expires_at", "lease_seconds", "model",
        "prompt_tokens", "state", "step_count", "unpriced_calls",
    )

    def __init__(self, row: Values) -> None:
        #: The run's row as read (its id, state, executor_id and lease_epoch among others), for `check_fence`.
        self.lease = row
        self.lease_seconds: float = row["lease_seconds"]
        self.lease_expires_at: datetime | None = row["lease_expires_at"]
        self.state: str = row["state"]
        self.step_count: int = row["step_count"]
        self.prompt_tokens: int = row["prompt_tokens"]
        self.completion_tokens: int = row["completion_tokens"]
        self.model: str = row["model"]
        self.cost_nanos: int = row["cost_nanos"]
        self.unpriced_calls: int = row["unpriced_calls"]
        self.changed = False

    def apply(self, planned: "Planned") -> None:
        if planned.new_rows:
            self.step_count = planned.step_count
            self.prompt_tokens += planned.prompt_tokens
            self.completion_tokens += planned.completion_tokens
            self.cost_nanos += planned.cost_nanos
            self.unpriced_calls += planned.unpriced_calls
            self.changed = True


@dataclass
class Planned:
    """One append, checked: the rows it returns (stored before or new), the new ones, and what they add."""

    rows: list[dict[str, Any]]
    new_rows: list[dict[str, Any]]
    step_count: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_nanos: int = 0
    unpriced_calls: int = 0


def plan_append(
    append: Append,
    run: Progress,
    stored: dict[tuple[str, int], dict[str, Any]],
    now: datetime,
    prices: Mapping[str, ModelPrice],
) -> Planned:
    """Check one append against its run as the batch has left it; raises a DomainError and changes nothing if
    any of its steps is refused. Its model calls are priced by `prices` (services/runs/prices.py)."""
    run_id, steps = append.run_id, append.steps
    check_fence(run.lease, append.epoch, "append")
    if run.state != RUNNING:
        raise FailedPrecondition(f"run '{run_id}' is {run.state}; steps can only be appended to a RUNNING run")
    planned = Planned([], [], run.step_count)
    for step in steps:
        next_sequence = planned.step_count + 1
        sequence = step.sequence or next_sequence
        if sequence > next_sequence:
            raise FailedPrecondition(
                f"step sequence {sequence} would leave a gap in run '{run_id}': the next sequence is "
                f"{next_sequence} (or send 0 to have it assigned)"
            )
        if sequence < next_sequence:
            previous = stored.get((run_id, sequence)) or next(
                row for row in planned.new_rows if row["sequence"] == sequence
            )
            if previous["type"] != step.type or previous["content"] != as_stored(step.content):
                raise AlreadyExists(
                    f"step {sequence} of run '{run_id}' is already stored with other content "
                    f"({previous['type']}); resend it unchanged to retry, or append new steps with "
                    f"sequence 0 or {next_sequence}"
                )
            planned.rows.append(previous)
            continue
        row = step_values(run_id, sequence, step, now)
        if (call := step.model_call) is not None:
            planned.prompt_tokens += call.usage.prompt_tokens
            planned.completion_tokens += call.usage.completion_tokens
            row["call_model"] = model = call.model or run.model
            price = prices.get(model)
            if price is None:
                row["cost_nanos"] = None
                planned.unpriced_calls += 1
                metrics.MODEL_CALLS_UNPRICED.labels(model).inc()
            else:
                row["cost_nanos"] = price.cost_nanos(
                    call.usage.prompt_tokens, call.cached_prompt_tokens, call.usage.completion_tokens
                )
                planned.cost_nanos += row["cost_nanos"]
                metrics.MODEL_COST.labels(model).inc(row["cost_nanos"] / 1e9)
        planned.rows.append(row)
        planned.new_rows.append(row)
        planned.step_count = sequence
    return planned


def as_stored(content: dict[str, Any]) -> Any:
    """`content` as a JSON column hands it back (tuples become lists), to compare a retried step with its first
    attempt. Only retries pay for it."""
    return json.loads(json.dumps(content))


def stored_steps(
    connection: Connection, keys: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], dict[str, Any]]:
    """The stored steps with these (run_id, sequence) keys."""
    by_run: dict[str, list[int]] = {}
    for run_id, sequence in keys:
        by_run.setdefault(run_id, []).append(sequence)
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for run_id, sequences in by_run.items():
        rows = connection.execute(
            select(STEPS).where(STEPS.c.run_id == run_id, STEPS.c.sequence.in_(sequences))
        )
        for row in rows.mappings():
            found[(run_id, row["sequence"])] = dict(row)
    return found


#: Steps one AppendSteps call may carry; a bound on the size of one write transaction.
MAX_STEPS_PER_APPEND = 1000
#: How often an append is retried when a concurrent writer took the same sequence first.
APPEND_ATTEMPTS = 3


class StepAppends(StoreParts):
    """The run store's AppendSteps (see the module docstring)."""

    async def append_steps(
        self, run_id: str, steps: Sequence[NewStep], *, epoch: int = NO_EPOCH
    ) -> list[StepRecord]:
        """Append `steps` to a RUNNING run, all or none, and return them as stored; under the lease of `epoch`
        (FailedPrecondition "lease lost" when the run is at another one; NO_EPOCH: not checked).

        Per step: sequence 0 takes the next one; the next one is stored; an already stored sequence with
        the same type and content is an idempotent retry (the stored step is returned); with other content
        it is AlreadyExists; a sequence past the next one is a gap (FailedPrecondition). A step's model call
        usage is added to the run's, so the run's usage is current while it goes.
        """
        run_id = parse_run_id(run_id)
        check_lease_epoch(epoch)
        if not steps:
            raise InvalidArgument("steps is empty; send at least one step")
        if len(steps) > MAX_STEPS_PER_APPEND:
            raise InvalidArgument(f"at most {MAX_STEPS_PER_APPEND} steps per append, got {len(steps)}")
        checked = [checked_step(position, step, self.limits) for position, step in enumerate(steps, 1)]
        attempt = 0
        while True:
            attempt += 1
            try:
                stored = await self._writer.submit(Append(run_id, checked, epoch))
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

    def _append_batch(self, connection: Connection, appends: Sequence[Write[Any]]) -> None:
        """The appends of a batch in four statements, whatever their number: read their runs, check every append
        against them in order (an append that fails changes nothing), insert all new steps, update the runs."""
        batch = [append for append in appends if isinstance(append, Append)]
        runs = _lock_progress(connection, sorted({append.run_id for append in batch}))
        stored: dict[tuple[str, int], dict[str, Any]] = {}  # steps already stored that a retry refers to
        retried = [
            (append.run_id, step.sequence)
            for append in batch
            if append.run_id in runs
            for step in append.steps
            if 0 < step.sequence <= runs[append.run_id].step_count
        ]
        if retried:
            stored = stored_steps(connection, retried)
        now = utcnow()
        prices = self.price_book.current(connection)
        new_rows: list[dict[str, Any]] = []
        for append in batch:
            run = runs.get(append.run_id)
            try:
                if run is None:
                    raise NotFound(f"run '{append.run_id}' not found")
                planned = plan_append(append, run, stored, now, prices)
            except DomainError as exc:
                append.fail(exc)
                continue
            run.apply(planned)
            for row in planned.new_rows:
                stored[(append.run_id, row["sequence"])] = row
            new_rows.extend(planned.new_rows)
            append.succeed([step_record(row) for row in planned.rows])
        if new_rows:
            if connection.dialect.name == "postgresql":
                pg_appends.insert_steps(connection, new_rows)
            else:
                connection.execute(_INSERT_STEPS, new_rows)
            _store_progress(connection, runs, now)


#: Built once: a statement made per batch cost its construction and its cache key (a walk of the statement) on
#: every batch, a tenth of the writer's time in py-spy.
_READ_PROGRESS = (
    select(
        RUNS.c.id,
        RUNS.c.state,
        RUNS.c.executor_id,
        RUNS.c.lease_epoch,
        RUNS.c.step_count,
        RUNS.c.prompt_tokens,
        RUNS.c.completion_tokens,
        RUNS.c.lease_seconds,
        RUNS.c.lease_expires_at,
        RUNS.c.model,
        RUNS.c.cost_nanos,
        RUNS.c.unpriced_calls,
    )
    .where(RUNS.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(RUNS.c.id)
    .with_for_update()
)
_INSERT_STEPS = insert(STEPS)
_WRITE_PROGRESS = (
    update(RUNS)
    .where(RUNS.c.id == bindparam("run"))
    .values(
        step_count=bindparam("steps"),
        prompt_tokens=bindparam("prompt"),
        completion_tokens=bindparam("completion"),
        total_tokens=bindparam("prompt") + bindparam("completion"),
        cost_nanos=bindparam("cost"),
        unpriced_calls=bindparam("unpriced"),
        lease_expires_at=bindparam("lease", type_=UtcDateTime()),
    )
)


def _lock_progress(connection: Connection, run_ids: list[str]) -> dict[str, Progress]:
    """The progress of the runs `run_ids` (sorted: PostgreSQL row locks in one order), their rows locked."""
    if connection.dialect.name == "postgresql":
        return {row["id"]: Progress(row) for row in pg_appends.lock_progress(connection, run_ids)}
    return {row.id: Progress(row._mapping) for row in connection.execute(_READ_PROGRESS, {"ids": run_ids})}


#: An append renews its run's lease once this share of the lease has passed since it was last renewed.
LEASE_RENEWAL_SHARE = 0.1


def renewed_lease(run: Progress, now: datetime) -> datetime:
    """The lease expiry an append leaves its run with: a full lease from `now`, unless the run's lease is still
    within LEASE_RENEWAL_SHARE of that, which it keeps. Why: PostgreSQL indexes the lease (for the reaper), and an
    UPDATE that changes an indexed column cannot be HOT, so every index of runs (the two GIN indexes of search
    among them) got a new entry on every append; with the lease unchanged, an append that adds no usage (a step
    that is not a model call) updates the row in place. A working run's lease stays at least 90% of a full one,
    the margin a renewal delayed under load needs."""
    lease = timedelta(seconds=run.lease_seconds)
    renewed, kept = now + lease, run.lease_expires_at
    if kept is not None and renewed - lease * LEASE_RENEWAL_SHARE < kept <= renewed:
        return kept
    return renewed


def _store_progress(connection: Connection, runs: dict[str, Progress], now: datetime) -> None:
    """Write the step counts and usage of the runs a batch changed, in one executemany UPDATE."""
    # A run its engine is writing to is plainly alive: the append renews its lease too, so a renewal
    # delayed under load (in either process) does not get a working run reaped.
    changed = [
        {
            "run": id_,
            "steps": run.step_count,
            "prompt": run.prompt_tokens,
            "completion": run.completion_tokens,
            "cost": run.cost_nanos,
            "unpriced": run.unpriced_calls,
            "lease": renewed_lease(run, now),
        }
        for id_, run in runs.items()
        if run.changed
    ]
    if connection.dialect.name == "postgresql":
        pg_appends.store_progress(connection, changed)
        return
    connection.execute(_WRITE_PROGRESS, changed)
