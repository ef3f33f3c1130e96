"""RunStore's listing on a real database (SQLite and PostgreSQL): keyset pages and their tokens, page sizes, long
queries, the page's byte bound, and the query plans that keep a deep page an index range read."""

import pytest

from bench.store.listing import explain
from services.common.db.database import Database
from services.common.errors import InvalidArgument
from services.common.pages import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, checked_page_size
from services.runs.queries import LIST_QUERY_CHARS
from services.runs.search import RunFilter
from services.runs.store import RunStore
from tests.runs.helpers import new_run, set_columns

# --- listing -----------------------------------------------------------------------------------------------


async def test_list_runs_pages_newest_first_by_keyset(store: RunStore) -> None:
    created = [await store.create_run(new_run(f"q{i}")) for i in range(5)]
    for run in created[::2]:
        await store.finish_run(run.id, "completed")
    page1, token = await store.list_runs(page_size=2)
    # A run created while paging is newer than the whole listing, so it shifts nothing that follows.
    await store.create_run(new_run("newcomer"))
    page2, token = await store.list_runs(page_size=2, page_token=token)
    page3, last_token = await store.list_runs(page_size=2, page_token=token)
    listed = [run.id for run in page1 + page2 + page3]
    assert listed == [run.id for run in reversed(created)] and last_token == ""
    completed, token = await store.list_runs(page_size=10, search=RunFilter(states=("completed",)))
    assert [run.id for run in completed] == [created[4].id, created[2].id, created[0].id] and token == ""
    queued = await store.create_run(new_run("waiting", state="queued"))
    assert [run.id for run in (await store.list_runs(search=RunFilter(states=("queued",))))[0]] == [queued.id]


async def test_list_runs_rejects_bad_tokens_sizes_and_states(store: RunStore) -> None:
    for _ in range(3):
        await store.create_run(new_run())
    _, token = await store.list_runs(page_size=1)
    assert token
    for bad in ("garbage", "eyJhIjoxfQ==", token[:-4]):
        with pytest.raises(InvalidArgument, match=r"^page_token is not valid for this request: .* ListRuns returned"):
            await store.list_runs(page_size=1, page_token=bad)
    with pytest.raises(InvalidArgument, match="page_token is not valid"):
        await store.list_runs(page_size=1, page_token=token, search=RunFilter(states=("running",)))
    with pytest.raises(InvalidArgument, match="page_size must be >= 0, got -3"):
        await store.list_runs(page_size=-3)
    with pytest.raises(InvalidArgument, match=r"^states\[0\] is an unknown run state 'paused'"):
        await store.list_runs(search=RunFilter(states=("paused",)))


def test_page_size_defaults_and_caps() -> None:
    assert checked_page_size(0) == DEFAULT_PAGE_SIZE == 50
    assert checked_page_size(5000) == MAX_PAGE_SIZE == 1000
    assert checked_page_size(7) == 7


async def test_list_runs_cuts_long_queries_and_get_run_returns_them_whole(store: RunStore, database: Database) -> None:
    exact = await store.create_run(new_run("a" * LIST_QUERY_CHARS))
    over = await store.create_run(new_run("b" * (LIST_QUERY_CHARS + 1)))
    huge = await store.create_run(new_run("placeholder"))
    # 3 MB of two-byte characters: a row from before CreateRun had a size limit. Cut by characters, not bytes.
    await set_columns(database, huge.id, user_query="é" * 1_500_000)
    page, token = await store.list_runs()
    listed = {run.id: (run.user_query, run.user_query_truncated) for run in page}
    assert token == "" and len(listed) == 3
    assert listed[exact.id] == ("a" * 1000, False)
    assert listed[over.id] == ("b" * 1000, True)
    assert listed[huge.id] == ("é" * 1000, True)
    whole = await store.get_run(huge.id)
    assert whole.user_query == "é" * 1_500_000 and not whole.user_query_truncated


async def test_a_list_page_ends_before_it_grows_past_a_mebibyte(store: RunStore, database: Database) -> None:
    created = [await store.create_run(new_run(f"q{i}")) for i in range(3)]
    for run in created:
        # Error messages are capped at 16 KiB now; rows from before the cap can be much longer.
        await set_columns(database, run.id, state="failed", error_code="x", error_message="e" * 400_000)
    page1, token = await store.list_runs()
    assert [run.id for run in page1] == [created[2].id, created[1].id] and token
    page2, token = await store.list_runs(page_token=token)
    assert [run.id for run in page2] == [created[0].id] and token == ""


# --- query plans ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [None, "failed"])
async def test_a_list_page_is_read_by_index_range_not_by_a_scan(store: RunStore, state: str | None) -> None:
    """A deep page (and a page of one state) seeks into an index and reads its own rows: the plan has no scan
    of the runs table and no sort (a scan from the newest run cost 100-250 ms at 1,000,000 runs)."""
    for n in range(3):
        run = await store.create_run(new_run(f"q{n}"))
        await store.finish_run(run.id, "failed", "boom", "it failed")
    search = RunFilter(states=(state,) if state else ())
    _, token = await store.list_runs(page_size=1, search=search)
    plan = await explain(store, store.list_runs_statement(page_size=1, page_token=token, search=search))
    if store.database.is_sqlite:
        assert any("SEARCH runs USING" in line and "INDEX ix_runs_" in line for line in plan), plan
        assert not any(line.startswith("SCAN runs") or "TEMP B-TREE" in line for line in plan), plan
    else:
        assert any("Index Scan Backward using ix_runs_" in line for line in plan), plan
        assert any("Index Cond" in line and "ROW(created_at" in line for line in plan), plan
        assert not any("Rows Removed by Filter" in line or "Sort" in line for line in plan), plan
