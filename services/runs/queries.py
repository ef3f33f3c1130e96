"""Reading runs from the run store: one run, the steps after a cursor (for watchers), and ListRuns' pages
(no gRPC here). Part of `RunStore`."""

import dataclasses
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select

from services.common.checks import parse_uuid
from services.common.db.database import runs_to_completion
from services.common.errors import NotFound
from services.common.pages import checked_page_size
from services.runs.checks import parse_run_id
from services.runs.parts import StoreParts
from services.runs.records import RunRecord, StepRecord
from services.runs.rows import RUN_COLUMNS, RUNS, STEPS, Values, load_run, run_record, step_record
from services.runs.scores import load_scores
from services.runs.search import NO_FILTER, RunFilter, checked_filter
from services.runs.search_sql import (
    CommonText,
    after,
    check_thread_order,
    filter_clauses,
    ordered,
    position_of,
    prepare_search,
)
from services.runs.threads import LIST_RUNS, load_thread, turn_page_token, turns_after

#: A ListRuns page ends early rather than grow past this (gRPC's default message limit is 4 MiB).
MAX_PAGE_BYTES = 1024 * 1024
#: ListRuns returns at most this much of each user query.
LIST_QUERY_CHARS = 1000
#: Runs an export reads per query.
EXPORT_BATCH = 100

#: ListRuns reads these, with the user query cut in the database so a huge one is never loaded.
_LIST_COLUMNS = [
    *(column for column in RUN_COLUMNS if column.key != "user_query"),
    func.substr(RUNS.c.user_query, 1, LIST_QUERY_CHARS + 1).label("user_query"),
]

def _listing(search: RunFilter, owner: str | None) -> dict[str, object]:
    # The filters are part of the token: a position in one filtered listing is meaningless in another.
    return {"search": search.token_key(), "owner": owner}


def _approximate_bytes(record: RunRecord) -> int:
    """About how many bytes a run takes in a ListRuns response (text fields dominate; the rest is small)."""
    labels = sum(len(key) + len(value) for key, value in record.metadata.items())
    return len(record.user_query.encode()) + len(record.error_message.encode()) + labels * 2 + 256




def _fit_page(rows: Sequence[Values]) -> list[RunRecord]:
    """The runs of `rows` as a ListRuns page: user queries cut to LIST_QUERY_CHARS, and the page ended early
    rather than grow past MAX_PAGE_BYTES (it always holds one run)."""
    page: list[RunRecord] = []
    size = 0
    for row in rows:
        record = run_record(row, query_cut=len(row["user_query"]) > LIST_QUERY_CHARS)
        if record.user_query_truncated:
            record = dataclasses.replace(record, user_query=record.user_query[:LIST_QUERY_CHARS])
        size += _approximate_bytes(record)
        if page and size > MAX_PAGE_BYTES:
            break
        page.append(record)
    return page

class RunQueries(StoreParts):
    """The run store's reads of runs (see the module docstring)."""

    @runs_to_completion
    async def get_run(
        self, run_id: str, with_steps: bool = True, *, owner: str | None = None, with_scores: bool = False
    ) -> RunRecord:
        """One run, with its steps in sequence order unless `with_steps` is False, and its scores with
        `with_scores`; `owner` (None: any) limits it to that user's runs."""
        run_id = parse_run_id(run_id)
        async with self.database.read() as session:
            connection = await session.connection()
            run = await connection.run_sync(load_run, run_id, owner=owner)
            steps: Sequence[Values] = ()
            if with_steps:
                result = await connection.execute(
                    select(STEPS).where(STEPS.c.run_id == run_id).order_by(STEPS.c.sequence)
                )
                steps = result.mappings().all()
            record = run_record(run, steps)
            if with_scores:
                record = dataclasses.replace(record, scores=await connection.run_sync(load_scores, run_id))
            return record

    @runs_to_completion
    async def steps_after(self, run_id: str, after_sequence: int, limit: int) -> tuple[RunRecord, list[StepRecord]]:
        """The run (without steps) and up to `limit` of its steps with a sequence above `after_sequence`.

        The run is read BEFORE the steps: if it is finished then, no step can follow the ones read.
        """
        run_id = parse_run_id(run_id)
        async with self.database.read() as session:
            connection = await session.connection()
            run = await connection.run_sync(load_run, run_id)
            rows = await connection.execute(
                select(STEPS)
                .where(STEPS.c.run_id == run_id, STEPS.c.sequence > after_sequence)
                .order_by(STEPS.c.sequence)
                .limit(limit)
            )
            return run_record(run), [step_record(row) for row in rows.mappings()]

    @runs_to_completion
    async def list_runs(
        self,
        page_size: int = 0,
        page_token: str = "",
        search: RunFilter = NO_FILTER,
        *,
        owner: str | None = None,
        thread_id: str = "",
    ) -> tuple[list[RunRecord], str]:
        """One page of the runs `search` finds (without steps), in its order (newest first by default), and the
        token of the next page ("" on the last).

        `owner` None finds every user's runs. Pagination is by keyset, so runs created while paging neither shift
        nor repeat the pages that follow. User queries are cut to LIST_QUERY_CHARS, and a page ends early rather
        than grow past MAX_PAGE_BYTES, so no page can exceed gRPC's message limit.

        With `thread_id`, only that thread's runs, in turn order (oldest first; `search.order` must be the
        default); NotFound when the thread is missing or, with `owner`, someone else's.
        """
        search = checked_filter(search)
        self.list_runs_statement(page_size, page_token, search, owner=owner, thread_id=thread_id)  # checks first
        limit = checked_page_size(page_size)
        if thread_id:
            thread_id = parse_uuid(thread_id, "thread_id", "thread")
        async with self.database.read() as session:
            connection = await session.connection()
            if thread_id:
                await connection.run_sync(load_thread, thread_id, owner)
            common = await prepare_search(connection, search, checked_page_size(page_size), owner)
            query = self.list_runs_statement(
                page_size, page_token, search, owner=owner, thread_id=thread_id, common_words=common
            )
            rows = (await session.execute(query)).mappings().all()
        page = _fit_page(rows[:limit])
        if len(rows) == len(page):
            return page, ""
        if thread_id:
            key = search.token_key()
            return page, turn_page_token(self.page_tokens, thread_id, key, owner, page[-1].thread_turn)
        last = rows[len(page) - 1]
        return page, self.page_tokens.issue(LIST_RUNS, _listing(search, owner), position_of(last, search.order))

    async def export_runs(
        self, search: RunFilter = NO_FILTER, *, owner: str | None = None, cursor: str = "", batch: int = EXPORT_BATCH
    ) -> AsyncIterator[tuple[RunRecord, str]]:
        """Every run `search` finds, in its order, whole (its steps and scores), each with the cursor that resumes
        the export after it: a ListRuns page token, so runs created meanwhile neither shift nor repeat what
        follows. `owner` None exports every user's runs. Read `batch` runs at a time, each whole in a read of
        its own, so no transaction stays open while the caller consumes them."""
        search = checked_filter(search)
        token = cursor
        while True:
            async with self.database.read() as session:
                connection = await session.connection()
                common = await prepare_search(connection, search, batch, owner)
                query = self.list_runs_statement(batch, token, search, owner=owner, common_words=common)
                rows = (await session.execute(query)).mappings().all()
            page = rows[:batch]
            for row in page:
                token = self.page_tokens.issue(LIST_RUNS, _listing(search, owner), position_of(row, search.order))
                try:
                    record = await self.get_run(row["id"], owner=owner, with_scores=True)
                except NotFound:
                    continue  # deleted since the page was read
                yield record, token
            if len(rows) <= batch:
                return

    def list_runs_statement(
        self,
        page_size: int = 0,
        page_token: str = "",
        search: RunFilter = NO_FILTER,
        *,
        owner: str | None = None,
        thread_id: str = "",
        common_words: CommonText | None = None,
    ) -> Select[Any]:
        """The SELECT `list_runs` executes for the page these same arguments ask for: the page's runs and one
        more, whose presence says a next page exists. `list_runs` runs exactly this, so an operator (or
        `make bench-runs`) can have the database EXPLAIN what the service executes. InvalidArgument for
        arguments `list_runs` refuses. `common_words`: what `search_sql.common_text` says of the search's text
        now (`list_runs` asks it), which picks the plan of a text search on SQLite.
        """
        limit = checked_page_size(page_size)
        search = checked_filter(search)
        clauses = filter_clauses(search, self.database.is_sqlite, common_words, owner)
        query = select(*_LIST_COLUMNS).where(*clauses).limit(limit + 1)
        if thread_id:
            thread_id = parse_uuid(thread_id, "thread_id", "thread")
            check_thread_order(search.order)
            query = query.where(RUNS.c.thread_id == thread_id).order_by(RUNS.c.thread_turn)
            if page_token:
                turn = turns_after(self.page_tokens, page_token, thread_id, search.token_key(), owner)
                query = query.where(RUNS.c.thread_turn > turn)
        else:
            query = ordered(query, search.order)
            if page_token:
                query = query.where(after(self.page_tokens.read(page_token, LIST_RUNS, _listing(search, owner)),
                                          search.order))
        if owner is not None:
            query = query.where(RUNS.c.owner == owner)
        return query

    def page_token_after(
        self, created_at: datetime, run_id: str, search: RunFilter = NO_FILTER, *, owner: str | None = None
    ) -> str:
        """The ListRuns page token (of all threads, newest first) whose page starts after the run
        (created_at, run_id)."""
        position = {"created_at": created_at.isoformat(), "id": run_id}
        return self.page_tokens.issue(LIST_RUNS, _listing(search, owner), position)
