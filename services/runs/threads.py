"""Conversation threads in the run store (no gRPC here): the SQL of placing a new run on its thread, which
`RunStore.create_run` calls within its transaction, and `ThreadStore`, the part of `RunStore` that gets, lists
and deletes threads and reads a run's thread history.

A thread is a row of its own with a turn counter; a run is a turn of it (runs.thread_id, runs.thread_turn).
Every create on a thread updates the thread's row first, which serialises two creates on one thread (a row
lock on PostgreSQL, the one writer on SQLite): the check for a run in progress and the turn number it hands
out cannot race.
"""

import dataclasses
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, literal, select, tuple_, update
from sqlalchemy.engine import Connection

from services.common.checks import parse_uuid
from services.common.db.database import UtcDateTime, runs_to_completion
from services.common.errors import InvalidArgument, NotFound
from services.common.pages import PageTokens, checked_page_size
from services.common.run_vocabulary import ACTIVE_STATES
from services.common.usage import Usage
from services.runs.checks import parse_run_id
from services.runs.models import THREAD_TITLE_CHARS, RunRow, ThreadRow
from services.runs.parts import StoreParts
from services.runs.records import RunRecord, ThreadHistory, ThreadRecord
from services.runs.rows import RUN_COLUMNS, STEPS, Values, load_run, run_record

THREADS = ThreadRow.__table__
RUNS = RunRow.__table__

@dataclass(frozen=True)
class Placement:
    """Where a new run goes: its thread, its turn, and the thread's runs not ended yet (oldest first)."""

    thread_id: str
    turn: int
    live: list[dict[str, Any]]


def thread_record(row: Values) -> ThreadRecord:
    return ThreadRecord(
        id=row["id"],
        owner=row["owner"],
        title=row["title"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        turn_count=row["turn_count"],
    )


#: Built once, as the store's run INSERT is (services/runs/store.py `_INSERT_RUN`): every chat's first turn makes a
#: thread.
_INSERT_THREAD = insert(THREADS)


def new_thread(owner: str, user_query: str, now: datetime) -> dict[str, Any]:
    """The row of a new thread whose first turn asks `user_query` (for `place_run`, and for the creates of a batch,
    which insert theirs together: `insert_new_threads`)."""
    return {
        "id": str(uuid.uuid4()), "owner": owner, "title": user_query[:THREAD_TITLE_CHARS], "created_at": now,
        "updated_at": now, "turn_count": 1,
    }


def insert_new_threads(connection: Connection, threads: list[dict[str, Any]]) -> None:
    """Insert rows of `new_thread` in one executemany."""
    connection.execute(_INSERT_THREAD, threads)


def place_run(
    connection: Connection, thread_id: str, owner: str, user_query: str, now: datetime, run_columns: list[Any]
) -> Placement:
    """Start a thread for a new run ("" thread_id), or take the next turn of `owner`'s thread `thread_id`
    (NotFound for a missing thread or another user's: the same words for both)."""
    if not thread_id:
        thread = new_thread(owner, user_query, now)
        connection.execute(_INSERT_THREAD, thread)
        return Placement(thread["id"], 1, [])
    turn = (
        connection.execute(
            update(THREADS)
            .where(THREADS.c.id == thread_id, THREADS.c.owner == owner)
            .values(turn_count=THREADS.c.turn_count + 1, updated_at=now)
            .returning(THREADS.c.turn_count)
        )
    ).scalar_one_or_none()
    if turn is None:
        raise NotFound(f"thread '{thread_id}' not found")
    live = connection.execute(
        select(*run_columns)
        .where(RUNS.c.thread_id == thread_id, RUNS.c.state.in_(ACTIVE_STATES))
        .order_by(RUNS.c.thread_turn)
        .with_for_update()
    )
    return Placement(thread_id, turn, [dict(row._mapping) for row in live])


def earlier_live_turn(connection: Connection, thread_id: str, turn: int) -> str | None:
    """The id of a run before `turn` on the thread that has not ended (QUEUED, RUNNING or WAITING), if any."""
    return (
        connection.execute(
            select(RUNS.c.id)
            .where(RUNS.c.thread_id == thread_id, RUNS.c.thread_turn < turn, RUNS.c.state.in_(ACTIVE_STATES))
            .limit(1)
        )
    ).scalar_one_or_none()


def load_thread(connection: Connection, thread_id: str, owner: str | None) -> ThreadRecord:
    """A thread; NotFound if missing or, with `owner`, someone else's."""
    query = select(THREADS).where(THREADS.c.id == thread_id)
    if owner is not None:
        query = query.where(THREADS.c.owner == owner)
    row = connection.execute(query).mappings().first()
    if row is None:
        raise NotFound(f"thread '{thread_id}' not found")
    return thread_record(row)


def with_totals(connection: Connection, threads: list[ThreadRecord]) -> list[ThreadRecord]:
    """`threads` with their runs' usage and cost summed (one query for all of them)."""
    if not threads:
        return threads
    rows = connection.execute(
        select(RUNS.c.thread_id, func.sum(RUNS.c.prompt_tokens), func.sum(RUNS.c.completion_tokens),
               func.sum(RUNS.c.cost_nanos), func.sum(RUNS.c.unpriced_calls))
        .where(RUNS.c.thread_id.in_([thread.id for thread in threads])).group_by(RUNS.c.thread_id)
    )
    totals = {row[0]: row[1:] for row in rows}
    summed = []
    for thread in threads:
        prompt, completion, cost, unpriced = totals.get(thread.id, (0, 0, 0, 0))
        summed.append(dataclasses.replace(
            thread, usage=Usage(int(prompt or 0), int(completion or 0)), cost_nanos=int(cost or 0),
            unpriced_calls=int(unpriced or 0),
        ))
    return summed


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


def turns_after(tokens: PageTokens, token: str, thread_id: str, search: object, owner: str | None) -> int:
    """The last turn of the ListRuns page (of one thread) that `token` continues; `search`: the filter's token
    form, to which the token is bound."""
    request = {"thread_id": thread_id, "search": search, "owner": owner}
    return tokens.read(token, LIST_RUNS, request).integer("turn")


def turn_page_token(tokens: PageTokens, thread_id: str, search: object, owner: str | None, last_turn: int) -> str:
    return tokens.issue(LIST_RUNS, {"thread_id": thread_id, "search": search, "owner": owner}, {"turn": last_turn})


#: Turns one GetThreadHistory returns by default and at most, and about how many bytes of them: the engine's
#: context budget cuts far below either, and the answer stays under gRPC's 4 MiB message limit.
DEFAULT_HISTORY_TURNS = 100
MAX_HISTORY_TURNS = 1000
MAX_HISTORY_BYTES = 3 * 1024 * 1024


class ThreadStore(StoreParts):
    """The run store's thread methods: get, list and delete threads, and a run's thread history."""

    @runs_to_completion
    async def get_thread(self, thread_id: str, *, owner: str | None = None) -> ThreadRecord:
        """One thread; NotFound when missing or, with `owner`, someone else's."""
        thread_id = parse_uuid(thread_id, "thread_id", "thread")
        async with self.database.read() as session:
            connection = await session.connection()
            thread = await connection.run_sync(load_thread, thread_id, owner)
            [thread] = await connection.run_sync(with_totals, [thread])
            return thread

    @runs_to_completion
    async def list_threads(
        self, page_size: int = 0, page_token: str = "", *, owner: str | None = None
    ) -> tuple[list[ThreadRecord], str]:
        """One page of threads, most recently active first (by keyset, as list_runs), and the next page's token."""
        limit = checked_page_size(page_size)
        query = select(THREADS).order_by(THREADS.c.updated_at.desc(), THREADS.c.id.desc()).limit(limit + 1)
        if owner is not None:
            query = query.where(THREADS.c.owner == owner)
        if page_token:
            query = query.where(threads_after(self.page_tokens, page_token, owner))
        async with self.database.read() as session:
            connection = await session.connection()
            rows = (await connection.execute(query)).mappings().all()
            page = await connection.run_sync(with_totals, [thread_record(row) for row in rows[:limit]])
        return page, thread_page_token(self.page_tokens, page[-1], owner) if len(rows) > limit else ""

    async def delete_thread(self, thread_id: str, *, owner: str | None = None) -> None:
        """Delete a thread with its runs and their steps (ON DELETE CASCADE); as delete_run for each run."""
        thread_id = parse_uuid(thread_id, "thread_id", "thread")

        def delete_(connection: Connection) -> list[str]:
            load_thread(connection, thread_id, owner)
            run_ids = list(connection.execute(select(RUNS.c.id).where(RUNS.c.thread_id == thread_id)).scalars())
            connection.execute(delete(THREADS).where(THREADS.c.id == thread_id))
            return run_ids

        for run_id in await self._writer.write(delete_):
            self.signals.run_ended(run_id, None)

    @runs_to_completion
    async def thread_history(self, run_id: str, max_turns: int = 0) -> ThreadHistory:
        """The turns of `run_id`'s thread before it, oldest first, with their steps: the latest `max_turns`
        (0: DEFAULT_HISTORY_TURNS) that fit in about MAX_HISTORY_BYTES; `omitted` counts the earlier ones."""
        run_id = parse_run_id(run_id)
        if not 0 <= max_turns <= MAX_HISTORY_TURNS:
            raise InvalidArgument(f"max_turns must be 0 (the default, {DEFAULT_HISTORY_TURNS}) to "
                                  f"{MAX_HISTORY_TURNS}, got {max_turns}")
        async with self.database.read() as session:
            connection = await session.connection()
            run = await connection.run_sync(load_run, run_id)
            if not run["thread_id"]:
                return ThreadHistory([], 0)
            earlier = (RUNS.c.thread_id == run["thread_id"]) & (RUNS.c.thread_turn < run["thread_turn"])
            total = (await connection.execute(select(func.count()).where(earlier))).scalar_one()
            rows = (
                await connection.execute(
                    select(*RUN_COLUMNS)
                    .where(earlier)
                    .order_by(RUNS.c.thread_turn.desc())
                    .limit(max_turns or DEFAULT_HISTORY_TURNS)
                )
            ).mappings().all()
            steps_by_run: dict[str, list[Values]] = {row["id"]: [] for row in rows}
            if rows:
                result = await connection.execute(
                    select(STEPS).where(STEPS.c.run_id.in_(list(steps_by_run))).order_by(STEPS.c.sequence)
                )
                for step in result.mappings():
                    steps_by_run[step["run_id"]].append(step)
        turns: list[RunRecord] = []
        size = 0
        for row in rows:  # newest first: what does not fit is the oldest
            size += sum(len(json.dumps(step["content"])) for step in steps_by_run[row["id"]]) + len(row["user_query"])
            if turns and size > MAX_HISTORY_BYTES:
                break
            turns.append(run_record(row, steps_by_run[row["id"]]))
        turns.reverse()
        return ThreadHistory(turns, total - len(turns))
