"""How far a run got, read back from its stored steps: what an engine needs to resume a run another engine (or
this one, before a restart) paused for a person's approval, or that its engine left behind when it stopped. No
gRPC calls here.

The steps are the whole record: the conversation so far (rebuilt as services/engine/loop/thread_context.py rebuilds
earlier turns, keeping the last turn's tool calls that have no result yet), those pending calls, the decisions
taken on approval requests (by tool call), the answer when the model gave it, the resume markers and the tool calls
they hold, and the counts the run's limits apply to (over the whole run, every attempt of it).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.common.usage import Usage
from services.engine.journal import (
    APPROVED,
    TIMED_OUT,
    AgentResponse,
    AgentThought,
    ApprovalDecision,
    ApprovalRequest,
    Resumed,
    Step,
    ToolCall,
    ToolResult,
)
from services.engine.loop.model_client import RequestedToolCall
from services.engine.loop.thread_context import Message, messages_from_steps


@dataclass(frozen=True)
class Decision:
    """How a person (or a timeout) decided an approval request."""

    approved: bool
    #: "approved", "rejected" or "timed out".
    outcome: str
    comment: str = ""
    decided_by: str = ""


@dataclass
class RunProgress:
    """What a run has done so far; empty for a run that starts now."""

    #: The run's own conversation: its user message, and every model turn and tool answer since.
    messages: list[Message] = field(default_factory=list)
    #: The last turn's tool calls that have no result yet: executed first when the run resumes.
    pending: list[RequestedToolCall] = field(default_factory=list)
    #: The sequence of each pending call's tool-call step, by tool call id (its idempotency key is made of it).
    pending_sequences: dict[str, int] = field(default_factory=dict)
    #: Decisions on approval requests, by tool call id.
    decisions: dict[str, Decision] = field(default_factory=dict)
    #: Pending calls whose outcome is unknown (started, or maybe started, by an engine that stopped): each waits
    #: for a person's decision, whatever its tool, before it runs again.
    unknown: set[str] = field(default_factory=set)
    #: The agent's answer, when its agent-response step is recorded (the engine stopped before finishing the run).
    answer: str | None = None
    #: How many resume markers the steps hold, and how many of them follow a hand-back (not an attempt).
    resumes: int = 0
    handbacks: int = 0
    #: When the run's current stretch of execution began: its first step, or the last approval decision (the time
    #: a person took to decide is not the run's); None for no steps.
    stretch_began: datetime | None = None
    #: For a run this engine takes over from one that stopped: (this engine, the resume's number), until the loop
    #: knows the tools and `take_over` decides what runs again; None otherwise.
    taking_over: tuple[str, int] | None = None
    #: For such a run: the engine that handed it back at its shutdown; "" when that engine stopped otherwise.
    handed_back_by: str = ""
    model_calls: int = 0
    tool_calls: int = 0
    usage: Usage = field(default_factory=Usage)

    def hold(self, call_ids: Sequence[str]) -> None:
        """Mark `call_ids` as calls of unknown outcome: a decision taken before (on a tool requiring approval)
        does not cover running one again, so each waits for a new one."""
        self.unknown = set(call_ids)
        for call_id in self.unknown:
            self.decisions.pop(call_id, None)

    def time_left(self, duration: float | None) -> float | None:
        """What is left of `duration` (a run's max_duration; None: no bound) for the current stretch of
        execution, which began at `stretch_began` (all of it for a run without steps)."""
        if self.stretch_began is None or duration is None:
            return duration
        spent = (datetime.now(UTC) - self.stretch_began).total_seconds()
        return max(duration - max(spent, 0.0), 0.0)

    def take_over(
        self,
        executor_id: str,
        attempt: int,
        repeat_safe: Callable[[RequestedToolCall], bool],
        idle: str | None = None,
    ) -> Resumed:
        """Prepare the resume of a run whose engine stopped (or handed it back: `handed_back_by`), as its
        `attempt`th resume by `executor_id`: the pending calls that `repeat_safe` does not allow to run again
        (their tools are neither read-only nor idempotent for those arguments) are held for a decision; the others
        run again, with the same idempotency key. Returns the marker to record, which says which is which; `idle` is
        what it says when nothing was in flight (for a workflow node: where it stands; for a run, by default, it
        finishes with its recorded answer or asks the model again)."""
        held = [call for call in self.pending if not repeat_safe(call)]
        rerun = [call for call in self.pending if repeat_safe(call)]
        if held:
            summary = "holds for a decision, their outcome unknown: " + ", ".join(
                f"{call.name} ({call.id})" for call in held
            )
        elif rerun:
            summary = "runs again, safe to repeat: " + ", ".join(f"{call.name} ({call.id})" for call in rerun)
        elif idle is not None:
            summary = idle
        elif self.answer is not None:
            summary = "finishes the run: its answer was recorded"
        else:
            summary = "requests the model call again (an interrupted call is never recorded)"
        if self.handed_back_by:
            summary = f"handed back by engine {self.handed_back_by} at its shutdown; {summary}"
        marker = Resumed(executor_id, attempt, summary, tuple(call.id for call in held), self.handed_back_by)
        self.hold(marker.held_tool_call_ids)
        self.taking_over = None
        return marker


#: How a decision reads in what the model is told ("the call was not approved (timed out ...)").
_SHOWN = {TIMED_OUT: "timed out"}


def progress_from_steps(steps: Sequence[Step]) -> RunProgress:
    """The progress `steps` record (a run's steps, in sequence order)."""
    progress = RunProgress(messages=messages_from_steps(steps, keep_pending=True))
    answered: set[str] = set()
    calls: list[RequestedToolCall] = []
    requested: dict[int, str] = {}  # approval-request sequence -> its tool call id
    sequences: dict[str, int] = {}  # tool call id -> its tool-call step's sequence
    if steps:
        progress.stretch_began = steps[0].created_at
    for step in steps:
        if step.model_call is not None:
            progress.model_calls += 1
            progress.usage += step.model_call.usage
        match step.content:
            case Resumed() as marker:
                progress.resumes += 1
                progress.handbacks += bool(marker.handed_back_by)
                progress.hold(marker.held_tool_call_ids)
            case AgentResponse() as response:
                progress.answer = response.text
            case AgentThought():
                calls = []
            case ToolCall() as call:
                progress.tool_calls += 1
                calls.append(RequestedToolCall(call.tool_call_id, call.tool_name, call.raw_arguments))
                sequences[call.tool_call_id] = step.sequence
            case ToolResult() as result:
                answered.add(result.tool_call_id)
            case ApprovalRequest(tool_call_id=asked) if asked:
                requested[step.sequence] = asked
            case ApprovalDecision() as decision:
                progress.stretch_began = step.created_at or progress.stretch_began
                call_id = requested.get(decision.request_sequence)
                if call_id is not None:
                    # An outcome this version does not know counts as a rejection: the call does not run.
                    outcome = decision.outcome if decision.outcome in (APPROVED, TIMED_OUT) else "rejected"
                    progress.decisions[call_id] = Decision(
                        outcome == APPROVED, _SHOWN.get(outcome, outcome), decision.comment, decision.decided_by
                    )
    progress.pending = [call for call in calls if call.id not in answered]
    progress.pending_sequences = {call.id: sequences[call.id] for call in progress.pending}
    progress.unknown &= {call.id for call in progress.pending}
    return progress
