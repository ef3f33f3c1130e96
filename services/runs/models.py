"""The runs service's tables, as a SQLAlchemy 2 ORM (no gRPC here).

Portable between SQLite (aiosqlite) and PostgreSQL (asyncpg): JSON becomes JSONB on PostgreSQL, times are
timezone-aware UTC on both, and constraints are plain SQL.
"""

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from services.common.db.database import UtcDateTime, make_metadata
from services.common.run_vocabulary import RUN_STATES
from services.runs import full_text

#: The Alembic migrations of this schema (package:folder), for Database.migrate; its version is in Alembic's default
#: table, alembic_version.
MIGRATIONS = "services.runs:migrations"

#: A step's type, as stored: the seed's step type slugs, and the two of a human approval.
STEP_TYPES = (
    "user-request", "agent-thought", "tool-call", "tool-result", "agent-response", "error",
    "approval-request", "approval-decision", "node-outcome", "resumed",
)

#: JSON on SQLite, JSONB on PostgreSQL (binary, indexable, compared by value).
JsonDocument = JSON().with_variant(JSONB(), "postgresql")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    """SQL that limits `column` to `values` (every value is one of our constants, never user input)."""
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


class Base(AsyncAttrs, DeclarativeBase):
    metadata = make_metadata()
    # Every model here is declared with __tablename__, so SQLAlchemy maps it to a Table; DeclarativeBase types
    # the attribute as any FromClause (a class may be mapped to a join or a subquery), which insert() and
    # update() refuse.
    __table__: ClassVar[Table]


class ThreadRow(Base):
    """A conversation: the runs that are its turns point to it."""

    __tablename__ = "threads"
    __table_args__ = (
        # ListThreads walks a user's threads, most recently active first, by keyset.
        Index("ix_threads_owner_updated_at_id", "owner", "updated_at", "id"),
        Index("ix_threads_updated_at_id", "updated_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    #: The first user message, cut to THREAD_TITLE_CHARS.
    title: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: When its latest run was created.
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: Runs created on it so far; the next run is turn turn_count + 1. Every create on the thread updates this
    #: row, which is also what serialises two creates on one thread (the multitask check needs it).
    turn_count: Mapped[int] = mapped_column(Integer, default=0)


#: How much of a thread's first message becomes its title.
THREAD_TITLE_CHARS = 200


class RunRow(Base):
    """One agent run."""

    __tablename__ = "runs"
    __table_args__ = (
        # ListRuns walks runs newest first by (created_at, id): keyset pagination needs both in one index.
        Index("ix_runs_created_at_id", "created_at", "id"),
        # ListRuns filtered by state walks this one in the same order.
        Index("ix_runs_state_created_at_id", "state", "created_at", "id"),
        # A user's own runs (ListRuns without all_users), all of them or of one state, in the same order.
        Index("ix_runs_owner_created_at_id", "owner", "created_at", "id"),
        Index("ix_runs_owner_state_created_at_id", "owner", "state", "created_at", "id"),
        # A thread's turns, in order; a turn number is given once.
        Index("ux_runs_thread_id_thread_turn", "thread_id", "thread_turn", unique=True),
        # The reaper looks for live runs whose lease ran out; finished runs have no lease (NULL).
        Index("ix_runs_lease_expires_at", "lease_expires_at"),
        # ... and for approvals that timed out (NULL unless a WAITING run's request has a timeout).
        Index("ix_runs_approval_expires_at", "approval_expires_at"),
        # Search (services/runs/search_sql.py): each filter that narrows runs most, newest first, or an order.
        # The full-text and metadata indexes are services/runs/full_text.py's.
        Index("ix_runs_completed_at_id", "completed_at", "id"),
        # One agent's runs newest first; a revision is checked on the way (few per agent), so no index of its own.
        Index("ix_runs_agent_created_at_id", "agent_id", "created_at", "id"),
        Index("ix_runs_workflow_created_at_id", "workflow_id", "created_at", "id"),
        Index("ix_runs_model_created_at_id", "model", "created_at", "id"),
        Index("ix_runs_error_code_created_at_id", "error_code", "created_at", "id"),
        Index("ix_runs_duration_ms_id", "duration_ms", "id"),
        Index("ix_runs_total_tokens_id", "total_tokens", "id"),
        Index("ix_runs_cost_nanos_id", "cost_nanos", "id"),
        CheckConstraint(_one_of("state", RUN_STATES), name="state"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    #: The id of the user the run belongs to (who started it).
    owner: Mapped[str] = mapped_column(String(200))
    #: The saved agent the run executes and its revision ("" and 0: the built-in default agent). Not a foreign
    #: key: agents live in the agents service, and a run keeps its record when its agent is deleted.
    agent_id: Mapped[str] = mapped_column(String(36), default="")
    agent_revision: Mapped[int] = mapped_column(BigInteger, default=0)
    #: The thread the run is a turn of, and which turn (1, 2 ...); NULL for a run outside any conversation.
    #: Deleting the thread deletes its runs.
    thread_id: Mapped[str | None] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"))
    thread_turn: Mapped[int | None] = mapped_column(Integer)
    #: The saved workflow the run executes and its revision ("" and 0: a run of an agent). Not a foreign key, as
    #: for agents: workflows live in the agents service.
    workflow_id: Mapped[str] = mapped_column(String(36), default="")
    workflow_revision: Mapped[int] = mapped_column(BigInteger, default=0)
    #: The OpenTelemetry trace the run is recorded in, and the span of its first attempt (W3C hex), so every
    #: attempt joins that trace and GetRun can name it; "" when the engine had tracing off.
    trace_id: Mapped[str] = mapped_column(String(32), default="")
    trace_span_id: Mapped[str] = mapped_column(String(16), default="")
    #: On retention hold: the retention policy keeps it whatever its age (services/runs/retention.py).
    retention_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    #: What its model calls cost so far, in nano-USD (1e-9), and how many had no price (their cost unknown).
    cost_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
    unpriced_calls: Mapped[int] = mapped_column(Integer, default=0)
    user_query: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    error_message: Mapped[str] = mapped_column(Text, default="")
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    # `metadata` is taken by DeclarativeBase, so the attribute has another name than the column.
    labels: Mapped[dict[str, str]] = mapped_column("metadata", JsonDocument, default=dict)
    #: Kept equal to the highest step sequence (sequences have no gaps), so the next one is step_count + 1.
    step_count: Mapped[int] = mapped_column(Integer, default=0)

    #: The stable code of a failure or cancellation ("interrupted", "max_model_calls" ...); "" otherwise.
    error_code: Mapped[str] = mapped_column(String(64), default="")
    #: When the run left QUEUED.
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: The client-chosen idempotency key of the create (AIP-155) and a hash of the request it came with.
    request_id: Mapped[str | None] = mapped_column(String(36), unique=True)
    request_hash: Mapped[str] = mapped_column(String(64), default="")
    #: The lease: which engine process executes the run, until when, and for how long each renewal extends it.
    #: `lease_expires_at` is NULL once the run has ended.
    executor_id: Mapped[str] = mapped_column(String(64), default="")
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lease_seconds: Mapped[float] = mapped_column(Float, default=0)
    #: The fence of the lease: every lease taken on the run (its create, a resume) increments it, and an engine's
    #: write must carry the epoch its lease was taken at, or it is refused (services/runs/leases.py). 0: a run
    #: from before epochs.
    lease_epoch: Mapped[int] = mapped_column(BigInteger, default=0)
    #: How many times the run was resumed after its engine stopped (services/runs/leases.py reap_expired).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: How many times an engine handed the run back at its shutdown, and which engine last (leases.py
    #: hand_back); not counted in `attempts`.
    handbacks: Mapped[int] = mapped_column(Integer, default=0)
    handed_back_by: Mapped[str] = mapped_column(String(64), default="")
    #: Desired state written by CancelRun; the executing engine observes it and ends the run CANCELLED.
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    cancel_reason: Mapped[str] = mapped_column(Text, default="")
    #: While WAITING for a decision: the sequence of the approval-request step, and when it times out (NULL: never).
    #: A WAITING run whose awaiting_sequence is NULL has been decided and is ready for an engine to resume it.
    awaiting_sequence: Mapped[int | None] = mapped_column(Integer)
    approval_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: The run's limits (NULL: none recorded).
    max_model_calls: Mapped[int | None] = mapped_column(Integer)
    max_duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    max_total_tokens: Mapped[int | None] = mapped_column(BigInteger)
    max_tool_calls: Mapped[int | None] = mapped_column(Integer)
    #: What search needs of an ended run, set when it ends (services/runs/rows.py end_run), so that appending a
    #: step stays one write: the text of its last agent-response step ("" without one), and the milliseconds from
    #: its creation to its end (NULL until it ends). The tools it called are in run_tools.
    final_answer: Mapped[str] = mapped_column(Text, default="")
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)

    # lazy="raise": async code must say what it loads (selectinload), an implicit load would fail anyway.
    # passive_deletes: the database's ON DELETE CASCADE removes the steps, the ORM need not load them.
    steps: Mapped[list["RunStepRow"]] = relationship(
        back_populates="run",
        lazy="raise",
        order_by="RunStepRow.sequence",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class RunToolRow(Base):
    """A tool an ended run called (one row per tool, however many calls): search's "tool used" filter."""

    __tablename__ = "run_tools"
    __table_args__ = (Index("ix_run_tools_tool_run_id", "tool", "run_id"),)

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    tool: Mapped[str] = mapped_column(String(200), primary_key=True)


class RunStepRow(Base):
    """One step of a run's timeline; (run_id, sequence) is unique, which is what serialises appenders."""

    __tablename__ = "run_steps"
    __table_args__ = (CheckConstraint(_one_of("type", STEP_TYPES), name="type"),)

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    sequence: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    content: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    #: The workflow node that recorded the step; "" outside workflows.
    node_id: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: Milliseconds, fractional: tool calls are often well under a millisecond.
    duration_ms: Mapped[float | None] = mapped_column(Float)
    #: The model call that produced the step (agent-thought, agent-response); NULL for other steps.
    prompt_tokens: Mapped[int | None] = mapped_column(BigInteger)
    completion_tokens: Mapped[int | None] = mapped_column(BigInteger)
    time_to_first_token_ms: Mapped[float | None] = mapped_column(Float)
    model_latency_ms: Mapped[float | None] = mapped_column(Float)
    #: The model call's model ("" for other steps, and calls recorded before prices: the run's model), its
    #: prompt tokens served from cache, and its cost in nano-USD (NULL: no price, or not a model call).
    call_model: Mapped[str] = mapped_column(String(200), default="")
    cached_prompt_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cost_nanos: Mapped[int | None] = mapped_column(BigInteger)

    run: Mapped[RunRow] = relationship(back_populates="steps", lazy="raise")


#: A score's kind of value, as stored.
SCORE_KINDS = ("number", "boolean", "category")
#: Who or what gave a score, as stored.
SCORE_SOURCES = ("person", "api", "evaluator")


class ScoreRow(Base):
    """A feedback score on a run (step_sequence 0) or on one of its steps; goes with its run (ON DELETE
    CASCADE)."""

    __tablename__ = "run_scores"
    __table_args__ = (
        CheckConstraint(_one_of("kind", SCORE_KINDS), name="kind"),
        CheckConstraint(_one_of("source", SCORE_SOURCES), name="source"),
        # A run's scores, oldest first (GetRun, ListScores, and the count CreateScore bounds).
        Index("ix_run_scores_run_id_created_at", "run_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step_sequence: Mapped[int] = mapped_column(Integer, default=0)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    #: A number's value, or a boolean's (1 for true, 0 for false): what summaries average. NULL for a category.
    number_value: Mapped[float | None] = mapped_column(Float)
    category_value: Mapped[str | None] = mapped_column(String(100))
    comment: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(16))
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ModelPriceRow(Base):
    """A model's price an admin set, in pico-USD (1e-12) per token: integers, so costs add up exactly. The
    built-in snapshot (services/runs/prices.py) applies to a model without a row."""

    __tablename__ = "model_prices"

    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    input_picos: Mapped[int] = mapped_column(BigInteger)
    cached_input_picos: Mapped[int] = mapped_column(BigInteger)
    output_picos: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_by: Mapped[str] = mapped_column(String(200))


class BudgetRow(Base):
    """A budget: at most `limit_amount` tokens, or nano-USD, per day or month, for a user or an agent
    (services/runs/budgets.py). One per scope, subject, metric and period."""

    __tablename__ = "budgets"
    __table_args__ = (
        UniqueConstraint("scope", "subject", "metric", "period"),
        CheckConstraint("scope IN ('user', 'agent')", name="scope"),
        CheckConstraint("metric IN ('tokens', 'usd')", name="metric"),
        CheckConstraint("period IN ('day', 'month')", name="period"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    scope: Mapped[str] = mapped_column(String(8))
    subject: Mapped[str] = mapped_column(String(200))
    metric: Mapped[str] = mapped_column(String(8))
    period: Mapped[str] = mapped_column(String(8))
    limit_amount: Mapped[int] = mapped_column(BigInteger)
    updated_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


# The full-text and metadata indexes, which a model cannot declare on both databases, built with the table.
event.listen(RunRow.__table__, "after_create", full_text.after_create)
event.listen(RunRow.__table__, "before_drop", full_text.before_drop)
