"""A run and its steps as the engine works on them: plain dataclasses, no protos.

A run is a journal: every model reply, tool call and result, approval and workflow node outcome is a step, and
any engine can rebuild where a run stands from its steps alone (loop/run_progress.py, workflows/runner.py). The
engine's loop, scheduler and workflow runner speak these types; upstream/run_messages.py is the one place that
converts them to and from the runs API's messages, for the run store's client and the engine's servicer.

The field names are the runs API's (agentplatform.runs.v1), so a step reads the same in code, in the store and on
the wire. Times are `datetime` (UTC), durations seconds; a value that may be absent is None.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.common.limits import RunLimits
from services.common.run_vocabulary import WAITING, MultitaskStrategy
from services.common.step_delta import StepDelta
from services.common.usage import Usage

# --- what a step holds: one of these ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UserRequest:
    """What the user asked; `context_turns` earlier turns of the thread were in the model's context."""

    text: str = ""
    context_turns: int = 0
    omitted_turns: int = 0


@dataclass(frozen=True)
class AgentThought:
    """A model turn that asks for tools; `placeholder` when the model wrote no text (a later turn leaves it out)."""

    text: str = ""
    placeholder: bool = False


@dataclass(frozen=True)
class ToolCall:
    """A tool call the model asked for: its raw argument text, and the arguments parsed (None: not a JSON object)."""

    tool_name: str = ""
    tool_call_id: str = ""
    raw_arguments: str = ""
    params: dict[str, Any] | None = None


@dataclass(frozen=True)
class ToolResult:
    """What a tool call gave back: its result (None: none) and text, or the error the model was told."""

    tool_name: str = ""
    tool_call_id: str = ""
    result: Any = None
    text: str = ""
    error: str = ""


@dataclass(frozen=True)
class AgentResponse:
    """The agent's answer."""

    text: str = ""


@dataclass(frozen=True)
class StepError:
    """The step a run that did not complete ends on."""

    code: str = ""
    message: str = ""


@dataclass(frozen=True)
class ApprovalRequest:
    """A question to a person: a tool call to allow (tool_call_id) or a workflow's approval node (node_id)."""

    prompt: str = ""
    tool_call_id: str = ""
    tool_name: str = ""
    node_id: str = ""
    expire_time: datetime | None = None


#: How an approval request was decided (ApprovalOutcome, lower case, without its prefix).
APPROVED, REJECTED, TIMED_OUT = "approved", "rejected", "timed_out"


@dataclass(frozen=True)
class ApprovalDecision:
    """The answer to the approval request stored at `request_sequence`: APPROVED, REJECTED or TIMED_OUT."""

    outcome: str = ""
    request_sequence: int = 0
    comment: str = ""
    decided_by: str = ""


@dataclass(frozen=True)
class NodeOutcome:
    """A workflow node's end: the branch it took, the variables it set (None: none), its output (`has_output`
    tells an output of null from none)."""

    kind: str = ""
    branch: str = ""
    assigned: dict[str, Any] | None = None
    output: Any = None
    has_output: bool = False
    iteration: int = 0


@dataclass(frozen=True)
class Resumed:
    """The marker an engine records when it continues a run whose engine stopped: which engine, which resume
    (1, 2 ...), what it does first, and the tool calls whose outcome is unknown, held for a person's decision;
    when the engine before handed the run back at its shutdown, which one (the run's attempts are then not one
    more)."""

    executor_id: str = ""
    attempt: int = 0
    summary: str = ""
    held_tool_call_ids: tuple[str, ...] = ()
    handed_back_by: str = ""


StepContent = (
    UserRequest | AgentThought | ToolCall | ToolResult | AgentResponse | StepError | ApprovalRequest
    | ApprovalDecision | NodeOutcome | Resumed
)


# --- steps and runs ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cost:
    """What model calls cost as the store priced them: US dollars of the priced ones, and how many had no price
    (then the true cost is unknown)."""

    usd: float = 0.0
    unpriced_model_calls: int = 0


@dataclass(frozen=True)
class ModelCall:
    """The model call that produced a step."""

    usage: Usage = field(default_factory=Usage)
    time_to_first_token_seconds: float | None = None
    latency_seconds: float | None = None
    #: The model that answered, and the prompt tokens it served from its cache: what the store prices it by.
    model: str = ""
    cached_prompt_tokens: int = 0
    #: As the store priced it when it stored the step; None before (what the engine sends).
    cost: Cost | None = None


@dataclass(frozen=True)
class Step:
    """One entry of a run's journal. `sequence` 1, 2, 3 ... in the run; `created_at` is the store's."""

    content: StepContent
    sequence: int = 0
    run_id: str = ""
    #: The workflow node that recorded it; "" outside workflows.
    node_id: str = ""
    duration_seconds: float | None = None
    model_call: ModelCall | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class Appended:
    """Steps as the store stored them; `over_budget` says why the run must stop after them when they spent a
    budget of its user or agent ("" when they did not)."""

    steps: list[Step]
    over_budget: str = ""


@dataclass(frozen=True)
class Run:
    """A run as the store returned it; `steps` only where the store sends them (created, resumed, read whole)."""

    id: str
    #: One of services.common.run_vocabulary's RUN_STATES ("" for a state this version does not know).
    state: str
    user_query: str = ""
    user_query_truncated: bool = False
    model: str = ""
    owner: str = ""
    agent_id: str = ""
    agent_revision: int = 0
    thread_id: str = ""
    thread_turn: int = 0
    workflow_id: str = ""
    workflow_revision: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    limits: RunLimits = field(default_factory=RunLimits)
    usage: Usage = field(default_factory=Usage)
    step_count: int = 0
    #: The engine holding the run's lease; "" once it has ended.
    executor_id: str = ""
    #: The epoch of that lease: the engine's every write on the run carries it, and the store refuses one made
    #: under an earlier epoch (another engine took the run since). 0: a store or run from before epochs.
    lease_epoch: int = 0
    #: How many times the run was resumed after its engine stopped.
    attempts: int = 0
    #: How many times an engine handed the run back at its shutdown (not counted in `attempts`), and which last.
    handbacks: int = 0
    handed_back_by: str = ""
    cancel_requested: bool = False
    error_code: str = ""
    error_message: str = ""
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    steps: tuple[Step, ...] = ()
    #: The W3C traceparent of the run's first attempt's span (its trace and span); "" without tracing. A resume
    #: continues that trace.
    traceparent: str = ""
    #: What its model calls cost so far, and whether it is on retention hold (as the store says).
    cost: Cost = field(default_factory=Cost)
    retention_hold: bool = False

    @property
    def waiting(self) -> bool:
        return self.state == WAITING


@dataclass(frozen=True)
class ThreadHistory:
    """The turns of a run's thread before it, oldest first, each with its steps; `omitted_turns` older ones left
    out."""

    turns: tuple[Run, ...] = ()
    omitted_turns: int = 0


@dataclass(frozen=True)
class NewRun:
    """A run to create under the lease of the engine process `executor_id`, QUEUED or RUNNING."""

    user_query: str
    owner: str
    executor_id: str
    lease_seconds: float
    queued: bool
    model: str = ""
    agent_id: str = ""
    agent_revision: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    #: The idempotency key: a retried create returns the first attempt's run.
    request_id: str = ""
    limits: RunLimits = field(default_factory=RunLimits)
    thread_id: str = ""
    multitask: MultitaskStrategy = MultitaskStrategy.REJECT
    workflow_id: str = ""
    workflow_revision: int = 0
    #: Stored with a RUNNING run as its steps 1, 2 ...
    steps: tuple[Step, ...] = ()
    #: The W3C traceparent of the run's span here, recorded as the run's trace; "" with tracing off.
    traceparent: str = ""


@dataclass(frozen=True)
class LeaseRenewal:
    """The store's answer to a lease renewal: runs no longer held (ended or deleted there), of those the runs
    fenced (another engine took them, or a later lease epoch), and cancels to make, as (run id, reason)."""

    lost_run_ids: frozenset[str] = frozenset()
    cancels: tuple[tuple[str, str], ...] = ()
    fenced_run_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class HandBack:
    """The store's answer to runs handed back at shutdown: those offered to the other engines, those it ended
    instead (a cancel pending, or not resumable), and those refused (no longer this engine's at that epoch)."""

    handed_back_run_ids: frozenset[str] = frozenset()
    ended_run_ids: frozenset[str] = frozenset()
    refused_run_ids: frozenset[str] = frozenset()


# --- what a run's watchers see besides steps and runs ------------------------------------------------------------


@dataclass(frozen=True)
class Heartbeat:
    """Sent to a quiet follower: the stream is alive, and the last step it has."""

    time: datetime
    last_sequence: int


#: What a run's follower gets, in order: the run (first, and at each change), its steps, deltas, heartbeats.
RunEvent = Run | Step | StepDelta | Heartbeat
