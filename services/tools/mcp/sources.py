"""The registered MCP servers as sources of tools: a connection per server, started and stopped to match the
`mcp_servers` table, and the lookups the tool registry makes.

The table is the meeting point of replicas: a server registered or deleted through this replica is connected or
closed here at once and announced by its store (services/tools/replicas.py); the others re-read the table when told
(`changed`), on every Get/ListMcpServers, and every `sync_seconds` in case a message was lost. Each replica holds
its own sessions, so a server's state is as this replica sees it.
"""

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass

from services.common.errors import InvalidArgument, NotFound, Unavailable
from services.common.pages import PageTokens, checked_page_size
from services.tools.base import BaseTool
from services.tools.http.destinations import DestinationPolicy
from services.tools.mcp.connection import RETRY_MAX_SECONDS, ConnectionStatus, McpConnection, McpTool
from services.tools.mcp.naming import server_of
from services.tools.mcp.servers import McpServerSpec, McpServerStore
from services.tools.replicas import Follower

log = logging.getLogger(__name__)

#: The listing's name in page tokens (and in the refusal of one made for another).
LIST_MCP_SERVERS = "ListMcpServers"


@dataclass(frozen=True)
class McpServerView:
    """A registered server with its connection, as the API shows it (its secrets' names only)."""

    spec: McpServerSpec
    status: ConnectionStatus


@dataclass(frozen=True)
class McpServerPage:
    """One page of ListMcpServers; `next_page_token` is empty on the last page."""

    servers: list[McpServerView]
    next_page_token: str


class McpSources:
    """Keeps a connection to every registered MCP server and answers the registry's lookups of their tools."""

    def __init__(
        self,
        store: McpServerStore,
        *,
        destinations: DestinationPolicy | None = None,
        ping_seconds: float = 10.0,
        connect_seconds: float = 30.0,
        sync_seconds: float = 60.0,
        retry_max_seconds: float = RETRY_MAX_SECONDS,
        page_tokens: PageTokens | None = None,
    ) -> None:
        self._store = store
        #: Where HTTP servers may be (TOOLS_MCP_ALLOWED_HOSTS); any public host when not given.
        self.destinations = destinations or DestinationPolicy(any_host=True)
        #: Signs and reads ListMcpServers' page tokens; the settings' key in a service (app.py).
        self._page_tokens = page_tokens or PageTokens.for_this_process()
        self._ping_seconds = ping_seconds
        self._connect_seconds = connect_seconds
        self._retry_max_seconds = retry_max_seconds
        self._follower = Follower("registered MCP servers", self.sync, sync_seconds)
        self._connections: dict[str, McpConnection] = {}
        self._lock = asyncio.Lock()
        #: Counts the registrations and deletions made here, each once it is committed (under the lock), so that a
        #: read of the table that overlapped one (and may predate it) is not applied over it.
        self._changes = 0

    async def start(self) -> None:
        """Connect to the registered servers (in the background) and follow the table's changes."""
        await self.sync()
        self._follower.start()

    def changed(self) -> None:
        """Another replica changed the table (or may have): re-read it soon."""
        self._follower.poke()

    async def close(self) -> None:
        """Close every session (stopping stdio servers' processes)."""
        await self._follower.close()
        async with self._lock:
            connections, self._connections = list(self._connections.values()), {}
        await asyncio.gather(*(connection.close() for connection in connections), return_exceptions=True)

    def states(self) -> Counter[str]:
        """How many registered servers are in each connection state (connecting, connected, unavailable)."""
        return Counter(connection.status().state for connection in self._connections.values())

    # --- the registry's lookups ---------------------------------------------------------------------------------

    def tools(self) -> list[BaseTool]:
        """Every server's tools of its last listing, available or not."""
        return [tool for connection in self._connections.values() for tool in connection.tools()]

    def find(self, tool_id: str) -> McpTool | None:
        """The MCP tool with this id; None when no registered server has it. Unavailable when its server is
        registered but has not listed its tools since this replica started (so nobody knows the tool yet)."""
        server = server_of(tool_id)
        connection = self._connections.get(server) if server else None
        if connection is None:
            return None
        for tool in connection.tools():
            if tool.name == tool_id:
                return tool
        reason = connection.unavailable_reason()
        if reason is not None and not connection.tools():
            raise Unavailable(f"tool '{tool_id}' cannot be looked up: {reason}")
        return None

    # --- registration ------------------------------------------------------------------------------------------

    async def create(self, spec: McpServerSpec) -> McpServerView:
        """Register a server and start connecting to it; AlreadyExists when the name is taken, InvalidArgument when
        an HTTP server's host is not one the destination rules allow."""
        if spec.transport == "http":
            problem = self.destinations.url_problem(spec.url)
            if problem is not None:
                raise InvalidArgument(f"mcp_server.http.url: {problem}")
        with self._follower.catching_up_if_cancelled():
            stored = await self._store.create(spec)
            async with self._lock:
                self._changes += 1
                # The table's follower may have connected it already, in between.
                connection = self._connections.get(stored.name) or self._connect(stored)
        return McpServerView(stored, connection.status())

    async def delete(self, name: str) -> None:
        """Unregister a server and close its session; NotFound when there is none."""
        with self._follower.catching_up_if_cancelled():
            await self._store.delete(name)
            async with self._lock:
                self._changes += 1
                connection = self._connections.pop(name, None)
        if connection is not None:
            await connection.close()

    async def get(self, name: str) -> McpServerView:
        """One registered server; NotFound when there is none."""
        for view in await self._views():
            if view.spec.name == name:
                return view
        raise NotFound(f"no MCP server named '{name}'; ListMcpServers shows the registered ones")

    async def list_servers(self, *, page_size: int = 0, page_token: str = "") -> McpServerPage:
        """Servers ordered by name, `page_size` at a time (0: the default page size, as every list method), after
        the one `page_token` names."""
        limit = checked_page_size(page_size)
        after = self._page_tokens.read(page_token, LIST_MCP_SERVERS, {}).text("after_name") if page_token else None
        views = [view for view in await self._views() if after is None or view.spec.name > after]
        if len(views) <= limit:
            return McpServerPage(views, "")
        page = views[:limit]
        return McpServerPage(page, self._page_tokens.issue(LIST_MCP_SERVERS, {}, {"after_name": page[-1].spec.name}))

    async def _views(self) -> list[McpServerView]:
        specs = await self.sync()
        return [McpServerView(spec, self._connections[spec.name].status()) for spec in specs]

    async def sync(self) -> list[McpServerSpec]:
        """Start connections to registered servers this replica does not know yet, close those of servers no
        longer registered (or registered again, differently) and return the registrations."""
        while True:
            changes = self._changes
            specs = await self._store.all()
            async with self._lock:
                if changes != self._changes:
                    continue  # a change committed here meanwhile: the rows read may predate it, so read again
                stale = self._apply(specs)
                break
        await asyncio.gather(*(connection.close() for connection in stale), return_exceptions=True)
        return specs

    def _apply(self, specs: list[McpServerSpec]) -> list[McpConnection]:
        """Connect the servers of `specs` not connected yet and take out the connections of servers no longer (or
        otherwise) registered, which the caller closes. Under the lock."""
        wanted = {spec.name: spec for spec in specs}
        stale = [
            self._connections.pop(name)
            for name, connection in list(self._connections.items())
            if wanted.get(name) != connection.spec
        ]
        for spec in specs:
            if spec.name not in self._connections:
                self._connect(spec)
        return stale

    def _connect(self, spec: McpServerSpec) -> McpConnection:
        connection = McpConnection(
            spec,
            destinations=self.destinations,
            ping_seconds=self._ping_seconds,
            connect_seconds=self._connect_seconds,
            retry_max_seconds=self._retry_max_seconds,
        )
        self._connections[spec.name] = connection
        connection.start()
        return connection
