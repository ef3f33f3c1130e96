"""The run store benchmark (`python -m bench.store`) at its smoke sizes: every case runs on SQLite and
PostgreSQL and reports what it should. Timings are not asserted: only that they are figures."""

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.store.__main__ import main
from bench.store.databases import fresh_postgres_database, opened_store
from bench.store.listing import seek_token, walk_to
from bench.store.loading import CHUNK, HISTORY, LoadedRuns, load_runs
from bench.store.search import search_cases
from bench.store.suite import SMOKE, DatabaseRun, bench_database
from services.common.pages import DEFAULT_PAGE_SIZE


def quiet(message: str) -> None:
    """Progress goes nowhere in the tests."""


def check(run: DatabaseRun, database: str) -> None:
    """Every case ran on `database`, counted what it should and returned what it should."""
    assert [result.database for result in run.results] == [database] * 5
    for result in run.results:
        assert result.count == len(result.latencies_ms) > 0, result.case
        assert 0 < result.p50_ms <= result.p99_ms, result.case
        assert math.isfinite(result.per_second), result.case
    assert run.runs_loaded == SMOKE.runs and run.load_seconds > 0

    appends = run.appends
    assert appends.facts["errors"] == []
    assert appends.facts["cpu_ms_per_append"] > 0
    assert appends.count == appends.facts["steps_stored"] == SMOKE.appends
    assert appends.baseline_per_second is not None and appends.baseline_per_second > 0

    first, failed, deep = run.listing.first, run.listing.failed, run.listing.deep
    assert first.count == failed.count == deep.count == SMOKE.list_calls
    assert len(first.facts["ids"]) == DEFAULT_PAGE_SIZE
    assert first.facts["ids"] == first.facts["expected_ids"]
    assert failed.facts["ids"] and failed.facts["states"] == {"failed"}
    # The middle page is the page there: the runs right after the first half, newest first.
    assert deep.facts["position"] == SMOKE.runs // 2
    assert len(deep.facts["ids"]) == DEFAULT_PAGE_SIZE
    assert deep.facts["ids"] == deep.facts["expected_ids"]
    assert all(result.facts["plan"] for result in (first, failed, deep))

    assert run.search and all(result.count > 0 and result.facts["plan"] for result in run.search)
    # The loaded runs hold a match of every search but the rare words' (and the run a user made last).
    assert all(result.facts["found"] for result in run.search if "rare" not in result.case), [
        result.case for result in run.search if not result.facts["found"]
    ]

    assert run.get_run.count == SMOKE.get_calls
    assert run.get_run.facts == {"steps_returned": [SMOKE.run_steps], "sequences_in_order": True}


async def test_every_case_on_sqlite(tmp_path: Path) -> None:
    check(await bench_database(f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}", SMOKE, quiet), "sqlite")


@pytest.mark.postgres
async def test_every_case_on_postgres(postgres_url: str) -> None:
    async with fresh_postgres_database(postgres_url) as url:
        check(await bench_database(url, SMOKE, quiet), "postgresql")


async def test_the_built_page_token_is_the_one_paging_gives(tmp_path: Path) -> None:
    async with opened_store(f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}") as store:
        loaded = await load_runs(store, 2_500, quiet)
        for position in (1, 999, 1_000, 1_250, 2_499):
            assert seek_token(store, loaded, position) == await walk_to(store, position)


def test_a_run_is_made_again_the_same_from_its_chunk() -> None:
    loaded = LoadedRuns(CHUNK + 100, seed=6, start=datetime.now(UTC) - HISTORY)
    every = list(loaded.oldest_first())
    assert len(every) == loaded.count
    assert [run.created_at for run in every] == sorted({run.created_at for run in every})
    assert list(loaded.oldest_first(CHUNK - 2, CHUNK + 3)) == every[CHUNK - 2 : CHUNK + 3]
    assert loaded.newest_first(0, 3) == every[:-4:-1]
    assert loaded.newest_first(loaded.count - 2, 5) == every[1::-1]


def test_the_command_prints_a_row_per_case_and_the_goals(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--smoke", "--sqlite-only"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "| sqlite " in line]
    names = [row.split("|")[1].strip() for row in rows]
    assert names[:5] == [
        "append_steps (1 step/call)",
        "list_runs first page",
        "list_runs first page, state=failed",
        f"list_runs page at run {SMOKE.runs // 2}",
        f"get_run ({SMOKE.run_steps} steps)",
    ]
    # Then the search's table: every case of bench/store/search.py, and the plans of the slowest.
    cases = len(search_cases(LoadedRuns(SMOKE.runs, 6, datetime.now(UTC))))
    assert len(names) == 5 + cases and all(name.startswith("search: ") for name in names[5:])
    assert ">= 5,000/s" in out and "p99 < 10 ms" in out and "p99 < 20 ms" in out
    assert "The slowest searches' plans:" in out
