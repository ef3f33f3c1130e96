"""How runs and steps map to rows and back, and the row-level writes the store's operations share (no gRPC here).

`services.runs.store.RunStore` runs these inside its transactions: reading a run's row (optionally locked),
changing it, ending it with its `error` step, recording an approval's decision, asking a run to stop.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from services.common.db.database import utcnow
from services.common.errors import NotFound
from services.common.limits import RunLimits
from services.common.run_vocabulary import CANCELLED, LIVE_STATES, QUEUED, WAITING
from services.common.usage import Usage
from services.runs.models import RunRow, RunStepRow, RunToolRow
from services.runs.records import ModelCallStats, NewStep, RunRecord, StepRecord

INTERRUPTED = "interrupted"
CANCELLED_CODE = "cancelled"


RUNS = RunRow.__table__
STEPS = RunStepRow.__table__
RUN_TOOLS = RunToolRow.__table__
#: A run's columns as the store reads them; the `metadata` column is read as `labels` (its ORM name). Not the final
#: answer, which only search reads (in the database), and which may be long.
RUN_COLUMNS = [
    column.label("labels") if column.key == "metadata" else column
    for column in RUNS.columns
    if column.key != "final_answer"
]

class Values(Protocol):
    """A row read by column name: a SQLAlchemy RowMapping as a query returns it, or a dict copied from one to
    be changed. (Not Mapping[str, Any]: RowMapping's keys may also be columns, and Mapping's key type is
    invariant.)"""

    def __getitem__(self, key: str, /) -> Any: ...


def step_record(row: Values) -> StepRecord:
    model_call = None
    if row["prompt_tokens"] is not None:
        model_call = ModelCallStats(
            Usage(row["prompt_tokens"], row["completion_tokens"] or 0),
            row["time_to_first_token_ms"],
            row["model_latency_ms"],
            row["call_model"],
            row["cached_prompt_tokens"] or 0,
            row["cost_nanos"],
        )
    return StepRecord(
        run_id=row["run_id"],
        sequence=row["sequence"],
        type=row["type"],
        content=row["content"],
        created_at=row["created_at"],
        duration_ms=row["duration_ms"],
        model_call=model_call,
        node_id=row["node_id"],
    )


def step_values(run_id: str, sequence: int, step: NewStep, now: datetime) -> dict[str, Any]:
    """A run_steps row for `step`."""
    call = step.model_call
    return {
        "run_id": run_id,
        "sequence": sequence,
        "type": step.type,
        "content": step.content,
        "created_at": now,
        "duration_ms": step.duration_ms,
        "prompt_tokens": call.usage.prompt_tokens if call else None,
        "completion_tokens": call.usage.completion_tokens if call else None,
        "time_to_first_token_ms": call.time_to_first_token_ms if call else None,
        "model_latency_ms": call.latency_ms if call else None,
        "node_id": step.node_id,
        "call_model": call.model if call else "",
        "cached_prompt_tokens": call.cached_prompt_tokens if call else None,
        "cost_nanos": call.cost_nanos if call else None,
    }


def limits_of(row: Values) -> RunLimits:
    return RunLimits(
        max_model_calls=row["max_model_calls"],
        max_duration_seconds=row["max_duration_ms"] / 1000 if row["max_duration_ms"] is not None else None,
        max_total_tokens=row["max_total_tokens"],
        max_tool_calls=row["max_tool_calls"],
    )


def limit_values(limits: RunLimits) -> dict[str, Any]:
    """The runs columns of `limits` (the reverse of `limits_of`)."""
    return {
        "max_model_calls": limits.max_model_calls,
        "max_duration_ms": round(limits.max_duration_seconds * 1000) if limits.max_duration_seconds else None,
        "max_total_tokens": limits.max_total_tokens,
        "max_tool_calls": limits.max_tool_calls,
    }


def stored_run_values(run: RunRecord) -> dict[str, Any]:
    """The runs row of a finished run as a store returned it, for `RunImports.import_runs` (the reverse of
    `run_record`). The columns an ended run leaves NULL are left out (a million runs bind fewer values): it
    holds no lease and waits for no approval. Its request id is not in the record, so a retry of the request
    that created it is not recognised here."""
    return {
        "id": run.id,
        "owner": run.owner,
        "agent_id": run.agent_id,
        "agent_revision": run.agent_revision,
        "thread_id": run.thread_id or None,
        "thread_turn": run.thread_turn or None,
        "workflow_id": run.workflow_id,
        "workflow_revision": run.workflow_revision,
        "trace_id": run.trace_id,
        "trace_span_id": run.trace_span_id,
        "retention_hold": run.retention_hold,
        "cost_nanos": run.cost_nanos,
        "unpriced_calls": run.unpriced_calls,
        "user_query": run.user_query,
        "state": run.state,
        "model": run.model,
        "created_at": run.created_at,
        "completed_at": run.completed_at,
        "error_message": run.error_message,
        "prompt_tokens": run.usage.prompt_tokens,
        "completion_tokens": run.usage.completion_tokens,
        "total_tokens": run.usage.total_tokens,
        "metadata": run.metadata,
        "step_count": run.step_count,
        "error_code": run.error_code,
        "started_at": run.started_at,
        "request_hash": "",
        "executor_id": "",
        "lease_seconds": 0.0,
        "lease_epoch": run.lease_epoch,
        "attempts": run.attempts,
        "handbacks": run.handbacks,
        "handed_back_by": run.handed_back_by,
        # The record says whether a cancel was asked, not when: it cannot have been later than the end.
        "cancel_requested_at": run.completed_at if run.cancel_requested else None,
        "cancel_reason": "",
        **limit_values(run.limits),
    }


def stored_step_values(run_id: str, step: StepRecord) -> dict[str, Any]:
    """The run_steps row of a stored step, for `RunImports.import_runs` (the reverse of `step_record`)."""
    call = step.model_call
    return {
        "run_id": run_id,
        "sequence": step.sequence,
        "type": step.type,
        "content": step.content,
        "node_id": step.node_id,
        "created_at": step.created_at,
        "duration_ms": step.duration_ms,
        "prompt_tokens": call.usage.prompt_tokens if call else None,
        "completion_tokens": call.usage.completion_tokens if call else None,
        "time_to_first_token_ms": call.time_to_first_token_ms if call else None,
        "model_latency_ms": call.latency_ms if call else None,
        "call_model": call.model if call else "",
        "cached_prompt_tokens": call.cached_prompt_tokens if call else None,
        "cost_nanos": call.cost_nanos if call else None,
    }


def run_record(row: Values, steps: Sequence[Values] = (), *, query_cut: bool = False) -> RunRecord:
    live = row["state"] in LIVE_STATES
    return RunRecord(
        id=row["id"],
        user_query=row["user_query"],
        state=row["state"],
        model=row["model"],
        created_at=row["created_at"],
        completed_at=row["completed_at"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        usage=Usage(row["prompt_tokens"], row["completion_tokens"]),
        metadata=dict(row["labels"]),
        step_count=row["step_count"],
        owner=row["owner"],
        agent_id=row["agent_id"],
        agent_revision=row["agent_revision"],
        started_at=row["started_at"],
        limits=limits_of(row),
        cancel_requested=row["cancel_requested_at"] is not None,
        executor_id=row["executor_id"] if live else "",
        lease_epoch=row["lease_epoch"],
        attempts=row["attempts"],
        handbacks=row["handbacks"],
        handed_back_by=row["handed_back_by"],
        user_query_truncated=query_cut,
        steps=[step_record(step) for step in steps],
        thread_id=row["thread_id"] or "",
        thread_turn=row["thread_turn"] or 0,
        workflow_id=row["workflow_id"],
        workflow_revision=row["workflow_revision"],
        trace_id=row["trace_id"],
        trace_span_id=row["trace_span_id"],
        retention_hold=row["retention_hold"],
        cost_nanos=row["cost_nanos"],
        unpriced_calls=row["unpriced_calls"],
    )

def load_run(
    connection: Connection, run_id: str, *, lock: bool = False, owner: str | None = None
) -> dict[str, Any]:
    """The run's columns; NotFound if missing, or if `owner` is given and the run is someone else's (with the
    same message: another user's run is indistinguishable from none). `lock` holds its row lock for the
    transaction (PostgreSQL; on SQLite the one writer and BEGIN IMMEDIATE serialise writes already)."""
    query = select(*RUN_COLUMNS).where(RUNS.c.id == run_id)
    if owner is not None:
        query = query.where(RUNS.c.owner == owner)
    if lock:
        query = query.with_for_update()
    row = connection.execute(query).first()
    if row is None:
        raise NotFound(f"run '{run_id}' not found")
    return dict(row._mapping)


def update_run(connection: Connection, run: dict[str, Any], **changes: Any) -> None:
    """Write `changes` to the run's row and to `run`, the caller's copy of it."""
    connection.execute(
        update(RUNS).where(RUNS.c.id == run["id"]).values({COLUMN_NAMES.get(k, k): v for k, v in changes.items()})
    )
    run.update(changes)


#: Attribute names whose column is named otherwise.
COLUMN_NAMES = {"labels": "metadata"}


def end_run(connection: Connection, run: dict[str, Any], state: str, error_code: str,
                  error_message: str) -> None:
    """End a run as `state`; its lease, and any approval it waited for, end with it. What search needs of an ended
    run is recorded now, once (services/runs/search.py): its final answer, the tools it called, its duration."""
    now = utcnow()
    last_answer = (
        select(STEPS.c.content["text"].as_string())
        .where(STEPS.c.run_id == run["id"], STEPS.c.type == "agent-response")
        .order_by(STEPS.c.sequence.desc())
        .limit(1)
    )
    final_answer = connection.execute(last_answer).scalar() or ""
    tools = connection.execute(
        select(STEPS.c.content["tool_name"].as_string())
        .where(STEPS.c.run_id == run["id"], STEPS.c.type == "tool-call")
        .distinct()
    )
    tool_rows = [{"run_id": run["id"], "tool": tool[:MAX_TOOL_NAME_CHARS]} for (tool,) in tools if tool]
    if tool_rows:
        connection.execute(insert(RUN_TOOLS), tool_rows)
    update_run(
        connection,
        run,
        step_count=run["step_count"],
        state=state,
        error_code=error_code,
        error_message=error_message,
        completed_at=now,
        lease_expires_at=None,
        awaiting_sequence=None,
        approval_expires_at=None,
        final_answer=final_answer,
        duration_ms=duration_ms(run["created_at"], now),
    )


#: The width of run_tools.tool; a longer name (no tool has one) is recorded cut.
MAX_TOOL_NAME_CHARS = 200


def duration_ms(created_at: datetime, completed_at: datetime | None) -> int | None:
    """A run's duration as search stores it: whole milliseconds from creation to end (None: not ended)."""
    if completed_at is None:
        return None
    return max(0, round((completed_at - created_at).total_seconds() * 1000))


def search_facts(run: RunRecord) -> tuple[dict[str, Any], list[str]]:
    """An ended run's search columns, and the tools it called, from its record and steps (as `end_run` records
    them from the database), for a bulk import."""
    answers = [step.content.get("text", "") for step in run.steps if step.type == "agent-response"]
    tools = {step.content.get("tool_name", "") for step in run.steps if step.type == "tool-call"}
    columns = {
        "final_answer": answers[-1] if answers and isinstance(answers[-1], str) else "",
        "duration_ms": duration_ms(run.created_at, run.completed_at),
    }
    return columns, sorted(tool[:MAX_TOOL_NAME_CHARS] for tool in tools if tool and isinstance(tool, str))


def add_error_step(connection: Connection, run: dict[str, Any], code: str, message: str) -> None:
    """Record the `error` step a run ends on, when the store itself ends it (a reaped or queued run)."""
    sequence = run["step_count"] + 1
    step = NewStep(type="error", content={"code": code, "message": message})
    connection.execute(insert(STEPS).values(step_values(run["id"], sequence, step, utcnow())))
    run["step_count"] = sequence


def record_decision(
    connection: Connection, run: dict[str, Any], outcome: str, comment: str, by: str
) -> tuple[RunRecord, StepRecord]:
    """Append the approval-decision step of a WAITING run's pending request; the run stays WAITING, ready to
    resume. Its content is the JSON form of runs.v1.ApprovalDecision, as every step's is."""
    sequence = run["step_count"] + 1
    content = {
        "outcome": f"APPROVAL_OUTCOME_{outcome.upper()}",
        "request_sequence": run["awaiting_sequence"],
        "comment": comment,
        "decided_by": by,
    }
    values = step_values(run["id"], sequence, NewStep(type="approval-decision", content=content), utcnow())
    connection.execute(insert(STEPS).values(values))
    update_run(connection, run, step_count=sequence, awaiting_sequence=None, approval_expires_at=None)
    return run_record(run), step_record(values)


def cancel_message(reason: str) -> str:
    return f"cancelled: {reason}" if reason else "cancelled on request"


@dataclass(frozen=True)
class Cancelled:
    """A cancel written to a run: the run as it is now, and the engine (and reason) to tell."""

    run: RunRecord
    executor_id: str
    reason: str


def request_cancel(connection: Connection, run: dict[str, Any], reason: str) -> Cancelled:
    """Record a cancel of a run not ended (a repeated one keeps the first reason). A QUEUED or WAITING run, or one
    no engine holds (orphaned, waiting to be resumed), ends CANCELLED here, with its `error` step; a RUNNING one
    is ended by its engine, which is told after the commit."""
    if run["cancel_requested_at"] is None:
        update_run(connection, run, cancel_requested_at=utcnow(), cancel_reason=reason)
    executor_id = run["executor_id"]
    if run["state"] in (QUEUED, WAITING) or not executor_id:
        message = cancel_message(run["cancel_reason"])
        add_error_step(connection, run, CANCELLED_CODE, message)
        end_run(connection, run, CANCELLED, CANCELLED_CODE, message)
    return Cancelled(run_record(run), executor_id, run["cancel_reason"])
