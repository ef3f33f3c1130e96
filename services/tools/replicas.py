"""How the replicas of the tools service stay in step: what one replica writes (a tool's settings, an HTTP tool, an
MCP server) the others take within a second, not a sync period.

The database is the truth; the messages only say what to re-read. After every committed write a replica publishes
"<kind> <id>" on CHANNEL (services/common/db/notifications.py: LISTEN/NOTIFY on PostgreSQL, nothing on SQLite),
and every other replica re-reads that kind: the tool settings cache is dropped (ToolSettingsStore.forget), the
HTTP tools and the MCP servers are re-read whole (a table of a few rows: one small query). When messages may have
been lost (`on_gap`: this replica's connection was away, or another could not send) everything is re-read.

The periodic re-read stays, rarer (TOOLS_MCP_SYNC_SECONDS, TOOLS_HTTP_SYNC_SECONDS, 60 s), for what no message
reports: a replica killed between its commit and its NOTIFY (the message is sent after the commit, and no gap
marker comes from a dead process), a row written by hand or restored from a backup, several processes on one
SQLite file. Such a change costs at most one period. `Follower` runs that loop, and the re-reads a message asks
for, one at a time.

Used by services/tools/app.py, which gives the stores (ToolSettingsStore, HttpToolStore, McpServerStore) their
`announce` from `ReplicaChanges.announcer` and has the caches follow the others' changes.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator

from services.common.db.notifications import Notifications

log = logging.getLogger(__name__)

#: The channel of the tools service's replicas.
CHANNEL = "agentplatform_tools"
#: What a message says changed (its first word); the id that follows is for the logs.
TOOL_SETTINGS = "tool_settings"
HTTP_TOOL = "http_tool"
MCP_SERVER = "mcp_server"
#: The pause after a failed re-read (the database away), doubling up to the period.
FIRST_RETRY_SECONDS = 0.5

#: Called after a committed write with the id of what changed.
Announce = Callable[[str], None]


def announce_nothing(_id: str) -> None:
    """The `announce` of a store or source that has no other replicas to tell (tests, tools without a service)."""


class Follower:
    """Runs `sync` every `period` seconds and soon after each `poke`, one at a time: pokes that arrive during a
    sync make one more after it. A failed sync is logged and retried with backoff."""

    def __init__(self, what: str, sync: Callable[[], Awaitable[object]], period: float) -> None:
        self._what = what
        self._sync = sync
        self._period = period
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self._what} sync")

    def poke(self) -> None:
        """Re-read soon (another replica changed something)."""
        self._wake.set()

    @contextlib.contextmanager
    def catching_up_if_cancelled(self) -> Iterator[None]:
        """Around a write whose caller may go away: the write runs to completion anyway (runs_to_completion), but
        what the caller would have done with its result is not done, so re-read soon instead."""
        try:
            yield
        except asyncio.CancelledError:
            self.poke()
            raise

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        retry = FIRST_RETRY_SECONDS
        while True:
            try:
                async with asyncio.timeout(self._period):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._sync()
            except Exception:  # the database being away must not end the following
                log.exception("reading the %s failed; trying again in %g s", self._what, retry)
                await asyncio.sleep(retry)
                retry = min(retry * 2, self._period)
                self._wake.set()
                continue
            retry = FIRST_RETRY_SECONDS


class ReplicaChanges:
    """Publishes this replica's changes on CHANNEL and hands the others' to whoever re-reads each kind."""

    def __init__(self, notifications: Notifications) -> None:
        self._notifications = notifications
        self._followers: dict[str, Callable[[], None]] = {}
        notifications.subscribe(CHANNEL, self._on_message, self._on_gap)

    def announcer(self, kind: str) -> Announce:
        """What a store or source calls after a committed write of `kind`, with the id it wrote."""
        return lambda changed_id: self._notifications.publish(CHANNEL, f"{kind} {changed_id}")

    def follow(self, kind: str, reread: Callable[[], None]) -> None:
        """Call `reread()` (which must return at once) when another replica changed something of `kind`, or
        may have."""
        self._followers[kind] = reread

    def _on_message(self, payload: str) -> None:
        kind, _, changed_id = payload.partition(" ")
        reread = self._followers.get(kind)
        if reread is None:
            # A kind this version does not know (a newer replica's): re-reading everything is always right.
            log.info("re-reading every setting after a change of unknown kind %.40r", kind)
            self._on_gap()
            return
        log.debug("another replica changed %s %s", kind, changed_id)
        reread()

    def _on_gap(self) -> None:
        for reread in self._followers.values():
            reread()
