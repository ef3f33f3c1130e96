import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HttpRepeatability(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HTTP_REPEATABILITY_UNSPECIFIED: _ClassVar[HttpRepeatability]
    HTTP_REPEATABILITY_READ_ONLY: _ClassVar[HttpRepeatability]
    HTTP_REPEATABILITY_IDEMPOTENT: _ClassVar[HttpRepeatability]
    HTTP_REPEATABILITY_NOT_IDEMPOTENT: _ClassVar[HttpRepeatability]

class HttpMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HTTP_METHOD_UNSPECIFIED: _ClassVar[HttpMethod]
    HTTP_METHOD_GET: _ClassVar[HttpMethod]
    HTTP_METHOD_POST: _ClassVar[HttpMethod]
    HTTP_METHOD_PUT: _ClassVar[HttpMethod]
    HTTP_METHOD_PATCH: _ClassVar[HttpMethod]
    HTTP_METHOD_DELETE: _ClassVar[HttpMethod]

class McpServerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MCP_SERVER_STATE_UNSPECIFIED: _ClassVar[McpServerState]
    MCP_SERVER_STATE_CONNECTING: _ClassVar[McpServerState]
    MCP_SERVER_STATE_CONNECTED: _ClassVar[McpServerState]
    MCP_SERVER_STATE_UNAVAILABLE: _ClassVar[McpServerState]
HTTP_REPEATABILITY_UNSPECIFIED: HttpRepeatability
HTTP_REPEATABILITY_READ_ONLY: HttpRepeatability
HTTP_REPEATABILITY_IDEMPOTENT: HttpRepeatability
HTTP_REPEATABILITY_NOT_IDEMPOTENT: HttpRepeatability
HTTP_METHOD_UNSPECIFIED: HttpMethod
HTTP_METHOD_GET: HttpMethod
HTTP_METHOD_POST: HttpMethod
HTTP_METHOD_PUT: HttpMethod
HTTP_METHOD_PATCH: HttpMethod
HTTP_METHOD_DELETE: HttpMethod
MCP_SERVER_STATE_UNSPECIFIED: McpServerState
MCP_SERVER_STATE_CONNECTING: McpServerState
MCP_SERVER_STATE_CONNECTED: McpServerState
MCP_SERVER_STATE_UNAVAILABLE: McpServerState

class Tool(_message.Message):
    __slots__ = ("id", "display_name", "description", "icon", "enabled", "parameters", "schema", "default_description", "usage", "hints", "requires_approval", "available", "unavailable_reason", "mcp_server", "http", "repeat_safe", "repeat_safe_calls")
    ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ICON_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    HINTS_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_APPROVAL_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    MCP_SERVER_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    REPEAT_SAFE_FIELD_NUMBER: _ClassVar[int]
    REPEAT_SAFE_CALLS_FIELD_NUMBER: _ClassVar[int]
    id: str
    display_name: str
    description: str
    icon: str
    enabled: bool
    parameters: _struct_pb2.Struct
    schema: _struct_pb2.Struct
    default_description: str
    usage: ToolUsage
    hints: ToolHints
    requires_approval: bool
    available: bool
    unavailable_reason: str
    mcp_server: str
    http: HttpToolSpec
    repeat_safe: bool
    repeat_safe_calls: RepeatSafeCalls
    def __init__(self, id: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., icon: _Optional[str] = ..., enabled: _Optional[bool] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., default_description: _Optional[str] = ..., usage: _Optional[_Union[ToolUsage, _Mapping]] = ..., hints: _Optional[_Union[ToolHints, _Mapping]] = ..., requires_approval: _Optional[bool] = ..., available: _Optional[bool] = ..., unavailable_reason: _Optional[str] = ..., mcp_server: _Optional[str] = ..., http: _Optional[_Union[HttpToolSpec, _Mapping]] = ..., repeat_safe: _Optional[bool] = ..., repeat_safe_calls: _Optional[_Union[RepeatSafeCalls, _Mapping]] = ...) -> None: ...

class RepeatSafeCalls(_message.Message):
    __slots__ = ("argument", "values")
    ARGUMENT_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    argument: str
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, argument: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class ToolHints(_message.Message):
    __slots__ = ("read_only", "destructive", "idempotent", "open_world")
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    DESTRUCTIVE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENT_FIELD_NUMBER: _ClassVar[int]
    OPEN_WORLD_FIELD_NUMBER: _ClassVar[int]
    read_only: bool
    destructive: bool
    idempotent: bool
    open_world: bool
    def __init__(self, read_only: _Optional[bool] = ..., destructive: _Optional[bool] = ..., idempotent: _Optional[bool] = ..., open_world: _Optional[bool] = ...) -> None: ...

class ToolUsage(_message.Message):
    __slots__ = ("calls", "errors", "timeouts", "p50_duration", "p95_duration", "last_used_time")
    CALLS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    P50_DURATION_FIELD_NUMBER: _ClassVar[int]
    P95_DURATION_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_TIME_FIELD_NUMBER: _ClassVar[int]
    calls: int
    errors: int
    timeouts: int
    p50_duration: _duration_pb2.Duration
    p95_duration: _duration_pb2.Duration
    last_used_time: _timestamp_pb2.Timestamp
    def __init__(self, calls: _Optional[int] = ..., errors: _Optional[int] = ..., timeouts: _Optional[int] = ..., p50_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., p95_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., last_used_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListToolsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "enabled_only")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ENABLED_ONLY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    enabled_only: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., enabled_only: _Optional[bool] = ...) -> None: ...

class ListToolsResponse(_message.Message):
    __slots__ = ("tools", "next_page_token")
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tools: _containers.RepeatedCompositeFieldContainer[Tool]
    next_page_token: str
    def __init__(self, tools: _Optional[_Iterable[_Union[Tool, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetToolRequest(_message.Message):
    __slots__ = ("tool_id",)
    TOOL_ID_FIELD_NUMBER: _ClassVar[int]
    tool_id: str
    def __init__(self, tool_id: _Optional[str] = ...) -> None: ...

class CreateToolRequest(_message.Message):
    __slots__ = ("http",)
    HTTP_FIELD_NUMBER: _ClassVar[int]
    http: HttpToolSpec
    def __init__(self, http: _Optional[_Union[HttpToolSpec, _Mapping]] = ...) -> None: ...

class DeleteToolRequest(_message.Message):
    __slots__ = ("tool_id",)
    TOOL_ID_FIELD_NUMBER: _ClassVar[int]
    tool_id: str
    def __init__(self, tool_id: _Optional[str] = ...) -> None: ...

class HttpToolSpec(_message.Message):
    __slots__ = ("name", "display_name", "description", "parameters", "url", "method", "headers", "header_names", "repeatability")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    HEADER_NAMES_FIELD_NUMBER: _ClassVar[int]
    REPEATABILITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    description: str
    parameters: _struct_pb2.Struct
    url: str
    method: HttpMethod
    headers: _containers.ScalarMap[str, str]
    header_names: _containers.RepeatedScalarFieldContainer[str]
    repeatability: HttpRepeatability
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., url: _Optional[str] = ..., method: _Optional[_Union[HttpMethod, str]] = ..., headers: _Optional[_Mapping[str, str]] = ..., header_names: _Optional[_Iterable[str]] = ..., repeatability: _Optional[_Union[HttpRepeatability, str]] = ...) -> None: ...

class UpdateToolRequest(_message.Message):
    __slots__ = ("tool", "update_mask")
    TOOL_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    tool: Tool
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, tool: _Optional[_Union[Tool, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class McpServer(_message.Message):
    __slots__ = ("name", "stdio", "http", "state", "unavailable_reason", "tool_count", "last_connected_time", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STDIO_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    TOOL_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_CONNECTED_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    stdio: McpStdioTransport
    http: McpHttpTransport
    state: McpServerState
    unavailable_reason: str
    tool_count: int
    last_connected_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., stdio: _Optional[_Union[McpStdioTransport, _Mapping]] = ..., http: _Optional[_Union[McpHttpTransport, _Mapping]] = ..., state: _Optional[_Union[McpServerState, str]] = ..., unavailable_reason: _Optional[str] = ..., tool_count: _Optional[int] = ..., last_connected_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class McpStdioTransport(_message.Message):
    __slots__ = ("command", "args", "env", "env_names")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    ENV_NAMES_FIELD_NUMBER: _ClassVar[int]
    command: str
    args: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    env_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, command: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., env_names: _Optional[_Iterable[str]] = ...) -> None: ...

class McpHttpTransport(_message.Message):
    __slots__ = ("url", "headers", "header_names")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    URL_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    HEADER_NAMES_FIELD_NUMBER: _ClassVar[int]
    url: str
    headers: _containers.ScalarMap[str, str]
    header_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, url: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., header_names: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateMcpServerRequest(_message.Message):
    __slots__ = ("mcp_server",)
    MCP_SERVER_FIELD_NUMBER: _ClassVar[int]
    mcp_server: McpServer
    def __init__(self, mcp_server: _Optional[_Union[McpServer, _Mapping]] = ...) -> None: ...

class GetMcpServerRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListMcpServersRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListMcpServersResponse(_message.Message):
    __slots__ = ("mcp_servers", "next_page_token")
    MCP_SERVERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    mcp_servers: _containers.RepeatedCompositeFieldContainer[McpServer]
    next_page_token: str
    def __init__(self, mcp_servers: _Optional[_Iterable[_Union[McpServer, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteMcpServerRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...
