"""The one codec between the engine's journal types (services/engine/journal.py) and the runs API's messages.

Used by the run store's client (what the engine sends and gets back) and by the engine's servicer (the runs and
events it streams to its callers). A run or step read from the store and handed on to a caller goes through
both directions, so each direction is the other's inverse for everything the store sends
(tests/engine/test_run_messages.py checks it on generated messages).
"""

from datetime import UTC, datetime
from typing import Any

from agentplatform.runs.internal.v1 import execution_pb2
from agentplatform.runs.v1 import runs_pb2
from services.common.rpc.protoconv import (
    datetime_from_timestamp,
    dict_from_struct,
    duration_from_seconds,
    limits_from_proto,
    limits_to_proto,
    python_from_value,
    run_state_of,
    run_state_to_proto,
    seconds_from_duration,
    struct_from_dict,
    timestamp_from_datetime,
    value_from_python,
)
from services.common.step_delta import StepDelta, ToolCallDelta
from services.common.usage import Usage
from services.engine.journal import (
    APPROVED,
    REJECTED,
    TIMED_OUT,
    AgentResponse,
    AgentThought,
    ApprovalDecision,
    ApprovalRequest,
    Cost,
    Heartbeat,
    ModelCall,
    NodeOutcome,
    Resumed,
    Run,
    RunEvent,
    Step,
    StepContent,
    StepError,
    ThreadHistory,
    ToolCall,
    ToolResult,
    UserRequest,
)

_OUTCOME_BY_PROTO = {
    runs_pb2.APPROVAL_OUTCOME_APPROVED: APPROVED,
    runs_pb2.APPROVAL_OUTCOME_REJECTED: REJECTED,
    runs_pb2.APPROVAL_OUTCOME_TIMED_OUT: TIMED_OUT,
}
_PROTO_BY_OUTCOME = {outcome: number for number, outcome in _OUTCOME_BY_PROTO.items()}


def _time(message: Any, name: str) -> datetime | None:
    return datetime_from_timestamp(getattr(message, name), name) if message.HasField(name) else None


def _seconds(message: Any, name: str) -> float | None:
    return seconds_from_duration(getattr(message, name), name) if message.HasField(name) else None


# --- step content ------------------------------------------------------------------------------------------------


def _content_from_proto(step: runs_pb2.Step) -> StepContent:
    case = step.WhichOneof("content")
    if case == "user_request":
        request = step.user_request
        return UserRequest(request.text, request.context_turns, request.omitted_turns)
    if case == "agent_thought":
        return AgentThought(step.agent_thought.text, step.agent_thought.placeholder)
    if case == "tool_call":
        call = step.tool_call
        params = dict_from_struct(call.params, "params") if call.HasField("params") else None
        return ToolCall(call.tool_name, call.tool_call_id, call.raw_arguments, params)
    if case == "tool_result":
        result = step.tool_result
        value = python_from_value(result.result, "result") if result.HasField("result") else None
        return ToolResult(result.tool_name, result.tool_call_id, value, result.text, result.error)
    if case == "agent_response":
        return AgentResponse(step.agent_response.text)
    if case == "error":
        return StepError(step.error.code, step.error.message)
    if case == "approval_request":
        ask = step.approval_request
        return ApprovalRequest(ask.prompt, ask.tool_call_id, ask.tool_name, ask.node_id, _time(ask, "expire_time"))
    if case == "approval_decision":
        decision = step.approval_decision
        return ApprovalDecision(
            _OUTCOME_BY_PROTO.get(decision.outcome, ""), decision.request_sequence, decision.comment,
            decision.decided_by,
        )
    if case == "node_outcome":
        node = step.node_outcome
        return NodeOutcome(
            kind=node.kind,
            branch=node.branch,
            assigned=dict_from_struct(node.assigned, "assigned") if node.HasField("assigned") else None,
            output=python_from_value(node.output, "output") if node.HasField("output") else None,
            has_output=node.HasField("output"),
            iteration=node.iteration,
        )
    if case == "resumed":
        marker = step.resumed
        return Resumed(
            marker.executor_id, marker.attempt, marker.summary, tuple(marker.held_tool_call_ids),
            marker.handed_back_by,
        )
    # A step with no content (or one a newer store knows and this engine does not): an empty error step is the
    # least wrong reading; nothing the engine decides on looks at it.
    return StepError()


def _set_content(message: runs_pb2.Step, content: StepContent) -> None:
    match content:
        case UserRequest():
            message.user_request.SetInParent()
            message.user_request.text = content.text
            message.user_request.context_turns = content.context_turns
            message.user_request.omitted_turns = content.omitted_turns
        case AgentThought():
            message.agent_thought.SetInParent()
            message.agent_thought.text = content.text
            message.agent_thought.placeholder = content.placeholder
        case ToolCall():
            call = message.tool_call
            call.SetInParent()
            call.tool_name, call.tool_call_id, call.raw_arguments = (
                content.tool_name, content.tool_call_id, content.raw_arguments
            )
            if content.params is not None:
                call.params.CopyFrom(struct_from_dict(content.params, "params"))
        case ToolResult():
            result = message.tool_result
            result.SetInParent()
            result.tool_name, result.tool_call_id = content.tool_name, content.tool_call_id
            result.text, result.error = content.text, content.error
            if content.result is not None:
                result.result.CopyFrom(value_from_python(content.result, "result"))
        case AgentResponse():
            message.agent_response.SetInParent()
            message.agent_response.text = content.text
        case StepError():
            message.error.SetInParent()
            message.error.code, message.error.message = content.code, content.message
        case ApprovalRequest():
            ask = message.approval_request
            ask.SetInParent()
            ask.prompt, ask.tool_call_id, ask.tool_name, ask.node_id = (
                content.prompt, content.tool_call_id, content.tool_name, content.node_id
            )
            if content.expire_time is not None:
                ask.expire_time.CopyFrom(timestamp_from_datetime(content.expire_time))
        case ApprovalDecision():
            decision = message.approval_decision
            decision.SetInParent()
            decision.outcome = _PROTO_BY_OUTCOME.get(content.outcome, runs_pb2.APPROVAL_OUTCOME_UNSPECIFIED)
            decision.request_sequence = content.request_sequence
            decision.comment, decision.decided_by = content.comment, content.decided_by
        case NodeOutcome():
            node = message.node_outcome
            node.SetInParent()
            node.kind, node.branch, node.iteration = content.kind, content.branch, content.iteration
            if content.assigned is not None:
                node.assigned.CopyFrom(struct_from_dict(content.assigned, "assigned"))
            if content.has_output:
                node.output.CopyFrom(value_from_python(content.output, "output"))
        case Resumed():
            marker = message.resumed
            marker.SetInParent()
            marker.executor_id, marker.attempt, marker.summary = content.executor_id, content.attempt, content.summary
            marker.held_tool_call_ids.extend(content.held_tool_call_ids)
            marker.handed_back_by = content.handed_back_by


# --- steps, runs, history ----------------------------------------------------------------------------------------


def step_from_proto(message: runs_pb2.Step) -> Step:
    model_call = None
    if message.HasField("model_call"):
        call = message.model_call
        model_call = ModelCall(
            Usage(call.usage.prompt_tokens, call.usage.completion_tokens),
            _seconds(call, "time_to_first_token"),
            _seconds(call, "latency"),
            model=call.model,
            cached_prompt_tokens=call.cached_prompt_tokens,
            cost=_cost_from_proto(call.cost) if call.HasField("cost") else None,
        )
    return Step(
        content=_content_from_proto(message),
        sequence=message.sequence,
        run_id=message.run_id,
        node_id=message.node_id,
        duration_seconds=_seconds(message, "duration"),
        model_call=model_call,
        created_at=_time(message, "create_time"),
    )


def _cost_from_proto(message: runs_pb2.Cost) -> Cost:
    return Cost(message.usd, message.unpriced_model_calls)


def _cost_to_proto(cost: Cost) -> runs_pb2.Cost:
    return runs_pb2.Cost(usd=cost.usd, unpriced_model_calls=cost.unpriced_model_calls)


def _usage_to_proto(usage: Usage) -> runs_pb2.Usage:
    return runs_pb2.Usage(
        prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, total_tokens=usage.total_tokens
    )


def step_to_proto(step: Step) -> runs_pb2.Step:
    message = runs_pb2.Step(run_id=step.run_id, sequence=step.sequence, node_id=step.node_id)
    if step.created_at is not None:
        message.create_time.CopyFrom(timestamp_from_datetime(step.created_at))
    if step.duration_seconds is not None:
        message.duration.CopyFrom(duration_from_seconds(step.duration_seconds))
    if step.model_call is not None:
        call = step.model_call
        message.model_call.usage.CopyFrom(_usage_to_proto(call.usage))
        if call.time_to_first_token_seconds is not None:
            message.model_call.time_to_first_token.CopyFrom(duration_from_seconds(call.time_to_first_token_seconds))
        if call.latency_seconds is not None:
            message.model_call.latency.CopyFrom(duration_from_seconds(call.latency_seconds))
        message.model_call.model = call.model
        message.model_call.cached_prompt_tokens = call.cached_prompt_tokens
        if call.cost is not None:
            message.model_call.cost.CopyFrom(_cost_to_proto(call.cost))
    _set_content(message, step.content)
    return message


def traceparent_of(trace_id: str, span_id: str) -> str:
    """The W3C traceparent of a recorded trace and span (sampled: a run records only a sampled span); "" for
    none."""
    return f"00-{trace_id}-{span_id}-01" if trace_id and span_id else ""


def trace_ids_of(traceparent: str) -> tuple[str, str]:
    """(trace id, span id) of a W3C traceparent; ("", "") for ""."""
    parts = traceparent.split("-")
    return (parts[1], parts[2]) if len(parts) == 4 else ("", "")


def run_from_proto(message: runs_pb2.Run) -> Run:
    return Run(
        id=message.id,
        state=run_state_of(message.state) or "",
        user_query=message.user_query,
        user_query_truncated=message.user_query_truncated,
        model=message.model,
        owner=message.owner,
        agent_id=message.agent_id,
        agent_revision=message.agent_revision,
        thread_id=message.thread_id,
        thread_turn=message.thread_turn,
        workflow_id=message.workflow_id,
        workflow_revision=message.workflow_revision,
        metadata=dict(message.metadata),
        limits=limits_from_proto(message.limits),
        usage=Usage(message.usage.prompt_tokens, message.usage.completion_tokens),
        step_count=message.step_count,
        executor_id=message.executor_id,
        lease_epoch=message.lease_epoch,
        attempts=message.attempts,
        handbacks=message.handbacks,
        handed_back_by=message.handed_back_by,
        cancel_requested=message.cancel_requested,
        error_code=message.error_code,
        error_message=message.error_message,
        created_at=_time(message, "create_time"),
        started_at=_time(message, "start_time"),
        completed_at=_time(message, "complete_time"),
        steps=tuple(step_from_proto(step) for step in message.steps),
        traceparent=traceparent_of(message.trace_id, message.trace_span_id),
        cost=_cost_from_proto(message.cost),
        retention_hold=message.retention_hold,
    )


def run_to_proto(run: Run) -> runs_pb2.Run:
    message = runs_pb2.Run(
        id=run.id,
        state=run_state_to_proto(run.state) if run.state else runs_pb2.RUN_STATE_UNSPECIFIED,
        user_query=run.user_query,
        user_query_truncated=run.user_query_truncated,
        model=run.model,
        owner=run.owner,
        agent_id=run.agent_id,
        agent_revision=run.agent_revision,
        thread_id=run.thread_id,
        thread_turn=run.thread_turn,
        workflow_id=run.workflow_id,
        workflow_revision=run.workflow_revision,
        metadata=run.metadata,
        limits=limits_to_proto(run.limits),
        usage=_usage_to_proto(run.usage),
        step_count=run.step_count,
        executor_id=run.executor_id,
        lease_epoch=run.lease_epoch,
        attempts=run.attempts,
        handbacks=run.handbacks,
        handed_back_by=run.handed_back_by,
        cancel_requested=run.cancel_requested,
        error_code=run.error_code,
        error_message=run.error_message,
        trace_id=trace_ids_of(run.traceparent)[0],
        trace_span_id=trace_ids_of(run.traceparent)[1],
        steps=[step_to_proto(step) for step in run.steps],
        cost=_cost_to_proto(run.cost),
        retention_hold=run.retention_hold,
    )
    for name, moment in (("create_time", run.created_at), ("start_time", run.started_at),
                         ("complete_time", run.completed_at)):
        if moment is not None:
            getattr(message, name).CopyFrom(timestamp_from_datetime(moment))
    return message


def history_from_proto(message: execution_pb2.ThreadHistory) -> ThreadHistory:
    return ThreadHistory(tuple(run_from_proto(turn) for turn in message.turns), message.omitted_turns)


# --- deltas and events -------------------------------------------------------------------------------------------


def delta_to_proto(delta: StepDelta) -> runs_pb2.StepDelta:
    message = runs_pb2.StepDelta(run_id=delta.run_id, sequence=delta.sequence, replace=delta.replace)
    if delta.tool_call is not None:
        piece = delta.tool_call
        message.tool_call.tool_call_id = piece.tool_call_id
        message.tool_call.tool_name = piece.tool_name
        message.tool_call.arguments = piece.arguments
    elif delta.text is not None:
        message.text = delta.text
    return message


def delta_from_proto(message: runs_pb2.StepDelta) -> StepDelta:
    part = message.WhichOneof("part")
    piece = message.tool_call
    return StepDelta(
        run_id=message.run_id,
        sequence=message.sequence,
        text=message.text if part == "text" else None,
        tool_call=ToolCallDelta(piece.tool_call_id, piece.tool_name, piece.arguments) if part == "tool_call" else None,
        replace=message.replace,
    )


def event_to_proto(event: RunEvent) -> runs_pb2.RunEvent:
    match event:
        case Run():
            return runs_pb2.RunEvent(run=run_to_proto(event))
        case Step():
            return runs_pb2.RunEvent(step=step_to_proto(event))
        case StepDelta():
            return runs_pb2.RunEvent(delta=delta_to_proto(event))
        case Heartbeat():
            heartbeat = runs_pb2.Heartbeat(time=timestamp_from_datetime(event.time), last_sequence=event.last_sequence)
            return runs_pb2.RunEvent(heartbeat=heartbeat)
    raise TypeError(f"not a run event: {event!r}")


def event_from_proto(message: runs_pb2.RunEvent) -> RunEvent | None:
    """A run event from the store's WatchRun; None for a kind this engine does not know."""
    case = message.WhichOneof("event")
    if case == "run":
        return run_from_proto(message.run)
    if case == "step":
        return step_from_proto(message.step)
    if case == "delta":
        return delta_from_proto(message.delta)
    if case == "heartbeat":
        # A heartbeat without its time (none this store sends) is a ping all the same: stamped on arrival.
        moment = _time(message.heartbeat, "time") or datetime.now(UTC)
        return Heartbeat(moment, message.heartbeat.last_sequence)
    return None
