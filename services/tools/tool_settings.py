"""Per-tool settings (enabled, description override, approval), kept in the tools database so they survive restarts.

A tool without a row is enabled, has no override and keeps its own approval default, so a newly dropped-in plugin
is usable at once. The SQL is plain SQLAlchemy (select, then insert or update, in one write transaction): it runs
on SQLite and PostgreSQL alike. The table is built by the Alembic migrations in services/tools/migrations.
"""

import enum
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.common.db.database import Database, runs_to_completion, utcnow
from services.tools.replicas import Announce, announce_nothing
from services.tools.tables import MIGRATIONS, SCHEMA, VERSION_TABLE, ToolSettingRow

__all__ = [
    "KEEP", "MIGRATIONS", "SCHEMA", "VERSION_TABLE", "Keep", "ToolSetting", "ToolSettingRow", "ToolSettingsStore",
]


@dataclass(frozen=True)
class ToolSetting:
    """A tool's effective settings (the defaults when nothing is stored)."""

    tool_id: str
    enabled: bool = True
    description_override: str | None = None
    #: None: the tool's own default.
    requires_approval: bool | None = None


class Keep(enum.Enum):
    """Marks a setting an update leaves as it is (None already means "no override")."""

    KEEP = enum.auto()


KEEP = Keep.KEEP


def _setting_from_row(row: ToolSettingRow) -> ToolSetting:
    return ToolSetting(row.tool_id, row.enabled, row.description_override, row.requires_approval)


#: How long the settings read from the database are reused. Every tool call needs them; a change made through
#: this process is seen at once, one made through another tools replica as soon as its message arrives
#: (`forget`, services/tools/replicas.py), and within this time if the message was lost. A short time costs
#: little: the table is read only when asked, at most once per period.
CACHE_SECONDS = 2.0


class ToolSettingsStore:
    """Reads and writes the `tool_settings` table, with its rows cached for CACHE_SECONDS; `announce` is told the
    tool id of every committed change."""

    def __init__(self, database: Database, announce: Announce = announce_nothing) -> None:
        self.database = database
        self._announce = announce
        self._cached: dict[str, ToolSetting] = {}
        self._cached_at: float | None = None
        self._updates = 0  # so that a read that overlapped an update is not cached over it

    def forget(self) -> None:
        """Another replica changed the settings (or may have): read them again on the next look."""
        self._updates += 1  # a read under way may predate the change: it must not be cached
        self._cached_at = None

    async def migrate(self) -> None:
        """Bring the table to the newest migration (a database made before migrations is adopted at 0001)."""
        await self.database.migrate(MIGRATIONS, adopt=("tool_settings", "0001"), version_table=VERSION_TABLE)

    async def get(self, tool_id: str) -> ToolSetting:
        """The settings of one tool."""
        return (await self.get_all()).get(tool_id) or ToolSetting(tool_id)

    async def get_all(self) -> dict[str, ToolSetting]:
        """The stored settings by tool id; tools missing from the result have the defaults."""
        now = time.monotonic()
        if self._cached_at is None or now - self._cached_at >= CACHE_SECONDS:
            updates = self._updates
            stored = await self._read_all()
            if updates != self._updates:
                return stored  # an update landed meanwhile: `stored` may predate it, so it is not kept
            self._cached, self._cached_at = stored, now
        return dict(self._cached)

    @runs_to_completion
    async def _read_all(self) -> dict[str, ToolSetting]:
        async with self.database.read() as session:
            rows = (await session.scalars(select(ToolSettingRow))).all()
            return {row.tool_id: _setting_from_row(row) for row in rows}

    @runs_to_completion
    async def delete(self, tool_id: str) -> None:
        """Forget a tool's settings (a deleted HTTP tool's: one created again under its name starts afresh)."""
        self._updates += 1
        async with self.database.write() as session:
            row = await session.get(ToolSettingRow, tool_id)
            if row is not None:
                await session.delete(row)
        self._cached.pop(tool_id, None)
        if row is not None:
            self._announce(tool_id)

    @runs_to_completion
    async def update(
        self,
        tool_id: str,
        *,
        enabled: bool | Keep = KEEP,
        description_override: str | Keep | None = KEEP,
        requires_approval: bool | Keep | None = KEEP,
    ) -> ToolSetting:
        """Change the given settings of a tool (creating its row if needed) and return the result."""
        self._updates += 1
        try:
            setting = await self._update_once(tool_id, enabled, description_override, requires_approval)
        except IntegrityError:
            # Another replica inserted the row between our select and insert (PostgreSQL; SQLite's
            # BEGIN IMMEDIATE serialises writers). The row exists now, so the second try updates it.
            setting = await self._update_once(tool_id, enabled, description_override, requires_approval)
        self._cached[tool_id] = setting
        self._announce(tool_id)
        return setting

    async def _update_once(
        self,
        tool_id: str,
        enabled: bool | Keep,
        description_override: str | Keep | None,
        requires_approval: bool | Keep | None,
    ) -> ToolSetting:
        async with self.database.write() as session:
            row = await session.get(ToolSettingRow, tool_id)
            if row is None:
                row = ToolSettingRow(tool_id=tool_id, enabled=True, description_override=None)
                session.add(row)
            if not isinstance(enabled, Keep):
                row.enabled = enabled
            if not isinstance(description_override, Keep):
                row.description_override = description_override
            if not isinstance(requires_approval, Keep):
                row.requires_approval = requires_approval
            row.updated_at = utcnow()
            await session.flush()
            return _setting_from_row(row)
