"""The HTTP tools as a source of tools: the `http_tools` table held in memory for the registry's lookups.

The table is the meeting point of replicas, as for MCP servers: a tool created or deleted through one replica is
seen by the others when they next read it (every `sync_seconds`, and on every CreateTool and DeleteTool they
serve); through this replica, at once.
"""

import asyncio
import logging

from services.common.errors import NotFound
from services.tools.base import BaseTool
from services.tools.http.calls import HttpTool
from services.tools.http.destinations import DestinationPolicy
from services.tools.http.naming import name_of
from services.tools.http.specs import HttpToolSpec, HttpToolStore

log = logging.getLogger(__name__)


class HttpToolSource:
    """Keeps the HTTP tools of the table and answers the registry's lookups of them."""

    def __init__(
        self,
        store: HttpToolStore,
        destinations: DestinationPolicy,
        *,
        timeout_seconds: float,
        max_result_bytes: int,
        sync_seconds: float = 10.0,
    ) -> None:
        self._store = store
        self.destinations = destinations
        self._timeout_seconds = timeout_seconds
        self._max_result_bytes = max_result_bytes
        self._sync_seconds = sync_seconds
        self._tools: dict[str, HttpTool] = {}
        self._changes = 0  # so that a read of the table that overlapped a change here is not taken over it
        self._sync_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read the table, then follow its changes."""
        await self.sync()
        self._sync_task = asyncio.create_task(self._follow_table(), name="http tools sync")

    async def close(self) -> None:
        """Stop following the table."""
        if self._sync_task is not None:
            self._sync_task.cancel()
            await asyncio.gather(self._sync_task, return_exceptions=True)
            self._sync_task = None

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
        self._changes += 1
        stored = await self._store.create(spec)
        tool = self._tools.get(stored.name)
        if tool is None or not tool.spec.same_definition(stored):
            tool = self._tools[stored.name] = self._tool(stored)
        return tool

    async def delete(self, name: str) -> None:
        """Delete a tool; NotFound when there is none (in the table: another replica may have deleted it)."""
        self._changes += 1
        try:
            await self._store.delete(name)
        except NotFound:
            self._tools.pop(name, None)
            raise
        self._tools.pop(name, None)

    async def sync(self) -> None:
        """Take the table's tools: new ones are offered, deleted ones withdrawn, re-created ones replaced."""
        changes = self._changes
        specs = {spec.name: spec for spec in await self._store.all()}
        if changes != self._changes:
            return  # a create or delete landed meanwhile: the rows read may predate it; the next sync catches up
        tools: dict[str, HttpTool] = {}
        for name, spec in specs.items():
            known = self._tools.get(name)
            tools[name] = known if known is not None and known.spec.same_definition(spec) else self._tool(spec)
        self._tools = tools

    def _tool(self, spec: HttpToolSpec) -> HttpTool:
        return HttpTool(
            spec, self.destinations, timeout_seconds=self._timeout_seconds, max_result_bytes=self._max_result_bytes
        )

    async def _follow_table(self) -> None:
        while True:
            await asyncio.sleep(self._sync_seconds)
            try:
                await self.sync()
            except Exception:  # the database being away must not end the following
                log.exception("reading the HTTP tools failed; trying again in %g s", self._sync_seconds)
