"""Replicas of a service started together on a fresh PostgreSQL database migrate it once: the first takes the
migration lock and migrates, the others wait for it and find the schema at its newest revision. Without the lock
two of them create Alembic's version table or insert its row at once and one crashes (UniqueViolation)."""

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

pytestmark = pytest.mark.postgres

#: One process as a service replica starts: wait for the go file, then migrate every service's schema, as the
#: runs, tools and agents services each do at start, on one database.
REPLICA = """
import asyncio, os, sys, time
from services.common.db.database import Database
from services.runs.models import MIGRATIONS as RUNS
from services.agents.models import MIGRATIONS as AGENTS
from services.tools.tool_settings import ToolSettingsStore

async def main(url: str, go: str) -> None:
    database = Database(url)
    while not os.path.exists(go):
        time.sleep(0.001)
    try:
        await database.migrate(RUNS, adopt=("runs", "0001"))
        await database.migrate(AGENTS)
        await ToolSettingsStore(database).migrate()
    finally:
        await database.dispose()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""
REPLICAS = 4
ROUNDS = 3


@pytest_asyncio.fixture
async def fresh_databases(postgres_url: str) -> AsyncIterator[list[str]]:
    """ROUNDS empty databases on the test server, dropped afterwards."""
    server = create_async_engine(postgres_url, isolation_level="AUTOCOMMIT")
    names = [f"migrate_{uuid.uuid4().hex[:12]}" for _ in range(ROUNDS)]
    try:
        async with server.connect() as connection:
            for name in names:
                await connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield [make_url(postgres_url).set(database=name).render_as_string(hide_password=False) for name in names]
    finally:
        async with server.connect() as connection:
            for name in names:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await server.dispose()


def test_replicas_started_together_on_a_fresh_database_migrate_it_once(
    fresh_databases: list[str], tmp_path: Path
) -> None:
    for round_number, url in enumerate(fresh_databases):
        go = tmp_path / f"go-{round_number}"
        replicas = [
            subprocess.Popen([sys.executable, "-c", REPLICA, url, str(go)], stderr=subprocess.PIPE, text=True)
            for _ in range(REPLICAS)
        ]
        go.touch()  # all at once, each already connected-ready
        failures = []
        for replica in replicas:
            _, errors = replica.communicate(timeout=90)
            if replica.returncode != 0:
                failures.append(errors[-2000:])
        assert failures == [], f"round {round_number}: {len(failures)} of {REPLICAS} replicas crashed:\n" + \
            "\n".join(failures)


def test_each_schema_takes_a_lock_of_its_own() -> None:
    """Keyed by the migrations' location: the agents schema once shared the runs schema's lock, because its callers
    did not pass its version table (harmless, both waited for each other, but not what the lock is for)."""
    from services.agents.models import MIGRATIONS as AGENTS
    from services.common.db.database import migration_lock_key
    from services.runs.models import MIGRATIONS as RUNS
    from services.tools.tables import MIGRATIONS as TOOLS

    assert len({migration_lock_key(RUNS), migration_lock_key(AGENTS), migration_lock_key(TOOLS)}) == 3
