"""The databases the benchmark runs on, and the store over each, built the way the runs service builds it."""

import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from services.common.db.database import Database, asyncpg_dsn
from services.runs.checks import StoreLimits
from services.runs.executors import ExecutorNotices
from services.runs.models import MIGRATIONS
from services.runs.signals import RunSignals
from services.runs.store import RunStore

SQLITE = "sqlite"
POSTGRES = "postgresql"


@contextmanager
def sqlite_file_url() -> Iterator[str]:
    """The URL of a new SQLite file in a temporary folder, deleted with the block."""
    with tempfile.TemporaryDirectory(prefix="bench-runs-") as folder:
        yield f"sqlite+aiosqlite:///{Path(folder) / 'runs.db'}"



@asynccontextmanager
async def fresh_postgres_database(server_url: str) -> AsyncIterator[str]:
    """A new, empty database on the server of `server_url`, dropped with the block.

    A database of its own, so the benchmark neither reads nor drops anything already on that server (a
    developer's database, or the tests' shared one).
    """
    url = await create_postgres_database(server_url)
    try:
        yield url
    finally:
        await drop_postgres_database(url)


async def create_postgres_database(server_url: str, prefix: str = "bench_runs") -> str:
    """A new, empty database on the server of `server_url`, named `prefix` and a random tail; its URL.
    (fresh_postgres_database, when the creation and the drop cannot share one event loop.)"""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(url: str) -> None:
    """Drop the database of `url`, made by create_postgres_database, whoever is still connected to it."""
    admin = await asyncpg.connect(asyncpg_dsn(make_url(url).set(database="postgres")))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def opened_store(url: str) -> AsyncIterator[RunStore]:
    """A RunStore over `url` as services/runs/app.py makes it (migrated schema, the default step limit),
    without the gRPC server and the reaper; the store's writer is closed and the database disposed of with the
    block."""
    db = Database(url)
    try:
        await db.migrate(MIGRATIONS, adopt=("runs", "0001"))
        store = RunStore(db, RunSignals(), ExecutorNotices(), StoreLimits())
        try:
            yield store
        finally:
            await store.close()
    finally:
        await db.dispose()


def database_kind(store: RunStore) -> str:
    return SQLITE if store.database.is_sqlite else POSTGRES


def sqlite_path(store: RunStore) -> str:
    """The file of a store on SQLite."""
    path = store.database.engine.url.database
    assert path, "the benchmark's SQLite database is a file"
    return path
