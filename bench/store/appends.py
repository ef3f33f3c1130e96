"""Case 1: concurrent runs appending steps one per call, as engines do, beside the database's own ceiling
for the same rows."""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiosqlite
import asyncpg

from bench.store.databases import POSTGRES, SQLITE, database_kind, sqlite_path
from bench.store.results import CaseResult, Goal, Stopwatch
from bench.store.steps import STEP_COLUMNS, new_run, new_step, step_row
from services.common.db.database import asyncpg_dsn
from services.common.run_vocabulary import COMPLETED
from services.runs.store import RunStore

APPENDS_GOAL = Goal(min_per_second=5_000)
#: The burst stops early after this long, so a slow store costs seconds, not minutes (n says how many ran).
BURST_SECONDS = 20.0
#: The driver baseline is the best of this many tries.
BASELINE_TRIES = 3

Progress = Callable[[str], None]


def split(total: int, parts: int) -> list[int]:
    """`total` spread over `parts` as evenly as whole numbers allow."""
    return [total // parts + (1 if part < total % parts else 0) for part in range(parts)]


@dataclass
class _Burst:
    """What the appenders share: the clock of the burst, each append's latency, and the appends that failed."""

    clock: Stopwatch = field(default_factory=Stopwatch)
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def _append_one_by_one(store: RunStore, run_id: str, count: int, burst: _Burst) -> int:
    """Append steps 1 to `count` to the run, one per call, until done, BURST_SECONDS into the burst, or an
    append fails (a result too: it is reported, not raised); how many it appended."""
    for sequence in range(1, count + 1):
        if burst.clock.seconds > BURST_SECONDS:
            return sequence - 1
        watch = Stopwatch()
        try:
            await store.append_steps(run_id, [new_step(sequence)])
        except Exception as error:  # whatever the store fails with under load is a finding to print
            burst.errors.append(f"{type(error).__name__}: {error}".splitlines()[0][:200])
            return sequence - 1
        burst.latencies_ms.append(watch.ms)
    return count


async def _create_runs(store: RunStore, count: int) -> list[str]:
    return [(await store.create_run(new_run())).id for _ in range(count)]


async def bench_appends(store: RunStore, runs: int, appends: int, progress: Progress) -> CaseResult:
    """`appends` steps appended to `runs` RUNNING runs at once, each run's steps one per call in order."""
    kind = database_kind(store)
    counts = split(appends, runs)
    run_ids = await _create_runs(store, runs)
    progress(f"{kind}: appending {appends:,} steps to {runs} runs, one step per call")
    burst = _Burst()
    # CPU time of this process (every thread: aiosqlite's too): unlike wall time, it hardly moves when
    # neighbours load the shared machine, and 1000 / (ms per append) bounds the appends one core can serve.
    cpu_started = time.process_time()
    workers = [_append_one_by_one(store, run_id, count, burst) for run_id, count in zip(run_ids, counts, strict=True)]
    appended = await asyncio.gather(*workers)
    seconds = burst.clock.seconds
    cpu_ms_per_append = (time.process_time() - cpu_started) * 1000 / max(len(burst.latencies_ms), 1)
    if burst.errors:
        progress(f"{kind}: {len(burst.errors)} appends failed, the first: {burst.errors[0]}")
    stored = 0
    for run_id in run_ids:
        stored += (await store.finish_run(run_id, COMPLETED)).step_count
    progress(
        f"{kind}: driver baseline, {sum(appended):,} single-row inserts in one transaction, best of {BASELINE_TRIES}"
    )
    baseline = await _driver_baseline(store, appended)
    return CaseResult(
        "append_steps (1 step/call)",
        kind,
        len(burst.latencies_ms),
        seconds,
        burst.latencies_ms,
        baseline_per_second=sum(appended) / baseline,
        goal=APPENDS_GOAL,
        facts={"runs": runs, "steps_stored": stored, "errors": burst.errors, "cpu_ms_per_append": cpu_ms_per_append},
    )


async def _driver_baseline(store: RunStore, counts: list[int]) -> float:
    """Seconds the driver takes to insert the same steps (into runs of their own) as single-row INSERTs in
    one transaction: what the database can do with no store, no ORM and no commit per step. The best of
    BASELINE_TRIES, as a ceiling should be: one try is short enough for a WAL checkpoint or a busy neighbour
    to halve it."""
    return min([await _driver_inserts(store, counts) for _ in range(BASELINE_TRIES)])


async def _driver_inserts(store: RunStore, counts: list[int]) -> float:
    run_ids = await _create_runs(store, len(counts))
    now = datetime.now(UTC)
    # SQLite stores times as SQLAlchemy writes them (naive UTC text); asyncpg takes the datetime itself.
    created_at: Any = now.replace(tzinfo=None).isoformat(" ") if database_kind(store) == SQLITE else now
    rows = [
        step_row(run_id, sequence, created_at)
        for run_id, count in zip(run_ids, counts, strict=True)
        for sequence in range(1, count + 1)
    ]
    inserter = _sqlite_inserts if database_kind(store) == SQLITE else _postgres_inserts
    seconds = await inserter(store, rows)
    for run_id in run_ids:
        await store.finish_run(run_id, COMPLETED)
    return seconds


async def _sqlite_inserts(store: RunStore, rows: list[tuple[Any, ...]]) -> float:
    placeholders = ", ".join("?" for _ in STEP_COLUMNS)
    statement = f"INSERT INTO run_steps ({', '.join(STEP_COLUMNS)}) VALUES ({placeholders})"
    # isolation_level None: we say BEGIN ourselves, as the store's connections do.
    async with aiosqlite.connect(sqlite_path(store), isolation_level=None) as connection:
        # The service's connection settings (services/common/db/database.py), so both write the same way.
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=10000", "synchronous=NORMAL"):
            await connection.execute(f"PRAGMA {pragma}")
        watch = Stopwatch()
        await connection.execute("BEGIN IMMEDIATE")
        await connection.executemany(statement, rows)
        await connection.execute("COMMIT")
        return watch.seconds


async def _postgres_inserts(store: RunStore, rows: list[tuple[Any, ...]]) -> float:
    assert database_kind(store) == POSTGRES
    placeholders = ", ".join(f"${number}" for number in range(1, len(STEP_COLUMNS) + 1))
    statement = f"INSERT INTO run_steps ({', '.join(STEP_COLUMNS)}) VALUES ({placeholders})"
    connection = await asyncpg.connect(asyncpg_dsn(store.database.engine.url))
    try:
        watch = Stopwatch()
        async with connection.transaction():
            await connection.executemany(statement, rows)
        return watch.seconds
    finally:
        await connection.close()
