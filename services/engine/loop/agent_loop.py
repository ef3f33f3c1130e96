"""The agent loop: the seed's tool-calling loop over one run that exists already, recording every step through
the runs service.

One run: record the user request, then model turns until the model answers without tool calls. A turn that
asks for tools records an agent-thought, then a tool-call step per call, runs the calls concurrently and
records their tool-result steps in the order of the calls. The run's limits (model calls, wall time, total
tokens, tool calls) end it FAILED with the limit's name as its code; any other failure ends it FAILED with an
`error` step (model down, tools listing down). While the model streams, deltas of the step it is forming go
to the run's watchers, tagged with the sequence that step will have.

Stopping a run from outside (a cancel, the engine shutting down) is the scheduler's: it cancels the task that
runs `execute` and records the end with `end_run`.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from services.common import errors
from services.common.identity import Caller
from services.common.json_values import JsonInputError, JsonTooDeep, parse_json
from services.common.limits import RunLimits
from services.common.run_vocabulary import COMPLETED, FAILED
from services.common.step_delta import StepDelta, ToolCallDelta
from services.common.usage import Usage
from services.engine import spans
from services.engine.agent_profile import AgentProfile
from services.engine.failures import RunFailure
from services.engine.journal import (
    AgentResponse,
    AgentThought,
    ModelCall,
    Resumed,
    Run,
    Step,
    StepError,
    ThreadHistory,
    ToolCall,
    ToolResult,
    UserRequest,
)
from services.engine.loop.approvals import ApprovalGate
from services.engine.loop.model_client import ModelClient, ModelSampling, ModelTurn, RequestedToolCall, ToolCallChunk
from services.engine.loop.run_progress import RunProgress
from services.engine.loop.steps import RunOutcome, RunPaused, StepRecorder, completed
from services.engine.loop.thread_context import NO_CONTEXT, ThreadContext, estimate_tokens, fit_context
from services.engine.run_request import ChatInput
from services.engine.settings import EngineSettings
from services.engine.step_checks import check_value
from services.engine.upstream.runs_client import RunsClient
from services.engine.upstream.tools_client import ToolOutcome, ToolsClient, idempotency_key

log = logging.getLogger(__name__)

#: The longest message a run ends with (the store takes 16 KiB).
MAX_END_MESSAGE_CHARS = 4000

#: Where deltas go: the engine's link to the run store, which hands them to the run's watchers.
DeltaSink = Callable[[StepDelta], None]


def parse_tool_arguments(call: RequestedToolCall, base_url: str) -> tuple[dict[str, Any] | None, str]:
    """The model's argument string as a JSON object, or None and a message the model can act on.

    Raises RunFailure "bad_model_response" for arguments no step can record: Python's json reads `NaN`,
    `Infinity` and `1e999` (as inf), which JSON has no form for, and nesting past what a step carries."""
    raw = call.arguments
    if not raw.strip():
        return {}, ""  # Some servers send "" for a call without arguments.
    try:
        # Depth is measured before parsing, so no nesting can make the parser recurse; non-finite numbers are
        # parsed, then refused by check_value, which names where they are.
        parsed = parse_json(raw, finite=False)
        check_value(parsed, "arguments")
    except JsonTooDeep as exc:
        raise _unrecordable(call, base_url, f"nest too deeply ({exc})") from None
    except JsonInputError as exc:
        return None, f"the arguments are not valid JSON ({exc}); send a JSON object that matches the tool's schema"
    except errors.InvalidArgument as exc:
        raise _unrecordable(call, base_url, f"cannot be recorded: {exc}") from None
    if not isinstance(parsed, dict):
        return None, f"the arguments must be a JSON object, not {type(parsed).__name__}"
    return parsed, ""


def _unrecordable(call: RequestedToolCall, base_url: str, problem: str) -> RunFailure:
    return RunFailure(
        "bad_model_response",
        errors.Unavailable(
            f"the model endpoint {base_url} sent arguments for tool call '{call.name}' ({call.id[:64]}) that {problem}"
        ),
    )


class AgentLoop:
    """Executes runs. Holds the clients of the model endpoint and the runs and tools services."""

    def __init__(
        self, runs: RunsClient, tools: ToolsClient, model: ModelClient, settings: EngineSettings, deltas: DeltaSink
    ) -> None:
        self._runs = runs
        self._tools = tools
        self._model = model
        self._settings = settings
        self._deltas = deltas

    async def execute(
        self,
        run: Run,
        chat: ChatInput,
        agent: AgentProfile,
        limits: RunLimits,
        recorder: StepRecorder,
        history: ThreadHistory | None = None,
        progress: RunProgress | None = None,
    ) -> RunOutcome:
        """Execute a RUNNING run to its end, or to a pause for approval, and record it; returns how it ended (or
        paused). `history`: the earlier turns of the run's thread, all ended (None for a thread's first run);
        `progress`: what the run did before a pause, or before its engine stopped, for a run resuming (None for
        a run that starts now).

        `max_duration` bounds each stretch of execution, not the time a person took to decide: a run resumed
        after an approval has it from the decision on, and a run resumed after its engine stopped only what is
        left of it (its engines' attempts count as one stretch). The other limits count the whole run.

        Raises only what kept the end from being recorded (the run store unavailable for too long, the run
        ended elsewhere); the store's lease reaper then ends the run.
        """
        model = run.model or self._settings.llm_model
        duration = limits.max_duration_seconds
        if progress is not None:
            duration = progress.time_left(duration)
        system_prompt = agent.instructions or self._settings.system_prompt
        context = NO_CONTEXT
        if history is not None:
            fixed = [{"role": "system", "content": system_prompt}, {"role": "user", "content": chat.message}]
            budget = self._settings.context_budget_tokens
            context = fit_context(history.turns, history.omitted_turns, budget, estimate_tokens(fixed))
        try:
            async with asyncio.timeout(duration) as deadline:
                if recorder.next_sequence == 1:
                    # The user's request is the run's first step: stored with the run when it was created to
                    # execute at once, recorded here when it waited in the queue or continues a thread.
                    await recorder.record(UserRequest(chat.message, context.turns, context.omitted))
                if progress is not None and progress.taking_over is not None:
                    # Taken over from an engine that stopped: say so, and what runs again or waits for a person.
                    marker = await self.take_over(progress, chat.owner)
                    log.info("run %s, resume %d: %s", run.id, marker.attempt, marker.summary)
                    await recorder.record(marker)
                if progress is not None and progress.answer is not None and not progress.pending:
                    answer = progress.answer  # recorded before the engine stopped: the run only has to finish
                else:
                    answer = await self._converse(
                        chat, agent, model, recorder, limits, system_prompt, context, progress or RunProgress()
                    )
        except RunPaused as paused:
            log.info("run %s waits for approval", run.id)
            return RunOutcome(paused.run)
        except RunFailure as failure:
            return await self._fail(recorder, failure)
        except TimeoutError:
            if not deadline.expired():
                raise
            too_long = RunFailure(
                "max_duration",
                errors.DeadlineExceeded(f"the run did not finish within its time limit of "
                                        f"{limits.max_duration_seconds:g} s (limits.max_duration)"),
            )
            return await self._fail(recorder, too_long)
        final = await self._runs.finish_run(run.id, COMPLETED, epoch=recorder.epoch)
        log.info("run %s ended %s", run.id, final.state)
        return completed(final, answer)

    async def end_run(self, recorder: StepRecorder, state: str, code: str, message: str) -> Run:
        """Record the `error` step a run ends on and finish it as `state` (FAILED or CANCELLED)."""
        # The message may quote what the model or a tool sent: made storable (no NUL, bounded), so that the end
        # of a run is never itself refused.
        message = message.replace("\x00", "\\x00")[:MAX_END_MESSAGE_CHARS]
        await recorder.settle()
        try:
            await recorder.record(StepError(code, message))
        except errors.InvalidArgument as exc:
            log.error("run %s: the store refused its error step (%s); finishing it without", recorder.run_id, exc)
        return await self._runs.finish_run(recorder.run_id, state, code, message, epoch=recorder.epoch)

    async def run_agent_node(
        self,
        message: str,
        owner: Caller,
        agent: AgentProfile,
        recorder: StepRecorder,
        limits: RunLimits,
        progress: RunProgress,
    ) -> str:
        """A workflow's agent node: `agent` answers `message` within the workflow's run (its steps tagged with
        the recorder's node id), its counts added to `progress`'s; returns the answer. `progress.messages` holds
        the node's conversation so far when it resumes after an approval; empty, the node begins by recording
        the message as its user-request step. Raises RunFailure or RunPaused."""
        if not progress.messages:
            await recorder.record(UserRequest(message))
            progress.messages = [{"role": "user", "content": message}]
        chat = ChatInput(message=message, owner=owner)
        system_prompt = agent.instructions or self._settings.system_prompt
        model = agent.model or self._settings.llm_model
        return await self._converse(chat, agent, model, recorder, limits, system_prompt, NO_CONTEXT, progress)

    async def fail(self, recorder: StepRecorder, failure: RunFailure) -> RunOutcome:
        """End the run FAILED with the failure's `error` step."""
        return await self._fail(recorder, failure)

    async def _fail(self, recorder: StepRecorder, failure: RunFailure) -> RunOutcome:
        log.warning("run %s failed (%s): %s", recorder.run_id, failure.code, failure)
        final = await self.end_run(recorder, FAILED, failure.code, str(failure))
        return RunOutcome(final, failure=failure)

    async def take_over(self, progress: RunProgress, owner: Caller, idle: str | None = None) -> Resumed:
        """The resume marker of a run (or a workflow node) taken over from an engine that stopped, as
        `progress.taking_over` names it: its pending calls held for a person or run again by what their tools,
        listed for `owner` now, declare (RunProgress.take_over; `idle` as there)."""
        assert progress.taking_over is not None
        executor_id, attempt = progress.taking_over
        return progress.take_over(executor_id, attempt, await self._repeat_safety(owner), idle)

    def outcome_gate(self, progress: RunProgress) -> ApprovalGate:
        """The approvals of calls whose outcome is unknown (`progress.unknown`), decided or not, for a call made
        outside the agent loop (a workflow's tool node), which no tool's own approval gates."""
        return ApprovalGate(set(), progress.decisions, self._settings.tool_approval_timeout_seconds, progress.unknown)

    async def _repeat_safety(self, owner: Caller) -> Callable[[RequestedToolCall], bool]:
        """Whether a call whose outcome is unknown may run again without a person: its tool, as the tools service
        lists it now, is read-only or idempotent for the call's arguments. A tool not listed (switched off, gone)
        or tools that cannot be listed: not safe, so a person decides."""
        try:
            tools = {tool.name: tool for tool in await self._tools.enabled_tools(owner)}
        except errors.DomainError as exc:
            log.warning("could not list the tools to tell which calls may run again (all wait for a person): %s", exc)
            tools = {}

        def repeat_safe(call: RequestedToolCall) -> bool:
            tool = tools.get(call.name)
            if tool is None:
                return False
            try:
                arguments, _ = parse_tool_arguments(call, self._settings.llm_base_url)
            except RunFailure:
                return False  # arguments no step could record: the call never ran
            return tool.repeats_safely(arguments)

        return repeat_safe

    async def _converse(
        self,
        chat: ChatInput,
        agent: AgentProfile,
        model: str,
        recorder: StepRecorder,
        limits: RunLimits,
        system_prompt: str,
        context: ThreadContext,
        progress: RunProgress,
    ) -> str:
        """The model/tool loop proper, as `agent`, after the thread's earlier turns in `context` and what the run
        did before a pause (`progress`); returns the agent's answer. Raises RunPaused when a tool call waits for
        approval."""
        owner = chat.owner
        try:
            enabled = await self._tools.enabled_tools(owner)
        except errors.DomainError as exc:
            raise RunFailure("tools_unavailable", errors.Unavailable(f"could not list the tools: {exc}")) from exc
        # The agent's tools among those enabled (a tool switched off is off for every agent).
        offered = [tool for tool in enabled if agent.offers(tool.name)]
        tools = [tool.schema for tool in offered]
        gated = ApprovalGate(
            {tool.name for tool in offered if tool.requires_approval},
            progress.decisions,
            self._settings.tool_approval_timeout_seconds,
            progress.unknown,
        )
        sampling = ModelSampling(agent.temperature, agent.top_p, agent.max_output_tokens)
        messages: list[dict[str, Any]] = []
        if system_prompt:
            messages.append({"role": "system", "content": system_prompt})
        messages.extend(context.messages)
        messages.extend(progress.messages or [{"role": "user", "content": chat.message}])

        tally = progress  # its counts go on from where the run (or the workflow's earlier nodes) left them
        if progress.pending:
            # Resumed after an approval: the calls the last turn asked for come first.
            messages.extend(await self._call_tools(
                None, progress.pending, recorder, owner, agent, gated, progress.pending_sequences
            ))
        while True:
            if tally.model_calls >= (limits.max_model_calls or 0):
                raise RunFailure(
                    "max_model_calls",
                    errors.ResourceExhausted(
                        f"the agent did not finish within {limits.max_model_calls} model calls "
                        "(limits.max_model_calls); simplify the request or raise the limit"
                    ),
                )
            tally.model_calls += 1
            turn = await self._model_turn(model, messages, tools, sampling, recorder)
            tally.usage += turn.usage
            model_call = _model_call(model, turn)
            if not turn.tool_calls:
                await recorder.record(AgentResponse(turn.content), model_call=model_call)
                return turn.content
            # A turn of tool calls alone shows a placeholder, marked so a later turn's context leaves it out.
            thought = AgentThought(
                text=turn.content or "Using tool: " + ", ".join(call.name for call in turn.tool_calls),
                placeholder=not turn.content,
            )
            thought_step = Step(thought, model_call=model_call)
            tally.tool_calls += len(turn.tool_calls)
            failure = _limit_reached(tally.usage, tally.tool_calls, limits)
            if failure is not None:
                await recorder.record_all([thought_step])  # the turn happened; the calls it asks for will not
                raise failure
            messages.append(_assistant_message(turn))
            messages.extend(await self._call_tools(thought_step, turn.tool_calls, recorder, owner, agent, gated))

    async def _model_turn(
        self,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        sampling: ModelSampling,
        recorder: StepRecorder,
    ) -> ModelTurn:
        # The text becomes the next step (a thought or the response); the tool calls the steps after the thought.
        sequence = recorder.next_sequence
        span = spans.ModelCallSpan(model, self._model.base_url, messages)
        with span.current():
            try:
                stream = self._model.stream_turn(model=model, messages=messages, tools=tools, sampling=sampling)
                async for item in stream:
                    if isinstance(item, ModelTurn):
                        span.answered(item.usage.prompt_tokens, item.usage.completion_tokens, item.finish_reason,
                                      item.content, ((call.id, call.name, call.arguments) for call in item.tool_calls))
                        return item
                    if isinstance(item, ToolCallChunk):
                        piece = ToolCallDelta(tool_call_id=item.id, tool_name=item.name, arguments=item.arguments)
                        self._deltas(
                            StepDelta(run_id=recorder.run_id, sequence=sequence + 1 + item.index, tool_call=piece)
                        )
                    else:
                        self._deltas(StepDelta(run_id=recorder.run_id, sequence=sequence, text=item))
            except RunFailure as failure:
                span.failed(failure.code)
                raise
            except Exception as exc:
                span.failed(type(exc).__name__)
                raise
        raise AssertionError("stream_turn always ends with a ModelTurn")

    async def _call_tools(
        self,
        thought: Step | None,
        calls: list[RequestedToolCall],
        recorder: StepRecorder,
        owner: Caller,
        agent: AgentProfile,
        gate: ApprovalGate,
        recorded: dict[str, int] | None = None,
    ) -> list[dict[str, Any]]:
        """Record the thought and the calls (in one append, before any tool runs; `thought` None: recorded before
        a pause, as the steps `recorded` names by tool call id), ask for the approvals the calls need (RunPaused at
        the first one undecided), then execute the calls concurrently on behalf of the run's `owner`, each with the
        idempotency key of its tool-call step, and record each result in the order of the calls; return the tool
        messages for the conversation."""
        parsed = [parse_tool_arguments(call, self._model.base_url) for call in calls]
        if thought is not None:
            steps = [thought]
            for call, (params, _) in zip(calls, parsed, strict=True):
                # Arguments that parse to {} are recorded as none, as the model sent none.
                steps.append(Step(ToolCall(call.name, call.id, call.arguments, params or None)))
            stored = await recorder.record_all(steps)
            sequences = [step.sequence for step in stored[1:]]
        else:
            sequences = [(recorded or {})[call.id] for call in calls]
        keys = [idempotency_key(recorder.run_id, sequence) for sequence in sequences]
        for call, (params, _) in zip(calls, parsed, strict=True):
            if params is not None and agent.offers(call.name) and gate.undecided(call):
                raise RunPaused(await recorder.pause(gate.request(call)))
        # Not a TaskGroup: it would wrap a failure of the store (raised by `record`) in an ExceptionGroup.
        executions = [
            asyncio.ensure_future(
                self._execute_tool(call, None, refusal, owner, key)
                if (refusal := gate.refusal(call)) is not None
                else self._execute_tool(call, params, problem, owner, key)
                if agent.offers(call.name)
                # Recorded as the model asked (the step above), refused as the agent has it.
                else self._execute_tool(call, None, f"tool '{call.name}' is not one of this agent's tools", owner, key)
            )
            for call, (params, problem), key in zip(calls, parsed, keys, strict=True)
        ]
        messages = []
        try:
            for call, execution in zip(calls, executions, strict=True):
                outcome, elapsed = await execution
                value = None if outcome.error else outcome.result
                result = ToolResult(call.name, call.id, value, outcome.text, outcome.error)
                await recorder.record(result, duration_seconds=elapsed)
                # The model sees errors as the tool's answer, so it can correct its call or explain the problem.
                messages.append({
                    "role": "tool",
                    "tool_call_id": call.id,
                    "content": f"Error: {outcome.error}" if outcome.error else outcome.text,
                })
        finally:
            for execution in executions:
                execution.cancel()  # the pending ones, when the run is cancelled or failed
        return messages

    async def _execute_tool(
        self, call: RequestedToolCall, params: dict[str, Any] | None, problem: str, owner: Caller, key: str
    ) -> tuple[ToolOutcome, float]:
        started = time.perf_counter()
        if params is None:
            outcome = ToolOutcome(error=problem)
        else:
            outcome = await self._tools.execute(call.name, params, owner, key, call_id=call.id)
        elapsed = outcome.duration_seconds if outcome.duration_seconds is not None else time.perf_counter() - started
        return outcome, elapsed


def _limit_reached(usage: Usage, tool_calls: int, limits: RunLimits) -> RunFailure | None:
    """The failure of a run whose model turn reached its token limit or asks for more tool calls than allowed."""
    if usage.total_tokens >= (limits.max_total_tokens or 0):
        return RunFailure(
            "max_total_tokens",
            errors.ResourceExhausted(
                f"the run used {usage.total_tokens} tokens, reaching its limit of {limits.max_total_tokens} "
                "(limits.max_total_tokens)"
            ),
        )
    if tool_calls > (limits.max_tool_calls or 0):
        return RunFailure(
            "max_tool_calls",
            errors.ResourceExhausted(
                f"the agent asked for {tool_calls} tool calls, more than its limit of {limits.max_tool_calls} "
                "(limits.max_tool_calls)"
            ),
        )
    return None


def _model_call(model: str, turn: ModelTurn) -> ModelCall:
    return ModelCall(
        turn.usage, time_to_first_token_seconds=turn.time_to_first_token, latency_seconds=turn.latency, model=model,
        cached_prompt_tokens=turn.cached_prompt_tokens,
    )


def _assistant_message(turn: ModelTurn) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": turn.content or None,
        "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in turn.tool_calls
        ],
    }
