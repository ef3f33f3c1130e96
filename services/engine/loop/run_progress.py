"""How far a run got, read back from its stored steps: what an engine needs to resume a run another engine (or
this one, before a restart) paused for a person's approval. No gRPC calls here.

The steps are the whole record: the conversation so far (rebuilt as services/engine/loop/thread_context.py rebuilds
earlier turns, keeping the last turn's tool calls that have no result yet), those pending calls, the decisions
taken on approval requests (by tool call), and the counts the run's limits apply to.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

from services.common.usage import Usage
from services.engine.journal import (
    APPROVED,
    TIMED_OUT,
    AgentThought,
    ApprovalDecision,
    ApprovalRequest,
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
    model_calls: int = 0
    tool_calls: int = 0
    usage: Usage = field(default_factory=Usage)


#: How a decision reads in what the model is told ("the call was not approved (timed out ...)").
_SHOWN = {TIMED_OUT: "timed out"}


def progress_from_steps(steps: Sequence[Step]) -> RunProgress:
    """The progress `steps` record (a run's steps, in sequence order)."""
    progress = RunProgress(messages=messages_from_steps(steps, keep_pending=True))
    answered: set[str] = set()
    calls: list[RequestedToolCall] = []
    requested: dict[int, str] = {}  # approval-request sequence -> its tool call id
    sequences: dict[str, int] = {}  # tool call id -> its tool-call step's sequence
    for step in steps:
        if step.model_call is not None:
            progress.model_calls += 1
            progress.usage += step.model_call.usage
        match step.content:
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
                call_id = requested.get(decision.request_sequence)
                if call_id is not None:
                    # An outcome this version does not know counts as a rejection: the call does not run.
                    outcome = decision.outcome if decision.outcome in (APPROVED, TIMED_OUT) else "rejected"
                    progress.decisions[call_id] = Decision(
                        outcome == APPROVED, _SHOWN.get(outcome, outcome), decision.comment, decision.decided_by
                    )
    progress.pending = [call for call in calls if call.id not in answered]
    progress.pending_sequences = {call.id: sequences[call.id] for call in progress.pending}
    return progress
