"""The agent loop: the seed's tool-calling loop, recording every step through the runs service.

One run: create it, record the user request, then up to `max_iterations` model turns. A turn that asks for
tools records an agent-thought, and a tool-call and tool-result per call; a turn without tool calls is the
agent-response and completes the run. Whatever goes wrong after the run exists ends it FAILED with an
`error` step (model down, too many turns, the caller going away); it is never left RUNNING.

Each run executes in its own task, so a consumer that disappears (a disconnected stream) cancels the run
cleanly, and the engine can wait for in-flight runs to record their end when it shuts down.
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from agentplatform.engine.v1 import engine_pb2
from agentplatform.runs.v1 import runs_pb2
from services.common import errors
from services.common.protoconv import duration_from_seconds, value_from_python
from services.engine.clients import RunsClient, ToolOutcome, ToolsClient
from services.engine.failures import RunFailure
from services.engine.model_client import ModelClient, ModelTurn, RequestedToolCall, Usage
from services.engine.settings import EngineSettings

log = logging.getLogger(__name__)

Event = engine_pb2.StreamChatResponse
Emit = Callable[[Event | None], None]

#: Longest model name accepted as an override.
MAX_MODEL_NAME = 256
MAX_METADATA_ENTRIES = 32


@dataclass(frozen=True)
class ChatInput:
    """One user message for the agent, with an optional model override and labels for the run."""

    message: str
    model: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class RunOutcome:
    """How a run ended: the final run, the answer when it completed, the failure when it did not."""

    run: runs_pb2.Run
    answer: str = ""
    failure: RunFailure | None = None


class StepRecorder:
    """Appends one run's steps, numbering them itself (1, 2, 3 …) so that a retried append is idempotent."""

    def __init__(self, runs: RunsClient, run_id: str, emit: Emit) -> None:
        self._runs = runs
        self._run_id = run_id
        self._emit = emit
        self._last_sequence = 0

    async def record(self, *, server_numbered: bool = False, **content: Any) -> runs_pb2.Step:
        """Store a step and stream it. `server_numbered` lets the runs service pick the sequence, for the final
        error step, which may follow an append whose outcome is unknown (interrupted mid-call)."""
        sequence = 0 if server_numbered else self._last_sequence + 1
        stored = await self._runs.append_step(runs_pb2.Step(run_id=self._run_id, sequence=sequence, **content))
        self._last_sequence = stored.sequence
        self._emit(Event(step=stored))
        return stored


def parse_tool_arguments(raw: str) -> tuple[dict[str, Any] | None, str]:
    """The model's argument string as a JSON object, or None and a message the model can act on."""
    if not raw.strip():
        return {}, ""  # Some servers send "" for a call without arguments.
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"the arguments are not valid JSON ({exc}); send a JSON object that matches the tool's schema"
    if not isinstance(parsed, dict):
        return None, f"the arguments must be a JSON object, not {type(parsed).__name__}"
    return parsed, ""


def validate_chat(chat: ChatInput, max_chars: int) -> None:
    """Reject a request the loop cannot serve, before any run is created."""
    if not chat.message.strip():
        raise errors.InvalidArgument("message is required: send the user's request as non-blank text")
    if len(chat.message) > max_chars:
        raise errors.InvalidArgument(
            f"message is {len(chat.message)} characters long; the limit is {max_chars} (ENGINE_MAX_MESSAGE_CHARS)"
        )
    if len(chat.model) > MAX_MODEL_NAME or (chat.model and not chat.model.strip()):
        raise errors.InvalidArgument(f"model must be empty (the default) or a model name of at most {MAX_MODEL_NAME} "
                                     "characters")
    if len(chat.metadata) > MAX_METADATA_ENTRIES:
        raise errors.InvalidArgument(f"metadata has {len(chat.metadata)} entries; at most {MAX_METADATA_ENTRIES}")


def _ignore(_event: Event | None) -> None:
    pass


class AgentLoop:
    """Runs agents. Holds the clients of the model endpoint and the runs and tools services."""

    def __init__(self, runs: RunsClient, tools: ToolsClient, model: ModelClient, settings: EngineSettings) -> None:
        self._runs = runs
        self._tools = tools
        self._model = model
        self._settings = settings
        self._active: set[asyncio.Task[RunOutcome]] = set()

    async def stream(self, chat: ChatInput) -> AsyncIterator[Event]:
        """Run the agent and yield its events: the run, each step as it is recorded, text deltas, the final run.

        Closing the iterator early (the caller went away) interrupts the run, which then ends FAILED.
        """
        validate_chat(chat, self._settings.max_message_chars)
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        task = self._start(chat, queue.put_nowait)
        try:
            while (event := await queue.get()) is not None:
                yield event
            await task  # Raises what kept the run from being recorded at all.
        finally:
            task.cancel()  # A no-op once the run is done.

    async def chat(self, chat: ChatInput) -> RunOutcome:
        """Run the agent to the end. A failed run raises its domain error, naming the run."""
        validate_chat(chat, self._settings.max_message_chars)
        outcome = await self._start(chat, _ignore)
        if outcome.failure is not None:
            error = outcome.failure.error
            raise type(error)(f"run {outcome.run.id} failed: {error}")
        return outcome

    async def wait_for_active_runs(self, timeout: float) -> None:
        """Let interrupted runs record their end (used at shutdown, before the clients close)."""
        if self._active:
            await asyncio.wait(set(self._active), timeout=timeout)

    def _start(self, chat: ChatInput, emit: Emit) -> "asyncio.Task[RunOutcome]":
        task = asyncio.create_task(self._drive(chat, emit))
        self._active.add(task)
        task.add_done_callback(self._active.discard)
        return task

    async def _drive(self, chat: ChatInput, emit: Emit) -> RunOutcome:
        try:
            return await self._run(chat, emit)
        finally:
            emit(None)

    async def _run(self, chat: ChatInput, emit: Emit) -> RunOutcome:
        model = chat.model or self._settings.llm_model
        run = await self._runs.create_run(chat.message, model, chat.metadata)
        emit(Event(run=run))
        log.info("run %s started (model %s)", run.id, model)
        recorder = StepRecorder(self._runs, run.id, emit)
        usage = Usage()
        try:
            await recorder.record(user_request=runs_pb2.UserRequest(text=chat.message))
            answer = await self._converse(chat.message, model, recorder, emit, usage)
        except RunFailure as failure:
            return await self._fail(run.id, recorder, failure, usage, emit)
        except asyncio.CancelledError:
            failure = RunFailure(
                "interrupted",
                errors.Unavailable("the run was interrupted before it finished: the client disconnected or the "
                                   "engine shut down"),
            )
            # Shielded: the cancellation that brought us here must not also cancel recording the failure.
            await asyncio.shield(self._fail(run.id, recorder, failure, usage, emit))
            raise
        except Exception as exc:
            log.exception("run %s hit an unexpected error", run.id)
            failure = RunFailure("internal", errors.Internal(f"the engine failed: {type(exc).__name__}: {exc}"))
            await self._fail(run.id, recorder, failure, usage, emit)
            raise
        final = await self._runs.finish_run(run.id, runs_pb2.RUN_STATE_COMPLETED, "", _usage_proto(usage))
        emit(Event(run=final))
        log.info("run %s completed", run.id)
        return RunOutcome(final, answer=answer)

    async def _fail(
        self, run_id: str, recorder: StepRecorder, failure: RunFailure, usage: Usage, emit: Emit
    ) -> RunOutcome:
        log.warning("run %s failed (%s): %s", run_id, failure.code, failure)
        await recorder.record(server_numbered=True, error=runs_pb2.StepError(code=failure.code, message=str(failure)))
        final = await self._runs.finish_run(run_id, runs_pb2.RUN_STATE_FAILED, str(failure), _usage_proto(usage))
        emit(Event(run=final))
        return RunOutcome(final, failure=failure)

    async def _converse(self, message: str, model: str, recorder: StepRecorder, emit: Emit, usage: Usage) -> str:
        """The model/tool loop proper; returns the agent's answer."""
        try:
            tools = await self._tools.enabled_tool_schemas()
        except errors.DomainError as exc:
            raise RunFailure("tools_unavailable", errors.Unavailable(f"could not list the tools: {exc}")) from exc
        messages: list[dict[str, Any]] = []
        if self._settings.system_prompt:
            messages.append({"role": "system", "content": self._settings.system_prompt})
        messages.append({"role": "user", "content": message})

        for _ in range(self._settings.max_iterations):
            turn = await self._model_turn(model, messages, tools, emit)
            usage.add(turn.usage)
            if not turn.tool_calls:
                await recorder.record(agent_response=runs_pb2.AgentResponse(text=turn.content))
                return turn.content
            thought = turn.content or "Using tool: " + ", ".join(call.name for call in turn.tool_calls)
            await recorder.record(agent_thought=runs_pb2.AgentThought(text=thought))
            messages.append(_assistant_message(turn))
            for call in turn.tool_calls:
                messages.append(await self._call_tool(call, recorder))
        raise RunFailure(
            "max_iterations",
            errors.ResourceExhausted(
                f"the agent did not finish within {self._settings.max_iterations} model calls "
                "(ENGINE_MAX_ITERATIONS); simplify the request or raise the limit"
            ),
        )

    async def _model_turn(
        self, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]], emit: Emit
    ) -> ModelTurn:
        async for item in self._model.stream_turn(model=model, messages=messages, tools=tools):
            if isinstance(item, ModelTurn):
                return item
            emit(Event(delta=engine_pb2.TextDelta(text=item)))
        raise AssertionError("stream_turn always ends with a ModelTurn")

    async def _call_tool(self, call: RequestedToolCall, recorder: StepRecorder) -> dict[str, Any]:
        """Record and execute one tool call; return the tool message for the conversation."""
        params, problem = parse_tool_arguments(call.arguments)
        tool_call = runs_pb2.ToolCall(tool_name=call.name, tool_call_id=call.id, raw_arguments=call.arguments)
        if params is not None:
            tool_call.params.update(params)
        await recorder.record(tool_call=tool_call)

        started = time.perf_counter()
        outcome = ToolOutcome(error=problem) if params is None else await self._tools.execute(call.name, params)
        elapsed = outcome.duration_seconds if outcome.duration_seconds is not None else time.perf_counter() - started
        result = runs_pb2.ToolResult(tool_name=call.name, tool_call_id=call.id, text=outcome.text, error=outcome.error)
        if not outcome.error and outcome.result is not None:
            result.result.CopyFrom(value_from_python(outcome.result))
        await recorder.record(tool_result=result, duration=duration_from_seconds(elapsed))
        # The model sees errors as the tool's answer, so it can correct its call or explain the problem.
        return {
            "role": "tool",
            "tool_call_id": call.id,
            "content": f"Error: {outcome.error}" if outcome.error else outcome.text,
        }


def _assistant_message(turn: ModelTurn) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": turn.content or None,
        "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in turn.tool_calls
        ],
    }


def _usage_proto(usage: Usage) -> runs_pb2.Usage:
    return runs_pb2.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )
