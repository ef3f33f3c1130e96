"""Bulk import of finished runs into the run store (no gRPC here). Part of `RunStore`.

Runs read from a store (GetRun's records with their steps, or ListRuns' without) are written as they are, ids,
times, states, usage and labels kept, many runs per statement and transaction: for copying or restoring ended
runs, and for filling a store to measure it (`make bench-runs` stores a million runs, where `create_run` one by
one would take the whole budget). Live runs are not imported: they belong to the engine holding their lease.
"""

import asyncio
import re
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.run_vocabulary import FINAL_STATES
from services.runs.checks import parse_run_id
from services.runs.full_text import PG_TEXTS, PG_TEXTS_INDEX
from services.runs.models import THREAD_TITLE_CHARS
from services.runs.parts import StoreParts
from services.runs.records import RunRecord
from services.runs.rows import RUN_TOOLS, RUNS, STEPS, search_facts, stored_run_values, stored_step_values
from services.runs.scores import SCORES, stored_score_values
from services.runs.threads import THREADS

#: Runs per transaction: big enough that commits cost nothing, small enough to keep memory flat.
IMPORT_BATCH = 25_000

Rows = list[dict[str, Any]]
#: A run id as the store writes it (str of a UUID): kept as it is, where parsing it would cost a million runs a
#: couple of seconds. Any other form is parsed (and refused if it is no UUID).
_CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _rows_of(run: RunRecord) -> tuple[dict[str, Any], Rows, Rows, Rows]:
    """The row of `run`, of its steps, of the tools it called (run_tools) and of its scores; InvalidArgument for a
    run that cannot be imported as it is."""
    run_id = run.id if _CANONICAL_ID.fullmatch(run.id) else parse_run_id(run.id, "id")
    if run.state not in FINAL_STATES:
        raise InvalidArgument(
            f"run '{run_id}' is {run.state}: only ended runs ({', '.join(FINAL_STATES)}) can be imported"
        )
    if run.user_query_truncated:
        raise InvalidArgument(f"run '{run_id}' has its user query cut (a ListRuns record); import GetRun's record")
    if run.steps and [step.sequence for step in run.steps] != list(range(1, run.step_count + 1)):
        raise InvalidArgument(f"run '{run_id}' has {run.step_count} steps, but not steps 1 to {run.step_count}")
    row = stored_run_values(run)
    row["id"] = run_id
    columns, tools = search_facts(run)
    row.update(columns)
    tool_rows = [{"run_id": run_id, "tool": tool} for tool in tools]
    score_rows = [stored_score_values(score) for score in run.scores]
    return row, [stored_step_values(run_id, step) for step in run.steps], tool_rows, score_rows


def _batches(runs: Iterable[RunRecord], size: int) -> Iterator[tuple[Rows, Rows, Rows, Rows]]:
    """The rows of `runs`, of their steps, of their tools and of their scores, `size` runs at a time."""
    records = iter(runs)
    while batch := list(islice(records, size)):
        run_rows: Rows = []
        step_rows: Rows = []
        tool_rows: Rows = []
        score_rows: Rows = []
        for run in batch:
            row, steps, tools, scores = _rows_of(run)
            run_rows.append(row)
            step_rows.extend(steps)
            tool_rows.extend(tools)
            score_rows.extend(scores)
        yield run_rows, step_rows, tool_rows, score_rows


def _threads_of(run_rows: Rows) -> Rows:
    """The threads rows of the runs' threads, as exported runs tell them: owned by their runs' user, titled by
    the first turn's request, active from the first turn to the last."""
    threads: dict[str, dict[str, Any]] = {}
    for row in sorted((row for row in run_rows if row["thread_id"]), key=lambda row: row["thread_turn"] or 0):
        thread = threads.setdefault(row["thread_id"], {
            "id": row["thread_id"], "owner": row["owner"], "title": row["user_query"][:THREAD_TITLE_CHARS],
            "created_at": row["created_at"], "updated_at": row["created_at"], "turn_count": 0,
        })
        thread["updated_at"] = max(thread["updated_at"], row["created_at"])
        thread["turn_count"] = max(thread["turn_count"], row["thread_turn"] or 0)
    return list(threads.values())


class RunImports(StoreParts):
    """The run store's bulk import (see the module docstring)."""

    async def import_runs(
        self,
        runs: Iterable[RunRecord],
        *,
        batch_size: int = IMPORT_BATCH,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Store the ended runs `runs` as they are, with the steps their records hold; returns how many.

        A record without its steps (step_count above 0, no steps) stores the run alone, with its step_count:
        a summary, as ListRuns shows it. A run's thread is stored with it unless it is
        already (titled by its first turn's request, as a thread made by CreateRun is). Each `batch_size`
        runs are one transaction; `progress` is told the runs stored so far after each. The first failure
        ends the import (InvalidArgument for a record that cannot be imported, FailedPrecondition for a run
        stored already), and the batches committed until then stay.

        Watchers and engines are not told: an ended run has nothing left to watch or execute.
        """
        if batch_size < 1:
            raise InvalidArgument(f"batch_size must be at least 1, not {batch_size}")
        # The store's writer would hold every other write behind a batch, and could not write two at once: a
        # batch is a transaction of its own. SQLite has one writer: a batch is written while the next is made
        # (its BEGIN IMMEDIATE waits for the writer's transaction, as the writer's waits for it). PostgreSQL
        # takes two at once, on two connections.
        at_once = 1 if self.database.is_sqlite else 2
        stored = 0
        writing: set[asyncio.Task[int]] = set()

        async def collect() -> None:
            nonlocal stored, writing
            done, writing = await asyncio.wait(writing, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                stored += task.result()
                if progress is not None:
                    progress(stored)

        try:
            for rows in _batches(runs, batch_size):
                while len(writing) >= at_once:
                    await collect()
                writing.add(asyncio.create_task(self._insert(*rows)))
            while writing:
                await collect()
        finally:
            if writing:
                # After a failure: the batches being written finish (a query cancelled mid-flight costs its
                # connection), and only the first error is raised.
                await asyncio.wait(writing)
                for task in writing:
                    task.exception()
        if stored and not self.database.is_sqlite:
            # Autovacuum would analyze the tables soon after such a load; the planner needs the statistics now.
            async with self.database.engine.begin() as connection:
                await connection.execute(
                    text(f"ANALYZE {RUNS.name}, {STEPS.name}, {RUN_TOOLS.name}, {PG_TEXTS}")
                )
                # The words GIN index keeps a load's new entries in its pending list, which every text search
                # reads through until autovacuum merges it (6.4 ms for rare words after 100,000 runs, 0.3 after).
                await connection.execute(text(f"SELECT gin_clean_pending_list('{PG_TEXTS_INDEX}')"))
        return stored

    async def _insert(self, run_rows: Rows, step_rows: Rows, tool_rows: Rows, score_rows: Rows) -> int:
        try:
            async with self.database.write() as session:
                connection = await session.connection()
                if threads := _threads_of(run_rows):
                    # A thread stored already (its other turns imported before) is kept as it is.
                    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
                    await connection.execute(dialect.insert(THREADS).on_conflict_do_nothing(), threads)
                await connection.execute(insert(RUNS), run_rows)
                if step_rows:
                    await connection.execute(insert(STEPS), step_rows)
                if tool_rows:
                    await connection.execute(insert(RUN_TOOLS), tool_rows)
                if score_rows:
                    await connection.execute(insert(SCORES), score_rows)
        except IntegrityError as error:
            first, last = run_rows[0]["id"], run_rows[-1]["id"]
            raise FailedPrecondition(
                f"the runs '{first}' to '{last}' were not imported: one of them, or its place in its thread, is "
                f"stored already ({error.orig})"
            ) from None
        return len(run_rows)
