"""Group commit: every write of one process to a database goes through one connection, and the writes that arrive
while a transaction commits are committed together in the next one.

Why: on SQLite one writer at a time is all the database allows. A pool of connections that each BEGIN IMMEDIATE
holds the write lock across event-loop round trips while the others sleep in SQLite's busy handler, and every
small write pays a transaction of its own. One writer takes the lock once per batch, never waits on its own
process, and a commit is shared by all the writes in it (on PostgreSQL too: fewer commits, fewer round trips).

Each write is a `Write`: a kind and a coroutine to run on the writer's connection. Consecutive writes of the same
kind are handed to that kind's handler together, in arrival order, so a handler may coalesce them (the runs
store appends the steps of many runs with one INSERT); the default handler runs each in a SAVEPOINT, so a write
that fails rolls back alone. A write's caller gets its result once the transaction holding it has committed,
and cannot cancel it once submitted (it completes or fails on its own, as `Database.run_to_completion` does).

The work and the handlers are plain synchronous SQLAlchemy Core over a `Connection`, and a batch's transaction is
one synchronous body, so that it costs one hop whatever its statements: on SQLite the writer runs it in a thread
of its own on a `sqlite3` connection (`Database.sqlite_write_engine`), where aiosqlite hopped to its thread and
back through the event loop for every statement; on PostgreSQL it runs on the held asyncpg connection through
`AsyncConnection.run_sync`. Readers stay async.
"""

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common import metrics
from services.common.db.database import Database

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Writes one transaction takes at most; a bound on how long a batch holds the write lock.
MAX_BATCH = 512


class Write(Generic[T]):
    """One write waiting for the writer: its kind, the work, and the future its caller awaits. A handler records
    the write's outcome with `succeed` or `fail`; the caller sees it only after the transaction committed."""

    __slots__ = ("_error", "_value", "future", "kind", "work")

    def __init__(self, kind: str, work: Callable[[Connection], T] | None = None) -> None:
        self.kind = kind
        self.work = work
        self.future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._value: T | None = None
        self._error: BaseException | None = None

    def succeed(self, value: T) -> None:
        self._value, self._error = value, None

    def fail(self, error: BaseException) -> None:
        self._error = error

    def _settle(self, transaction_error: BaseException | None) -> None:
        if self.future.done():
            return
        error = transaction_error or self._error
        if error is not None:
            self.future.set_exception(error)
        else:
            # Every handler calls `succeed` or `fail` on each write, so `_value` is a T by now; mypy cannot follow
            # that across the handler, and the field is T | None until `succeed` runs, hence the ignore.
            self.future.set_result(self._value)  # type: ignore[arg-type]


#: Runs a group of consecutive writes of one kind in the open transaction; it settles each write it can, and
#: what it raises fails the whole transaction.
BatchHandler = Callable[[Connection, Sequence[Write[Any]]], None]


def each_in_savepoint(connection: Connection, writes: Sequence[Write[Any]]) -> None:
    """The default handler: each write in a SAVEPOINT of its own, so one that raises rolls back alone."""
    for write in writes:
        assert write.work is not None
        try:
            with connection.begin_nested():
                write.succeed(write.work(connection))
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise  # not this write's fault: the whole batch is retried on a new connection
            write.fail(exc)
        except Exception as exc:  # the write's caller gets it; the others go on
            write.fail(exc)


class GroupCommit:
    """The one writer of a `Database` in this process."""

    def __init__(self, database: Database, handlers: dict[str, BatchHandler] | None = None) -> None:
        self._handlers = handlers or {}
        self._queue: asyncio.Queue[Write[Any]] = asyncio.Queue()
        self._urgent: deque[Write[Any]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        engine = database.sqlite_write_engine
        self._connection: _WriterConnection = (
            _ThreadConnection(engine) if engine is not None else _RunSyncConnection(database)
        )

    async def write(self, work: Callable[[Connection], T], *, urgent: bool = False) -> T:
        """Run `work` (synchronous SQLAlchemy Core on the writer's connection) in the next transaction, in a
        savepoint of its own, and return its result once committed. An `urgent` write goes ahead of the writes
        queued before it (for what keeps time, such as leases)."""
        return await self.submit(Write("", work), urgent=urgent)

    async def submit(self, write: Write[T], *, urgent: bool = False) -> T:
        """Queue `write` and wait for its outcome. Cancelling the caller does not cancel the write."""
        if self._closed:
            raise RuntimeError("the database writer is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="group-commit")
        elif self._task.done():
            # Only a cancellation ends the writer's task (its own errors fail a batch, not the task); a write queued
            # after that would wait for ever.
            raise RuntimeError("the database writer has stopped")
        if urgent:
            self._urgent.append(write)
            self._queue.put_nowait(Write("wake", None))  # wakes the writer if it waits for work
        else:
            self._queue.put_nowait(write)
        return await asyncio.shield(write.future)

    async def close(self) -> None:
        """Commit what is queued, then stop and close the writer's connection (and its thread, on SQLite)."""
        self._closed = True
        if self._task is not None and not self._task.done():
            self._queue.put_nowait(Write("stop", None))
            await self._task
        await self._connection.close()

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            urgent = list(self._urgent)
            self._urgent.clear()
            stop = any(write.kind == "stop" for write in batch)
            writes = urgent + [write for write in batch if write.kind not in ("stop", "wake")]
            if writes:
                await self._commit(writes)
            if stop:
                return

    async def _commit(self, writes: list[Write[Any]]) -> None:
        failure: BaseException | None = None
        started = time.perf_counter()
        metrics.STORE_BATCH_WRITES.observe(len(writes))
        groups = _runs_of_kind(writes)

        def transaction(connection: Connection) -> None:
            with connection.begin():
                for group in groups:
                    self._handlers.get(group[0].kind, each_in_savepoint)(connection, group)

        for attempt in (1, 2):
            try:
                await self._connection.run(transaction)
                failure = None
                break
            except DBAPIError as exc:
                # The held connection died (the database restarted, the network dropped it): nothing of this batch
                # committed, so it runs once more on a new connection before its writes fail.
                failure = exc
                if not exc.connection_invalidated or attempt == 2:
                    break
                log.warning("the database connection was lost (%s); retrying the batch on a new one", exc.orig)
                await self._connection.disconnect()
            except Exception as exc:
                failure = exc
                break
            except BaseException:
                for write in writes:
                    write._settle(RuntimeError("the database writer was stopped before this write committed"))
                raise
        metrics.STORE_COMMIT.labels("ok" if failure is None else "failed").observe(time.perf_counter() - started)
        if failure is not None:
            # Rolled back: nothing of this batch is stored, whatever a handler recorded.
            log.warning("a write transaction of %d write(s) failed: %r", len(writes), failure)
            if isinstance(failure, DBAPIError):
                await self._connection.disconnect()
        for write in writes:
            write._settle(failure)


class _WriterConnection(Protocol):
    """The connection the writer keeps, and where a batch's transaction runs on it."""

    async def run(self, transaction: Callable[[Connection], None]) -> None:
        """Run `transaction` on the held connection (connecting first if there is none)."""

    async def disconnect(self) -> None:
        """Drop the held connection (a new one is made for the next batch)."""

    async def close(self) -> None:
        """Drop the held connection and release what holds it, for good."""


class _RunSyncConnection:
    """PostgreSQL: the writer's asyncpg connection; a batch runs in one `run_sync` (its statements still await
    the server, through SQLAlchemy's greenlet)."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._held: AsyncConnection | None = None

    async def run(self, transaction: Callable[[Connection], None]) -> None:
        # The writer keeps its connection: checking one out of the pool per batch cost a round trip (PostgreSQL's
        # pre-ping) and pool bookkeeping on every transaction.
        if self._held is None or self._held.closed or self._held.invalidated:
            await self.disconnect()
            self._held = await self._database.connect_for_writing()
        await self._held.run_sync(transaction)

    async def disconnect(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            with contextlib.suppress(Exception):
                await held.close()

    async def close(self) -> None:
        await self.disconnect()


class _ThreadConnection:
    """SQLite: a `sqlite3` connection owned by a thread of its own, where a whole batch runs in one hop. The thread
    is made with the first batch and ends at `close`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._thread: ThreadPoolExecutor | None = None
        self._held: Connection | None = None  # used in the thread only

    async def run(self, transaction: Callable[[Connection], None]) -> None:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        await asyncio.get_running_loop().run_in_executor(self._thread, self._run, transaction)

    def _run(self, transaction: Callable[[Connection], None]) -> None:
        if self._held is None or self._held.closed or self._held.invalidated:
            self._disconnect()
            self._held = self._engine.connect()
        transaction(self._held)

    def _disconnect(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            with contextlib.suppress(Exception):
                held.close()

    async def disconnect(self) -> None:
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._disconnect)

    async def close(self) -> None:
        if self._thread is not None:
            await self.disconnect()
            thread, self._thread = self._thread, None
            # The thread runs one thing at a time, in order: the disconnect came after any batch still running (a
            # cancelled writer's), so the thread is idle and this returns at once.
            thread.shutdown(wait=True)


def _runs_of_kind(writes: list[Write[Any]]) -> list[list[Write[Any]]]:
    """`writes` cut into runs of consecutive writes of one kind, in order."""
    groups: list[list[Write[Any]]] = []
    for write in writes:
        if groups and groups[-1][0].kind == write.kind:
            groups[-1].append(write)
        else:
            groups.append([write])
    return groups
