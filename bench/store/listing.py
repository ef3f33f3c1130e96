"""Case 2: ListRuns over many stored runs: the first page, the first page of one state, and a page from the
middle, each with the plan the database picks for it."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ClauseElement, Executable, Select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from bench.store.databases import database_kind
from bench.store.loading import LoadedRuns
from bench.store.results import CaseResult, Goal, Stopwatch
from services.common.pages import MAX_PAGE_SIZE
from services.common.run_vocabulary import FAILED
from services.runs.search import RunFilter
from services.runs.store import RunStore

LIST_GOAL = Goal(max_p99_ms=10)
#: Untimed calls before each measured series: the first ones compile and cache the statement.
WARMUP_CALLS = 3
#: A series stops early after this long, so a slow query costs seconds, not minutes (n says how many ran).
SERIES_SECONDS = 10.0

Progress = Callable[[str], None]
#: The arguments of one ListRuns case, given alike to `RunStore.list_runs` and `RunStore.list_runs_statement`.
ListArguments = Mapping[str, Any]


@dataclass(frozen=True)
class ListingResults:
    first: CaseResult
    failed: CaseResult
    deep: CaseResult


async def bench_list_runs(store: RunStore, loaded: LoadedRuns, calls: int, progress: Progress) -> ListingResults:
    """The first page, the first page of FAILED runs, and the page at the middle of the `loaded` runs (the
    only runs in the store), each `calls` times (or for SERIES_SECONDS) with the default page size."""
    kind = database_kind(store)
    progress(f"{kind}: ListRuns, first page")
    first = await _series("list_runs first page", store, calls, {})
    first.facts.update(expected_ids=ids_at(loaded, 0, len(first.facts["ids"])))
    progress(f"{kind}: ListRuns, first page of state {FAILED}")
    failed_only = {"search": RunFilter(states=(FAILED,))}
    failed = await _series(f"list_runs first page, state={FAILED}", store, calls, failed_only)
    middle = loaded.count // 2
    token = seek_token(store, loaded, middle)
    progress(f"{kind}: ListRuns, the page at run {middle:,} of {loaded.count:,}")
    deep = await _series(f"list_runs page at run {middle:,}", store, calls, {"page_token": token})
    deep.facts.update(position=middle, token=token, expected_ids=ids_at(loaded, middle, len(deep.facts["ids"])))
    return ListingResults(first, failed, deep)


async def _series(case: str, store: RunStore, calls: int, arguments: ListArguments) -> CaseResult:
    """ListRuns with `arguments` timed up to `calls` times; facts: the runs of its page, and the plan of its
    query."""
    for _ in range(WARMUP_CALLS):
        await store.list_runs(**arguments)
    latencies_ms: list[float] = []
    total = Stopwatch()
    while len(latencies_ms) < calls and total.seconds < SERIES_SECONDS:
        watch = Stopwatch()
        await store.list_runs(**arguments)
        latencies_ms.append(watch.ms)
    seconds = total.seconds
    page, _ = await store.list_runs(**arguments)
    facts = {
        "ids": [run.id for run in page],
        "states": {run.state for run in page},
        "plan": await explain(store, store.list_runs_statement(**arguments)),
    }
    return CaseResult(case, database_kind(store), len(latencies_ms), seconds, latencies_ms, goal=LIST_GOAL, facts=facts)


def seek_token(store: RunStore, loaded: LoadedRuns, position: int) -> str:
    """The page token a client holds after paging through the first `position` runs (newest first).

    Built, not walked: walking there costs as much as the deep pages themselves, page after page (minutes at a
    million runs). The store signs the token for the run before `position` (RunStore.page_token_after), made
    again from the load. `walk_to` reaches the same token by paging; the tests check that both agree.
    """
    (before,) = loaded.newest_first(position - 1, 1)
    return store.page_token_after(before.created_at, before.id)


async def walk_to(store: RunStore, position: int) -> str:
    """The page token after the first `position` runs, reached by paging there with the largest pages."""
    token, walked = "", 0
    while walked < position:
        page, token = await store.list_runs(min(MAX_PAGE_SIZE, position - walked), token)
        if not token:
            raise AssertionError(f"ListRuns ended after {walked + len(page)} runs, before position {position}")
        walked += len(page)
    return token


def ids_at(loaded: LoadedRuns, position: int, count: int) -> list[str]:
    """The ids of `count` runs from `position` on, newest first: what a page there must hold, from the load
    itself rather than from the store under test."""
    return [run.id for run in loaded.newest_first(position, count)]


class _Explain(Executable, ClauseElement):
    """`statement` behind an EXPLAIN `prefix`, compiled and bound as the statement alone is (a construct of
    SQLAlchemy's compiler extension), so the database explains exactly what the store executes."""

    inherit_cache = False

    def __init__(self, prefix: str, statement: Select[Any]) -> None:
        self.prefix = prefix
        self.statement = statement


@compiles(_Explain)
def _compile_explain(element: _Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return element.prefix + compiler.process(element.statement, **kw)


async def explain(store: RunStore, statement: Select[Any]) -> list[str]:
    """The plan the database runs `statement` with, e.g. `RunStore.list_runs_statement(...)`, the SELECT a
    ListRuns page executes (PostgreSQL: EXPLAIN ANALYZE, so the rows read show)."""
    prefix = "EXPLAIN QUERY PLAN " if store.database.is_sqlite else "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) "
    async with store.database.engine.connect() as connection:
        rows = (await connection.execute(_Explain(prefix, statement))).all()
    # SQLite: (id, parent, notused, detail); PostgreSQL: one line of text per row.
    return [str(row[-1]) for row in rows]


def plan_summary(plan: list[str]) -> str:
    """The plan's steps on one line: what is scanned or sorted and how many rows a filter threw away (the
    filter expressions themselves are long and say nothing the query does not)."""
    keep = ("SCAN", "SEARCH", "TEMP B-TREE", "Scan", "Sort", "Rows Removed", "Execution Time")
    return " / ".join(line.strip().removeprefix("->").strip() for line in plan if any(key in line for key in keep))
