"""GroupCommit on a real SQLite database: writes share transactions, one that fails rolls back alone, callers
see results only once committed, urgent writes go ahead of the queue, and the writer's thread ends with it."""

import asyncio
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

from services.common.db.database import Database
from services.common.db.group_commit import GroupCommit


@pytest.fixture
async def database(tmp_path: Path):  # type: ignore[no-untyped-def]
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    async with db.engine.begin() as connection:
        await connection.exec_driver_sql("CREATE TABLE notes (n INTEGER PRIMARY KEY)")
    yield db
    await db.dispose()


def insert(n: int, order: list[int]):  # type: ignore[no-untyped-def]
    def work(connection: Connection) -> int:
        order.append(n)
        connection.execute(text("INSERT INTO notes (n) VALUES (:n)"), {"n": n})
        return n

    return work


async def stored(database: Database) -> list[int]:
    async with database.engine.connect() as connection:
        return [row[0] for row in await connection.exec_driver_sql("SELECT n FROM notes ORDER BY n")]


async def test_a_failing_write_rolls_back_alone_and_the_others_commit(database: Database) -> None:
    writer, order = GroupCommit(database), []
    outcomes = await asyncio.gather(
        writer.write(insert(1, order)), writer.write(insert(1, order)), writer.write(insert(2, order)),
        return_exceptions=True,
    )
    assert outcomes[0] == 1 and outcomes[2] == 2 and isinstance(outcomes[1], Exception)  # a duplicate key
    assert await stored(database) == [1, 2]
    await writer.close()


async def test_an_urgent_write_goes_ahead_of_the_queued_ones(database: Database) -> None:
    writer, order = GroupCommit(database), []
    normal = [asyncio.ensure_future(writer.write(insert(n, order))) for n in (1, 2, 3)]
    urgent = asyncio.ensure_future(writer.write(insert(9, order), urgent=True))
    await asyncio.gather(*normal, urgent)
    assert order == [9, 1, 2, 3]
    assert await stored(database) == [1, 2, 3, 9]
    await writer.close()


async def test_a_caller_sees_its_result_only_after_the_commit(database: Database) -> None:
    writer = GroupCommit(database)
    seen: list[list[int]] = []

    async def write_and_look() -> None:
        await writer.write(insert(5, []))
        seen.append(await stored(database))  # another connection: only committed rows show

    await write_and_look()
    assert seen == [[5]]
    await writer.close()


@pytest.mark.postgres
async def test_the_writer_reconnects_when_the_database_drops_its_connection(postgres_url: str) -> None:
    database = Database(postgres_url)
    async with database.engine.begin() as connection:
        await connection.exec_driver_sql("DROP TABLE IF EXISTS notes")
        await connection.exec_driver_sql("CREATE TABLE notes (n INTEGER PRIMARY KEY)")
    writer, order = GroupCommit(database), []
    try:
        assert await writer.write(insert(1, order)) == 1
        # The server ends every other session, the writer's held connection among them (as a restart would).
        async with database.engine.connect() as connection:
            await connection.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        assert await writer.write(insert(2, order)) == 2  # the batch ran again on a new connection
        assert await stored(database) == [1, 2]
    finally:
        await writer.close()
        async with database.engine.begin() as connection:
            await connection.exec_driver_sql("DROP TABLE notes")
        await database.dispose()


async def test_a_write_after_the_writer_was_stopped_fails_at_once_instead_of_waiting(database: Database) -> None:
    writer = GroupCommit(database)
    await writer.write(insert(1, []))
    assert writer._task is not None
    writer._task.cancel()  # as the event loop going away does
    await asyncio.gather(writer._task, return_exceptions=True)
    with pytest.raises(RuntimeError, match="stopped"):
        await asyncio.wait_for(writer.write(insert(2, [])), 1)
    await writer.close()  # still closes its connection


def writer_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("sqlite-writer")]


async def test_a_batch_runs_in_the_writers_own_thread_which_ends_when_it_closes(database: Database) -> None:
    writer, ran_in = GroupCommit(database), []

    def where(connection: Connection) -> None:
        ran_in.append(threading.current_thread())
        connection.execute(text("INSERT INTO notes (n) VALUES (7)"))

    before = writer_threads()
    outcomes = await asyncio.gather(writer.write(where), writer.write(where), return_exceptions=True)
    assert outcomes[0] is None and isinstance(outcomes[1], Exception)
    assert len(set(ran_in)) == 1 and ran_in[0] is not threading.main_thread()
    assert ran_in[0] in writer_threads()
    assert await stored(database) == [7]  # the second write's duplicate rolled back alone
    await writer.close()
    assert not ran_in[0].is_alive() and writer_threads() == before


async def test_closing_commits_what_is_queued_first(database: Database) -> None:
    writer = GroupCommit(database)
    pending = [asyncio.ensure_future(writer.write(insert(n, []))) for n in range(1, 101)]
    await asyncio.sleep(0)  # queued, not yet committed
    await writer.close()
    assert [write.result() for write in pending] == list(range(1, 101))
    assert await stored(database) == list(range(1, 101))
