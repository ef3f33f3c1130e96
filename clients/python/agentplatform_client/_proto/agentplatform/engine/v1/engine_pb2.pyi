from google.api import annotations_pb2 as _annotations_pb2
from agentplatform_client._proto.agentplatform.runs.v1 import runs_pb2 as _runs_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DisconnectPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISCONNECT_POLICY_UNSPECIFIED: _ClassVar[DisconnectPolicy]
    DISCONNECT_POLICY_CANCEL: _ClassVar[DisconnectPolicy]
    DISCONNECT_POLICY_CONTINUE: _ClassVar[DisconnectPolicy]
DISCONNECT_POLICY_UNSPECIFIED: DisconnectPolicy
DISCONNECT_POLICY_CANCEL: DisconnectPolicy
DISCONNECT_POLICY_CONTINUE: DisconnectPolicy

class StartWorkflowRunRequest(_message.Message):
    __slots__ = ("workflow_id", "workflow_revision", "inputs", "metadata", "request_id")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_REVISION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    workflow_revision: int
    inputs: _struct_pb2.Struct
    metadata: _containers.ScalarMap[str, str]
    request_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., workflow_revision: _Optional[int] = ..., inputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class StartRunRequest(_message.Message):
    __slots__ = ("message", "model", "metadata", "request_id", "limits", "agent_id", "agent_revision", "thread_id", "multitask_strategy")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_REVISION_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    MULTITASK_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    message: str
    model: str
    metadata: _containers.ScalarMap[str, str]
    request_id: str
    limits: _runs_pb2.RunLimits
    agent_id: str
    agent_revision: int
    thread_id: str
    multitask_strategy: _runs_pb2.MultitaskStrategy
    def __init__(self, message: _Optional[str] = ..., model: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., request_id: _Optional[str] = ..., limits: _Optional[_Union[_runs_pb2.RunLimits, _Mapping]] = ..., agent_id: _Optional[str] = ..., agent_revision: _Optional[int] = ..., thread_id: _Optional[str] = ..., multitask_strategy: _Optional[_Union[_runs_pb2.MultitaskStrategy, str]] = ...) -> None: ...

class StreamChatRequest(_message.Message):
    __slots__ = ("message", "model", "metadata", "request_id", "limits", "on_disconnect", "agent_id", "agent_revision", "thread_id", "multitask_strategy")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    ON_DISCONNECT_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_REVISION_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    MULTITASK_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    message: str
    model: str
    metadata: _containers.ScalarMap[str, str]
    request_id: str
    limits: _runs_pb2.RunLimits
    on_disconnect: DisconnectPolicy
    agent_id: str
    agent_revision: int
    thread_id: str
    multitask_strategy: _runs_pb2.MultitaskStrategy
    def __init__(self, message: _Optional[str] = ..., model: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., request_id: _Optional[str] = ..., limits: _Optional[_Union[_runs_pb2.RunLimits, _Mapping]] = ..., on_disconnect: _Optional[_Union[DisconnectPolicy, str]] = ..., agent_id: _Optional[str] = ..., agent_revision: _Optional[int] = ..., thread_id: _Optional[str] = ..., multitask_strategy: _Optional[_Union[_runs_pb2.MultitaskStrategy, str]] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("message", "model", "metadata", "request_id", "limits", "on_disconnect", "agent_id", "agent_revision", "thread_id", "multitask_strategy")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    ON_DISCONNECT_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_REVISION_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    MULTITASK_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    message: str
    model: str
    metadata: _containers.ScalarMap[str, str]
    request_id: str
    limits: _runs_pb2.RunLimits
    on_disconnect: DisconnectPolicy
    agent_id: str
    agent_revision: int
    thread_id: str
    multitask_strategy: _runs_pb2.MultitaskStrategy
    def __init__(self, message: _Optional[str] = ..., model: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., request_id: _Optional[str] = ..., limits: _Optional[_Union[_runs_pb2.RunLimits, _Mapping]] = ..., on_disconnect: _Optional[_Union[DisconnectPolicy, str]] = ..., agent_id: _Optional[str] = ..., agent_revision: _Optional[int] = ..., thread_id: _Optional[str] = ..., multitask_strategy: _Optional[_Union[_runs_pb2.MultitaskStrategy, str]] = ...) -> None: ...

class ChatResponse(_message.Message):
    __slots__ = ("response", "run_id", "thread_id")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    response: str
    run_id: str
    thread_id: str
    def __init__(self, response: _Optional[str] = ..., run_id: _Optional[str] = ..., thread_id: _Optional[str] = ...) -> None: ...
