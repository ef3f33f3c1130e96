import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MultitaskStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MULTITASK_STRATEGY_UNSPECIFIED: _ClassVar[MultitaskStrategy]
    MULTITASK_STRATEGY_REJECT: _ClassVar[MultitaskStrategy]
    MULTITASK_STRATEGY_ENQUEUE: _ClassVar[MultitaskStrategy]
    MULTITASK_STRATEGY_INTERRUPT: _ClassVar[MultitaskStrategy]

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_COMPLETED: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]
    RUN_STATE_CANCELLED: _ClassVar[RunState]
    RUN_STATE_QUEUED: _ClassVar[RunState]
    RUN_STATE_WAITING: _ClassVar[RunState]

class ApprovalOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APPROVAL_OUTCOME_UNSPECIFIED: _ClassVar[ApprovalOutcome]
    APPROVAL_OUTCOME_APPROVED: _ClassVar[ApprovalOutcome]
    APPROVAL_OUTCOME_REJECTED: _ClassVar[ApprovalOutcome]
    APPROVAL_OUTCOME_TIMED_OUT: _ClassVar[ApprovalOutcome]

class RunOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_ORDER_UNSPECIFIED: _ClassVar[RunOrder]
    RUN_ORDER_NEWEST_FIRST: _ClassVar[RunOrder]
    RUN_ORDER_OLDEST_FIRST: _ClassVar[RunOrder]
    RUN_ORDER_LONGEST_FIRST: _ClassVar[RunOrder]
    RUN_ORDER_MOST_TOKENS_FIRST: _ClassVar[RunOrder]
    RUN_ORDER_MOST_COSTLY_FIRST: _ClassVar[RunOrder]

class ScoreSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCORE_SOURCE_UNSPECIFIED: _ClassVar[ScoreSource]
    SCORE_SOURCE_PERSON: _ClassVar[ScoreSource]
    SCORE_SOURCE_API: _ClassVar[ScoreSource]
    SCORE_SOURCE_EVALUATOR: _ClassVar[ScoreSource]

class UsageGrouping(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_GROUPING_UNSPECIFIED: _ClassVar[UsageGrouping]
    USAGE_GROUPING_USER: _ClassVar[UsageGrouping]
    USAGE_GROUPING_AGENT: _ClassVar[UsageGrouping]
    USAGE_GROUPING_MODEL: _ClassVar[UsageGrouping]

class UsageInterval(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_INTERVAL_UNSPECIFIED: _ClassVar[UsageInterval]
    USAGE_INTERVAL_HOUR: _ClassVar[UsageInterval]
    USAGE_INTERVAL_DAY: _ClassVar[UsageInterval]

class BudgetScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUDGET_SCOPE_UNSPECIFIED: _ClassVar[BudgetScope]
    BUDGET_SCOPE_USER: _ClassVar[BudgetScope]
    BUDGET_SCOPE_AGENT: _ClassVar[BudgetScope]

class BudgetMetric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUDGET_METRIC_UNSPECIFIED: _ClassVar[BudgetMetric]
    BUDGET_METRIC_TOKENS: _ClassVar[BudgetMetric]
    BUDGET_METRIC_USD: _ClassVar[BudgetMetric]

class BudgetPeriod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUDGET_PERIOD_UNSPECIFIED: _ClassVar[BudgetPeriod]
    BUDGET_PERIOD_DAY: _ClassVar[BudgetPeriod]
    BUDGET_PERIOD_MONTH: _ClassVar[BudgetPeriod]
MULTITASK_STRATEGY_UNSPECIFIED: MultitaskStrategy
MULTITASK_STRATEGY_REJECT: MultitaskStrategy
MULTITASK_STRATEGY_ENQUEUE: MultitaskStrategy
MULTITASK_STRATEGY_INTERRUPT: MultitaskStrategy
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_COMPLETED: RunState
RUN_STATE_FAILED: RunState
RUN_STATE_CANCELLED: RunState
RUN_STATE_QUEUED: RunState
RUN_STATE_WAITING: RunState
APPROVAL_OUTCOME_UNSPECIFIED: ApprovalOutcome
APPROVAL_OUTCOME_APPROVED: ApprovalOutcome
APPROVAL_OUTCOME_REJECTED: ApprovalOutcome
APPROVAL_OUTCOME_TIMED_OUT: ApprovalOutcome
RUN_ORDER_UNSPECIFIED: RunOrder
RUN_ORDER_NEWEST_FIRST: RunOrder
RUN_ORDER_OLDEST_FIRST: RunOrder
RUN_ORDER_LONGEST_FIRST: RunOrder
RUN_ORDER_MOST_TOKENS_FIRST: RunOrder
RUN_ORDER_MOST_COSTLY_FIRST: RunOrder
SCORE_SOURCE_UNSPECIFIED: ScoreSource
SCORE_SOURCE_PERSON: ScoreSource
SCORE_SOURCE_API: ScoreSource
SCORE_SOURCE_EVALUATOR: ScoreSource
USAGE_GROUPING_UNSPECIFIED: UsageGrouping
USAGE_GROUPING_USER: UsageGrouping
USAGE_GROUPING_AGENT: UsageGrouping
USAGE_GROUPING_MODEL: UsageGrouping
USAGE_INTERVAL_UNSPECIFIED: UsageInterval
USAGE_INTERVAL_HOUR: UsageInterval
USAGE_INTERVAL_DAY: UsageInterval
BUDGET_SCOPE_UNSPECIFIED: BudgetScope
BUDGET_SCOPE_USER: BudgetScope
BUDGET_SCOPE_AGENT: BudgetScope
BUDGET_METRIC_UNSPECIFIED: BudgetMetric
BUDGET_METRIC_TOKENS: BudgetMetric
BUDGET_METRIC_USD: BudgetMetric
BUDGET_PERIOD_UNSPECIFIED: BudgetPeriod
BUDGET_PERIOD_DAY: BudgetPeriod
BUDGET_PERIOD_MONTH: BudgetPeriod

class Run(_message.Message):
    __slots__ = ("id", "user_query", "state", "model", "create_time", "complete_time", "error_message", "usage", "metadata", "step_count", "steps", "error_code", "limits", "start_time", "cancel_requested", "executor_id", "user_query_truncated", "owner", "agent_id", "agent_revision", "thread_id", "thread_turn", "workflow_id", "workflow_revision", "lease_epoch", "attempts", "handbacks", "handed_back_by", "trace_id", "trace_span_id", "scores", "retention_hold", "cost")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_QUERY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STEP_COUNT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    EXECUTOR_ID_FIELD_NUMBER: _ClassVar[int]
    USER_QUERY_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_REVISION_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_TURN_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_REVISION_FIELD_NUMBER: _ClassVar[int]
    LEASE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    HANDBACKS_FIELD_NUMBER: _ClassVar[int]
    HANDED_BACK_BY_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    RETENTION_HOLD_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    id: str
    user_query: str
    state: RunState
    model: str
    create_time: _timestamp_pb2.Timestamp
    complete_time: _timestamp_pb2.Timestamp
    error_message: str
    usage: Usage
    metadata: _containers.ScalarMap[str, str]
    step_count: int
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    error_code: str
    limits: RunLimits
    start_time: _timestamp_pb2.Timestamp
    cancel_requested: bool
    executor_id: str
    user_query_truncated: bool
    owner: str
    agent_id: str
    agent_revision: int
    thread_id: str
    thread_turn: int
    workflow_id: str
    workflow_revision: int
    lease_epoch: int
    attempts: int
    handbacks: int
    handed_back_by: str
    trace_id: str
    trace_span_id: str
    scores: _containers.RepeatedCompositeFieldContainer[Score]
    retention_hold: bool
    cost: Cost
    def __init__(self, id: _Optional[str] = ..., user_query: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., model: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., complete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error_message: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., step_count: _Optional[int] = ..., steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., error_code: _Optional[str] = ..., limits: _Optional[_Union[RunLimits, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancel_requested: _Optional[bool] = ..., executor_id: _Optional[str] = ..., user_query_truncated: _Optional[bool] = ..., owner: _Optional[str] = ..., agent_id: _Optional[str] = ..., agent_revision: _Optional[int] = ..., thread_id: _Optional[str] = ..., thread_turn: _Optional[int] = ..., workflow_id: _Optional[str] = ..., workflow_revision: _Optional[int] = ..., lease_epoch: _Optional[int] = ..., attempts: _Optional[int] = ..., handbacks: _Optional[int] = ..., handed_back_by: _Optional[str] = ..., trace_id: _Optional[str] = ..., trace_span_id: _Optional[str] = ..., scores: _Optional[_Iterable[_Union[Score, _Mapping]]] = ..., retention_hold: _Optional[bool] = ..., cost: _Optional[_Union[Cost, _Mapping]] = ...) -> None: ...

class Thread(_message.Message):
    __slots__ = ("id", "owner", "title", "create_time", "update_time", "turn_count", "usage", "cost")
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    TURN_COUNT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    id: str
    owner: str
    title: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    turn_count: int
    usage: Usage
    cost: Cost
    def __init__(self, id: _Optional[str] = ..., owner: _Optional[str] = ..., title: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., turn_count: _Optional[int] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., cost: _Optional[_Union[Cost, _Mapping]] = ...) -> None: ...

class RunLimits(_message.Message):
    __slots__ = ("max_model_calls", "max_duration", "max_total_tokens", "max_tool_calls")
    MAX_MODEL_CALLS_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_FIELD_NUMBER: _ClassVar[int]
    MAX_TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    max_model_calls: int
    max_duration: _duration_pb2.Duration
    max_total_tokens: int
    max_tool_calls: int
    def __init__(self, max_model_calls: _Optional[int] = ..., max_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_total_tokens: _Optional[int] = ..., max_tool_calls: _Optional[int] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "total_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("run_id", "sequence", "create_time", "duration", "model_call", "node_id", "user_request", "agent_thought", "tool_call", "tool_result", "agent_response", "error", "approval_request", "approval_decision", "node_outcome", "resumed")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_CALL_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    AGENT_THOUGHT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    AGENT_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_REQUEST_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_DECISION_FIELD_NUMBER: _ClassVar[int]
    NODE_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    sequence: int
    create_time: _timestamp_pb2.Timestamp
    duration: _duration_pb2.Duration
    model_call: ModelCall
    node_id: str
    user_request: UserRequest
    agent_thought: AgentThought
    tool_call: ToolCall
    tool_result: ToolResult
    agent_response: AgentResponse
    error: StepError
    approval_request: ApprovalRequest
    approval_decision: ApprovalDecision
    node_outcome: NodeOutcome
    resumed: Resumed
    def __init__(self, run_id: _Optional[str] = ..., sequence: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., model_call: _Optional[_Union[ModelCall, _Mapping]] = ..., node_id: _Optional[str] = ..., user_request: _Optional[_Union[UserRequest, _Mapping]] = ..., agent_thought: _Optional[_Union[AgentThought, _Mapping]] = ..., tool_call: _Optional[_Union[ToolCall, _Mapping]] = ..., tool_result: _Optional[_Union[ToolResult, _Mapping]] = ..., agent_response: _Optional[_Union[AgentResponse, _Mapping]] = ..., error: _Optional[_Union[StepError, _Mapping]] = ..., approval_request: _Optional[_Union[ApprovalRequest, _Mapping]] = ..., approval_decision: _Optional[_Union[ApprovalDecision, _Mapping]] = ..., node_outcome: _Optional[_Union[NodeOutcome, _Mapping]] = ..., resumed: _Optional[_Union[Resumed, _Mapping]] = ...) -> None: ...

class Resumed(_message.Message):
    __slots__ = ("executor_id", "attempt", "summary", "held_tool_call_ids", "handed_back_by")
    EXECUTOR_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    HELD_TOOL_CALL_IDS_FIELD_NUMBER: _ClassVar[int]
    HANDED_BACK_BY_FIELD_NUMBER: _ClassVar[int]
    executor_id: str
    attempt: int
    summary: str
    held_tool_call_ids: _containers.RepeatedScalarFieldContainer[str]
    handed_back_by: str
    def __init__(self, executor_id: _Optional[str] = ..., attempt: _Optional[int] = ..., summary: _Optional[str] = ..., held_tool_call_ids: _Optional[_Iterable[str]] = ..., handed_back_by: _Optional[str] = ...) -> None: ...

class NodeOutcome(_message.Message):
    __slots__ = ("kind", "branch", "assigned", "output", "iteration")
    KIND_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    kind: str
    branch: str
    assigned: _struct_pb2.Struct
    output: _struct_pb2.Value
    iteration: int
    def __init__(self, kind: _Optional[str] = ..., branch: _Optional[str] = ..., assigned: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., output: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., iteration: _Optional[int] = ...) -> None: ...

class ApprovalRequest(_message.Message):
    __slots__ = ("prompt", "tool_call_id", "tool_name", "node_id", "expire_time")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    tool_call_id: str
    tool_name: str
    node_id: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, prompt: _Optional[str] = ..., tool_call_id: _Optional[str] = ..., tool_name: _Optional[str] = ..., node_id: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ApprovalDecision(_message.Message):
    __slots__ = ("outcome", "request_sequence", "comment", "decided_by")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    outcome: ApprovalOutcome
    request_sequence: int
    comment: str
    decided_by: str
    def __init__(self, outcome: _Optional[_Union[ApprovalOutcome, str]] = ..., request_sequence: _Optional[int] = ..., comment: _Optional[str] = ..., decided_by: _Optional[str] = ...) -> None: ...

class ModelCall(_message.Message):
    __slots__ = ("usage", "model", "cached_prompt_tokens", "cost", "time_to_first_token", "latency")
    USAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    usage: Usage
    model: str
    cached_prompt_tokens: int
    cost: Cost
    time_to_first_token: _duration_pb2.Duration
    latency: _duration_pb2.Duration
    def __init__(self, usage: _Optional[_Union[Usage, _Mapping]] = ..., model: _Optional[str] = ..., cached_prompt_tokens: _Optional[int] = ..., cost: _Optional[_Union[Cost, _Mapping]] = ..., time_to_first_token: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class UserRequest(_message.Message):
    __slots__ = ("text", "context_turns", "omitted_turns")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TURNS_FIELD_NUMBER: _ClassVar[int]
    OMITTED_TURNS_FIELD_NUMBER: _ClassVar[int]
    text: str
    context_turns: int
    omitted_turns: int
    def __init__(self, text: _Optional[str] = ..., context_turns: _Optional[int] = ..., omitted_turns: _Optional[int] = ...) -> None: ...

class AgentThought(_message.Message):
    __slots__ = ("text", "placeholder")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PLACEHOLDER_FIELD_NUMBER: _ClassVar[int]
    text: str
    placeholder: bool
    def __init__(self, text: _Optional[str] = ..., placeholder: _Optional[bool] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("tool_name", "tool_call_id", "params", "raw_arguments")
    TOOL_NAME_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    RAW_ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    tool_name: str
    tool_call_id: str
    params: _struct_pb2.Struct
    raw_arguments: str
    def __init__(self, tool_name: _Optional[str] = ..., tool_call_id: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., raw_arguments: _Optional[str] = ...) -> None: ...

class ToolResult(_message.Message):
    __slots__ = ("tool_name", "tool_call_id", "result", "text", "error")
    TOOL_NAME_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    tool_name: str
    tool_call_id: str
    result: _struct_pb2.Value
    text: str
    error: str
    def __init__(self, tool_name: _Optional[str] = ..., tool_call_id: _Optional[str] = ..., result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., text: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class AgentResponse(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class StepError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "state", "all_users", "thread_id", "states", "created_after", "created_before", "finished_after", "finished_before", "user", "agent_id", "agent_revision", "workflow_id", "model", "tool", "error_code", "metadata", "text", "min_duration_ms", "max_duration_ms", "min_total_tokens", "max_total_tokens", "order", "min_cost_usd", "max_cost_usd", "score_name", "min_score", "max_score", "text_contains")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ALL_USERS_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AFTER_FIELD_NUMBER: _ClassVar[int]
    FINISHED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_REVISION_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MIN_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    MIN_COST_USD_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_USD_FIELD_NUMBER: _ClassVar[int]
    SCORE_NAME_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    MAX_SCORE_FIELD_NUMBER: _ClassVar[int]
    TEXT_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state: RunState
    all_users: bool
    thread_id: str
    states: _containers.RepeatedScalarFieldContainer[RunState]
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    finished_after: _timestamp_pb2.Timestamp
    finished_before: _timestamp_pb2.Timestamp
    user: str
    agent_id: str
    agent_revision: int
    workflow_id: str
    model: str
    tool: str
    error_code: str
    metadata: _containers.RepeatedScalarFieldContainer[str]
    text: str
    min_duration_ms: int
    max_duration_ms: int
    min_total_tokens: int
    max_total_tokens: int
    order: RunOrder
    min_cost_usd: float
    max_cost_usd: float
    score_name: str
    min_score: float
    max_score: float
    text_contains: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., all_users: _Optional[bool] = ..., thread_id: _Optional[str] = ..., states: _Optional[_Iterable[_Union[RunState, str]]] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., user: _Optional[str] = ..., agent_id: _Optional[str] = ..., agent_revision: _Optional[int] = ..., workflow_id: _Optional[str] = ..., model: _Optional[str] = ..., tool: _Optional[str] = ..., error_code: _Optional[str] = ..., metadata: _Optional[_Iterable[str]] = ..., text: _Optional[str] = ..., min_duration_ms: _Optional[int] = ..., max_duration_ms: _Optional[int] = ..., min_total_tokens: _Optional[int] = ..., max_total_tokens: _Optional[int] = ..., order: _Optional[_Union[RunOrder, str]] = ..., min_cost_usd: _Optional[float] = ..., max_cost_usd: _Optional[float] = ..., score_name: _Optional[str] = ..., min_score: _Optional[float] = ..., max_score: _Optional[float] = ..., text_contains: _Optional[str] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class WatchRunRequest(_message.Message):
    __slots__ = ("run_id", "after_sequence")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    after_sequence: int
    def __init__(self, run_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("step", "run", "heartbeat", "delta")
    STEP_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    step: Step
    run: Run
    heartbeat: Heartbeat
    delta: StepDelta
    def __init__(self, step: _Optional[_Union[Step, _Mapping]] = ..., run: _Optional[_Union[Run, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., delta: _Optional[_Union[StepDelta, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("time", "last_sequence")
    TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    last_sequence: int
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_sequence: _Optional[int] = ...) -> None: ...

class StepDelta(_message.Message):
    __slots__ = ("run_id", "sequence", "text", "tool_call", "replace")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    sequence: int
    text: str
    tool_call: ToolCallDelta
    replace: bool
    def __init__(self, run_id: _Optional[str] = ..., sequence: _Optional[int] = ..., text: _Optional[str] = ..., tool_call: _Optional[_Union[ToolCallDelta, _Mapping]] = ..., replace: _Optional[bool] = ...) -> None: ...

class ToolCallDelta(_message.Message):
    __slots__ = ("tool_call_id", "tool_name", "arguments")
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    tool_call_id: str
    tool_name: str
    arguments: str
    def __init__(self, tool_call_id: _Optional[str] = ..., tool_name: _Optional[str] = ..., arguments: _Optional[str] = ...) -> None: ...

class CancelRunRequest(_message.Message):
    __slots__ = ("run_id", "reason")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    reason: str
    def __init__(self, run_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetThreadRequest(_message.Message):
    __slots__ = ("thread_id",)
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    def __init__(self, thread_id: _Optional[str] = ...) -> None: ...

class ListThreadsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "all_users")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ALL_USERS_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    all_users: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., all_users: _Optional[bool] = ...) -> None: ...

class ListThreadsResponse(_message.Message):
    __slots__ = ("threads", "next_page_token")
    THREADS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    threads: _containers.RepeatedCompositeFieldContainer[Thread]
    next_page_token: str
    def __init__(self, threads: _Optional[_Iterable[_Union[Thread, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteThreadRequest(_message.Message):
    __slots__ = ("thread_id",)
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    def __init__(self, thread_id: _Optional[str] = ...) -> None: ...

class ApproveStepRequest(_message.Message):
    __slots__ = ("run_id", "sequence", "comment")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    sequence: int
    comment: str
    def __init__(self, run_id: _Optional[str] = ..., sequence: _Optional[int] = ..., comment: _Optional[str] = ...) -> None: ...

class RejectStepRequest(_message.Message):
    __slots__ = ("run_id", "sequence", "comment")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    sequence: int
    comment: str
    def __init__(self, run_id: _Optional[str] = ..., sequence: _Optional[int] = ..., comment: _Optional[str] = ...) -> None: ...

class Score(_message.Message):
    __slots__ = ("id", "run_id", "step_sequence", "name", "number_value", "boolean_value", "category_value", "comment", "source", "author", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUMBER_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOLEAN_VALUE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_VALUE_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    run_id: str
    step_sequence: int
    name: str
    number_value: float
    boolean_value: bool
    category_value: str
    comment: str
    source: ScoreSource
    author: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., run_id: _Optional[str] = ..., step_sequence: _Optional[int] = ..., name: _Optional[str] = ..., number_value: _Optional[float] = ..., boolean_value: _Optional[bool] = ..., category_value: _Optional[str] = ..., comment: _Optional[str] = ..., source: _Optional[_Union[ScoreSource, str]] = ..., author: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateScoreRequest(_message.Message):
    __slots__ = ("run_id", "score")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    score: Score
    def __init__(self, run_id: _Optional[str] = ..., score: _Optional[_Union[Score, _Mapping]] = ...) -> None: ...

class ListScoresRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class ListScoresResponse(_message.Message):
    __slots__ = ("scores",)
    SCORES_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[Score]
    def __init__(self, scores: _Optional[_Iterable[_Union[Score, _Mapping]]] = ...) -> None: ...

class DeleteScoreRequest(_message.Message):
    __slots__ = ("score_id",)
    SCORE_ID_FIELD_NUMBER: _ClassVar[int]
    score_id: str
    def __init__(self, score_id: _Optional[str] = ...) -> None: ...

class SummarizeScoresRequest(_message.Message):
    __slots__ = ("agent_id", "start_time", "end_time", "all_users")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ALL_USERS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    all_users: bool
    def __init__(self, agent_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., all_users: _Optional[bool] = ...) -> None: ...

class SummarizeScoresResponse(_message.Message):
    __slots__ = ("summaries",)
    SUMMARIES_FIELD_NUMBER: _ClassVar[int]
    summaries: _containers.RepeatedCompositeFieldContainer[ScoreSummary]
    def __init__(self, summaries: _Optional[_Iterable[_Union[ScoreSummary, _Mapping]]] = ...) -> None: ...

class ScoreSummary(_message.Message):
    __slots__ = ("agent_revision", "name", "kind", "count", "mean", "min", "max", "categories")
    AGENT_REVISION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    agent_revision: int
    name: str
    kind: str
    count: int
    mean: float
    min: float
    max: float
    categories: _containers.RepeatedCompositeFieldContainer[CategoryCount]
    def __init__(self, agent_revision: _Optional[int] = ..., name: _Optional[str] = ..., kind: _Optional[str] = ..., count: _Optional[int] = ..., mean: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., categories: _Optional[_Iterable[_Union[CategoryCount, _Mapping]]] = ...) -> None: ...

class CategoryCount(_message.Message):
    __slots__ = ("category", "count")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    category: str
    count: int
    def __init__(self, category: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class SetRetentionHoldRequest(_message.Message):
    __slots__ = ("run_id", "hold")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    HOLD_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    hold: bool
    def __init__(self, run_id: _Optional[str] = ..., hold: _Optional[bool] = ...) -> None: ...

class Cost(_message.Message):
    __slots__ = ("usd", "unpriced_model_calls")
    USD_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_MODEL_CALLS_FIELD_NUMBER: _ClassVar[int]
    usd: float
    unpriced_model_calls: int
    def __init__(self, usd: _Optional[float] = ..., unpriced_model_calls: _Optional[int] = ...) -> None: ...

class ModelPrice(_message.Message):
    __slots__ = ("model", "currency", "input_per_million", "cached_input_per_million", "output_per_million", "builtin", "source", "update_time")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    INPUT_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    model: str
    currency: str
    input_per_million: float
    cached_input_per_million: float
    output_per_million: float
    builtin: bool
    source: str
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, model: _Optional[str] = ..., currency: _Optional[str] = ..., input_per_million: _Optional[float] = ..., cached_input_per_million: _Optional[float] = ..., output_per_million: _Optional[float] = ..., builtin: _Optional[bool] = ..., source: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListModelPricesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelPricesResponse(_message.Message):
    __slots__ = ("prices",)
    PRICES_FIELD_NUMBER: _ClassVar[int]
    prices: _containers.RepeatedCompositeFieldContainer[ModelPrice]
    def __init__(self, prices: _Optional[_Iterable[_Union[ModelPrice, _Mapping]]] = ...) -> None: ...

class SetModelPriceRequest(_message.Message):
    __slots__ = ("price",)
    PRICE_FIELD_NUMBER: _ClassVar[int]
    price: ModelPrice
    def __init__(self, price: _Optional[_Union[ModelPrice, _Mapping]] = ...) -> None: ...

class DeleteModelPriceRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class SummarizeUsageRequest(_message.Message):
    __slots__ = ("start_time", "end_time", "group_by", "interval", "all_users")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    ALL_USERS_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    group_by: UsageGrouping
    interval: UsageInterval
    all_users: bool
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., group_by: _Optional[_Union[UsageGrouping, str]] = ..., interval: _Optional[_Union[UsageInterval, str]] = ..., all_users: _Optional[bool] = ...) -> None: ...

class SummarizeUsageResponse(_message.Message):
    __slots__ = ("buckets",)
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedCompositeFieldContainer[UsageBucket]
    def __init__(self, buckets: _Optional[_Iterable[_Union[UsageBucket, _Mapping]]] = ...) -> None: ...

class UsageBucket(_message.Message):
    __slots__ = ("start_time", "key", "runs", "usage", "cost")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    key: str
    runs: int
    usage: Usage
    cost: Cost
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., key: _Optional[str] = ..., runs: _Optional[int] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., cost: _Optional[_Union[Cost, _Mapping]] = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("id", "scope", "subject", "metric", "period", "limit", "spent", "reset_time", "updated_by")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SPENT_FIELD_NUMBER: _ClassVar[int]
    RESET_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    scope: BudgetScope
    subject: str
    metric: BudgetMetric
    period: BudgetPeriod
    limit: float
    spent: float
    reset_time: _timestamp_pb2.Timestamp
    updated_by: str
    def __init__(self, id: _Optional[str] = ..., scope: _Optional[_Union[BudgetScope, str]] = ..., subject: _Optional[str] = ..., metric: _Optional[_Union[BudgetMetric, str]] = ..., period: _Optional[_Union[BudgetPeriod, str]] = ..., limit: _Optional[float] = ..., spent: _Optional[float] = ..., reset_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_by: _Optional[str] = ...) -> None: ...

class SetBudgetRequest(_message.Message):
    __slots__ = ("budget",)
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    budget: Budget
    def __init__(self, budget: _Optional[_Union[Budget, _Mapping]] = ...) -> None: ...

class ListBudgetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBudgetsResponse(_message.Message):
    __slots__ = ("budgets",)
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    budgets: _containers.RepeatedCompositeFieldContainer[Budget]
    def __init__(self, budgets: _Optional[_Iterable[_Union[Budget, _Mapping]]] = ...) -> None: ...

class DeleteBudgetRequest(_message.Message):
    __slots__ = ("budget_id",)
    BUDGET_ID_FIELD_NUMBER: _ClassVar[int]
    budget_id: str
    def __init__(self, budget_id: _Optional[str] = ...) -> None: ...

class ExportRunsRequest(_message.Message):
    __slots__ = ("filter", "cursor")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    filter: ListRunsRequest
    cursor: str
    def __init__(self, filter: _Optional[_Union[ListRunsRequest, _Mapping]] = ..., cursor: _Optional[str] = ...) -> None: ...

class ExportRunsResponse(_message.Message):
    __slots__ = ("run", "cursor")
    RUN_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    run: Run
    cursor: str
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ..., cursor: _Optional[str] = ...) -> None: ...

class ImportRunsRequest(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    def __init__(self, runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ...) -> None: ...

class ImportRunsResponse(_message.Message):
    __slots__ = ("imported",)
    IMPORTED_FIELD_NUMBER: _ClassVar[int]
    imported: int
    def __init__(self, imported: _Optional[int] = ...) -> None: ...

class DeleteRunsRequest(_message.Message):
    __slots__ = ("filter", "dry_run")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    filter: ListRunsRequest
    dry_run: bool
    def __init__(self, filter: _Optional[_Union[ListRunsRequest, _Mapping]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class DeleteRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: int
    def __init__(self, runs: _Optional[int] = ...) -> None: ...
