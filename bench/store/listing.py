"""Case 2: ListRuns over many stored runs: the first page, the first page of one state, and a page from the
middle, each with the plan the database picks for it."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.engine import Connection

from bench.store.databases import database_kind
from bench.store.results import CaseResult, Goal, Stopwatch
from services.common.pages import MAX_PAGE_SIZE
from services.common.run_vocabulary import FAILED
from services.runs.models import RunRow
from services.runs.records import RunRecord
from services.runs.store import RunStore

LIST_GOAL = Goal(max_p99_ms=10)
#: Untimed calls before each measured series: the first ones compile and cache the statement.
WARMUP_CALLS = 3
#: A series stops early after this long, so a slow query costs seconds, not minutes (n says how many ran).
SERIES_SECONDS = 10.0

Progress = Callable[[str], None]
ListCall = Callable[[], Awaitable[tuple[list[RunRecord], str]]]


@dataclass(frozen=True)
class ListingResults:
    first: CaseResult
    failed: CaseResult
    deep: CaseResult


async def bench_list_runs(store: RunStore, stored: int, calls: int, progress: Progress) -> ListingResults:
    """The first page, the first page of FAILED runs, and the page at the middle of `stored` runs, each
    `calls` times (or for SERIES_SECONDS) with the default page size."""
    kind = database_kind(store)
    progress(f"{kind}: ListRuns, first page")
    first = await _series("list_runs first page", store, calls, lambda: store.list_runs())
    first.facts.update(expected_ids=await ids_at(store, 0, len(first.facts["ids"])))
    progress(f"{kind}: ListRuns, first page of state {FAILED}")
    failed = await _series(f"list_runs first page, state={FAILED}", store, calls, lambda: store.list_runs(state=FAILED))
    middle = stored // 2
    token = await seek_token(store, middle)
    progress(f"{kind}: ListRuns, the page at run {middle:,} of {stored:,}")
    deep = await _series(f"list_runs page at run {middle:,}", store, calls, lambda: store.list_runs(page_token=token))
    deep.facts.update(position=middle, token=token, expected_ids=await ids_at(store, middle, len(deep.facts["ids"])))
    return ListingResults(first, failed, deep)


async def _series(case: str, store: RunStore, calls: int, call: ListCall) -> CaseResult:
    """`call` timed up to `calls` times; facts: the runs of its page, and the plan of its query."""
    for _ in range(WARMUP_CALLS):
        await call()
    latencies_ms: list[float] = []
    total = Stopwatch()
    while len(latencies_ms) < calls and total.seconds < SERIES_SECONDS:
        watch = Stopwatch()
        await call()
        latencies_ms.append(watch.ms)
    seconds = total.seconds
    page, _ = await call()
    facts = {"ids": [run.id for run in page], "states": {run.state for run in page}, "plan": await explain(store, call)}
    return CaseResult(case, database_kind(store), len(latencies_ms), seconds, latencies_ms, goal=LIST_GOAL, facts=facts)


async def seek_token(store: RunStore, position: int) -> str:
    """The page token a client holds after paging through the first `position` runs (newest first).

    Built, not walked: walking there costs as much as the deep pages themselves, page after page (minutes at a
    million runs). The store signs the token for the run before `position` (RunStore.page_token_after).
    `walk_to` reaches the same token by paging; the tests check that both agree.
    """
    created_at, run_id = await _position_of(store, position - 1)
    return store.page_token_after(created_at, run_id)


async def walk_to(store: RunStore, position: int) -> str:
    """The page token after the first `position` runs, reached by paging there with the largest pages."""
    token, walked = "", 0
    while walked < position:
        page, token = await store.list_runs(min(MAX_PAGE_SIZE, position - walked), token)
        if not token:
            raise AssertionError(f"ListRuns ended after {walked + len(page)} runs, before position {position}")
        walked += len(page)
    return token


def _newest_first() -> Any:
    return select(RunRow.created_at, RunRow.id).order_by(RunRow.created_at.desc(), RunRow.id.desc())


async def _position_of(store: RunStore, position: int) -> tuple[datetime, str]:
    async with store.database.read() as session:
        row = (await session.execute(_newest_first().offset(position).limit(1))).one()
    return row.created_at, row.id


async def ids_at(store: RunStore, position: int, count: int) -> list[str]:
    """The ids of `count` runs from `position` on, newest first, by OFFSET: what a page there must hold."""
    async with store.database.read() as session:
        return [row.id for row in await session.execute(_newest_first().offset(position).limit(count))]


async def explain(store: RunStore, call: ListCall) -> list[str]:
    """The plan the database runs the SELECT of `call` with: the statement is caught as the store sends it
    and explained with the same parameters (PostgreSQL: EXPLAIN ANALYZE, so the rows read show)."""
    caught: list[tuple[str, Any]] = []

    def catch(conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            caught.append((statement, parameters))

    engine = store.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", catch)
    try:
        await call()
    finally:
        event.remove(engine, "before_cursor_execute", catch)
    statement, parameters = caught[-1]
    prefix = "EXPLAIN QUERY PLAN " if store.database.is_sqlite else "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) "
    async with store.database.engine.connect() as connection:
        rows = (await connection.exec_driver_sql(prefix + statement, parameters)).all()
    # SQLite: (id, parent, notused, detail); PostgreSQL: one line of text per row.
    return [str(row[-1]) for row in rows]


def plan_summary(plan: list[str]) -> str:
    """The plan's steps on one line: what is scanned or sorted and how many rows a filter threw away (the
    filter expressions themselves are long and say nothing the query does not)."""
    keep = ("SCAN", "SEARCH", "TEMP B-TREE", "Scan", "Sort", "Rows Removed", "Execution Time")
    return " / ".join(line.strip().removeprefix("->").strip() for line in plan if any(key in line for key in keep))
