"""Every case on one database, and the sizes they run at."""

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.store.appends import bench_appends
from bench.store.databases import database_kind, opened_store
from bench.store.get_run import bench_get_run
from bench.store.listing import ListingResults, bench_list_runs
from bench.store.loading import load_runs
from bench.store.results import CaseResult, Stopwatch
from bench.store.search import bench_search

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Sizes:
    #: Finished runs stored before ListRuns is measured.
    runs: int = 1_000_000
    #: Runs appended to at once, and the steps appended to them in all, one per call.
    append_runs: int = 32
    appends: int = 8_000
    #: Steps of the run GetRun reads.
    run_steps: int = 1_000
    #: Measured calls of each ListRuns case, and of GetRun.
    list_calls: int = 200
    get_calls: int = 100


#: Tiny sizes: every case runs, in seconds (the tests run these).
SMOKE = Sizes(runs=1_000, appends=200, run_steps=50, list_calls=20, get_calls=10)


@dataclass(frozen=True)
class DatabaseRun:
    """The cases measured on one database, and how long filling it took (not part of any figure)."""

    database: str
    runs_loaded: int
    load_seconds: float
    appends: CaseResult
    listing: ListingResults
    get_run: CaseResult
    #: The search cases (bench/store/search.py), after the rest in the table.
    search: list[CaseResult]

    @property
    def results(self) -> list[CaseResult]:
        """The table's rows, in the order of the cases."""
        return [self.appends, self.listing.first, self.listing.failed, self.listing.deep, self.get_run]


def progress_to_stderr() -> Progress:
    """Progress lines on stderr, each with the seconds since the benchmark started."""
    started = time.perf_counter()

    def report(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    return report


async def bench_database(url: str, sizes: Sizes, progress: Progress) -> DatabaseRun:
    """Every case on the empty database at `url`, through a RunStore made as the runs service makes it.

    ListRuns goes first, right after the load, so that the runs it pages through are exactly the loaded ones.
    """
    async with opened_store(url) as store:
        kind = database_kind(store)
        progress(f"{kind}: loading {sizes.runs:,} finished runs")
        watch = Stopwatch()
        loaded = await load_runs(store, sizes.runs, progress)
        load_seconds = watch.seconds
        progress(f"{kind}: loaded in {load_seconds:.1f} s ({sizes.runs / load_seconds:,.0f} runs/s)")
        listing = await bench_list_runs(store, loaded, sizes.list_calls, progress)
        search = await bench_search(store, loaded, sizes.list_calls, progress)
        appends = await bench_appends(store, sizes.append_runs, sizes.appends, progress)
        get_run = await bench_get_run(store, sizes.run_steps, sizes.get_calls, progress)
    return DatabaseRun(kind, sizes.runs, load_seconds, appends, listing, get_run, search)
