"""Conversions between the runs protos and the domain records of `services.runs.records`.

A step's content is stored as the JSON form of its content message (field names as in the proto), so the
database holds plain JSON documents that any tool can read, and new content fields need no migration.
"""

import dataclasses
import math
from datetime import datetime
from typing import Any

from google.protobuf import duration_pb2, json_format

from agentplatform.runs.v1 import runs_pb2
from services.common.errors import InvalidArgument
from services.common.rpc.protoconv import (
    datetime_from_timestamp,
    dict_from_message,
    duration_from_seconds,
    limits_from_proto,
    limits_to_proto,
    run_state_from_proto,
    run_state_to_proto,
    seconds_from_duration,
    timestamp_from_datetime,
)
from services.common.step_delta import StepDelta, ToolCallDelta
from services.common.usage import Usage
from services.runs.budget_book import (
    MAX_USD,
    NANOS_PER_USD,
    Budget,
    BudgetStatus,
    Metric,
    Period,
    Scope,
    checked_budget,
)
from services.runs.price_book import CURRENCY, SNAPSHOT, ModelPrice, usd_per_million
from services.runs.records import (
    ModelCallStats,
    NewScore,
    NewStep,
    RunRecord,
    ScoreRecord,
    ScoreSummary,
    StepRecord,
    ThreadRecord,
)
from services.runs.search import NumberRange, RunFilter, RunOrder, ScoreRange, TimeRange, parse_metadata_pairs
from services.runs.usage_summary import Grouping, Interval, UsageBucket
from services.runs.watch import WatchEvent

_CONTENT = runs_pb2.Step.DESCRIPTOR.oneofs_by_name["content"]
#: Step content field -> step type slug, derived from the proto ("tool_call" -> "tool-call").
STEP_TYPE_BY_FIELD: dict[str, str] = {field.name: field.name.replace("_", "-") for field in _CONTENT.fields}
FIELD_BY_STEP_TYPE: dict[str, str] = {slug: name for name, slug in STEP_TYPE_BY_FIELD.items()}

#: ListRunsRequest.order -> the store's order (unspecified: newest first).
_ORDERS = {
    runs_pb2.RUN_ORDER_UNSPECIFIED: RunOrder.NEWEST,
    runs_pb2.RUN_ORDER_NEWEST_FIRST: RunOrder.NEWEST,
    runs_pb2.RUN_ORDER_OLDEST_FIRST: RunOrder.OLDEST,
    runs_pb2.RUN_ORDER_LONGEST_FIRST: RunOrder.LONGEST,
    runs_pb2.RUN_ORDER_MOST_TOKENS_FIRST: RunOrder.MOST_TOKENS,
    runs_pb2.RUN_ORDER_MOST_COSTLY_FIRST: RunOrder.MOST_COSTLY,
}


def _time_range(request: runs_pb2.ListRunsRequest, name: str) -> TimeRange:
    after, before = f"{name}_after", f"{name}_before"
    return TimeRange(
        datetime_from_timestamp(getattr(request, after), after) if request.HasField(after) else None,
        datetime_from_timestamp(getattr(request, before), before) if request.HasField(before) else None,
    )


def _number_range(request: runs_pb2.ListRunsRequest, low: str, high: str) -> NumberRange:
    return NumberRange(
        getattr(request, low) if request.HasField(low) else None,
        getattr(request, high) if request.HasField(high) else None,
    )


def _nanos(request: runs_pb2.ListRunsRequest, field: str) -> int:
    """A request's US dollars as nano-USD; InvalidArgument naming the field for one that is no amount."""
    usd = float(getattr(request, field))
    if not (math.isfinite(usd) and 0 <= usd <= MAX_USD):
        raise InvalidArgument(f"{field} must be a number of US dollars from 0 to {MAX_USD:,.0f}, got {usd}")
    return round(usd * NANOS_PER_USD)


def run_filter_from_proto(request: runs_pb2.ListRunsRequest) -> RunFilter:
    """The search a ListRunsRequest asks for (the store checks it); InvalidArgument naming the field for values
    that cannot even be converted (an unknown enum number, a Timestamp out of range, metadata not key=value)."""
    states = []
    for position, value in enumerate([request.state, *request.states] if request.state else request.states):
        state = run_state_from_proto(value)
        if state is None:
            raise InvalidArgument(f"states[{position}] is RUN_STATE_UNSPECIFIED; name a state, or leave states empty")
        states.append(state)
    if request.order not in _ORDERS:
        raise InvalidArgument(
            f"order {request.order} is unknown; use one of {', '.join(runs_pb2.RunOrder.keys())}"
        )
    return RunFilter(
        states=tuple(states),
        created=_time_range(request, "created"),
        finished=_time_range(request, "finished"),
        agent_id=request.agent_id,
        agent_revision=request.agent_revision,
        workflow_id=request.workflow_id,
        model=request.model,
        tool=request.tool,
        error_code=request.error_code,
        metadata=parse_metadata_pairs(list(request.metadata)),
        text=request.text,
        contains=request.text_contains,
        duration_ms=_number_range(request, "min_duration_ms", "max_duration_ms"),
        total_tokens=_number_range(request, "min_total_tokens", "max_total_tokens"),
        cost_nanos=NumberRange(*(
            _nanos(request, field) if request.HasField(field) else None for field in ("min_cost_usd", "max_cost_usd")
        )),
        score_name=request.score_name,
        score_range=ScoreRange(
            request.min_score if request.HasField("min_score") else None,
            request.max_score if request.HasField("max_score") else None,
        ),
        order=_ORDERS[request.order],
    )


def _ms(duration: duration_pb2.Duration, field: str) -> float:
    return seconds_from_duration(duration, field) * 1000


def usage_to_proto(usage: Usage) -> runs_pb2.Usage:
    return runs_pb2.Usage(
        prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, total_tokens=usage.total_tokens
    )


def cost_to_proto(nanos: int, unpriced_calls: int) -> runs_pb2.Cost:
    return runs_pb2.Cost(usd=nanos / 1e9, unpriced_model_calls=unpriced_calls)


def price_to_proto(price: ModelPrice) -> runs_pb2.ModelPrice:
    message = runs_pb2.ModelPrice(
        model=price.model,
        currency=CURRENCY,
        input_per_million=usd_per_million(price.input_picos),
        cached_input_per_million=usd_per_million(price.cached_input_picos),
        output_per_million=usd_per_million(price.output_picos),
        builtin=price.builtin,
        source=SNAPSHOT if price.builtin else f"set by {price.updated_by}",
    )
    if price.updated_at is not None:
        message.update_time.CopyFrom(timestamp_from_datetime(price.updated_at))
    return message


def new_step_from_proto(position: int, step: runs_pb2.Step) -> NewStep:
    """The step at 1-based `position` of an AppendSteps request; its content case is its type."""
    at = f"steps[{position - 1}]"  # how a field of it is named in messages
    case = step.WhichOneof("content")
    if case is None:
        raise InvalidArgument(f"step {position} has no content; set one of {', '.join(STEP_TYPE_BY_FIELD)}")
    model_call = None
    if step.HasField("model_call"):
        call = step.model_call
        model_call = ModelCallStats(
            Usage(call.usage.prompt_tokens, call.usage.completion_tokens),
            _ms(call.time_to_first_token, f"{at}.model_call.time_to_first_token")
            if call.HasField("time_to_first_token")
            else None,
            _ms(call.latency, f"{at}.model_call.latency") if call.HasField("latency") else None,
            model=call.model,
            cached_prompt_tokens=call.cached_prompt_tokens,
        )
    return NewStep(
        type=STEP_TYPE_BY_FIELD[case],
        # A Struct's binary form carries NaN and infinities, which JSON (and so the store) has no form for.
        content=dict_from_message(getattr(step, case), f"step {position} {case}", preserving_proto_field_name=True),
        sequence=step.sequence,
        duration_ms=_ms(step.duration, f"{at}.duration") if step.HasField("duration") else None,
        model_call=model_call,
        node_id=step.node_id,
    )


def step_to_proto(record: StepRecord) -> runs_pb2.Step:
    """A stored step as a proto Step."""
    message = runs_pb2.Step(
        run_id=record.run_id,
        sequence=record.sequence,
        create_time=timestamp_from_datetime(record.created_at),
        node_id=record.node_id,
    )
    if record.duration_ms is not None:
        message.duration.CopyFrom(duration_from_seconds(record.duration_ms / 1000))
    if record.model_call is not None:
        call = record.model_call
        message.model_call.usage.CopyFrom(usage_to_proto(call.usage))
        if call.time_to_first_token_ms is not None:
            message.model_call.time_to_first_token.CopyFrom(duration_from_seconds(call.time_to_first_token_ms / 1000))
        if call.latency_ms is not None:
            message.model_call.latency.CopyFrom(duration_from_seconds(call.latency_ms / 1000))
        message.model_call.model = call.model
        message.model_call.cached_prompt_tokens = call.cached_prompt_tokens
        message.model_call.cost.CopyFrom(cost_to_proto(call.cost_nanos or 0, int(call.cost_nanos is None)))
    content = getattr(message, FIELD_BY_STEP_TYPE[record.type])
    # SetInParent selects the oneof case even when the content is empty ({} for an empty thought).
    content.SetInParent()
    # Unknown fields are skipped so steps stored by a newer version (with fields since removed) still load.
    json_format.ParseDict(record.content, content, ignore_unknown_fields=True)
    return message


def run_to_proto(record: RunRecord) -> runs_pb2.Run:
    """A stored run as a proto Run (with the steps the record holds, if any)."""
    message = runs_pb2.Run(
        id=record.id,
        user_query=record.user_query,
        user_query_truncated=record.user_query_truncated,
        state=run_state_to_proto(record.state),
        model=record.model,
        create_time=timestamp_from_datetime(record.created_at),
        error_code=record.error_code,
        error_message=record.error_message,
        usage=usage_to_proto(record.usage),
        metadata=record.metadata,
        step_count=record.step_count,
        limits=limits_to_proto(record.limits),
        cancel_requested=record.cancel_requested,
        executor_id=record.executor_id,
        lease_epoch=record.lease_epoch,
        attempts=record.attempts,
        handbacks=record.handbacks,
        handed_back_by=record.handed_back_by,
        owner=record.owner,
        agent_id=record.agent_id,
        agent_revision=record.agent_revision,
        thread_id=record.thread_id,
        thread_turn=record.thread_turn,
        workflow_id=record.workflow_id,
        workflow_revision=record.workflow_revision,
        trace_id=record.trace_id,
        trace_span_id=record.trace_span_id,
        retention_hold=record.retention_hold,
        steps=[step_to_proto(step) for step in record.steps],
        scores=[score_to_proto(score) for score in record.scores],
        cost=cost_to_proto(record.cost_nanos, record.unpriced_calls),
    )
    if record.completed_at is not None:
        message.complete_time.CopyFrom(timestamp_from_datetime(record.completed_at))
    if record.started_at is not None:
        message.start_time.CopyFrom(timestamp_from_datetime(record.started_at))
    return message


#: A score's source, both ways (UNSPECIFIED is read as an API client's).
SCORE_SOURCE_TO_PROTO = {
    "person": runs_pb2.SCORE_SOURCE_PERSON,
    "api": runs_pb2.SCORE_SOURCE_API,
    "evaluator": runs_pb2.SCORE_SOURCE_EVALUATOR,
}
SCORE_SOURCE_FROM_PROTO = {value: key for key, value in SCORE_SOURCE_TO_PROTO.items()} | {
    runs_pb2.SCORE_SOURCE_UNSPECIFIED: "api",
}


def new_score_from_proto(run_id: str, score: runs_pb2.Score) -> NewScore:
    """What CreateScore asks to record; a score without a value, or with an unknown source, is InvalidArgument."""
    kind = score.WhichOneof("value")
    if kind is None:
        raise InvalidArgument("score needs a value: number_value, boolean_value or category_value")
    source = SCORE_SOURCE_FROM_PROTO.get(score.source)
    if source is None:
        raise InvalidArgument(f"score.source {score.source} is not a ScoreSource")
    return NewScore(
        run_id=run_id, name=score.name, value=getattr(score, kind), step_sequence=score.step_sequence,
        comment=score.comment, source=source,
    )


def score_to_proto(record: ScoreRecord) -> runs_pb2.Score:
    message = runs_pb2.Score(
        id=record.id, run_id=record.run_id, step_sequence=record.step_sequence, name=record.name,
        comment=record.comment, source=SCORE_SOURCE_TO_PROTO[record.source], author=record.author,
        create_time=timestamp_from_datetime(record.created_at),
    )
    value = record.value
    if isinstance(value, bool):
        message.boolean_value = value
    elif isinstance(value, str):
        message.category_value = value
    else:
        message.number_value = value
    return message


def score_summary_to_proto(summary: ScoreSummary) -> runs_pb2.ScoreSummary:
    return runs_pb2.ScoreSummary(
        agent_revision=summary.agent_revision, name=summary.name, kind=summary.kind, count=summary.count,
        mean=summary.mean, min=summary.least, max=summary.greatest,
        categories=[runs_pb2.CategoryCount(category=name, count=count) for name, count in summary.categories],
    )


def thread_to_proto(record: ThreadRecord) -> runs_pb2.Thread:
    return runs_pb2.Thread(
        id=record.id,
        owner=record.owner,
        title=record.title,
        create_time=timestamp_from_datetime(record.created_at),
        update_time=timestamp_from_datetime(record.updated_at),
        turn_count=record.turn_count,
        usage=usage_to_proto(record.usage),
        cost=cost_to_proto(record.cost_nanos, record.unpriced_calls),
    )


def delta_from_proto(delta: runs_pb2.StepDelta) -> StepDelta:
    piece = None
    if delta.WhichOneof("part") == "tool_call":
        call = delta.tool_call
        piece = ToolCallDelta(call.tool_call_id, call.tool_name, call.arguments)
    return StepDelta(delta.run_id, delta.sequence, text=delta.text if piece is None else None, tool_call=piece)


def delta_to_proto(delta: StepDelta) -> runs_pb2.StepDelta:
    message = runs_pb2.StepDelta(run_id=delta.run_id, sequence=delta.sequence, replace=delta.replace)
    if delta.tool_call is not None:
        piece = delta.tool_call
        message.tool_call.SetInParent()  # selects the case even when every piece is empty
        message.tool_call.tool_call_id = piece.tool_call_id
        message.tool_call.tool_name = piece.tool_name
        message.tool_call.arguments = piece.arguments
    else:
        message.text = delta.text or ""
    return message


def run_event(event: WatchEvent) -> runs_pb2.RunEvent:
    """One event of `services.runs.watch.watch_run` as a RunEvent message."""
    if isinstance(event, StepRecord):
        return runs_pb2.RunEvent(step=step_to_proto(event))
    if isinstance(event, RunRecord):
        return runs_pb2.RunEvent(run=run_to_proto(event))
    if isinstance(event, StepDelta):
        return runs_pb2.RunEvent(delta=delta_to_proto(event))
    return runs_pb2.RunEvent(
        heartbeat=runs_pb2.Heartbeat(time=timestamp_from_datetime(event.time), last_sequence=event.last_sequence)
    )


USAGE_GROUPINGS: dict[int, Grouping] = {
    runs_pb2.USAGE_GROUPING_USER: "user",
    runs_pb2.USAGE_GROUPING_AGENT: "agent",
    runs_pb2.USAGE_GROUPING_MODEL: "model",
}
USAGE_INTERVALS: dict[int, Interval] = {runs_pb2.USAGE_INTERVAL_HOUR: "hour", runs_pb2.USAGE_INTERVAL_DAY: "day"}


def usage_grouping_from_proto(value: int) -> Grouping:
    if value not in USAGE_GROUPINGS:
        raise InvalidArgument(f"group_by must be USAGE_GROUPING_USER, _AGENT or _MODEL, got {value}")
    return USAGE_GROUPINGS[value]


def usage_interval_from_proto(value: int) -> Interval:
    if value not in USAGE_INTERVALS:
        raise InvalidArgument(f"interval must be USAGE_INTERVAL_HOUR or _DAY, got {value}")
    return USAGE_INTERVALS[value]


def usage_bucket_to_proto(bucket: UsageBucket) -> runs_pb2.UsageBucket:
    return runs_pb2.UsageBucket(
        start_time=timestamp_from_datetime(bucket.start), key=bucket.key, runs=bucket.runs,
        usage=usage_to_proto(bucket.usage), cost=cost_to_proto(bucket.cost_nanos, bucket.unpriced_calls),
    )


BUDGET_SCOPES: dict["runs_pb2.BudgetScope", Scope] = {
    runs_pb2.BUDGET_SCOPE_USER: "user", runs_pb2.BUDGET_SCOPE_AGENT: "agent",
}
BUDGET_METRICS: dict["runs_pb2.BudgetMetric", Metric] = {
    runs_pb2.BUDGET_METRIC_TOKENS: "tokens", runs_pb2.BUDGET_METRIC_USD: "usd",
}
BUDGET_PERIODS: dict["runs_pb2.BudgetPeriod", Period] = {
    runs_pb2.BUDGET_PERIOD_DAY: "day", runs_pb2.BUDGET_PERIOD_MONTH: "month",
}


def _one_of(values: dict[Any, Any], value: int, field: str, names: str) -> Any:
    if value not in values:
        raise InvalidArgument(f"budget.{field} must be {names}, got {value}")
    return values[value]


def budget_from_proto(budget: runs_pb2.Budget, by: str) -> Budget:
    """The budget SetBudget asks for, each bad field an InvalidArgument naming it."""
    return checked_budget(
        _one_of(BUDGET_SCOPES, budget.scope, "scope", "BUDGET_SCOPE_USER or BUDGET_SCOPE_AGENT"),
        budget.subject,
        _one_of(BUDGET_METRICS, budget.metric, "metric", "BUDGET_METRIC_TOKENS or BUDGET_METRIC_USD"),
        _one_of(BUDGET_PERIODS, budget.period, "period", "BUDGET_PERIOD_DAY or BUDGET_PERIOD_MONTH"),
        budget.limit,
        by,
    )


def _amount(budget: Budget, value: int) -> float:
    return float(value) if budget.metric == "tokens" else value / NANOS_PER_USD


def budget_to_proto(budget: Budget, status: BudgetStatus | None = None) -> runs_pb2.Budget:
    message = runs_pb2.Budget(
        id=budget.id,
        scope=next(key for key, value in BUDGET_SCOPES.items() if value == budget.scope),
        subject=budget.subject,
        metric=next(key for key, value in BUDGET_METRICS.items() if value == budget.metric),
        period=next(key for key, value in BUDGET_PERIODS.items() if value == budget.period),
        limit=_amount(budget, budget.limit),
        updated_by=budget.updated_by,
    )
    if status is not None:
        message.spent = _amount(budget, status.spent)
        message.reset_time.CopyFrom(timestamp_from_datetime(status.resets_at))
    return message


# --- runs as ImportRuns receives them (what ExportRuns sent) ------------------------------------------------


def _time(message: Any, name: str, at: str) -> datetime | None:
    return datetime_from_timestamp(getattr(message, name), f"{at}.{name}") if message.HasField(name) else None


def _imported_nanos(usd: float, field: str) -> int:
    """An imported cost in nano-USD; InvalidArgument naming the field for NaN, an infinity, a negative or an
    absurd amount (which round() would answer with an error, and so INTERNAL)."""
    if not (math.isfinite(usd) and 0 <= usd <= MAX_USD):
        raise InvalidArgument(f"{field} must be a number of US dollars from 0 to {MAX_USD:,.0f}, got {usd}")
    return round(usd * NANOS_PER_USD)


def _stored_step_from_proto(run_id: str, at: str, step: runs_pb2.Step) -> StepRecord:
    new = new_step_from_proto(step.sequence, step)
    created = _time(step, "create_time", at)
    if created is None:
        raise InvalidArgument(f"{at}.create_time is required: an exported step has its time")
    call = new.model_call
    if call is not None and step.model_call.HasField("cost"):
        cost = step.model_call.cost
        priced = cost.unpriced_model_calls == 0
        nanos = _imported_nanos(cost.usd, f"{at}.model_call.cost.usd")
        call = dataclasses.replace(call, cost_nanos=nanos if priced else None)
    return StepRecord(run_id, step.sequence, new.type, new.content, created, new.duration_ms, call, new.node_id)


def _stored_score_from_proto(run_id: str, at: str, score: runs_pb2.Score) -> ScoreRecord:
    new = new_score_from_proto(run_id, score)
    created = _time(score, "create_time", at)
    if created is None:
        raise InvalidArgument(f"{at}.create_time is required: an exported score has its time")
    return ScoreRecord(score.id, run_id, new.step_sequence, new.name, new.value, new.comment, new.source,
                       score.author, created)


def stored_run_from_proto(position: int, run: runs_pb2.Run) -> RunRecord:
    """A run as ImportRuns receives it, with its steps and scores; InvalidArgument naming the field (runs[i]...)
    for one that cannot be read. The store checks the rest (an ended state, steps 1 to n)."""
    at = f"runs[{position}]"
    created = _time(run, "create_time", at)
    if created is None:
        raise InvalidArgument(f"{at}.create_time is required: an exported run has its times")
    state = run_state_from_proto(run.state)
    if state is None:
        raise InvalidArgument(f"{at}.state must be a run's state, got {run.state}")
    return RunRecord(
        id=run.id, user_query=run.user_query, state=state, model=run.model, created_at=created,
        completed_at=_time(run, "complete_time", at), error_code=run.error_code, error_message=run.error_message,
        usage=Usage(run.usage.prompt_tokens, run.usage.completion_tokens), metadata=dict(run.metadata),
        step_count=run.step_count, owner=run.owner, agent_id=run.agent_id, agent_revision=run.agent_revision,
        started_at=_time(run, "start_time", at), limits=limits_from_proto(run.limits, f"{at}.limits"),
        lease_epoch=run.lease_epoch, attempts=run.attempts, handbacks=run.handbacks,
        handed_back_by=run.handed_back_by, user_query_truncated=run.user_query_truncated,
        steps=[_stored_step_from_proto(run.id, f"{at}.steps[{i}]", step) for i, step in enumerate(run.steps)],
        scores=[_stored_score_from_proto(run.id, f"{at}.scores[{i}]", score) for i, score in enumerate(run.scores)],
        thread_id=run.thread_id, thread_turn=run.thread_turn, workflow_id=run.workflow_id,
        workflow_revision=run.workflow_revision, trace_id=run.trace_id, trace_span_id=run.trace_span_id,
        retention_hold=run.retention_hold, cost_nanos=_imported_nanos(run.cost.usd, f"{at}.cost.usd"),
        unpriced_calls=run.cost.unpriced_model_calls,
    )
