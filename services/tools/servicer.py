"""The public gRPC face of the tools service (agentplatform.tools.v1.ToolService): the registry, for the Manage
Tools page. Converts protos to domain calls and back; changing a tool's settings is for admins.

Domain errors raised below propagate to services.common.interceptor, which maps them to status codes.
"""

import grpc

from agentplatform.tools.v1 import tools_pb2, tools_pb2_grpc
from services.common.errors import InvalidArgument, PermissionDenied
from services.common.identity import current_caller
from services.common.protoconv import duration_from_seconds, struct_from_dict, timestamp_from_datetime
from services.tools.catalog import ToolCatalog, ToolView
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
    )


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

    def __init__(self, catalog: ToolCatalog) -> None:
        self._catalog = catalog

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
        if not current_caller().is_admin:
            # A tool's description is what the model reads: changing it is changing every user's prompt.
            raise PermissionDenied("changing a tool's settings needs the admin role")
        view = await self._catalog.update_tool(
            require(request.tool.id, "tool.id"),
            list(request.update_mask.paths),
            enabled=request.tool.enabled,
            description=request.tool.description,
            requires_approval=request.tool.requires_approval,
        )
        return tool_to_proto(view)
