"""Executing a saved workflow as a run: node after node along the edges, the state in CEL, every node's work
recorded as steps tagged with its id (no gRPC servers here; it uses the engine's clients).

A workflow run's steps are its whole record, so the run can stop anywhere (an approval node, a tool approval in an
agent node, an engine restart after a decision, its engine dying mid-node) and be resumed by any engine from its
steps alone:
- the start node's `node-outcome` step, created with the run, holds the inputs; every later node-outcome holds the
  variables its node set, so the state is the fold of them all;
- the last node-outcome and its branch say which node comes next; steps after it that carry the next node's id are
  that node's unfinished work (an agent's conversation so far, an approval request and its decision);
- a while node's node-outcome carries the iteration it begins, so its bound holds across a pause.

A run taken over from an engine that stopped (issue 18) goes on node by node: finished nodes are never run again,
and the node in flight goes on from its steps after a `resumed` marker tagged with its id. An agent node does as an
agent run does (its recorded replies never requested again, its cut-off tool calls run again when their tool is
safe to repeat, else held for a person: AgentLoop.take_over); a tool node's cut-off call follows the same rule, and
"continue without it" leaves the node's output null.

Node kinds (agentplatform.agents.v1.Node): an agent node runs a saved agent's tool-calling loop on a message
computed from the state and keeps its answer; a tool node calls a tool with computed arguments and keeps its result
(a tool error fails the run: a workflow has no model to tell); if_else and while_loop follow their condition;
set_state assigns computed values; an approval node pauses the run WAITING until ApproveStep/RejectStep or its
timeout and follows "approved", "rejected" or "timeout"; an end node computes the result, recorded as the node's
output and as the run's agent-response (its text), and the run completes.

The run's limits cover all nodes together: model calls, tokens and tool calls are counted over every agent node
and tool node; max_duration bounds each stretch of execution (waiting for a person does not count).

A tool node's call does not wait for the tool's own approval (`requires_approval`): the workflow's author put the
call there on purpose, and an approval node before it is how a person gates it. Tool calls an agent node's model
makes are gated as in any run.
"""

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from services.common import errors
from services.common.identity import Caller
from services.common.limits import RunLimits
from services.common.run_vocabulary import COMPLETED
from services.engine import spans
from services.engine.failures import RunFailure
from services.engine.journal import (
    APPROVED,
    REJECTED,
    TIMED_OUT,
    AgentResponse,
    ApprovalDecision,
    ApprovalRequest,
    NodeOutcome,
    Run,
    Step,
    ToolCall,
    ToolResult,
)
from services.engine.loop.agent_loop import AgentLoop
from services.engine.loop.model_client import RequestedToolCall
from services.engine.loop.run_progress import RunProgress, progress_from_steps
from services.engine.loop.steps import RunOutcome, RunPaused, StepRecorder, completed
from services.engine.step_checks import check_value
from services.engine.upstream.agents_client import AgentsClient
from services.engine.upstream.runs_client import RunsClient
from services.engine.upstream.tools_client import ToolsClient, idempotency_key
from services.engine.workflow_graph import Node, SavedWorkflow

if TYPE_CHECKING:
    from services.common import cel

log = logging.getLogger(__name__)

#: Steps of node-outcomes past which a run is stopped: a bound on a workflow that loops through its while nodes
#: (each bounded) inside other loops.
MAX_NODE_VISITS = 10_000

#: The branch an approval node takes for each decision.
_OUTCOME_BRANCH = {APPROVED: "approved", REJECTED: "rejected", TIMED_OUT: "timeout"}


def start_step(inputs: dict[str, Any], workflow: SavedWorkflow) -> Step:
    """The first step of a workflow run: its start node, with the inputs as the state's first variables."""
    return Step(NodeOutcome(kind="start", assigned=inputs), sequence=1, node_id=workflow.start_node_id)


def check_inputs(workflow: SavedWorkflow, inputs: dict[str, Any]) -> None:
    """InvalidArgument for an input the workflow does not declare, or a required one missing."""
    declared = {item.name for item in workflow.inputs}
    unknown = sorted(set(inputs) - declared)
    if unknown:
        raise errors.InvalidArgument(
            f"inputs {', '.join(map(repr, unknown))} are not inputs of workflow '{workflow.id}'; it takes "
            + (", ".join(sorted(declared)) or "none")
        )
    missing = [item.name for item in workflow.inputs if item.required and item.name not in inputs]
    if missing:
        raise errors.InvalidArgument(f"inputs.{missing[0]} is required by workflow '{workflow.id}'")
    check_value(inputs, "inputs")  # they become the start node's step


@dataclass
class _Position:
    """Where a run of the workflow is, read back from its steps."""

    state: dict[str, Any] = field(default_factory=dict)
    #: The node whose outcome was recorded last, the branch it took, and its output (an end node's).
    last_node: str = ""
    last_branch: str = ""
    last_output: Any = None
    #: While nodes: the iteration each has begun since the run last entered it.
    iterations: dict[str, int] = field(default_factory=dict)
    #: Steps recorded after the last node-outcome (the next node's unfinished work).
    pending_steps: list[Step] = field(default_factory=list)
    visits: int = 0


def _read_back(steps: Sequence[Step]) -> _Position:
    position = _Position()
    for step in steps:
        outcome = step.content
        if not isinstance(outcome, NodeOutcome):
            position.pending_steps.append(step)
            continue
        position.state.update(_state_values(outcome.assigned))
        position.last_node, position.last_branch = step.node_id, outcome.branch
        position.last_output = outcome.output
        if outcome.kind == "while_loop":
            position.iterations[step.node_id] = outcome.iteration if outcome.branch == "body" else 0
        position.pending_steps = []
        position.visits += 1
    return position


class _Graph:
    """The workflow's nodes by id, its edges by (source, branch), its expressions compiled once."""

    def __init__(self, workflow: SavedWorkflow) -> None:
        self.workflow = workflow
        self.nodes = {node.id: node for node in workflow.nodes}
        self.next = {(edge.from_node, edge.branch): edge.to_node for edge in workflow.edges}
        known: set[str] = {item.name for item in workflow.inputs}
        for node in workflow.nodes:
            if node.kind == "agent":
                known.add(node.agent.output)
            elif node.kind == "tool":
                known.add(node.tool.output)
            elif node.kind == "set_state":
                known.update(node.set_state.assignments)
        self._known = frozenset(known)
        self._programs: dict[tuple[str, str], cel.Program] = {}

    def following(self, node_id: str, branch: str) -> Node:
        target = self.next.get((node_id, branch))
        if target is None or target not in self.nodes:
            raise RunFailure(
                "workflow_invalid",
                errors.FailedPrecondition(f"node '{node_id}' has no edge for outcome {branch!r}"),
            )
        return self.nodes[target]

    async def evaluate(self, node_id: str, field_name: str, expression: str, state: dict[str, Any]) -> Any:
        """The value of a node's expression on the state; a failure fails the run, naming the node and field."""
        key = (node_id, field_name)
        try:
            program = self._programs.get(key)
            if program is None:
                # Off the event loop: the engine's first expression also imports CEL (see _compile).
                program = self._programs[key] = await asyncio.to_thread(_compile, expression, self._known)
            # CPU-bound and metered: off the event loop, so other runs go on meanwhile.
            return await asyncio.to_thread(_evaluate, program, state)
        except errors.InvalidArgument as exc:
            raise RunFailure(
                "expression_failed", errors.InvalidArgument(f"node '{node_id}' {field_name}: {exc}")
            ) from exc


def _compile(expression: str, known: frozenset[str]) -> "cel.Program":
    # Imported here, not at the top: CEL (celpy, its lark parser built at import, pendulum) adds about 10 MiB to
    # every engine's RSS at rest, and only workflow runs need it (issue 22). The first import takes about a second
    # of CPU, which is why this runs in a thread.
    from services.common import cel

    return cel.compile(expression, known)


def _evaluate(program: "cel.Program", state: dict[str, Any]) -> Any:
    from services.common import cel  # imported by _compile already: a lookup in sys.modules

    value = cel.evaluate(program, state)
    # State and outputs go into steps: a value the store cannot take fails here, naming the node.
    check_value(value, "value")
    return value


class WorkflowRunner:
    """Executes workflow runs. Holds the agent loop (for agent nodes) and the clients it needs."""

    def __init__(self, loop: AgentLoop, runs: RunsClient, tools: ToolsClient, agents: AgentsClient) -> None:
        self._loop = loop
        self._runs = runs
        self._tools = tools
        self._agents = agents

    async def execute(
        self,
        run: Run,
        workflow: SavedWorkflow,
        owner: Caller,
        limits: RunLimits,
        recorder: StepRecorder,
        steps: Sequence[Step],
        progress: RunProgress | None = None,
    ) -> RunOutcome:
        """Execute a RUNNING workflow run from where its `steps` left it, to its end or its next pause.
        `progress`: the steps read back, for a run resumed here (its stretch of execution so far, and whether it
        is taken over from an engine that stopped); None for a run that starts now."""
        duration = limits.max_duration_seconds
        if progress is not None:
            duration = progress.time_left(duration)
        taking_over = progress.taking_over if progress is not None else None
        try:
            async with asyncio.timeout(duration) as deadline:
                answer = await self._walk(_Graph(workflow), owner, limits, recorder, steps, taking_over)
        except RunPaused as paused:
            log.info("workflow run %s waits for approval", run.id)
            return RunOutcome(paused.run)
        except RunFailure as failure:
            recorder.node_id = ""
            return await self._loop.fail(recorder, failure)
        except TimeoutError:
            if not deadline.expired():
                raise
            recorder.node_id = ""
            too_long = RunFailure(
                "max_duration",
                errors.DeadlineExceeded(
                    f"the workflow did not finish within its time limit of {limits.max_duration_seconds:g} s"
                ),
            )
            return await self._loop.fail(recorder, too_long)
        final = await self._runs.finish_run(run.id, COMPLETED, epoch=recorder.epoch)
        log.info("workflow run %s ended %s", run.id, final.state)
        return completed(final, answer)

    async def _walk(
        self,
        graph: _Graph,
        owner: Caller,
        limits: RunLimits,
        recorder: StepRecorder,
        steps: Sequence[Step],
        taking_over: tuple[str, int] | None,
    ) -> str:
        position = _read_back(steps)
        # The counts the run's limits apply to, over every node so far.
        totals = progress_from_steps(steps)
        tally = RunProgress(model_calls=totals.model_calls, tool_calls=totals.tool_calls, usage=totals.usage)
        pending = position.pending_steps
        ended = graph.nodes.get(position.last_node)
        if ended is not None and ended.kind == "end":
            # The engine that recorded the end node stopped before the run finished: only its answer is left.
            recorder.node_id = ended.id
            if taking_over is not None:
                await self._record_marker(ended, owner, recorder, pending, taking_over)
            return await self._answer(position.last_output, recorder, pending)
        while True:
            if position.visits >= MAX_NODE_VISITS:
                raise RunFailure(
                    "max_node_visits",
                    errors.ResourceExhausted(f"the workflow visited {MAX_NODE_VISITS} nodes without ending"),
                )
            node = graph.following(position.last_node, position.last_branch)
            recorder.node_id = node.id
            kind = node.kind
            if taking_over is not None:
                # Taken over from an engine that stopped with this node in flight (or about to begin).
                await self._record_marker(node, owner, recorder, pending, taking_over)
                taking_over = None
            with spans.workflow_node(node.id, kind):
                outcome = await self._visit(graph, node, kind, position, owner, limits, recorder, tally, pending)
            pending = []
            await recorder.record(outcome)
            # Read back as a resumed run reads it, so both see the same values.
            position.state.update(_state_values(outcome.assigned))
            position.last_node, position.last_branch = node.id, outcome.branch
            position.visits += 1
            if kind == "end":
                return await self._answer(outcome.output, recorder, [])

    async def _record_marker(
        self, node: Node, owner: Caller, recorder: StepRecorder, pending: list[Step], taking_over: tuple[str, int]
    ) -> None:
        """Record the resume marker of a run taken over from an engine that stopped, tagged with the node it
        continues at, and add it to that node's `pending` steps (read back as a later resume would). The node's
        cut-off tool call, if any, runs again or is held for a person as in an agent run (AgentLoop.take_over)."""
        node_progress = progress_from_steps(pending)
        node_progress.taking_over = taking_over
        if node.kind == "end":
            idle: str | None = "finishes the run: its end node was recorded"
        elif node.kind == "agent" and node_progress.answer is not None:
            idle = "goes on with the agent's recorded answer"
        elif node.kind == "agent" and node_progress.messages:
            idle = None  # the agent's model is asked again, as in an agent run
        elif any(isinstance(step.content, ToolResult) for step in pending):
            idle = "goes on with the tool's recorded result"
        else:
            idle = "begins it: nothing of it was recorded"
        marker = await self._loop.take_over(node_progress, owner, idle)
        marker = replace(marker, summary=f"node '{node.id}': {marker.summary}")
        log.info("run %s, resume %d: %s", recorder.run_id, marker.attempt, marker.summary)
        pending.append(await recorder.record(marker))

    async def _answer(self, output: Any, recorder: StepRecorder, pending: list[Step]) -> str:
        """The run's answer, the end node's output as text, recorded as its agent-response step unless
        `pending` (the steps after the end node's outcome) has it already."""
        text = _text(whole_numbers(as_stored(output)))
        if not any(isinstance(step.content, AgentResponse) for step in pending):
            await recorder.record(AgentResponse(text))
        return text

    async def _visit(
        self,
        graph: _Graph,
        node: Node,
        kind: str,
        position: _Position,
        owner: Caller,
        limits: RunLimits,
        recorder: StepRecorder,
        tally: RunProgress,
        pending: list[Step],
    ) -> NodeOutcome:
        """Do one node's work (recording its steps) and return its outcome."""
        state = position.state
        if kind == "agent":
            spec = node.agent
            try:
                agent = await self._agents.profile(spec.agent_id, spec.agent_revision, owner)
            except errors.DomainError as exc:
                raise RunFailure("agent_unavailable", errors.FailedPrecondition(f"node '{node.id}': {exc}")) from exc
            # Resumed mid-node (after a tool approval, or from an engine that stopped): its conversation so far,
            # the calls of its last turn without a result, and the decisions on them; all empty when it begins.
            resumed = progress_from_steps(pending)
            if resumed.answer is not None and not resumed.pending:
                return NodeOutcome(kind, assigned={spec.output: resumed.answer})  # never asked again
            tally.messages, tally.pending, tally.pending_sequences = (
                resumed.messages, resumed.pending, resumed.pending_sequences
            )
            tally.decisions, tally.unknown = resumed.decisions, resumed.unknown
            message = "" if resumed.messages else _text(await graph.evaluate(node.id, "input", spec.input, state))
            answer = await self._loop.run_agent_node(message, owner, agent, recorder, limits, tally)
            return NodeOutcome(kind, assigned={spec.output: answer})
        if kind == "tool":
            value = await self._call_tool(graph, node, state, owner, recorder, tally, limits, pending)
            return NodeOutcome(kind, assigned={node.tool.output: value})
        if kind == "if_else":
            holds = await self._condition(graph, node.id, node.if_else.condition, state)
            return NodeOutcome(kind, branch="true" if holds else "false")
        if kind == "while_loop":
            loop = node.while_loop
            # The count starts again when the run reaches the node other than from its own body.
            entering = not _came_from_body(graph, node.id, position.last_node)
            began = 0 if entering else position.iterations.get(node.id, 0)
            if await self._condition(graph, node.id, loop.condition, state):
                if began >= loop.max_iterations:
                    raise RunFailure(
                        "max_iterations",
                        errors.ResourceExhausted(
                            f"node '{node.id}': the loop's condition still held after {loop.max_iterations} "
                            "iterations (max_iterations)"
                        ),
                    )
                position.iterations[node.id] = began + 1
                return NodeOutcome(kind, branch="body", iteration=began + 1)
            position.iterations[node.id] = 0
            return NodeOutcome(kind, branch="done")
        if kind == "set_state":
            values = {
                name: await graph.evaluate(node.id, f"assignments.{name}", expression, state)
                for name, expression in sorted(node.set_state.assignments.items())
            }
            return NodeOutcome(kind, assigned=values or None)
        if kind == "approval":
            return NodeOutcome(kind, branch=await self._approval(graph, node, state, recorder, pending))
        if kind == "end":
            output = await graph.evaluate(node.id, "output", node.end.output, state)
            return NodeOutcome(kind, output=output, has_output=True)
        raise RunFailure("workflow_invalid", errors.FailedPrecondition(f"node '{node.id}' has no kind the "
                                                                       "engine can run"))

    async def _condition(self, graph: _Graph, node_id: str, expression: str, state: dict[str, Any]) -> bool:
        value = await graph.evaluate(node_id, "condition", expression, state)
        if not isinstance(value, bool):
            raise RunFailure(
                "expression_failed",
                errors.InvalidArgument(f"node '{node_id}' condition gave {type(value).__name__}, not a bool"),
            )
        return value

    async def _call_tool(
        self,
        graph: _Graph,
        node: Node,
        state: dict[str, Any],
        owner: Caller,
        recorder: StepRecorder,
        tally: RunProgress,
        limits: RunLimits,
        pending: list[Step],
    ) -> Any:
        spec = node.tool
        recorded = [step for step in pending if isinstance(step.content, ToolCall)]
        if recorded:  # the node's call was recorded before the engine stopped, or before a pause on its outcome
            return await self._call_again(node, recorded[-1], owner, recorder, pending)
        arguments = {
            name: await graph.evaluate(node.id, f"arguments.{name}", expression, state)
            for name, expression in sorted(spec.arguments.items())
        }
        tally.tool_calls += 1
        if tally.tool_calls > (limits.max_tool_calls or 0):
            raise RunFailure(
                "max_tool_calls",
                errors.ResourceExhausted(f"the workflow made more than {limits.max_tool_calls} tool calls "
                                         "(limits.max_tool_calls)"),
            )
        call_id = f"{node.id}-{recorder.next_sequence}"
        raw = json.dumps(arguments, ensure_ascii=False)
        step = await recorder.record(ToolCall(spec.tool_id, call_id, raw, arguments or None))
        started = time.perf_counter()
        outcome = await self._tools.execute(
            spec.tool_id, arguments, owner, idempotency_key(recorder.run_id, step.sequence)
        )
        elapsed = outcome.duration_seconds if outcome.duration_seconds is not None else time.perf_counter() - started
        value = None if outcome.error else outcome.result
        result = ToolResult(spec.tool_id, call_id, value, outcome.text, outcome.error)
        await recorder.record(result, duration_seconds=elapsed)
        return _node_value(node, result)

    async def _call_again(
        self, node: Node, call_step: Step, owner: Caller, recorder: StepRecorder, pending: list[Step]
    ) -> Any:
        """A tool node resumed with its call recorded: its result when recorded too; else the call runs again
        with the same idempotency key when it may (its tool is safe to repeat, or a person said "run again"), the
        run pauses for a person when its outcome is unknown and undecided, or the node goes on without it (output
        null) when the person said so."""
        call = call_step.content
        assert isinstance(call, ToolCall)
        progress = progress_from_steps(pending)
        requested = RequestedToolCall(call.tool_call_id, call.tool_name, call.raw_arguments)
        gate = self._loop.outcome_gate(progress)
        results = [step.content for step in pending if isinstance(step.content, ToolResult)]
        if not results:
            if gate.undecided(requested):
                raise RunPaused(await recorder.pause(gate.request(requested)))
            refusal = gate.refusal(requested)
            if refusal is not None:
                results = [await _record(recorder, ToolResult(call.tool_name, call.tool_call_id, error=refusal))]
            else:
                started = time.perf_counter()
                key = idempotency_key(recorder.run_id, call_step.sequence)
                # The arguments as first sent (the step's own copy keeps every number as a double).
                arguments = json.loads(call.raw_arguments) if call.raw_arguments else {}
                outcome = await self._tools.execute(call.tool_name, arguments, owner, key)
                elapsed = outcome.duration_seconds
                if elapsed is None:
                    elapsed = time.perf_counter() - started
                value = None if outcome.error else outcome.result
                result = ToolResult(call.tool_name, call.tool_call_id, value, outcome.text, outcome.error)
                results = [await _record(recorder, result, elapsed)]
        if gate.refusal(requested) is not None:
            return None  # not run again, by a person's decision: its outcome stays unknown
        return _node_value(node, results[-1])

    async def _approval(
        self,
        graph: _Graph,
        node: Node,
        state: dict[str, Any],
        recorder: StepRecorder,
        pending: list[Step],
    ) -> str:
        """The branch a decided approval takes; pauses the run (RunPaused) when it is not asked or not decided."""
        decided = [step.content for step in pending if isinstance(step.content, ApprovalDecision)]
        if decided:
            return _OUTCOME_BRANCH.get(decided[-1].outcome, "rejected")
        spec = node.approval
        prompt = _text(await graph.evaluate(node.id, "prompt", spec.prompt, state))
        expires = None
        if spec.timeout_seconds is not None:
            expires = datetime.fromtimestamp(datetime.now(UTC).timestamp() + spec.timeout_seconds, UTC)
        raise RunPaused(await recorder.pause(ApprovalRequest(prompt=prompt, node_id=node.id, expire_time=expires)))


async def _record(recorder: StepRecorder, result: ToolResult, elapsed: float | None = None) -> ToolResult:
    await recorder.record(result, duration_seconds=elapsed)
    return result


def _node_value(node: Node, result: ToolResult) -> Any:
    """A tool node's output from its call's result; a tool error fails the run (a workflow has no model to
    tell)."""
    if result.error:
        raise RunFailure("tool_failed", errors.FailedPrecondition(f"node '{node.id}': {result.error}"))
    return result.result if result.result is not None else result.text


def _came_from_body(graph: _Graph, while_id: str, last_node: str) -> bool:
    """Whether `last_node` is on the loop body of `while_id` (it reaches the while node without leaving through
    its "done" edge): then reaching the while node is the next iteration, not a new entry."""
    if last_node == while_id:
        return True  # an empty body: its "body" edge leads straight back
    seen: set[str] = set()
    frontier = [graph.next.get((while_id, "body"))]
    while frontier:
        current = frontier.pop()
        if current is None or current in seen or current == while_id:
            continue
        seen.add(current)
        frontier.extend(target for (source, _), target in graph.next.items() if source == current)
    return last_node in seen


def _state_values(assigned: dict[str, Any] | None) -> dict[str, Any]:
    """State variables as a node-outcome step stores them. A step's Struct keeps every number as a double; a whole
    number comes back as an int (as JSON readers do), so that `count + 1` stays an int sum in CEL, which refuses
    to add an int to a double."""
    return {name: whole_numbers(as_stored(value)) for name, value in (assigned or {}).items()}


def as_stored(value: Any) -> Any:
    """`value` as a step's Struct keeps it: every number a double. A run that goes on after recording a value
    reads it as one resumed from the store would (an int past 2**53 loses precision in both)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, list):
        return [as_stored(item) for item in value]
    if isinstance(value, dict):
        return {key: as_stored(item) for key, item in value.items()}
    return value


def whole_numbers(value: Any) -> Any:
    """`value` with every whole double (as a Struct keeps numbers) as an int, in lists and maps too."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [whole_numbers(item) for item in value]
    if isinstance(value, dict):
        return {key: whole_numbers(item) for key, item in value.items()}
    return value


def _text(value: Any) -> str:
    """A value as text: a string as it is, anything else as JSON (keys sorted: a CEL map has no order)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
