"""`python -m bench.store [--smoke] [--runs N] [--sqlite-only | --postgres-url URL]`: the run store benchmark.

Progress goes to stderr; the table and its legend to stdout.
"""

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from bench.store.appends import APPENDS_GOAL, BASELINE_TRIES
from bench.store.databases import fresh_postgres_database, sqlite_file_url
from bench.store.listing import LIST_GOAL, plan_summary
from bench.store.results import Stopwatch, results_table
from bench.store.search import SEARCH_GOAL
from bench.store.suite import SMOKE, DatabaseRun, Progress, Sizes, bench_database, progress_to_stderr


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: every case runs, in seconds")
    parser.add_argument("--runs", type=int, help=f"runs stored for ListRuns (default {Sizes.runs:,})")
    parser.add_argument("--appends", type=int, help=f"steps appended in all (default {Sizes.appends:,})")
    databases = parser.add_mutually_exclusive_group()
    databases.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL")
    databases.add_argument(
        "--postgres-url",
        help="a PostgreSQL server to use (postgresql+asyncpg://user@host:port/db); the benchmark works in a new "
        "database of its own there and drops it at the end. Default: a throwaway server, as the tests start",
    )
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = SMOKE if args.smoke else Sizes()
    if args.runs is not None:
        sizes = dataclasses.replace(sizes, runs=args.runs)
    if args.appends is not None:
        sizes = dataclasses.replace(sizes, appends=args.appends)
    if sizes.runs < 2 or sizes.appends < sizes.append_runs:
        raise SystemExit(f"--runs must be at least 2 and --appends at least {sizes.append_runs}")
    return sizes


@asynccontextmanager
async def postgres_database(server_url: str | None, progress: Progress) -> AsyncIterator[str]:
    """A new database on `server_url`, or on a throwaway server started here (tests/support/postgres.py)."""
    if server_url:
        async with fresh_postgres_database(server_url) as url:
            yield url
        return
    from tests.support.postgres import find_postgres_bin, postgres_server

    if find_postgres_bin() is None:
        raise SystemExit("PostgreSQL is not installed (apt-get install postgresql); or pass --postgres-url URL, "
                         "or --sqlite-only")
    progress("postgresql: starting a throwaway server")
    with postgres_server() as server_url:
        async with fresh_postgres_database(server_url) as url:
            yield url


async def run(args: argparse.Namespace, progress: Progress) -> list[DatabaseRun]:
    sizes = sizes_from(args)
    runs: list[DatabaseRun] = []
    with sqlite_file_url() as url:
        runs.append(await bench_database(url, sizes, progress))
    if not args.sqlite_only:
        async with postgres_database(args.postgres_url, progress) as url:
            runs.append(await bench_database(url, sizes, progress))
    return runs


def legend(runs: Sequence[DatabaseRun], args: argparse.Namespace) -> str:
    appends = runs[0].appends
    lines = [
        f"- append_steps: {appends.facts['runs']} RUNNING runs at once, each appending its steps one per call "
        "with explicit sequences, as the engine does (a tool-using turn: thought, tool call, tool result, "
        "response); ops/s = steps/s over the whole burst, p50/p99 = one append. baseline = the same rows as "
        f"single-row INSERTs through the driver (aiosqlite, asyncpg) in one transaction, best of {BASELINE_TRIES} "
        f"tries: the database's ceiling; ratio = store / baseline. Goal {APPENDS_GOAL.describe()}.",
        "- list_runs: newest first, default page size, over the stored finished runs; the middle page's token is "
        "the one paging there gives (built from the run before it; the tests check it against paging). "
        f"Goal {LIST_GOAL.describe()} for every ListRuns row.",
        "- search: the first page (default size, newest first unless the case orders otherwise) of each filter "
        "alone over every user's runs (an admin's search; \"user\" is one user's own listing), then three "
        f"combinations (bench/store/search.py). Goal {SEARCH_GOAL.describe()} (issue 21).",
        "- get_run: one finished run read with all its steps. n = calls measured (after a few untimed ones).",
        "- sqlite: a temporary file with the service's settings (WAL, synchronous=NORMAL, BEGIN IMMEDIATE). "
        + (
            f"postgresql: a new database on {args.postgres_url.split('@')[-1]}."
            if args.postgres_url
            else "postgresql: a throwaway local server as the tests start it (fsync=off, so no commit waits "
            "for the disk; neither does SQLite's WAL with synchronous=NORMAL)."
        ),
    ]
    for database_run in runs:
        lines.append(
            f"- {database_run.database}: {database_run.runs_loaded:,} runs loaded in "
            f"{database_run.load_seconds:.1f} s ({database_run.runs_loaded / database_run.load_seconds:,.0f} "
            "runs/s, in no figure). Appends cost this process "
            f"{database_run.appends.facts['cpu_ms_per_append']:.2f} ms of CPU each."
        )
        if errors := database_run.appends.facts["errors"]:
            lines.append(f"  - {len(errors)} appends FAILED (each stopped its run's appends); the first: {errors[0]}")
        lines.append("  Plans (PostgreSQL's Execution Time is the database's share of a call):")
        for result in (database_run.listing.first, database_run.listing.failed, database_run.listing.deep):
            lines.append(f"  - {result.case}: {plan_summary(result.facts['plan'])}")
        slowest = sorted(database_run.search, key=lambda result: result.p99_ms)[-3:]
        lines.append("  The slowest searches' plans:")
        for result in reversed(slowest):
            lines.append(f"  - {result.case} (p99 {result.p99_ms:.1f} ms, {result.facts['found']} found): "
                         f"{plan_summary(result.facts['plan'])}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    progress = progress_to_stderr()
    watch = Stopwatch()
    runs = asyncio.run(run(args, progress))
    print(results_table([result for database_run in runs for result in database_run.results]))
    print()
    print(results_table([result for database_run in runs for result in database_run.search]))
    print()
    print(legend(runs, args))
    progress(f"done in {watch.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
