"""The tool catalog: what ListTools, GetTool and UpdateTool show — each discovered tool with its stored settings —
and the creation and deletion of HTTP tools (CreateTool, DeleteTool).

The schema shown is exactly what the model is sent, with the description override applied. A tool that cannot run
now (its MCP server is away, web_search without a backend) is shown with the reason, and left out of what the model
is offered (`enabled_only`).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.pages import PageTokens, checked_page_size
from services.tools.base import BaseTool, RepeatSafeCalls, ToolContext, ToolHints
from services.tools.http.calls import HttpTool
from services.tools.http.naming import name_of
from services.tools.http.sources import HttpToolSource
from services.tools.http.specs import HttpToolSpec
from services.tools.registry import ToolRegistry
from services.tools.tool_settings import KEEP, Keep, ToolSetting, ToolSettingsStore
from services.tools.usage import ToolUsage, UsageLedger

#: The fields UpdateTool may change, as update_mask paths.
UPDATABLE_PATHS = ("enabled", "description", "requires_approval")
#: The listing's name in page tokens (and in the refusal of one made for another).
LIST_TOOLS = "ListTools"
#: Longest description override accepted (the model reads it on every call).
MAX_DESCRIPTION_LENGTH = 1024


@dataclass(frozen=True)
class ToolView:
    """One tool as clients see it."""

    id: str
    display_name: str
    description: str
    default_description: str
    icon: str
    enabled: bool
    parameters: dict[str, Any]
    schema: dict[str, Any]
    usage: ToolUsage = field(default_factory=ToolUsage)
    hints: ToolHints = field(default_factory=ToolHints)
    requires_approval: bool = False
    available: bool = True
    #: Why the tool cannot run now; empty when it can.
    unavailable_reason: str = ""
    #: The MCP server the tool comes from; empty for built-in and plugin tools.
    mcp_server: str = ""
    #: For a tool not repeat-safe as a whole (hints.repeat_safe), which of its calls are.
    repeat_safe_calls: RepeatSafeCalls | None = None
    #: An HTTP tool's definition (its header values are secrets: show its header_names only); None for others.
    http: HttpToolSpec | None = None


@dataclass(frozen=True)
class ToolPage:
    """One page of ListTools; `next_page_token` is empty on the last page."""

    tools: list[ToolView]
    next_page_token: str


def _view(tool: BaseTool, setting: ToolSetting, usage: ToolUsage, context: ToolContext | None) -> ToolView:
    schema = tool.get_schema(setting.description_override)
    reason = tool.unavailable_reason(context)
    return ToolView(
        id=tool.name,
        display_name=tool.display_name,
        description=schema["function"]["description"],
        default_description=tool.description,
        icon=tool.icon,
        enabled=setting.enabled,
        parameters=schema["function"]["parameters"],
        schema=schema,
        usage=usage,
        hints=tool.hints,
        requires_approval=(
            setting.requires_approval if setting.requires_approval is not None else tool.requires_approval
        ),
        available=reason is None,
        unavailable_reason=reason or "",
        mcp_server=tool.mcp_server,
        http=tool.spec if isinstance(tool, HttpTool) else None,
        repeat_safe_calls=None if tool.hints.repeat_safe else tool.repeat_safe_calls,
    )


class ToolCatalog:
    """Lists, shows and updates tools: the registry's code-defined tools joined with their stored settings."""

    def __init__(
        self,
        registry: ToolRegistry,
        settings: ToolSettingsStore,
        usage: UsageLedger | None = None,
        context: ToolContext | None = None,
        http_tools: HttpToolSource | None = None,
        page_tokens: PageTokens | None = None,
    ) -> None:
        self._registry = registry
        self._http_tools = http_tools
        #: Signs and reads ListTools' page tokens; the settings' key in a service (app.py).
        self._page_tokens = page_tokens or PageTokens.for_this_process()
        self._settings = settings
        self._usage = usage or UsageLedger()
        #: What the tools run with (web_search's availability depends on its backend setting).
        self._context = context

    async def list_tools(self, *, page_size: int = 0, page_token: str = "", enabled_only: bool = False) -> ToolPage:
        """Tools ordered by id, `page_size` at a time (0: the default page size, as every list method), after the
        position `page_token` names."""
        limit = checked_page_size(page_size)
        request = {"enabled_only": enabled_only}
        after_id = self._page_tokens.read(page_token, LIST_TOOLS, request).text("after_id") if page_token else None
        stored = await self._settings.get_all()
        views = [
            _view(tool, stored.get(tool.name, ToolSetting(tool.name)), self._usage.usage(tool.name), self._context)
            for tool in self._registry.tools()
            # Keyset paging on the id: a tool added or removed between pages shifts nothing.
            if after_id is None or tool.name > after_id
        ]
        if enabled_only:
            # What the model is offered: only tools that are switched on and can run now.
            views = [view for view in views if view.enabled and view.available]
        if len(views) <= limit:
            return ToolPage(views, "")
        page = views[:limit]
        return ToolPage(page, self._page_tokens.issue(LIST_TOOLS, request, {"after_id": page[-1].id}))

    async def get_tool(self, tool_id: str) -> ToolView:
        """One tool, or NotFound."""
        tool = self._registry.get(tool_id)
        return _view(tool, await self._settings.get(tool_id), self._usage.usage(tool.name), self._context)

    async def update_tool(
        self,
        tool_id: str,
        paths: Sequence[str],
        *,
        enabled: bool = True,
        description: str = "",
        requires_approval: bool = False,
    ) -> ToolView:
        """Change the settings named by `paths` ("enabled", "description", "requires_approval"); an empty
        description removes the override."""
        if not paths:
            raise InvalidArgument(
                "update_mask is required; set it to 'enabled', 'description' and/or 'requires_approval'"
            )
        unknown = [path for path in paths if path not in UPDATABLE_PATHS]
        if unknown:
            allowed = ", ".join(f"'{path}'" for path in UPDATABLE_PATHS)
            raise InvalidArgument(
                f"update_mask path(s) {', '.join(repr(p) for p in unknown)} cannot be updated; allowed: {allowed}"
            )
        new_enabled: bool | Keep = enabled if "enabled" in paths else KEEP
        new_override: str | Keep | None = KEEP
        if "description" in paths:
            new_override = _checked_override(description)
        new_approval: bool | Keep = requires_approval if "requires_approval" in paths else KEEP
        tool = self._registry.get(tool_id)
        setting = await self._settings.update(
            tool_id, enabled=new_enabled, description_override=new_override, requires_approval=new_approval
        )
        return _view(tool, setting, self._usage.usage(tool.name), self._context)


    async def create_http_tool(self, spec: HttpToolSpec) -> ToolView:
        """Create an HTTP tool (its spec checked by services.tools.http.specs.http_tool); AlreadyExists when its
        name is taken. It starts enabled, with no settings stored (a deleted namesake's were deleted with it)."""
        if self._http_tools is None:
            raise FailedPrecondition("this tools service has no HTTP tools")
        tool = await self._http_tools.create(spec)
        return _view(tool, await self._settings.get(tool.name), self._usage.usage(tool.name), self._context)

    async def delete_tool(self, tool_id: str) -> None:
        """Delete an HTTP tool and its settings; NotFound for an unknown id, FailedPrecondition for a tool that is
        not an HTTP tool (a built-in or plugin tool is code; an MCP tool belongs to its server)."""
        name = name_of(tool_id)
        if name is not None and self._http_tools is not None:
            try:
                await self._http_tools.delete(name)
            finally:
                # Also when another replica deleted the tool first: its settings must not outlive it.
                await self._settings.delete(tool_id)
            return
        tool = self._registry.get(tool_id)  # NotFound for an unknown id
        if tool.mcp_server:
            raise FailedPrecondition(
                f"tool '{tool_id}' belongs to the MCP server '{tool.mcp_server}'; its tools go with the server "
                "(DeleteMcpServer), or disable this one with UpdateTool"
            )
        raise FailedPrecondition(
            f"tool '{tool_id}' is built in (a plugin file of the tools service) and cannot be deleted; disable it "
            "with UpdateTool instead"
        )


def _checked_override(description: str) -> str | None:
    """The override to store: None for an empty (or blank) description, which restores the tool's own."""
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidArgument(
            f"description is {len(description)} characters; the limit is {MAX_DESCRIPTION_LENGTH}"
        )
    return description if description.strip() else None
