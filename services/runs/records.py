"""The runs service's domain types: what callers hand the store and what it hands back (no gRPC, no ORM)."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.common.limits import RunLimits
from services.common.run_vocabulary import MultitaskStrategy
from services.common.usage import Usage


@dataclass(frozen=True)
class ModelCallStats:
    """The model call that produced a step: its model ("" from engines before prices: the run's), tokens (of
    the prompt, `cached_prompt_tokens` served from cache), timings, and its cost in nano-USD as the store priced
    it (None: no price for its model, or not priced yet)."""

    usage: Usage
    time_to_first_token_ms: float | None = None
    latency_ms: float | None = None
    model: str = ""
    cached_prompt_tokens: int = 0
    cost_nanos: int | None = None


@dataclass(frozen=True)
class NewRun:
    """A run to create, under the lease of the engine process `executor_id`."""

    user_query: str
    executor_id: str
    lease_seconds: float
    #: The user the run belongs to.
    owner: str = ""
    #: The saved agent it executes, and the revision ("" and 0: the built-in default agent).
    agent_id: str = ""
    agent_revision: int = 0
    model: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    #: Client-chosen idempotency key (AIP-155); "" for none.
    request_id: str = ""
    #: "queued" or "running".
    state: str = "running"
    limits: RunLimits = field(default_factory=RunLimits)
    #: Steps stored with the run as steps 1, 2 ... (a RUNNING run only).
    steps: tuple["NewStep", ...] = ()
    #: The thread the run continues; "" starts a new one.
    thread_id: str = ""
    #: What to do when that thread has a run in progress.
    multitask: MultitaskStrategy = MultitaskStrategy.REJECT
    #: The saved workflow the run executes, and its revision ("" and 0: a run of an agent, on a thread).
    workflow_id: str = ""
    workflow_revision: int = 0
    #: The run's OpenTelemetry trace and the span of its first attempt (W3C hex); "" without tracing.
    trace_id: str = ""
    trace_span_id: str = ""


@dataclass(frozen=True)
class NewStep:
    """A step to append. `sequence` 0 means "the next one"; `content` must be JSON-serialisable."""

    type: str
    content: dict[str, Any]
    sequence: int = 0
    duration_ms: float | None = None
    model_call: ModelCallStats | None = None
    #: The workflow node that records it; "" outside workflows.
    node_id: str = ""


@dataclass(frozen=True)
class StepRecord:
    """A stored step."""

    run_id: str
    sequence: int
    type: str
    content: dict[str, Any]
    created_at: datetime
    duration_ms: float | None
    model_call: ModelCallStats | None = None
    node_id: str = ""


@dataclass(frozen=True)
class RunRecord:
    """A stored run; `steps` is filled only by `RunStore.get_run`."""

    id: str
    user_query: str
    state: str
    model: str
    created_at: datetime
    completed_at: datetime | None
    error_code: str
    error_message: str
    usage: Usage
    metadata: dict[str, str]
    step_count: int
    owner: str = ""
    agent_id: str = ""
    agent_revision: int = 0
    started_at: datetime | None = None
    limits: RunLimits = field(default_factory=RunLimits)
    cancel_requested: bool = False
    #: The engine process holding the lease; "" once the run has ended.
    executor_id: str = ""
    #: How many leases were taken on the run (its create, each resume): the epoch its holder's writes carry.
    lease_epoch: int = 0
    #: How many times the run was resumed after its engine stopped.
    attempts: int = 0
    #: How many times an engine handed the run back at its shutdown (not counted in `attempts`), and which
    #: engine last ("" if none ever did).
    handbacks: int = 0
    handed_back_by: str = ""
    #: True when `user_query` was cut for a list page.
    user_query_truncated: bool = False
    steps: list[StepRecord] = field(default_factory=list)
    #: Its feedback scores, oldest first; filled only by `RunStore.get_run(with_scores=True)`.
    scores: list["ScoreRecord"] = field(default_factory=list)
    #: The thread the run is a turn of, and which turn; "" and 0 for a run outside any thread.
    thread_id: str = ""
    thread_turn: int = 0
    workflow_id: str = ""
    workflow_revision: int = 0
    #: The run's trace and its first attempt's span (W3C hex); "" when it was created without tracing.
    trace_id: str = ""
    trace_span_id: str = ""
    #: Kept by the retention policy whatever its age.
    retention_hold: bool = False
    #: What its model calls cost so far (nano-USD), and how many had no price (then the cost is unknown).
    cost_nanos: int = 0
    unpriced_calls: int = 0


@dataclass(frozen=True)
class ThreadRecord:
    """A stored conversation thread."""

    id: str
    owner: str
    title: str
    created_at: datetime
    updated_at: datetime
    turn_count: int
    #: Its runs' usage and cost (nano-USD; `unpriced_calls` model calls of theirs had no price), summed: filled
    #: by `RunStore.get_thread` and `list_threads`.
    usage: Usage = field(default_factory=Usage)
    cost_nanos: int = 0
    unpriced_calls: int = 0


@dataclass(frozen=True)
class ThreadHistory:
    """The turns of a thread before a run, oldest first, with their steps; `omitted` older ones left out."""

    turns: list[RunRecord]
    omitted: int


@dataclass(frozen=True)
class CancelNotice:
    """A request to stop a run, for the engine executing it."""

    run_id: str
    reason: str


@dataclass(frozen=True)
class ResumeNotice:
    """A WAITING run whose approval was decided, offered to an engine to resume."""

    run_id: str


#: Decisions of an approval request, as stored (ApprovalOutcome without its prefix, lower case).
APPROVED, REJECTED, TIMED_OUT = "approved", "rejected", "timed_out"


@dataclass(frozen=True)
class LeaseRenewal:
    """What RenewLeases tells an engine: the runs it no longer holds, the runs it is to cancel, and, of the lost
    ones, those whose lease was taken again since (`fenced_run_ids`: by another engine, or under a later epoch),
    which it is to stop at once."""

    lost_run_ids: list[str]
    cancel: list[CancelNotice]
    fenced_run_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class HandBack:
    """What HandBackRuns tells a stopping engine: the runs it handed back (offered to engines to continue), those
    ended instead (a cancel pending, or not resumable), and those refused (not its own at the epoch it named)."""

    handed_back_run_ids: list[str]
    ended_run_ids: list[str]
    refused_run_ids: list[str]




#: A score's value: a number, a boolean or a category (the type tells the kind).
ScoreValue = float | bool | str


@dataclass(frozen=True)
class NewScore:
    """A feedback score to record on a run (`step_sequence` 0) or one of its steps."""

    run_id: str
    name: str
    value: ScoreValue
    step_sequence: int = 0
    comment: str = ""
    #: "person", "api" or "evaluator".
    source: str = "api"


@dataclass(frozen=True)
class ScoreRecord:
    """A stored score; `author` is the user who recorded it."""

    id: str
    run_id: str
    step_sequence: int
    name: str
    value: ScoreValue
    comment: str
    source: str
    author: str
    created_at: datetime


@dataclass(frozen=True)
class ScoreSummary:
    """The scores of one name (and kind of value) given to the runs of one agent revision. `mean`, `least` and
    `greatest` are of the numbers (booleans as 1 and 0) and 0 for categories; `categories` counts each category,
    most frequent first."""

    agent_revision: int
    name: str
    kind: str
    count: int
    mean: float = 0.0
    least: float = 0.0
    greatest: float = 0.0
    categories: tuple[tuple[str, int], ...] = ()
