import datetime

from agentplatform.runs.v1 import runs_pb2 as _runs_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HandBackRunsRequest(_message.Message):
    __slots__ = ("executor_id", "leases")
    EXECUTOR_ID_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    executor_id: str
    leases: _containers.RepeatedCompositeFieldContainer[HeldLease]
    def __init__(self, executor_id: _Optional[str] = ..., leases: _Optional[_Iterable[_Union[HeldLease, _Mapping]]] = ...) -> None: ...

class HandBackRunsResponse(_message.Message):
    __slots__ = ("handed_back_run_ids", "ended_run_ids", "refused_run_ids")
    HANDED_BACK_RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    ENDED_RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    handed_back_run_ids: _containers.RepeatedScalarFieldContainer[str]
    ended_run_ids: _containers.RepeatedScalarFieldContainer[str]
    refused_run_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, handed_back_run_ids: _Optional[_Iterable[str]] = ..., ended_run_ids: _Optional[_Iterable[str]] = ..., refused_run_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AwaitApprovalRequest(_message.Message):
    __slots__ = ("run_id", "executor_id", "step", "lease_epoch")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTOR_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    LEASE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    executor_id: str
    step: _runs_pb2.Step
    lease_epoch: int
    def __init__(self, run_id: _Optional[str] = ..., executor_id: _Optional[str] = ..., step: _Optional[_Union[_runs_pb2.Step, _Mapping]] = ..., lease_epoch: _Optional[int] = ...) -> None: ...

class ResumeRunRequest(_message.Message):
    __slots__ = ("run_id", "executor_id", "lease_duration")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTOR_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_DURATION_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    executor_id: str
    lease_duration: _duration_pb2.Duration
    def __init__(self, run_id: _Optional[str] = ..., executor_id: _Optional[str] = ..., lease_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class CreateRunRequest(_message.Message):
    __slots__ = ("user_query", "model", "metadata", "request_id", "state", "limits", "executor_id", "lease_duration", "steps", "owner", "agent_id", "agent_revision", "thread_id", "multitask_strategy", "workflow_id", "workflow_revision", "trace_id", "trace_span_id")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_QUERY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    EXECUTOR_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_DURATION_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_REVISION_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    MULTITASK_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_REVISION_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    user_query: str
    model: str
    metadata: _containers.ScalarMap[str, str]
    request_id: str
    state: _runs_pb2.RunState
    limits: _runs_pb2.RunLimits
    executor_id: str
    lease_duration: _duration_pb2.Duration
    steps: _containers.RepeatedCompositeFieldContainer[_runs_pb2.Step]
    owner: str
    agent_id: str
    agent_revision: int
    thread_id: str
    multitask_strategy: _runs_pb2.MultitaskStrategy
    workflow_id: str
    workflow_revision: int
    trace_id: str
    trace_span_id: str
    def __init__(self, user_query: _Optional[str] = ..., model: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., request_id: _Optional[str] = ..., state: _Optional[_Union[_runs_pb2.RunState, str]] = ..., limits: _Optional[_Union[_runs_pb2.RunLimits, _Mapping]] = ..., executor_id: _Optional[str] = ..., lease_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., steps: _Optional[_Iterable[_Union[_runs_pb2.Step, _Mapping]]] = ..., owner: _Optional[str] = ..., agent_id: _Optional[str] = ..., agent_revision: _Optional[int] = ..., thread_id: _Optional[str] = ..., multitask_strategy: _Optional[_Union[_runs_pb2.MultitaskStrategy, str]] = ..., workflow_id: _Optional[str] = ..., workflow_revision: _Optional[int] = ..., trace_id: _Optional[str] = ..., trace_span_id: _Optional[str] = ...) -> None: ...

class GetThreadHistoryRequest(_message.Message):
    __slots__ = ("run_id", "max_turns")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_TURNS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    max_turns: int
    def __init__(self, run_id: _Optional[str] = ..., max_turns: _Optional[int] = ...) -> None: ...

class ThreadHistory(_message.Message):
    __slots__ = ("turns", "omitted_turns")
    TURNS_FIELD_NUMBER: _ClassVar[int]
    OMITTED_TURNS_FIELD_NUMBER: _ClassVar[int]
    turns: _containers.RepeatedCompositeFieldContainer[_runs_pb2.Run]
    omitted_turns: int
    def __init__(self, turns: _Optional[_Iterable[_Union[_runs_pb2.Run, _Mapping]]] = ..., omitted_turns: _Optional[int] = ...) -> None: ...

class AppendStepsRequest(_message.Message):
    __slots__ = ("run_id", "steps", "lease_epoch")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LEASE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    steps: _containers.RepeatedCompositeFieldContainer[_runs_pb2.Step]
    lease_epoch: int
    def __init__(self, run_id: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[_runs_pb2.Step, _Mapping]]] = ..., lease_epoch: _Optional[int] = ...) -> None: ...

class AppendStepsResponse(_message.Message):
    __slots__ = ("steps", "budget_exceeded")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_EXCEEDED_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[_runs_pb2.Step]
    budget_exceeded: str
    def __init__(self, steps: _Optional[_Iterable[_Union[_runs_pb2.Step, _Mapping]]] = ..., budget_exceeded: _Optional[str] = ...) -> None: ...

class FinishRunRequest(_message.Message):
    __slots__ = ("run_id", "state", "error_message", "error_code", "lease_epoch")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    LEASE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    state: _runs_pb2.RunState
    error_message: str
    error_code: str
    lease_epoch: int
    def __init__(self, run_id: _Optional[str] = ..., state: _Optional[_Union[_runs_pb2.RunState, str]] = ..., error_message: _Optional[str] = ..., error_code: _Optional[str] = ..., lease_epoch: _Optional[int] = ...) -> None: ...

class BeginRunRequest(_message.Message):
    __slots__ = ("run_id", "executor_id", "lease_epoch")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTOR_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    executor_id: str
    lease_epoch: int
    def __init__(self, run_id: _Optional[str] = ..., executor_id: _Optional[str] = ..., lease_epoch: _Optional[int] = ...) -> None: ...

class RenewLeasesRequest(_message.Message):
    __slots__ = ("executor_id", "run_ids", "leases")
    EXECUTOR_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    executor_id: str
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    leases: _containers.RepeatedCompositeFieldContainer[HeldLease]
    def __init__(self, executor_id: _Optional[str] = ..., run_ids: _Optional[_Iterable[str]] = ..., leases: _Optional[_Iterable[_Union[HeldLease, _Mapping]]] = ...) -> None: ...

class HeldLease(_message.Message):
    __slots__ = ("run_id", "lease_epoch")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    lease_epoch: int
    def __init__(self, run_id: _Optional[str] = ..., lease_epoch: _Optional[int] = ...) -> None: ...

class RenewLeasesResponse(_message.Message):
    __slots__ = ("lost_run_ids", "cancel", "fenced_run_ids")
    LOST_RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    FENCED_RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    lost_run_ids: _containers.RepeatedScalarFieldContainer[str]
    cancel: _containers.RepeatedCompositeFieldContainer[CancelNotice]
    fenced_run_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lost_run_ids: _Optional[_Iterable[str]] = ..., cancel: _Optional[_Iterable[_Union[CancelNotice, _Mapping]]] = ..., fenced_run_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CancelNotice(_message.Message):
    __slots__ = ("run_id", "reason")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    reason: str
    def __init__(self, run_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ConnectExecutorRequest(_message.Message):
    __slots__ = ("executor_id", "delta", "call", "deltas")
    EXECUTOR_ID_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    DELTAS_FIELD_NUMBER: _ClassVar[int]
    executor_id: str
    delta: _runs_pb2.StepDelta
    call: ExecutorCall
    deltas: StepDeltas
    def __init__(self, executor_id: _Optional[str] = ..., delta: _Optional[_Union[_runs_pb2.StepDelta, _Mapping]] = ..., call: _Optional[_Union[ExecutorCall, _Mapping]] = ..., deltas: _Optional[_Union[StepDeltas, _Mapping]] = ...) -> None: ...

class StepDeltas(_message.Message):
    __slots__ = ("deltas",)
    DELTAS_FIELD_NUMBER: _ClassVar[int]
    deltas: _containers.RepeatedCompositeFieldContainer[_runs_pb2.StepDelta]
    def __init__(self, deltas: _Optional[_Iterable[_Union[_runs_pb2.StepDelta, _Mapping]]] = ...) -> None: ...

class ExecutorCall(_message.Message):
    __slots__ = ("call_id", "append_steps", "finish_run", "create_run", "begin_run", "traceparent")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    APPEND_STEPS_FIELD_NUMBER: _ClassVar[int]
    FINISH_RUN_FIELD_NUMBER: _ClassVar[int]
    CREATE_RUN_FIELD_NUMBER: _ClassVar[int]
    BEGIN_RUN_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    append_steps: AppendStepsRequest
    finish_run: FinishRunRequest
    create_run: CreateRunRequest
    begin_run: BeginRunRequest
    traceparent: str
    def __init__(self, call_id: _Optional[int] = ..., append_steps: _Optional[_Union[AppendStepsRequest, _Mapping]] = ..., finish_run: _Optional[_Union[FinishRunRequest, _Mapping]] = ..., create_run: _Optional[_Union[CreateRunRequest, _Mapping]] = ..., begin_run: _Optional[_Union[BeginRunRequest, _Mapping]] = ..., traceparent: _Optional[str] = ...) -> None: ...

class ExecutorCallResult(_message.Message):
    __slots__ = ("call_id", "append_steps", "finish_run", "error", "create_run", "begin_run")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    APPEND_STEPS_FIELD_NUMBER: _ClassVar[int]
    FINISH_RUN_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_RUN_FIELD_NUMBER: _ClassVar[int]
    BEGIN_RUN_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    append_steps: AppendStepsResponse
    finish_run: _runs_pb2.Run
    error: ExecutorCallError
    create_run: _runs_pb2.Run
    begin_run: _runs_pb2.Run
    def __init__(self, call_id: _Optional[int] = ..., append_steps: _Optional[_Union[AppendStepsResponse, _Mapping]] = ..., finish_run: _Optional[_Union[_runs_pb2.Run, _Mapping]] = ..., error: _Optional[_Union[ExecutorCallError, _Mapping]] = ..., create_run: _Optional[_Union[_runs_pb2.Run, _Mapping]] = ..., begin_run: _Optional[_Union[_runs_pb2.Run, _Mapping]] = ...) -> None: ...

class ExecutorCallError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ExecutorNotice(_message.Message):
    __slots__ = ("cancel", "call_result", "resume")
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    CALL_RESULT_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    cancel: CancelNotice
    call_result: ExecutorCallResult
    resume: ResumeNotice
    def __init__(self, cancel: _Optional[_Union[CancelNotice, _Mapping]] = ..., call_result: _Optional[_Union[ExecutorCallResult, _Mapping]] = ..., resume: _Optional[_Union[ResumeNotice, _Mapping]] = ...) -> None: ...

class ResumeNotice(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...
