"""`python -m services.migrate`, the deployment's migration step: on a fresh PostgreSQL database it brings every
service's schema to head (also when two copies start at once, as the Job and a pod's initContainer may), a second
run changes nothing, and a database it cannot reach or a malformed URL ends it with exit code 1 and a message
naming the schema, without the password."""

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import inspect, make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from services.agents.settings import AgentsSettings
from services.migrate.schemas import SCHEMAS
from services.migrate.settings import MigrateSettings
from services.runs.settings import RunsSettings
from services.tools.settings import ToolsSettings

#: Where each schema keeps its Alembic revision (services/*/migrations/env.py).
VERSION_TABLES = {"runs": "alembic_version", "tools": "tools_alembic_version", "agents": "agents_alembic_version"}


def _migrate(url: str, **extra: str) -> subprocess.Popen[str]:
    environment = os.environ | {
        "DATABASE_URL": url, "TOOLS_DATABASE_URL": url, "AGENTS_DATABASE_URL": url, "LOG_LEVEL": "INFO", **extra,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.migrate"], env=environment, stderr=subprocess.PIPE, text=True
    )


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, errors = process.communicate(timeout=90)
    return process.returncode, errors


@pytest_asyncio.fixture
async def fresh_database(postgres_url: str) -> AsyncIterator[str]:
    """An empty database on the test server, dropped afterwards."""
    server = create_async_engine(postgres_url, isolation_level="AUTOCOMMIT")
    name = f"migrate_{uuid.uuid4().hex[:12]}"
    try:
        async with server.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        async with server.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await server.dispose()


async def _versions(url: str) -> dict[str, list[str]]:
    """Each schema's recorded revisions; a schema without its version table is left out."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            tables = set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
            return {
                schema: list((await connection.execute(text(f"SELECT version_num FROM {table}"))).scalars())
                for schema, table in VERSION_TABLES.items()
                if table in tables
            }
    finally:
        await engine.dispose()


def test_every_schema_has_its_version_table() -> None:
    assert {schema.name for schema in SCHEMAS} == VERSION_TABLES.keys()


def test_it_migrates_from_the_urls_the_services_read() -> None:
    for ours, theirs in (("runs_database_url", RunsSettings), ("tools_database_url", ToolsSettings),
                         ("agents_database_url", AgentsSettings)):
        field, service_field = MigrateSettings.model_fields[ours], theirs.model_fields["database_url"]
        assert (field.alias, field.default) == (service_field.alias, service_field.default), ours


def test_it_starts_without_importing_the_services() -> None:
    # Every runs, tools and agents pod runs it before it starts: the services' imports (gRPC, the openai SDK) would
    # add seconds to each start on a busy node.
    probe = "import sys, services.migrate.__main__; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
            "{'openai', 'grpc'} or m in {'services.runs.app', 'services.agents.app', 'services.tools.app'}))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.postgres
async def test_migrates_every_schema_once_and_a_second_run_changes_nothing(fresh_database: str) -> None:
    # Two at once on the empty database: the migration Job and a replica's initContainer may well start together.
    first = [_finish(process) for process in [_migrate(fresh_database), _migrate(fresh_database)]]
    for code, errors in first:
        assert code == 0, errors[-3000:]
    upgrades = "".join(errors for _, errors in first)
    # Each revision ran once, in one of the two processes: the other waited on the schema's lock and found it done.
    assert upgrades.count("migrated from revision (none) to") == len(SCHEMAS), upgrades[-3000:]
    heads = {schema.name: [schema.head()] for schema in SCHEMAS}
    assert await _versions(fresh_database) == heads

    code, errors = _finish(_migrate(fresh_database))
    assert code == 0, errors[-3000:]
    assert "migrated from" not in errors, "a second run should find every schema at head"
    assert errors.count(", the newest") == len(SCHEMAS), errors[-3000:]
    assert "every schema is at its newest revision" in errors
    assert await _versions(fresh_database) == heads


@pytest.mark.postgres
async def test_a_database_it_cannot_reach_fails_with_the_schema_named_and_no_password(
    fresh_database: str,
) -> None:
    unreachable = make_url(fresh_database).set(port=1, password="hunter2-secret").render_as_string(
        hide_password=False
    )
    # runs and agents are fine; tools points at a closed port.
    code, errors = _finish(_migrate(fresh_database, TOOLS_DATABASE_URL=unreachable))
    assert code == 1
    assert "migration failed: tools: migrating postgresql+asyncpg://" in errors
    assert "hunter2-secret" not in errors
    # Schemas before the failing one stay migrated; the ones after it are left for the next run.
    assert await _versions(fresh_database) == {"runs": [SCHEMAS[0].head()]}


def test_a_malformed_url_fails_with_the_schema_named(tmp_path: Path) -> None:
    code, errors = _finish(_migrate(f"sqlite+aiosqlite:///{tmp_path}/platform.db", AGENTS_DATABASE_URL="not a url"))
    assert code == 1
    assert "migration failed: runs" not in errors
    assert "migration failed: agents: cannot use its database URL" in errors
