"""The HTTP tools as a source of tools: the `http_tools` table held in memory for the registry's lookups.

The table is the meeting point of replicas, as for MCP servers: a tool created or deleted through this replica is
offered or withdrawn here at once and announced by its store (services/tools/replicas.py); the others re-read the
table when told (`changed`), and every `sync_seconds` in case a message was lost.
"""

from services.common.errors import NotFound
from services.tools.base import BaseTool
from services.tools.http.calls import HttpTool
from services.tools.http.destinations import DestinationPolicy
from services.tools.http.naming import name_of
from services.tools.http.specs import HttpToolSpec, HttpToolStore
from services.tools.replicas import Follower


class HttpToolSource:
    """Keeps the HTTP tools of the table and answers the registry's lookups of them."""

    def __init__(
        self,
        store: HttpToolStore,
        destinations: DestinationPolicy,
        *,
        timeout_seconds: float,
        max_result_bytes: int,
        sync_seconds: float = 60.0,
    ) -> None:
        self._store = store
        self.destinations = destinations
        self._timeout_seconds = timeout_seconds
        self._max_result_bytes = max_result_bytes
        self._follower = Follower("HTTP tools", self.sync, sync_seconds)
        self._tools: dict[str, HttpTool] = {}
        #: Counts the changes made here, each once it is committed, so that a read of the table that overlapped one
        #: (and may predate it) is not taken over it.
        self._changes = 0

    async def start(self) -> None:
        """Read the table, then follow its changes."""
        await self.sync()
        self._follower.start()

    async def close(self) -> None:
        """Stop following the table."""
        await self._follower.close()

    def changed(self) -> None:
        """Another replica changed the table (or may have): re-read it soon."""
        self._follower.poke()

    # --- the registry's lookups ---------------------------------------------------------------------------------

    def tools(self) -> list[BaseTool]:
        """Every HTTP tool."""
        return list(self._tools.values())

    def find(self, tool_id: str) -> HttpTool | None:
        """The HTTP tool with this id, or None."""
        name = name_of(tool_id)
        return self._tools.get(name) if name else None

    # --- creation and deletion ---------------------------------------------------------------------------------

    async def create(self, spec: HttpToolSpec) -> HttpTool:
        """Store a new tool and offer it; AlreadyExists when its name is taken."""
        with self._follower.catching_up_if_cancelled():
            stored = await self._store.create(spec)
        self._changes += 1
        tool = self._tools.get(stored.name)
        if tool is None or not tool.spec.same_definition(stored):
            tool = self._tools[stored.name] = self._tool(stored)
        return tool

    async def delete(self, name: str) -> None:
        """Delete a tool; NotFound when there is none (in the table: another replica may have deleted it)."""
        try:
            with self._follower.catching_up_if_cancelled():
                await self._store.delete(name)
        except NotFound:
            self._withdraw(name)
            raise
        self._withdraw(name)

    def _withdraw(self, name: str) -> None:
        self._changes += 1
        self._tools.pop(name, None)

    async def sync(self) -> None:
        """Take the table's tools: new ones are offered, deleted ones withdrawn, re-created ones replaced."""
        while True:
            changes = self._changes
            specs = {spec.name: spec for spec in await self._store.all()}
            # A create or delete committed here meanwhile: the rows read may predate it, so read again.
            if changes == self._changes:
                break
        tools: dict[str, HttpTool] = {}
        for name, spec in specs.items():
            known = self._tools.get(name)
            tools[name] = known if known is not None and known.spec.same_definition(spec) else self._tool(spec)
        self._tools = tools

    def _tool(self, spec: HttpToolSpec) -> HttpTool:
        return HttpTool(
            spec, self.destinations, timeout_seconds=self._timeout_seconds, max_result_bytes=self._max_result_bytes
        )
