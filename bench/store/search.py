"""Case 4: searching the stored runs (ListRuns' filters, issue 21): the first page of each filter alone and of
three combinations, each with the plan the database picks for it. The filters are chosen to match some of the
loaded runs (bench/store/loading.py draws agents, tools, answers and labels for them)."""

from datetime import timedelta

from bench.store.databases import database_kind
from bench.store.listing import SERIES_SECONDS, WARMUP_CALLS, Progress, explain
from bench.store.loading import AGENTS, WORKFLOWS, LoadedRuns
from bench.store.results import CaseResult, Goal, Stopwatch
from services.common.pages import checked_page_size
from services.runs.search import NumberRange, RunFilter, RunOrder, TimeRange, text_words
from services.runs.search_sql import prepare_search
from services.runs.store import RunStore

#: The issue's goal for a search's first page.
SEARCH_GOAL = Goal(max_p99_ms=20)


def search_cases(loaded: LoadedRuns) -> list[tuple[str, RunFilter, str | None]]:
    """(case name, filter, owner) of every case: each filter alone over every user's runs (an admin's search),
    then three combinations, one of them a user's own search."""
    newest = loaded.newest_first(0, 1)[0]
    middle = loaded.start + (newest.created_at - loaded.start) / 2
    day = TimeRange(middle, middle + timedelta(days=1))
    # A user and a word of theirs that the newest run has: a match whatever the number of runs loaded.
    user, word = newest.owner, text_words(newest.user_query)[-1]
    return [
        ("states=failed,cancelled", RunFilter(states=("failed", "cancelled")), None),
        ("created in one day", RunFilter(created=day), None),
        ("finished in one day", RunFilter(finished=day), None),
        ("user", RunFilter(), user),
        ("agent", RunFilter(agent_id=AGENTS[3]), None),
        ("agent and revision", RunFilter(agent_id=AGENTS[3], agent_revision=2), None),
        ("workflow", RunFilter(workflow_id=WORKFLOWS[1]), None),
        ("model", RunFilter(model="llama3.1"), None),
        ("tool", RunFilter(tool="weather"), None),
        ("error_code", RunFilter(error_code="model_unavailable"), None),
        ("metadata channel=cli", RunFilter(metadata=(("channel", "cli"),)), None),
        ("text (common word)", RunFilter(text="haiku"), None),
        ("text (rare words)", RunFilter(text="keyset pagination 777"), None),
        ("contains (common substring)", RunFilter(contains="aiku"), None),
        ("contains (rare substring)", RunFilter(contains="pagination 777"), None),
        ("duration >= 30 s", RunFilter(duration_ms=NumberRange(low=30_000)), None),
        ("tokens >= 4,500", RunFilter(total_tokens=NumberRange(low=4_500)), None),
        ("order longest", RunFilter(order=RunOrder.LONGEST), None),
        ("order most tokens", RunFilter(order=RunOrder.MOST_TOKENS), None),
        ("combo: failed, model, last 30 days",
         RunFilter(states=("failed",), model="llama3.1",
                   created=TimeRange(start=loaded.start + timedelta(days=335))), None),
        ("combo: user's own, text", RunFilter(text=word), user),
        ("combo: agent, tool, metadata, tokens",
         RunFilter(agent_id=AGENTS[5], tool="web_search", metadata=(("channel", "web"),),
                   total_tokens=NumberRange(low=1_000)), None),
    ]


async def bench_search(store: RunStore, loaded: LoadedRuns, calls: int, progress: Progress) -> list[CaseResult]:
    """Every search case's first page (default page size), `calls` times (or for SERIES_SECONDS) each."""
    kind = database_kind(store)
    results = []
    for name, search, owner in search_cases(loaded):
        progress(f"{kind}: search, {name}")
        for _ in range(WARMUP_CALLS):
            await store.list_runs(search=search, owner=owner)
        latencies_ms: list[float] = []
        total = Stopwatch()
        while len(latencies_ms) < calls and total.seconds < SERIES_SECONDS:
            watch = Stopwatch()
            await store.list_runs(search=search, owner=owner)
            latencies_ms.append(watch.ms)
        seconds = total.seconds
        page, _ = await store.list_runs(search=search, owner=owner)
        async with store.database.engine.connect() as connection:
            common = await prepare_search(connection, search, checked_page_size(0), owner)
        statement = store.list_runs_statement(search=search, owner=owner, common_words=common)
        facts = {"found": len(page), "plan": await explain(store, statement)}
        results.append(CaseResult(f"search: {name}", kind, len(latencies_ms), seconds, latencies_ms,
                                  goal=SEARCH_GOAL, facts=facts))
    return results

