"""The tool_settings table: defaults, updates, persistence across restarts (SQLite, and PostgreSQL when given)."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from services.common.db.database import Database
from services.tools.tool_settings import SCHEMA, VERSION_TABLE, ToolSetting, ToolSettingsStore

OpenStore = Callable[[], Awaitable[ToolSettingsStore]]


@pytest_asyncio.fixture
async def open_store(database_url: str) -> AsyncIterator[OpenStore]:
    """Opens stores on the same database (each like a fresh service process); cleans up after."""
    databases: list[Database] = []

    async def open_one() -> ToolSettingsStore:
        database = Database(database_url)
        databases.append(database)
        store = ToolSettingsStore(database)
        await store.migrate()
        return store

    await open_one()
    async with databases[0].write() as session:  # a clean table on a shared PostgreSQL
        await session.execute(text("DELETE FROM tool_settings"))
    yield open_one
    for database in databases:
        await database.dispose()


async def test_a_tool_without_a_row_is_enabled_without_override(open_store: OpenStore) -> None:
    store = await open_store()
    assert await store.get("calculator") == ToolSetting("calculator", enabled=True, description_override=None)
    assert await store.get_all() == {}


async def test_updates_change_only_what_is_given(open_store: OpenStore) -> None:
    store = await open_store()
    await store.update("calculator", description_override="Adds")
    setting = await store.update("calculator", enabled=False)
    assert setting == ToolSetting("calculator", enabled=False, description_override="Adds")
    cleared = await store.update("calculator", description_override=None)
    assert cleared == ToolSetting("calculator", enabled=False, description_override=None)


async def test_settings_survive_a_restart(open_store: OpenStore) -> None:
    first = await open_store()
    await first.update("web_search", enabled=False)
    second = await open_store()
    assert (await second.get("web_search")).enabled is False
    assert await second.get_all() == {"web_search": ToolSetting("web_search", enabled=False)}


async def test_concurrent_first_updates_of_one_tool_both_land(open_store: OpenStore) -> None:
    store = await open_store()
    await asyncio.gather(
        store.update("file_io", enabled=False), store.update("file_io", description_override="Files")
    )
    assert await store.get("file_io") == ToolSetting("file_io", enabled=False, description_override="Files")


async def test_the_migrations_build_exactly_the_settings_table_the_model_describes(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")
    try:
        await ToolSettingsStore(database).migrate()

        def differences(connection: Connection) -> list[Any]:
            # Alembic's own version table is not the model's business.
            context = MigrationContext.configure(connection, opts={"include_name": _not_version_table})
            return compare_metadata(context, SCHEMA)

        async with database.engine.connect() as connection:
            assert await connection.run_sync(differences) == []
    finally:
        await database.dispose()


def _not_version_table(name: str | None, type_: str, parent_names: Any) -> bool:
    return not (type_ == "table" and name == VERSION_TABLE)
