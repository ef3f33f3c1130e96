"""Conversation threads in the run store: the SQL of placing a new run on its thread, and of reading threads
(no gRPC here; `RunStore` calls these within its transactions and reads).

A thread is a row of its own with a turn counter; a run is a turn of it (runs.thread_id, runs.thread_turn).
Every create on a thread updates the thread's row first, which serialises two creates on one thread (a row
lock on PostgreSQL, the one writer on SQLite): the check for a run in progress and the turn number it hands
out cannot race.
"""

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, insert, literal, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.database import UtcDateTime
from services.common.errors import NotFound
from services.common.pages import PageTokens
from services.common.run_vocabulary import ACTIVE_STATES
from services.runs.models import THREAD_TITLE_CHARS, RunRow, ThreadRow
from services.runs.records import ThreadRecord

THREADS = ThreadRow.__table__
RUNS = RunRow.__table__

@dataclass(frozen=True)
class Placement:
    """Where a new run goes: its thread, its turn, and the thread's runs not ended yet (oldest first)."""

    thread_id: str
    turn: int
    live: list[dict[str, Any]]


def thread_record(row: Mapping[str, Any]) -> ThreadRecord:
    return ThreadRecord(
        id=row["id"],
        owner=row["owner"],
        title=row["title"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        turn_count=row["turn_count"],
    )


async def place_run(
    connection: AsyncConnection, thread_id: str, owner: str, user_query: str, now: datetime, run_columns: list[Any]
) -> Placement:
    """Start a thread for a new run ("" thread_id), or take the next turn of `owner`'s thread `thread_id`
    (NotFound for a missing thread or another user's: the same words for both)."""
    if not thread_id:
        thread_id = str(uuid.uuid4())
        await connection.execute(
            insert(THREADS).values(
                id=thread_id,
                owner=owner,
                title=user_query[:THREAD_TITLE_CHARS],
                created_at=now,
                updated_at=now,
                turn_count=1,
            )
        )
        return Placement(thread_id, 1, [])
    turn = (
        await connection.execute(
            update(THREADS)
            .where(THREADS.c.id == thread_id, THREADS.c.owner == owner)
            .values(turn_count=THREADS.c.turn_count + 1, updated_at=now)
            .returning(THREADS.c.turn_count)
        )
    ).scalar_one_or_none()
    if turn is None:
        raise NotFound(f"thread '{thread_id}' not found")
    live = await connection.execute(
        select(*run_columns)
        .where(RUNS.c.thread_id == thread_id, RUNS.c.state.in_(ACTIVE_STATES))
        .order_by(RUNS.c.thread_turn)
        .with_for_update()
    )
    return Placement(thread_id, turn, [dict(row._mapping) for row in live])


async def earlier_live_turn(connection: AsyncConnection, thread_id: str, turn: int) -> str | None:
    """The id of a run before `turn` on the thread that has not ended (QUEUED, RUNNING or WAITING), if any."""
    return (
        await connection.execute(
            select(RUNS.c.id)
            .where(RUNS.c.thread_id == thread_id, RUNS.c.thread_turn < turn, RUNS.c.state.in_(ACTIVE_STATES))
            .limit(1)
        )
    ).scalar_one_or_none()


async def load_thread(connection: AsyncConnection, thread_id: str, owner: str | None) -> ThreadRecord:
    """A thread; NotFound if missing or, with `owner`, someone else's."""
    query = select(THREADS).where(THREADS.c.id == thread_id)
    if owner is not None:
        query = query.where(THREADS.c.owner == owner)
    row = (await connection.execute(query)).mappings().first()
    if row is None:
        raise NotFound(f"thread '{thread_id}' not found")
    return thread_record(row)


# --- pages --------------------------------------------------------------------------------------------------

#: The listings' names in page tokens (and in the refusal of a token made for another).
LIST_THREADS = "ListThreads"
LIST_RUNS = "ListRuns"


def threads_after(tokens: PageTokens, token: str, owner: str | None) -> ColumnElement[bool]:
    """Threads after a ListThreads page's last one, most recently active first (a row-value comparison, served as a
    range of the (updated_at, id) indexes)."""
    position = tokens.read(token, LIST_THREADS, {"owner": owner})
    return tuple_(THREADS.c.updated_at, THREADS.c.id) < tuple_(
        literal(position.time("updated_at"), UtcDateTime()), literal(position.uuid("id"), THREADS.c.id.type)
    )


def thread_page_token(tokens: PageTokens, last: ThreadRecord, owner: str | None) -> str:
    return tokens.issue(LIST_THREADS, {"owner": owner}, {"updated_at": last.updated_at.isoformat(), "id": last.id})


def turns_after(tokens: PageTokens, token: str, thread_id: str, state: str | None, owner: str | None) -> int:
    """The last turn of the ListRuns page (of one thread) that `token` continues."""
    request = {"thread_id": thread_id, "state": state, "owner": owner}
    return tokens.read(token, LIST_RUNS, request).integer("turn")


def turn_page_token(tokens: PageTokens, thread_id: str, state: str | None, owner: str | None, last_turn: int) -> str:
    return tokens.issue(LIST_RUNS, {"thread_id": thread_id, "state": state, "owner": owner}, {"turn": last_turn})
