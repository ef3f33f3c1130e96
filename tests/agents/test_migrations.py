"""The agents schema is the migrations': they build exactly the tables the models describe, on SQLite and
PostgreSQL, and keep their version in a table of their own, so they share a database with the runs schema."""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from services.agents.models import MIGRATIONS, Base
from services.agents.records import AgentSpec
from services.agents.store import AgentStore
from services.common.db.database import Database
from services.runs.models import MIGRATIONS as RUNS_MIGRATIONS
from services.runs.models import Base as RunsBase


@pytest.fixture
async def empty_database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    # The PostgreSQL server is shared: start without the runs schema (another module's tests may have migrated it)
    # and take it away again after.
    await _drop_runs_schema(db)
    yield db
    await _drop_runs_schema(db)
    await db.dispose()


async def _drop_runs_schema(db: Database) -> None:
    async with db.engine.begin() as connection:
        await connection.run_sync(RunsBase.metadata.drop_all)
        await connection.execute(text("DROP TABLE IF EXISTS alembic_version"))


def _differences(connection: Connection) -> list:
    context = MigrationContext.configure(
        connection, opts={"include_name": lambda name, type_, _: type_ != "table" or name in Base.metadata.tables}
    )
    return compare_metadata(context, Base.metadata)


def _versions(connection: Connection) -> dict[str, list[str]]:
    tables = set(inspect(connection).get_table_names())
    return {
        table: list(connection.execute(text(f"SELECT version_num FROM {table}")).scalars())
        for table in ("alembic_version", "agents_alembic_version")
        if table in tables
    }


async def test_migrations_build_what_the_models_describe(empty_database: Database) -> None:
    await empty_database.migrate(MIGRATIONS)
    await empty_database.migrate(MIGRATIONS)  # at head already: nothing to do
    async with empty_database.engine.connect() as connection:
        assert await connection.run_sync(_differences) == []
        assert await connection.run_sync(_versions) == {"agents_alembic_version": ["0002"]}


async def test_the_agents_and_runs_schemas_share_a_database(empty_database: Database) -> None:
    await empty_database.migrate(RUNS_MIGRATIONS)
    await empty_database.migrate(MIGRATIONS)
    await empty_database.migrate(RUNS_MIGRATIONS)  # neither mistakes the other's version for its own
    async with empty_database.engine.connect() as connection:
        versions = await connection.run_sync(_versions)
        assert versions["agents_alembic_version"] == ["0002"]
        assert versions["alembic_version"] and versions["alembic_version"] != ["0002"]
        assert await connection.run_sync(_differences) == []
        tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert {"runs", "run_steps", "agents", "agent_revisions", "workflows", "workflow_revisions"} <= tables


async def test_0002_adds_the_workflow_tables_to_a_database_with_agents(empty_database: Database) -> None:
    """A database made by 0001 (agents only) keeps its agents when 0002 adds the workflows, and downgrading
    removes only the workflows."""
    def to(revision: str, downgrade: bool = False) -> Any:
        def run(connection: Connection) -> None:
            config = Config()
            config.set_main_option("script_location", MIGRATIONS)
            config.attributes["connection"] = connection
            (command.downgrade if downgrade else command.upgrade)(config, revision)

        return run

    async with empty_database.engine.begin() as connection:
        await connection.run_sync(to("0001"))
        tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert "agents" in tables and "workflows" not in tables
    agent = await AgentStore(empty_database).create_agent("alice", AgentSpec("Kept"))

    await empty_database.migrate(MIGRATIONS)
    async with empty_database.engine.connect() as connection:
        assert await connection.run_sync(_versions) == {"agents_alembic_version": ["0002"]}
        assert await connection.run_sync(_differences) == []
    assert (await AgentStore(empty_database).get_agent(agent.id, "alice")).spec.display_name == "Kept"

    async with empty_database.engine.begin() as connection:
        await connection.run_sync(to("0001", downgrade=True))
        tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert {"agents", "agent_revisions"} <= tables and not {"workflows", "workflow_revisions"} & tables
    assert (await AgentStore(empty_database).get_agent(agent.id, "alice")).spec.display_name == "Kept"
