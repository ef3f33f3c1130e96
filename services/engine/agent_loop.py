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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agentplatform.runs.internal.v1 import execution_pb2
from agentplatform.runs.v1 import runs_pb2
from services.common import errors
from services.common.identity import Caller
from services.common.json_values import JsonInputError, JsonTooDeep, parse_json
from services.common.limits import RunLimits
from services.common.rpc.protoconv import duration_from_seconds, value_from_python
from services.common.usage import Usage
from services.engine.agent_profile import AgentProfile
from services.engine.clients import RunsClient, ToolOutcome, ToolsClient
from services.engine.failures import RunFailure
from services.engine.model_client import ModelClient, ModelSampling, ModelTurn, RequestedToolCall, ToolCallChunk
from services.engine.run_progress import Decision, RunProgress
from services.engine.run_request import ChatInput
from services.engine.settings import EngineSettings
from services.engine.step_checks import DEFAULT_MAX_STEP_BYTES, check_value, oversized
from services.engine.thread_context import NO_CONTEXT, ThreadContext, estimate_tokens, fit_context

log = logging.getLogger(__name__)

#: The longest message a run ends with (the store takes 16 KiB).
MAX_END_MESSAGE_CHARS = 4000

#: Where deltas go: the engine's link to the run store, which hands them to the run's watchers.
DeltaSink = Callable[[runs_pb2.StepDelta], None]


@dataclass
class RunOutcome:
    """How a run ended, or paused: the run as the store left it, the answer when it completed, the failure when it
    did not. A run paused for approval is WAITING, neither answered nor failed: it resumes when decided."""

    run: runs_pb2.Run
    answer: str = ""
    failure: RunFailure | None = None

    @property
    def waiting(self) -> bool:
        return self.run.state == runs_pb2.RUN_STATE_WAITING


class RunPaused(Exception):
    """The run now waits for a person's approval (WAITING in the store); this engine lets it go."""

    def __init__(self, run: runs_pb2.Run) -> None:
        super().__init__(f"run {run.id} waits for approval")
        self.run = run


class StepRecorder:
    """Appends one run's steps, numbering them itself (1, 2, 3 …) so that a retried append is idempotent.

    An append is shielded from the run's cancellation: it completes (or fails) on its own, so the step that
    records the run's end can wait for it (`settle`) and take the next sequence without guessing whether the
    interrupted append was stored.
    """

    def __init__(
        self,
        runs: RunsClient,
        run_id: str,
        on_stored: Callable[[list[runs_pb2.Step]], None] | None = None,
        recorded: int = 0,
        executor_id: str = "",
        max_step_bytes: int = DEFAULT_MAX_STEP_BYTES,
    ) -> None:
        """`recorded`: how many steps the store has already (those created with the run, or before a pause);
        `executor_id`: the engine process holding the run's lease; `max_step_bytes`: the store's limit on a step
        (RUNS_MAX_STEP_BYTES)."""
        self._runs = runs
        self._max_step_bytes = max_step_bytes
        self.run_id = run_id
        self.executor_id = executor_id
        #: The workflow node whose steps are being recorded ("" outside workflows): every step carries it.
        self.node_id = ""
        self._on_stored = on_stored
        self._last_sequence = recorded
        self._in_flight: asyncio.Future[list[runs_pb2.Step]] | None = None

    @property
    def next_sequence(self) -> int:
        return self._last_sequence + 1

    async def record(self, **content: Any) -> runs_pb2.Step:
        """Store a step (keyword arguments as for runs_pb2.Step: its content case, duration, model_call)."""
        [stored] = await self.record_all([runs_pb2.Step(**content)])
        return stored

    async def record_all(self, steps: list[runs_pb2.Step]) -> list[runs_pb2.Step]:
        """Store steps known together (a thought and the tool calls it asks for) in one append, numbered in order.

        Raises RunFailure "step_too_large" for a step larger than the store takes (checked before it is sent:
        the run ends at once, naming the node and field), and "step_refused" when the store refuses the append as
        invalid: the run cannot go on without its record, and ending it now beats leaving it to the reaper. The
        step a run ends on (`error`) is exempt, so a failure never loops."""
        ending = any(step.HasField("error") for step in steps)
        for offset, step in enumerate(steps):
            step.run_id, step.sequence = self.run_id, self.next_sequence + offset
            step.node_id = self.node_id
            if not ending:
                self._check_size(step)
        self._in_flight = asyncio.ensure_future(self._runs.append_steps(self.run_id, steps))
        self._in_flight.add_done_callback(self._stored)
        try:
            return await asyncio.shield(self._in_flight)
        except (errors.InvalidArgument, errors.ResourceExhausted) as exc:
            if ending:
                raise
            raise self._refused(exc) from exc

    def _check_size(self, step: runs_pb2.Step) -> None:
        try:
            problem = oversized(step, self._max_step_bytes)
        except errors.InvalidArgument as exc:  # not JSON at all (a non-finite number no check caught before)
            raise self._refused(exc) from exc
        if problem is not None:
            where = f"node '{self.node_id}': " if self.node_id else ""
            raise RunFailure("step_too_large", errors.ResourceExhausted(where + problem))

    def _refused(self, exc: errors.InvalidArgument | errors.ResourceExhausted) -> RunFailure:
        where = f"node '{self.node_id}': " if self.node_id else ""
        code = "step_too_large" if isinstance(exc, errors.ResourceExhausted) else "step_refused"
        return RunFailure(code, type(exc)(f"{where}the run store refused the step: {exc}"))

    def _stored(self, append: "asyncio.Future[list[runs_pb2.Step]]") -> None:
        if not append.cancelled() and append.exception() is None:
            self._last_sequence = max(self._last_sequence, append.result()[-1].sequence)
            if self._on_stored is not None:
                self._on_stored(append.result())

    async def pause(self, request: runs_pb2.ApprovalRequest) -> runs_pb2.Run:
        """Record the approval-request step as the next one and leave the run WAITING in the store."""
        step = runs_pb2.Step(
            run_id=self.run_id, sequence=self.next_sequence, approval_request=request, node_id=self.node_id
        )
        self._check_size(step)
        try:
            run = await self._runs.await_approval(self.run_id, self.executor_id, step)
        except (errors.InvalidArgument, errors.ResourceExhausted) as exc:
            raise self._refused(exc) from exc
        # Not handed to `on_stored`: followers see the step, as stored, from the store (the run is no longer
        # this engine's to report).
        self._last_sequence = step.sequence
        return run

    async def settle(self) -> None:
        """Wait for an append interrupted by a cancellation, whatever its outcome, and count it if it was stored.
        A cancellation can arrive in the loop iteration the append's answer did, before its done callback ran."""
        if self._in_flight is not None:
            if not self._in_flight.done():
                await asyncio.wait({self._in_flight})
            self._stored(self._in_flight)


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
        run: runs_pb2.Run,
        chat: ChatInput,
        agent: AgentProfile,
        limits: RunLimits,
        recorder: StepRecorder,
        history: execution_pb2.ThreadHistory | None = None,
        progress: RunProgress | None = None,
    ) -> RunOutcome:
        """Execute a RUNNING run to its end, or to a pause for approval, and record it; returns how it ended (or
        paused). `history`: the earlier turns of the run's thread, all ended (None for a thread's first run);
        `progress`: what the run did before a pause, for a run resuming (None for a run that starts now).

        A resumed run gets its full `max_duration` again: the limit bounds each stretch of execution, not the
        time a person took to decide.

        Raises only what kept the end from being recorded (the run store unavailable for too long, the run
        ended elsewhere); the store's lease reaper then ends the run.
        """
        model = run.model or self._settings.llm_model
        duration = limits.max_duration_seconds
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
                    request = runs_pb2.UserRequest(
                        text=chat.message, context_turns=context.turns, omitted_turns=context.omitted
                    )
                    await recorder.record(user_request=request)
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
            failure = RunFailure(
                "max_duration",
                errors.DeadlineExceeded(f"the run did not finish within its time limit of {duration:g} s "
                                        "(limits.max_duration)"),
            )
            return await self._fail(recorder, failure)
        final = await self._runs.finish_run(run.id, runs_pb2.RUN_STATE_COMPLETED)
        log.info("run %s completed", run.id)
        return RunOutcome(final, answer=answer)

    async def end_run(
        self, recorder: StepRecorder, state: "runs_pb2.RunState", code: str, message: str
    ) -> runs_pb2.Run:
        """Record the `error` step a run ends on and finish it as `state` (FAILED or CANCELLED)."""
        # The message may quote what the model or a tool sent: made storable (no NUL, bounded), so that the end
        # of a run is never itself refused.
        message = message.replace("\x00", "\\x00")[:MAX_END_MESSAGE_CHARS]
        await recorder.settle()
        try:
            await recorder.record(error=runs_pb2.StepError(code=code, message=message))
        except errors.InvalidArgument as exc:
            log.error("run %s: the store refused its error step (%s); finishing it without", recorder.run_id, exc)
        return await self._runs.finish_run(recorder.run_id, state, code, message)

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
            await recorder.record(user_request=runs_pb2.UserRequest(text=message))
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
        final = await self.end_run(recorder, runs_pb2.RUN_STATE_FAILED, failure.code, str(failure))
        return RunOutcome(final, failure=failure)

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
            messages.extend(await self._call_tools(None, progress.pending, recorder, owner, agent, gated))
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
            model_call = _model_call_proto(turn)
            if not turn.tool_calls:
                await recorder.record(agent_response=runs_pb2.AgentResponse(text=turn.content), model_call=model_call)
                return turn.content
            # A turn of tool calls alone shows a placeholder, marked so a later turn's context leaves it out.
            thought = runs_pb2.AgentThought(
                text=turn.content or "Using tool: " + ", ".join(call.name for call in turn.tool_calls),
                placeholder=not turn.content,
            )
            thought_step = runs_pb2.Step(agent_thought=thought, model_call=model_call)
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
        async for item in self._model.stream_turn(model=model, messages=messages, tools=tools, sampling=sampling):
            if isinstance(item, ModelTurn):
                return item
            if isinstance(item, ToolCallChunk):
                piece = runs_pb2.ToolCallDelta(tool_call_id=item.id, tool_name=item.name, arguments=item.arguments)
                self._deltas(
                    runs_pb2.StepDelta(run_id=recorder.run_id, sequence=sequence + 1 + item.index, tool_call=piece)
                )
            else:
                self._deltas(runs_pb2.StepDelta(run_id=recorder.run_id, sequence=sequence, text=item))
        raise AssertionError("stream_turn always ends with a ModelTurn")

    async def _call_tools(
        self,
        thought: runs_pb2.Step | None,
        calls: list[RequestedToolCall],
        recorder: StepRecorder,
        owner: Caller,
        agent: AgentProfile,
        gate: "ApprovalGate",
    ) -> list[dict[str, Any]]:
        """Record the thought and the calls (in one append, before any tool runs; `thought` None: recorded before
        a pause), ask for the approvals the calls need (RunPaused at the first one undecided), then execute the
        calls concurrently on behalf of the run's `owner` and record each result in the order of the calls;
        return the tool messages for the conversation."""
        parsed = [parse_tool_arguments(call, self._model.base_url) for call in calls]
        if thought is not None:
            steps = [thought]
            for call, (params, _) in zip(calls, parsed, strict=True):
                tool_call = runs_pb2.ToolCall(tool_name=call.name, tool_call_id=call.id, raw_arguments=call.arguments)
                if params is not None:
                    tool_call.params.update(params)
                steps.append(runs_pb2.Step(tool_call=tool_call))
            await recorder.record_all(steps)
        for call, (params, _) in zip(calls, parsed, strict=True):
            if params is not None and agent.offers(call.name) and gate.undecided(call):
                raise RunPaused(await recorder.pause(gate.request(call)))
        # Not a TaskGroup: it would wrap a failure of the store (raised by `record`) in an ExceptionGroup.
        executions = [
            asyncio.ensure_future(
                self._execute_tool(call, None, refusal, owner)
                if (refusal := gate.refusal(call)) is not None
                else self._execute_tool(call, params, problem, owner)
                if agent.offers(call.name)
                # Recorded as the model asked (the step above), refused as the agent has it.
                else self._execute_tool(call, None, f"tool '{call.name}' is not one of this agent's tools", owner)
            )
            for call, (params, problem) in zip(calls, parsed, strict=True)
        ]
        messages = []
        try:
            for call, execution in zip(calls, executions, strict=True):
                outcome, elapsed = await execution
                result = runs_pb2.ToolResult(
                    tool_name=call.name, tool_call_id=call.id, text=outcome.text, error=outcome.error
                )
                if not outcome.error and outcome.result is not None:
                    result.result.CopyFrom(value_from_python(outcome.result))
                await recorder.record(tool_result=result, duration=duration_from_seconds(elapsed))
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
        self, call: RequestedToolCall, params: dict[str, Any] | None, problem: str, owner: Caller
    ) -> tuple[ToolOutcome, float]:
        started = time.perf_counter()
        if params is None:
            outcome = ToolOutcome(error=problem)
        else:
            outcome = await self._tools.execute(call.name, params, owner)
        elapsed = outcome.duration_seconds if outcome.duration_seconds is not None else time.perf_counter() - started
        return outcome, elapsed


class ApprovalGate:
    """Which tool calls of a run wait for a person's approval (their tool requires it), and what was decided."""

    def __init__(self, tools: set[str], decisions: dict[str, Decision], timeout_seconds: float) -> None:
        self._tools = tools
        self._decisions = decisions
        self._timeout_seconds = timeout_seconds

    def undecided(self, call: RequestedToolCall) -> bool:
        return call.name in self._tools and call.id not in self._decisions

    def refusal(self, call: RequestedToolCall) -> str | None:
        """The error the model is told for a call that was not approved; None for one that may run."""
        decision = self._decisions.get(call.id)
        if decision is None or decision.approved:
            return None
        who = f" by {decision.decided_by}" if decision.decided_by else ""
        because = f": {decision.comment}" if decision.comment else ""
        return f"the call was not approved ({decision.outcome}{who}){because}; do not retry it"

    def request(self, call: RequestedToolCall) -> runs_pb2.ApprovalRequest:
        request = runs_pb2.ApprovalRequest(
            prompt=f"The agent wants to call {call.name} with {call.arguments or '{}'}. Allow it?",
            tool_call_id=call.id,
            tool_name=call.name,
        )
        if self._timeout_seconds:
            request.expire_time.FromDatetime(datetime.now(UTC) + timedelta(seconds=self._timeout_seconds))
        return request


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


def _model_call_proto(turn: ModelTurn) -> runs_pb2.ModelCall:
    call = runs_pb2.ModelCall(
        usage=runs_pb2.Usage(
            prompt_tokens=turn.usage.prompt_tokens,
            completion_tokens=turn.usage.completion_tokens,
            total_tokens=turn.usage.total_tokens,
        ),
        latency=duration_from_seconds(turn.latency),
    )
    if turn.time_to_first_token is not None:
        call.time_to_first_token.CopyFrom(duration_from_seconds(turn.time_to_first_token))
    return call


def _assistant_message(turn: ModelTurn) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": turn.content or None,
        "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in turn.tool_calls
        ],
    }
