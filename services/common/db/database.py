"""SQLAlchemy async set-up shared by the services that keep state (runs, tools' settings).

One URL selects the dialect: `sqlite+aiosqlite:///path.db` (the embedded default) or
`postgresql+asyncpg://user:pass@host/db` (production). Nothing here or in the callers is SQLite-only. On SQLite
the one writer of a process (group_commit.py) also gets a synchronous engine over `sqlite3` on the same file, with
the same pragmas (`Database.sqlite_write_engine`), so that it runs a whole batch per hop to its thread.
"""

import asyncio
import functools
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import DateTime, MetaData, create_engine, event, inspect, text
from sqlalchemy.engine import URL, Connection, Dialect, Engine, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, NullPool
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)

#: Constraint names Alembic can address on every dialect.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def make_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every dialect (SQLite hands back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def migration_lock_key(migrations: str) -> int:
    """The PostgreSQL advisory lock a service's migrations take: one per schema, named by its migrations'
    location (which no caller can forget to pass, as it could the version table), a signed 64-bit number as
    pg_advisory_xact_lock takes it."""
    digest = hashlib.sha256(f"agentplatform migrations {migrations}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def asyncpg_dsn(database_url: str | URL) -> str:
    """The libpq-style DSN asyncpg takes, from the SQLAlchemy URL (`postgresql+asyncpg://...`) the services use:
    for what talks to PostgreSQL through asyncpg directly (LISTEN/NOTIFY, the benchmark's admin connection)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def utcnow() -> datetime:
    return datetime.now(UTC)


_IMMEDIATE = "agentplatform_begin_immediate"
#: SQLite's synchronous modes a database may use in WAL mode: NORMAL survives a crash of the process, FULL also a
#: power loss.
SQLITE_SYNCHRONOUS = ("NORMAL", "FULL")
T = TypeVar("T")


def _configure_sqlite(engine: Engine, busy_timeout_ms: int, synchronous: str) -> None:
    # pysqlite's own transaction handling is turned off so that we emit BEGIN ourselves: BEGIN IMMEDIATE
    # for writes takes the write lock up front, so two writers queue on busy_timeout instead of one
    # failing with "database is locked" when it upgrades a read lock (SQLAlchemy's documented recipe).
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(_IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """An async engine with separate session factories for reads and writes."""

    def __init__(
        self, url: str, *, echo: bool = False, sqlite_busy_timeout_ms: int = 10_000, sqlite_synchronous: str = "NORMAL"
    ) -> None:
        if sqlite_synchronous not in SQLITE_SYNCHRONOUS:
            raise ValueError(f"sqlite_synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}")
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        options: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            database = parsed.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).parent.mkdir(parents=True, exist_ok=True)
        else:
            options["pool_pre_ping"] = True
        self.engine = create_async_engine(url, **options)
        #: SQLite only: the synchronous engine the store's writer runs its batches on (see `sqlite_write_engine`).
        self.sqlite_write_engine: Engine | None = None
        if self.is_sqlite:
            _configure_sqlite(self.engine.sync_engine, sqlite_busy_timeout_ms, sqlite_synchronous)
            # aiosqlite hops to its own thread and back through the event loop for every statement; the writer
            # instead takes a whole batch to a thread of its own and runs it there on plain sqlite3. NullPool:
            # its one connection is opened, used and closed in that thread (sqlite3 connections stay in theirs).
            sync_engine = create_engine(parsed.set(drivername="sqlite"), echo=echo, poolclass=NullPool)
            _configure_sqlite(sync_engine, sqlite_busy_timeout_ms, sqlite_synchronous)
            self.sqlite_write_engine = sync_engine.execution_options(**{_IMMEDIATE: True})
        self._reader = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_engine = self.engine.execution_options(**{_IMMEDIATE: True})
        self._writer = async_sessionmaker(self._write_engine, expire_on_commit=False)
        self._in_flight: set[asyncio.Future[Any]] = set()

    async def run_to_completion(self, operation: Coroutine[Any, Any, T]) -> T:
        """Run a database operation that finishes even if its caller is cancelled (a client disconnects, a
        deadline passes); the caller still gets CancelledError at once.

        A query cancelled mid-flight makes SQLAlchemy tear its pooled connection down, and a second
        cancellation during that teardown (the server stopping) leaves aiosqlite's close waiting forever,
        which hangs shutdown (SQLAlchemy 2.1 with aiosqlite 0.22). Shielded, the operation completes or fails
        on its own and returns its connection intact; `dispose` waits for such orphans first.
        """
        task = asyncio.ensure_future(operation)
        self._in_flight.add(task)
        task.add_done_callback(self._settled)
        return await asyncio.shield(task)

    def _settled(self, task: asyncio.Future[Any]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled():
            # Retrieve the outcome so asyncio does not log "exception was never retrieved" when the caller
            # went away; a caller still waiting got the same outcome through the shield.
            task.exception()

    async def drain(self) -> None:
        """Wait for operations whose callers were cancelled."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads; its transaction ends with the block."""
        async with self._reader() as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits at the end of the block, or rolls back on error."""
        async with self._writer() as session, session.begin():
            yield session

    def connect_for_writing(self) -> AsyncConnection:
        """A connection whose transactions take the write lock at BEGIN on SQLite (for `GroupCommit` on
        PostgreSQL; on SQLite it writes through `sqlite_write_engine`)."""
        return self._write_engine.connect()

    async def create_schema(self, metadata: MetaData) -> None:
        """Create missing tables (idempotent)."""
        async with self.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)

    async def migrate(
        self, migrations: str, adopt: tuple[str, str] | None = None, version_table: str = "alembic_version"
    ) -> None:
        """Bring the schema to the newest Alembic revision in `migrations` (package:folder, e.g.
        "services.runs:migrations"). `adopt` = (table, revision): a database that has `table` but no Alembic
        version yet (no `version_table`, the one the migrations' env.py keeps their version in) was made before
        migrations existed, and is first marked as being at `revision`.

        Runs on an engine of its own: on SQLite, Alembic rebuilds a table to alter it, and the service's
        connections enforce foreign keys, under which dropping the old table would cascade into its children.
        """
        config = Config()
        config.set_main_option("script_location", migrations)
        engine = create_async_engine(self.engine.url, poolclass=NullPool)

        def upgrade(connection: Connection) -> tuple[str | None, str | None]:
            config.attributes["connection"] = connection
            if not self.is_sqlite:
                # Replicas started together would each create the version table, or insert its row, at once, and
                # all but one crash. The first to take this lock migrates; the others wait for its commit (the
                # lock is the transaction's) and find the schema at head. SQLite serves one replica.
                lock = {"key": migration_lock_key(migrations)}
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), lock)
            tables = set(inspect(connection).get_table_names())
            if adopt is not None and adopt[0] in tables and version_table not in tables:
                command.stamp(config, adopt[1])
            before = revision(connection)
            command.upgrade(config, "head")
            return before, revision(connection)

        def revision(connection: Connection) -> str | None:
            context = MigrationContext.configure(connection, opts={"version_table": version_table})
            return context.get_current_revision()

        try:
            async with engine.begin() as connection:
                before, after = await connection.run_sync(upgrade)
        finally:
            await engine.dispose()
        # One line per schema, whatever the number of migrations applied (Alembic's own line per migration is
        # at DEBUG: services/common/logs.py).
        if before == after:
            log.info("schema %s is at revision %s, the newest", migrations, after)
        else:
            log.info("schema %s migrated from revision %s to %s, the newest", migrations, before or "(none)", after)

    async def dispose(self) -> None:
        """Close every connection, once operations orphaned by cancelled callers have finished."""
        await self.drain()
        await self.engine.dispose()
        if self.sqlite_write_engine is not None:
            self.sqlite_write_engine.dispose()


P = ParamSpec("P")


class HasDatabase(Protocol):
    database: Database


StoreT = TypeVar("StoreT", bound=HasDatabase)


def runs_to_completion(
    method: Callable[Concatenate[StoreT, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[StoreT, P], Coroutine[Any, Any, T]]:
    """Decorate a store method so that it runs via `self.database.run_to_completion`."""

    @functools.wraps(method)
    async def shielded(self: StoreT, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.database.run_to_completion(method(self, *args, **kwargs))

    return shielded
