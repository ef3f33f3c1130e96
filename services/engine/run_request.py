"""A request to run the agent, validated, with its limits resolved against the engine's defaults and maximums
(no gRPC here)."""

from dataclasses import dataclass, field
from typing import Any

from services.common import errors
from services.common.checks import parse_uuid
from services.common.identity import Caller
from services.common.limits import RunLimits, check_within
from services.common.run_vocabulary import MultitaskStrategy
from services.engine.settings import EngineSettings

#: Longest model name accepted as an override (the run store's column width).
MAX_MODEL_NAME = 200


@dataclass(frozen=True)
class ChatInput:
    """One user message for the agent from `owner` (the caller, who will own the run), with an optional model
    override, labels, an idempotency key and limits (None fields take the engine's defaults)."""

    message: str
    owner: Caller
    #: The saved agent to run and its revision; "" for the built-in default agent, 0 for its latest revision.
    agent_id: str = ""
    agent_revision: int = 0
    model: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    request_id: str = ""
    limits: RunLimits = field(default_factory=RunLimits)
    #: The thread the run continues ("" starts a new one), and what to do if that thread is busy.
    thread_id: str = ""
    multitask: MultitaskStrategy = MultitaskStrategy.REJECT


@dataclass(frozen=True)
class WorkflowStart:
    """A request to run a saved workflow, from `owner`, with its inputs (plain JSON values by name)."""

    workflow_id: str
    owner: Caller
    workflow_revision: int = 0
    inputs: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    request_id: str = ""


def validate_workflow_start(start: WorkflowStart) -> None:
    parse_uuid(start.workflow_id, "workflow_id", "workflow")
    if start.workflow_revision < 0:
        raise errors.InvalidArgument("workflow_revision must be 0 (the latest) or a revision (1, 2 ...)")


def validate_chat(chat: ChatInput, settings: EngineSettings) -> None:
    """Reject a request the engine cannot serve, before any run is created. (The run store checks metadata,
    the request id and sizes again, as it checks every caller.)"""
    if not chat.message.strip():
        raise errors.InvalidArgument("message is required: send the user's request as non-blank text")
    if len(chat.message) > settings.max_message_chars:
        raise errors.InvalidArgument(
            f"message is {len(chat.message)} characters long; the limit is {settings.max_message_chars} "
            "(ENGINE_MAX_MESSAGE_CHARS)"
        )
    if chat.agent_revision < 0 or (chat.agent_revision and not chat.agent_id):
        raise errors.InvalidArgument("agent_revision must be 0 (the latest) or a revision of agent_id (1, 2 ...)")
    if chat.thread_id:
        parse_uuid(chat.thread_id, "thread_id", "thread")
    if chat.multitask not in [strategy.value for strategy in MultitaskStrategy]:
        raise errors.InvalidArgument(f"unknown multitask_strategy {chat.multitask!r}")
    if len(chat.model) > MAX_MODEL_NAME or (chat.model and not chat.model.strip()):
        raise errors.InvalidArgument(
            f"model must be empty (the default) or a model name of at most {MAX_MODEL_NAME} characters"
        )


def resolve_limits(requested: RunLimits, settings: EngineSettings) -> RunLimits:
    """The request's limits with the engine's defaults for those it left unset; InvalidArgument naming the
    field for one that is not positive or above the platform's maximum."""
    check_within(requested, settings)
    return RunLimits(
        max_model_calls=requested.max_model_calls or settings.max_iterations,
        max_duration_seconds=requested.max_duration_seconds or settings.run_timeout_seconds,
        max_total_tokens=requested.max_total_tokens or settings.max_total_tokens,
        max_tool_calls=requested.max_tool_calls or settings.max_tool_calls,
    )
