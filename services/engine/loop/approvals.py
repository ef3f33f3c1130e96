"""Which tool calls of a run wait for a person's approval, and what the model is told of a call that was not
approved. The decisions themselves are read back from the run's steps (loop/run_progress.py).

Two kinds of call wait: a call of a tool that requires approval, and a call whose outcome is unknown because the
engine that ran it stopped before its result was recorded (a resumed run's held calls): the person decides
whether it runs again ("run again": approve) or the run continues without it (reject)."""

from datetime import UTC, datetime, timedelta

from services.engine.journal import ApprovalRequest
from services.engine.loop.model_client import RequestedToolCall
from services.engine.loop.run_progress import Decision


class ApprovalGate:
    """Which tool calls of a run wait for a person's approval (their tool requires it, or their outcome is
    unknown), and what was decided."""

    def __init__(
        self, tools: set[str], decisions: dict[str, Decision], timeout_seconds: float, unknown: set[str] | None = None
    ) -> None:
        self._tools = tools
        self._decisions = decisions
        self._timeout_seconds = timeout_seconds
        self._unknown = unknown or set()

    def undecided(self, call: RequestedToolCall) -> bool:
        return (call.name in self._tools or call.id in self._unknown) and call.id not in self._decisions

    def refusal(self, call: RequestedToolCall) -> str | None:
        """The error the model is told for a call that was not approved; None for one that may run."""
        decision = self._decisions.get(call.id)
        if decision is None or decision.approved:
            return None
        who = f" by {decision.decided_by}" if decision.decided_by else ""
        because = f": {decision.comment}" if decision.comment else ""
        if call.id in self._unknown:
            return (
                "the outcome of this call is unknown: the engine running it stopped before its result was recorded, "
                f"and it was not run again ({decision.outcome}{who}){because}; it may or may not have taken effect"
            )
        return f"the call was not approved ({decision.outcome}{who}){because}; do not retry it"

    def request(self, call: RequestedToolCall) -> ApprovalRequest:
        expires = datetime.now(UTC) + timedelta(seconds=self._timeout_seconds) if self._timeout_seconds else None
        if call.id in self._unknown:
            prompt = (
                f"The outcome of the call of {call.name} with {call.arguments or '{}'} is unknown: the engine "
                "running it stopped before its result was recorded, and it may or may not have taken effect. "
                "Approve to run it again; reject to continue without it."
            )
        else:
            prompt = f"The agent wants to call {call.name} with {call.arguments or '{}'}. Allow it?"
        return ApprovalRequest(prompt=prompt, tool_call_id=call.id, tool_name=call.name, expire_time=expires)
