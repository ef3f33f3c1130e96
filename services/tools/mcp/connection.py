"""One registered MCP server's session, kept up by a background task, and its tools as registry tools.

A connection's task connects (starting the process of a stdio server), initializes the session and lists the
server's tools; then it pings the server every `ping_seconds` and re-lists the tools when the server sends
`notifications/tools/list_changed`. When the session ends (the process died, the HTTP server stopped answering, a
ping failed or timed out), the server's tools become unavailable with the reason, and the task connects again
after a pause that starts at RETRY_FIRST_SECONDS and doubles up to `retry_max_seconds`; the pause starts over once
a connection has worked. When it answers again, its tools are listed afresh and are available again.

The session (the SDK's anyio task groups) lives entirely inside that task; a tool call from a gRPC handler only
sends a request through it and waits for the answer. A call whose caller gives up (the executor's time limit)
is cancelled, and the SDK tells the server so (`notifications/cancelled`). Closing the connection cancels the
task, which closes the session: the SDK closes a stdio server's stdin, then terminates its process group.
"""

import asyncio
import copy
import json
import logging
import math
import sys
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TextIO, cast

import httpcore2
import httpx
import httpx2
import mcp_types as types
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import MCP_DEFAULT_SSE_READ_TIMEOUT, MCP_DEFAULT_TIMEOUT
from mcp.shared.exceptions import MCPError

from services.common.errors import DomainError, Internal, InvalidArgument, Unavailable
from services.common.json_values import MAX_JSON_DEPTH, JsonTooDeep, check_depth
from services.tools.base import RemoteTool, ToolContext, ToolHints, ToolOutput
from services.tools.http.destinations import DestinationPolicy, url_host
from services.tools.mcp.naming import tool_id
from services.tools.mcp.servers import McpServerSpec
from services.tools.schemas.checks import check_schema

log = logging.getLogger(__name__)

#: Where a call's idempotency key goes in the tools/call request's _meta (a server that honours it acts once per key).
IDEMPOTENCY_META_KEY = "agentplatform/idempotency_key"
#: The first pause before connecting again, and the default longest (it doubles in between).
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
#: The most tools one server may offer (the rest are ignored, and logged).
MAX_TOOLS_PER_SERVER = 512
#: The most of an error's text kept in a message (a server's error can be long).
MAX_ERROR_CHARS = 2000
#: How the tools service introduces itself to servers.
CLIENT_INFO = types.Implementation(name="agentplatform-tools", version="0.1.0")

State = Literal["connecting", "connected", "unavailable"]


@dataclass(frozen=True)
class ConnectionStatus:
    """A connection as this replica sees it."""

    state: State
    #: Why the server is unavailable; empty otherwise.
    reason: str
    tool_count: int
    last_connected: datetime | None


class McpTool(RemoteTool):
    """A tool of an MCP server, offered like any other: its id is `mcp__<server>__<tool>` (services.tools.mcp.naming),
    its schema the server's input schema, its hints the server's annotations."""

    icon = "IconPlug"

    def __init__(self, connection: "McpConnection", remote: types.Tool) -> None:
        self.name = tool_id(connection.name, remote.name)
        self.remote_name = remote.name
        self.mcp_server = connection.name
        annotations = remote.annotations
        title = remote.title or (annotations.title if annotations else None)
        self.display_name = (title or remote.name).strip() or remote.name
        description = (remote.description or "").strip()
        self.description = description or f"The tool '{remote.name}' of the MCP server '{connection.name}'."
        self.hints = _hints(annotations)
        self._schema = _object_schema(remote.input_schema)
        self._connection = connection

    def get_parameters(self) -> dict[str, Any]:
        """The server's input schema for the tool, as an object schema (a copy)."""
        return copy.deepcopy(self._schema)

    def unavailable_reason(self, context: ToolContext | None) -> str | None:
        return self._connection.unavailable_reason()

    async def call(self, arguments: dict[str, Any], idempotency_key: str = "") -> ToolOutput:
        return await self._connection.call_tool(self, arguments, idempotency_key)


def _hints(annotations: types.ToolAnnotations | None) -> ToolHints:
    """MCP's annotations as ToolHints; an unset hint takes MCP's default (ToolHints has the same defaults)."""
    defaults = ToolHints()
    if annotations is None:
        return defaults

    def pick(value: bool | None, default: bool) -> bool:
        return default if value is None else bool(value)

    return ToolHints(
        read_only=pick(annotations.read_only_hint, defaults.read_only),
        destructive=pick(annotations.destructive_hint, defaults.destructive),
        idempotent=pick(annotations.idempotent_hint, defaults.idempotent),
        open_world=pick(annotations.open_world_hint, defaults.open_world),
    )


def _object_schema(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """The server's input schema, checked (services.tools.schemas); a SchemaProblem (a ValueError) says why not."""
    return check_schema(schema or {"type": "object", "properties": {}})


def _integral_numbers(value: Any) -> Any:
    """Arguments with whole floats as ints: protobuf's Struct makes every number a float, and a server whose
    schema says "integer" may refuse 2.0."""
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return int(value)
    if isinstance(value, dict):
        return {key: _integral_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral_numbers(item) for item in value]
    return value


def _cut(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _block_text(block: Any) -> str:
    """What the model reads of one content block: text as it is, anything else as a short marker."""
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ImageContent | types.AudioContent):
        kind = "image" if isinstance(block, types.ImageContent) else "audio"
        return f"[{kind}: {block.mime_type}, about {len(block.data) * 3 // 4:,} bytes, not shown]"
    if isinstance(block, types.ResourceLink):
        return f"[resource link: {block.name} <{block.uri}>]"
    if isinstance(block, types.EmbeddedResource):
        resource = block.resource
        if isinstance(resource, types.TextResourceContents):
            return resource.text
        return f"[resource: <{resource.uri}> ({resource.mime_type or 'binary'}), not shown]"
    return f"[{getattr(block, 'type', 'unknown')} content, not shown]"


def output_of(tool: McpTool, result: types.CallToolResult) -> ToolOutput:
    """An MCP tool result as a ToolOutput: the text blocks joined (other blocks as markers) for the model, the
    structured content (else the text) as the result. A result flagged isError is the tool's failure: Internal
    with the server's text, which the engine hands to the model."""
    text = "\n".join(_block_text(block) for block in result.content)
    if result.is_error:
        raise Internal(f"tool '{tool.name}' failed on the MCP server '{tool.mcp_server}': {_cut(text) or 'no detail'}")
    structured = result.structured_content
    if structured is not None:
        try:
            check_depth(structured)
        except JsonTooDeep:
            # Nothing downstream could carry it (see services.common.json_values): the tool's failure.
            raise Internal(
                f"tool '{tool.name}' failed on the MCP server '{tool.mcp_server}': the tool's response is nested "
                f"deeper than {MAX_JSON_DEPTH} levels"
            ) from None
        return ToolOutput(structured, text or json.dumps(structured, ensure_ascii=False))
    return ToolOutput(text, text)


def describe(exc: BaseException) -> str:
    """A one-line reason for a failed connection (the leaves of an exception group, without tracebacks)."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(dict.fromkeys(describe(leaf) for leaf in exc.exceptions))
    if isinstance(exc, TimeoutError):
        return "it did not answer in time"
    if isinstance(exc, MCPError) and exc.code == types.CONNECTION_CLOSED:
        return "the connection closed (a stdio server's process exited)"
    if isinstance(exc, DomainError):  # the destination rules' refusal: its message says it all
        return _cut(str(exc), 500)
    message = str(exc).strip()
    return _cut(f"{type(exc).__name__}: {message}" if message else type(exc).__name__, 500)


class _CheckedBackend(httpcore2.AsyncNetworkBackend):
    """The MCP client's network: every TCP connection resolves its host through the destination rules and connects
    to an address they checked (a name that resolves elsewhere later, DNS rebinding, gains nothing); TLS still
    names the host (httpcore gives the origin's name as the server name)."""

    def __init__(self, destinations: DestinationPolicy) -> None:
        self._destinations = destinations
        self._network = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore2.AsyncNetworkStream:
        addresses = await self._destinations.resolve(host.strip("[]").lower(), port)
        for index, address in enumerate(addresses):
            try:
                return await self._network.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except httpcore2.ConnectError:
                if index == len(addresses) - 1:
                    raise
        raise httpcore2.ConnectError(f"{host} has no address")  # resolve never answers an empty list

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        raise httpcore2.ConnectError("MCP servers are reached over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._network.sleep(seconds)


def _checked_client(headers: Mapping[str, str], destinations: DestinationPolicy) -> httpx2.AsyncClient:
    """The SDK's client (its timeouts), without proxies from the environment (a proxy would connect by name), on
    the checked network."""
    transport = httpx2.AsyncHTTPTransport(trust_env=False)
    # httpx offers no public way to give its pool a network backend; the pool keeps it in this one attribute.
    transport._pool._network_backend = _CheckedBackend(destinations)
    timeout = httpx2.Timeout(MCP_DEFAULT_TIMEOUT, read=MCP_DEFAULT_SSE_READ_TIMEOUT)
    return httpx2.AsyncClient(headers=dict(headers), timeout=timeout, transport=transport, trust_env=False)


def _server_errlog() -> TextIO:
    """Where a stdio server's stderr goes: ours, when it is a real file (so its messages reach the service's log)."""
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return open("/dev/null", "w")  # lives as long as the process
    return sys.stderr


class McpConnection:
    """The session with one MCP server, kept up by a background task, and the tools it offers."""

    def __init__(
        self,
        spec: McpServerSpec,
        *,
        destinations: DestinationPolicy,
        ping_seconds: float,
        connect_seconds: float,
        retry_max_seconds: float = RETRY_MAX_SECONDS,
    ) -> None:
        self.spec = spec
        self._destinations = destinations
        self._ping_seconds = ping_seconds
        self._connect_seconds = connect_seconds
        self._retry_max_seconds = retry_max_seconds
        self._state: State = "connecting"
        self._reason = ""
        self._last_connected: datetime | None = None
        self._tools: dict[str, McpTool] = {}
        self._session: ClientSession | None = None
        self._wake = asyncio.Event()
        self._relist = False
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def start(self) -> None:
        """Start the background task that connects and stays connected."""
        self._task = asyncio.create_task(self._supervise(), name=f"mcp server {self.name}")

    async def close(self) -> None:
        """Close the session (stopping a stdio server's process) and stop reconnecting."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        self._set_unavailable("the server was unregistered")

    def status(self) -> ConnectionStatus:
        return ConnectionStatus(self._state, self._reason, len(self._tools), self._last_connected)

    def tools(self) -> list[McpTool]:
        """The tools of the last listing (kept, unavailable, while the server is away)."""
        return list(self._tools.values())

    def unavailable_reason(self) -> str | None:
        """None while connected; else why the server's tools cannot run."""
        if self._state == "connected":
            return None
        if self._state == "connecting":
            return f"the MCP server '{self.name}' is connecting"
        return f"the MCP server '{self.name}' is unavailable: {self._reason}"

    async def call_tool(self, tool: McpTool, arguments: dict[str, Any], idempotency_key: str = "") -> ToolOutput:
        """Call one of the server's tools, with `idempotency_key` (when not empty) in the request's _meta as
        IDEMPOTENCY_META_KEY; Unavailable when it is not connected or goes away during the call."""
        session = self._session
        reason = self.unavailable_reason()
        if session is None or reason is not None:
            raise Unavailable(reason or f"the MCP server '{self.name}' is not connected")
        try:
            # MCP has no idempotency field of its own: _meta is the request's open map for what client and
            # server agree on, under a prefix of ours.
            meta = cast(types.RequestParamsMeta, {IDEMPOTENCY_META_KEY: idempotency_key}) if idempotency_key else None
            result = await session.call_tool(tool.remote_name, _integral_numbers(arguments), meta=meta)
        except MCPError as exc:
            if exc.code == types.CONNECTION_CLOSED:
                self._wake.set()  # the supervisor finds out at once, not at its next ping
                raise Unavailable(
                    f"the MCP server '{self.name}' went away during the call of '{tool.name}'; try again later"
                ) from None
            if exc.code == types.INVALID_PARAMS:
                message = f"the MCP server '{self.name}' refused the arguments: {_cut(exc.message)}"
                raise InvalidArgument(message) from None
            raise Internal(f"the MCP server '{self.name}' failed the call of '{tool.name}': {_cut(str(exc))}") from None
        except TimeoutError:  # the transport's own bound (the executor's time limit arrives as a cancellation)
            raise Unavailable(f"the MCP server '{self.name}' did not take the call of '{tool.name}'") from None
        except (RuntimeError, ValueError) as exc:  # a result the SDK cannot use (input required, not valid)
            raise Internal(f"the MCP server '{self.name}' answered '{tool.name}' unusably: {describe(exc)}") from None
        if not isinstance(result, types.CallToolResult):
            raise Internal(f"the MCP server '{self.name}' answered '{tool.name}' with a {type(result).__name__}")
        return output_of(tool, result)

    # --- the background task ----------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        pause = RETRY_FIRST_SECONDS
        while True:
            try:
                await self._serve_one_session()
                reason = "the session ended"
            except BaseException as exc:  # an exception group of the transport's tasks, or one error
                # Only our own cancellation (close) ends the task; a cancellation the SDK's task groups let out
                # when the transport failed is that failure.
                task = asyncio.current_task()
                if isinstance(exc, KeyboardInterrupt | SystemExit) or (task is not None and task.cancelling()):
                    raise
                reason = describe(exc)
            finally:
                self._session = None
            if self._state == "connected":
                pause = RETRY_FIRST_SECONDS  # it worked: retry soon
            log.warning("MCP server '%s' is unavailable (%s); connecting again in %.1f s", self.name, reason, pause)
            self._set_unavailable(reason)
            await asyncio.sleep(pause)
            pause = min(pause * 2, self._retry_max_seconds)

    async def _serve_one_session(self) -> None:
        """Connect, list the tools, then ping and re-list until the session fails (raises) or is cancelled."""
        async with AsyncExitStack() as stack:
            if self.spec.transport == "stdio":
                parameters = StdioServerParameters(
                    command=self.spec.command, args=list(self.spec.args), env=dict(self.spec.env)
                )
                read, write = await stack.enter_async_context(stdio_client(parameters, errlog=_server_errlog()))
            else:
                # The destination rules again, on what the name resolves to now (the settings or the name's
                # addresses may have changed since the registration): first for a clear reason, then at every TCP
                # connection the client opens (_CheckedBackend), so that what was checked is what is connected to.
                url = httpx.URL(self.spec.url)
                await self._destinations.resolve(url_host(url), url.port or (443 if url.scheme == "https" else 80))
                http = await stack.enter_async_context(_checked_client(self.spec.headers, self._destinations))
                read, write = await stack.enter_async_context(streamable_http_client(self.spec.url, http_client=http))
            session = await stack.enter_async_context(
                ClientSession(read, write, message_handler=self._on_message, client_info=CLIENT_INFO)
            )
            async with asyncio.timeout(self._connect_seconds):
                await session.initialize()
                await self._list_tools(session)
            self._session = session
            self._state, self._reason = "connected", ""
            self._last_connected = datetime.now(UTC)
            log.info("MCP server '%s' connected: %d tools", self.name, len(self._tools))
            while True:
                try:
                    async with asyncio.timeout(self._ping_seconds):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                self._wake.clear()
                async with asyncio.timeout(self._connect_seconds):
                    if self._relist:
                        self._relist = False
                        await self._list_tools(session)
                    await session.send_ping()

    async def _list_tools(self, session: ClientSession) -> None:
        remote: list[types.Tool] = []
        cursor: str | None = None
        while True:
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            remote.extend(page.tools)
            cursor = page.next_cursor
            if not cursor or len(remote) >= MAX_TOOLS_PER_SERVER:
                break
        if len(remote) > MAX_TOOLS_PER_SERVER:
            log.warning("MCP server '%s' offers more than %d tools; the rest are ignored", self.name, len(remote))
        # Checking their schemas is CPU work (up to seconds for large ones): off the event loop.
        self._tools = await asyncio.to_thread(self._tools_of, remote)

    def _tools_of(self, remote: list[types.Tool]) -> dict[str, McpTool]:
        tools: dict[str, McpTool] = {}
        for entry in remote[:MAX_TOOLS_PER_SERVER]:
            try:
                tool = McpTool(self, entry)
            except ValueError as exc:
                log.error("tool '%s' of the MCP server '%s' is skipped: %s", entry.name, self.name, exc)
                continue
            if tool.name in tools:
                log.error(
                    "tool '%s' of the MCP server '%s' is skipped: its id %s is taken by '%s'",
                    entry.name, self.name, tool.name, tools[tool.name].remote_name,
                )
                continue
            tools[tool.name] = tool
        return tools

    async def _on_message(self, message: Any) -> None:
        """The session's notifications: a changed tool list is listed again (by the task, not here)."""
        if isinstance(message, types.ToolListChangedNotification):
            self._relist = True
            self._wake.set()

    def _set_unavailable(self, reason: str) -> None:
        self._state, self._reason = "unavailable", reason
