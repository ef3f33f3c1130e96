"""The public gRPC face of the tools service (agentplatform.tools.v1.ToolService): the registry, for the Manage
Tools page, the registered MCP servers and the HTTP tools. Converts protos to domain calls and back; changing a
tool's settings, creating or deleting a tool and anything about MCP servers is for admins.

Domain errors raised below propagate to services.common.rpc.interceptor, which maps them to status codes.
"""

import asyncio

import grpc
from google.protobuf import empty_pb2

from agentplatform.tools.v1 import tools_pb2, tools_pb2_grpc
from services.common.errors import InvalidArgument, PermissionDenied
from services.common.identity import current_caller
from services.common.rpc.protoconv import (
    dict_from_struct,
    duration_from_seconds,
    struct_from_dict,
    timestamp_from_datetime,
)
from services.tools.catalog import ToolCatalog, ToolView
from services.tools.http.destinations import DestinationPolicy
from services.tools.http.specs import HttpToolSpec, Repeatability, http_tool
from services.tools.mcp.servers import McpServerSpec, http_server, stdio_server
from services.tools.mcp.sources import McpServerView, McpSources
from services.tools.usage import ToolUsage

#: The full gRPC service name (health checks and reflection use it).
SERVICE_NAME = "agentplatform.tools.v1.ToolService"


def tool_to_proto(view: ToolView) -> tools_pb2.Tool:
    """The Tool message of a catalog entry."""
    return tools_pb2.Tool(
        id=view.id,
        display_name=view.display_name,
        description=view.description,
        default_description=view.default_description,
        icon=view.icon,
        enabled=view.enabled,
        parameters=struct_from_dict(view.parameters),
        schema=struct_from_dict(view.schema),
        usage=_usage_to_proto(view.usage),
        hints=tools_pb2.ToolHints(
            read_only=view.hints.read_only,
            destructive=view.hints.destructive,
            idempotent=view.hints.idempotent,
            open_world=view.hints.open_world,
        ),
        requires_approval=view.requires_approval,
        available=view.available,
        unavailable_reason=view.unavailable_reason,
        mcp_server=view.mcp_server,
        repeat_safe=view.hints.repeat_safe,
        repeat_safe_calls=(
            tools_pb2.RepeatSafeCalls(
                argument=view.repeat_safe_calls.argument, values=sorted(view.repeat_safe_calls.values)
            )
            if view.repeat_safe_calls is not None else None
        ),
        http=http_tool_to_proto(view.http) if view.http is not None else None,
    )


_METHODS = {
    tools_pb2.HTTP_METHOD_GET: "GET",
    tools_pb2.HTTP_METHOD_POST: "POST",
    tools_pb2.HTTP_METHOD_PUT: "PUT",
    tools_pb2.HTTP_METHOD_PATCH: "PATCH",
    tools_pb2.HTTP_METHOD_DELETE: "DELETE",
}
_METHOD_ENUMS = {name: value for value, name in _METHODS.items()}
_REPEATABILITIES: dict[tools_pb2.HttpRepeatability, Repeatability] = {
    tools_pb2.HTTP_REPEATABILITY_READ_ONLY: "read_only",
    tools_pb2.HTTP_REPEATABILITY_IDEMPOTENT: "idempotent",
    tools_pb2.HTTP_REPEATABILITY_NOT_IDEMPOTENT: "not_idempotent",
}
_REPEATABILITY_ENUMS = {name: value for value, name in _REPEATABILITIES.items()}


def http_tool_to_proto(spec: HttpToolSpec) -> tools_pb2.HttpToolSpec:
    """The HttpToolSpec message of an HTTP tool: its headers' names, never their values."""
    return tools_pb2.HttpToolSpec(
        name=spec.name,
        display_name=spec.display_name,
        description=spec.description,
        parameters=struct_from_dict(spec.parameters),
        url=spec.url,
        method=_METHOD_ENUMS[spec.method],
        header_names=spec.header_names,
        repeatability=(
            _REPEATABILITY_ENUMS[spec.repeatability] if spec.repeatability else tools_pb2.HTTP_REPEATABILITY_UNSPECIFIED
        ),
    )


def http_tool_from_proto(message: tools_pb2.HttpToolSpec, destinations: DestinationPolicy) -> HttpToolSpec:
    """The HTTP tool a CreateTool asks for, checked; InvalidArgument saying what is wrong."""
    if message.method not in _METHODS:
        raise InvalidArgument(f"http.method is required: one of {', '.join(_METHODS.values())}")
    parameters = dict_from_struct(message.parameters, "http.parameters") if message.HasField("parameters") else None
    repeatability = None
    if message.repeatability != tools_pb2.HTTP_REPEATABILITY_UNSPECIFIED:
        if message.repeatability not in _REPEATABILITIES:  # a number this version does not know
            names = ", ".join(tools_pb2.HttpRepeatability.Name(value) for value in _REPEATABILITIES)
            raise InvalidArgument(
                f"http.repeatability {message.repeatability} is not one of {names}, or unset (the method decides)"
            )
        repeatability = _REPEATABILITIES[message.repeatability]
    return http_tool(
        message.name,
        display_name=message.display_name,
        description=message.description,
        parameters=parameters,
        url=message.url,
        method=_METHODS[message.method],
        headers=dict(message.headers),
        repeatability=repeatability,
        destinations=destinations,
    )


_STATES = {
    "connecting": tools_pb2.MCP_SERVER_STATE_CONNECTING,
    "connected": tools_pb2.MCP_SERVER_STATE_CONNECTED,
    "unavailable": tools_pb2.MCP_SERVER_STATE_UNAVAILABLE,
}


def mcp_server_to_proto(view: McpServerView) -> tools_pb2.McpServer:
    """The McpServer message of a registered server: its secrets' names, never their values."""
    spec, status = view.spec, view.status
    message = tools_pb2.McpServer(
        name=spec.name,
        state=_STATES[status.state],
        unavailable_reason=status.reason if status.state == "unavailable" else "",
        tool_count=status.tool_count,
    )
    if spec.transport == "stdio":
        message.stdio.CopyFrom(
            tools_pb2.McpStdioTransport(command=spec.command, args=spec.args, env_names=spec.secret_names)
        )
    else:
        message.http.CopyFrom(tools_pb2.McpHttpTransport(url=spec.url, header_names=spec.secret_names))
    if status.last_connected is not None:
        message.last_connected_time.CopyFrom(timestamp_from_datetime(status.last_connected))
    if spec.created_at is not None:
        message.create_time.CopyFrom(timestamp_from_datetime(spec.created_at))
    return message


def mcp_server_from_proto(server: tools_pb2.McpServer) -> McpServerSpec:
    """The registration a CreateMcpServer asks for, checked; InvalidArgument saying what is wrong."""
    has_stdio, has_http = server.HasField("stdio"), server.HasField("http")
    if has_stdio == has_http:
        raise InvalidArgument(
            "set exactly one of mcp_server.stdio (a command to run) and mcp_server.http (a streamable HTTP URL)"
        )
    if has_stdio:
        return stdio_server(server.name, server.stdio.command, list(server.stdio.args), dict(server.stdio.env))
    return http_server(server.name, server.http.url, dict(server.http.headers))


def require_admin(action: str) -> None:
    """PermissionDenied unless the caller is an admin."""
    if not current_caller().is_admin:
        raise PermissionDenied(f"{action} needs the admin role")


def _usage_to_proto(usage: ToolUsage) -> tools_pb2.ToolUsage:
    message = tools_pb2.ToolUsage(calls=usage.calls, errors=usage.errors, timeouts=usage.timeouts)
    if usage.p50_seconds is not None:
        message.p50_duration.CopyFrom(duration_from_seconds(usage.p50_seconds))
    if usage.p95_seconds is not None:
        message.p95_duration.CopyFrom(duration_from_seconds(usage.p95_seconds))
    if usage.last_used is not None:
        message.last_used_time.CopyFrom(timestamp_from_datetime(usage.last_used))
    return message


def require(value: str, field: str) -> str:
    """The value of a required string field, or InvalidArgument naming it."""
    if not value:
        raise InvalidArgument(f"{field} is required; ListTools shows the available tool ids")
    return value


class ToolServicer(tools_pb2_grpc.ToolServiceServicer):
    """ToolService over the catalog."""

    def __init__(
        self, catalog: ToolCatalog, mcp: McpSources, http_destinations: DestinationPolicy | None = None
    ) -> None:
        self._catalog = catalog
        self._mcp = mcp
        self._http_destinations = http_destinations or DestinationPolicy()

    async def ListTools(
        self, request: tools_pb2.ListToolsRequest, context: grpc.aio.ServicerContext
    ) -> tools_pb2.ListToolsResponse:
        page = await self._catalog.list_tools(
            page_size=request.page_size, page_token=request.page_token, enabled_only=request.enabled_only
        )
        return tools_pb2.ListToolsResponse(
            tools=[tool_to_proto(view) for view in page.tools], next_page_token=page.next_page_token
        )

    async def GetTool(self, request: tools_pb2.GetToolRequest, context: grpc.aio.ServicerContext) -> tools_pb2.Tool:
        return tool_to_proto(await self._catalog.get_tool(require(request.tool_id, "tool_id")))

    async def UpdateTool(
        self, request: tools_pb2.UpdateToolRequest, context: grpc.aio.ServicerContext
    ) -> tools_pb2.Tool:
        # A tool's description is what the model reads: changing it is changing every user's prompt.
        require_admin("changing a tool's settings")
        view = await self._catalog.update_tool(
            require(request.tool.id, "tool.id"),
            list(request.update_mask.paths),
            enabled=request.tool.enabled,
            description=request.tool.description,
            requires_approval=request.tool.requires_approval,
        )
        return tool_to_proto(view)

    async def CreateTool(
        self, request: tools_pb2.CreateToolRequest, context: grpc.aio.ServicerContext
    ) -> tools_pb2.Tool:
        # Its description reaches every user's prompt, its calls carry the secrets it is given.
        require_admin("creating a tool")
        if not request.HasField("http"):
            raise InvalidArgument("http is required: the HTTP tool to create")
        # Checking the schema is CPU work (up to seconds for a large one): off the event loop.
        spec = await asyncio.to_thread(http_tool_from_proto, request.http, self._http_destinations)
        return tool_to_proto(await self._catalog.create_http_tool(spec))

    async def DeleteTool(
        self, request: tools_pb2.DeleteToolRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        require_admin("deleting a tool")
        await self._catalog.delete_tool(require(request.tool_id, "tool_id"))
        return empty_pb2.Empty()

    async def CreateMcpServer(
        self, request: tools_pb2.CreateMcpServerRequest, context: grpc.aio.ServicerContext
    ) -> tools_pb2.McpServer:
        # A stdio server is a program this service runs, and its tools' descriptions reach every user's prompt.
        require_admin("registering an MCP server")
        return mcp_server_to_proto(await self._mcp.create(mcp_server_from_proto(request.mcp_server)))

    async def GetMcpServer(
        self, request: tools_pb2.GetMcpServerRequest, context: grpc.aio.ServicerContext
    ) -> tools_pb2.McpServer:
        require_admin("reading an MCP server's registration")
        return mcp_server_to_proto(await self._mcp.get(_require_name(request.name)))

    async def ListMcpServers(
        self, request: tools_pb2.ListMcpServersRequest, context: grpc.aio.ServicerContext
    ) -> tools_pb2.ListMcpServersResponse:
        require_admin("listing the MCP servers")
        page = await self._mcp.list_servers(page_size=request.page_size, page_token=request.page_token)
        return tools_pb2.ListMcpServersResponse(
            mcp_servers=[mcp_server_to_proto(view) for view in page.servers], next_page_token=page.next_page_token
        )

    async def DeleteMcpServer(
        self, request: tools_pb2.DeleteMcpServerRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        require_admin("unregistering an MCP server")
        await self._mcp.delete(_require_name(request.name))
        return empty_pb2.Empty()


def _require_name(name: str) -> str:
    if not name:
        raise InvalidArgument("name is required; ListMcpServers shows the registered MCP servers")
    return name
