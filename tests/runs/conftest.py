"""Fixtures of the runs tests: a store on a fresh database (SQLite, plus PostgreSQL when configured) and
in-process runs servers with a gRPC stub."""

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, inspect, text

from services.common.db.database import Database
from services.runs.app import RunsApp, start_runs
from services.runs.models import Base
from services.runs.settings import RunsSettings
from services.runs.signals import RunSignals
from services.runs.store import RunStore
from tests.runs.helpers import connect, sqlite_url
from tests.runs.service_helpers import API_KEYS, TOKEN

#: The store tests run on SQLite and on the session's PostgreSQL server (`postgres_url`, tests/conftest.py);
#: its runs tables are emptied per test (`_fresh_runs_tables`).
_BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=_BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database: a new SQLite file, or the PostgreSQL test server."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "runs.db")
    return request.getfixturevalue("postgres_url")


def _fresh_runs_tables(connection: Connection) -> None:
    """Empty runs tables on the shared PostgreSQL server, as `Base.metadata.create_all` makes them.

    When the tables an earlier test of this fixture made are there (no Alembic version table: no migration made
    them since), TRUNCATE empties them and restarts their identities: a fifth of what dropping and creating them
    again costs (0.06 s against 0.3 s, times some 200 tests). Otherwise they are dropped, with the version table a
    migration left, and created again."""
    tables = set(inspect(connection).get_table_names())
    if set(Base.metadata.tables) <= tables and "alembic_version" not in tables:
        # CASCADE: also the tables the runs table's DDL hooks add beside them (PostgreSQL's run_texts).
        connection.execute(text(f"TRUNCATE {', '.join(Base.metadata.tables)} RESTART IDENTITY CASCADE"))
        return
    Base.metadata.drop_all(connection)
    connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    Base.metadata.create_all(connection)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """The database of `database_url` with fresh runs tables."""
    db = Database(database_url)
    if db.is_sqlite:
        await db.create_schema(Base.metadata)
    else:
        # The PostgreSQL server is shared between tests: start each one from empty tables.
        async with db.engine.begin() as connection:
            await connection.run_sync(_fresh_runs_tables)
    yield db
    await db.dispose()


@pytest.fixture
def signals() -> RunSignals:
    return RunSignals()


@pytest.fixture
async def store(database: Database, signals: RunSignals) -> AsyncIterator[RunStore]:
    store = RunStore(database, signals)
    yield store
    await store.close()


StartRuns = Callable[..., Awaitable[RunsApp]]


@pytest.fixture
async def start_app(tmp_path: Path) -> AsyncIterator[StartRuns]:
    """Start runs servers on free ports (stopped at teardown); keyword arguments named like the environment
    (RUNS_CANCEL_WAIT_SECONDS=0.2, RUNS_REAPER_INTERVAL_SECONDS=0.05 ...) override settings."""
    apps: list[RunsApp] = []

    async def start(database: Path | None = None, heartbeat_seconds: float = 0.05, **settings_env: Any) -> RunsApp:
        settings = RunsSettings(
            RUNS_HOST="127.0.0.1",
            RUNS_PORT=0,
            DATABASE_URL=sqlite_url(database or tmp_path / "runs.db"),
            RUNS_WATCH_HEARTBEAT_SECONDS=heartbeat_seconds,
            **settings_env,
        )
        app = await start_runs(settings)
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop()


@pytest.fixture
async def runs_app(start_app: StartRuns) -> RunsApp:
    """A runs server whose watch streams send a heartbeat after 0.05 s of quiet."""
    return await start_app()


@pytest.fixture
async def stub(runs_app: RunsApp) -> AsyncIterator[Any]:
    """RunService and ExecutionService stubs over a real channel to `runs_app`."""
    async with connect(runs_app) as runs:
        yield runs


@pytest.fixture
async def secured(start_app: StartRuns) -> RunsApp:
    """A runs server with API keys (service_helpers.API_KEYS) and the service token (service_helpers.TOKEN)."""
    return await start_app(AUTH_API_KEYS=API_KEYS, PLATFORM_SERVICE_TOKEN=TOKEN)


@pytest.fixture
async def keyed_stub(secured: RunsApp) -> AsyncIterator[Any]:
    """A stub of `secured`; each call says who makes it (service_helpers.as_, SERVICE)."""
    async with connect(secured) as stub:
        yield stub
