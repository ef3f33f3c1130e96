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
from sqlalchemy.exc import IntegrityError

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.run_vocabulary import FINAL_STATES
from services.runs.checks import parse_run_id
from services.runs.parts import StoreParts
from services.runs.records import RunRecord
from services.runs.rows import RUN_TOOLS, RUNS, STEPS, search_facts, stored_run_values, stored_step_values

#: Runs per transaction: big enough that commits cost nothing, small enough to keep memory flat.
IMPORT_BATCH = 25_000

Rows = list[dict[str, Any]]
#: A run id as the store writes it (str of a UUID): kept as it is, where parsing it would cost a million runs a
#: couple of seconds. Any other form is parsed (and refused if it is no UUID).
_CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _rows_of(run: RunRecord) -> tuple[dict[str, Any], Rows, Rows]:
    """The row of `run`, of its steps and of the tools it called (run_tools); InvalidArgument for a run that cannot
    be imported as it is."""
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
    return row, [stored_step_values(run_id, step) for step in run.steps], tool_rows


def _batches(runs: Iterable[RunRecord], size: int) -> Iterator[tuple[Rows, Rows, Rows]]:
    """The rows of `runs`, of their steps and of their tools, `size` runs at a time."""
    records = iter(runs)
    while batch := list(islice(records, size)):
        run_rows: Rows = []
        step_rows: Rows = []
        tool_rows: Rows = []
        for run in batch:
            row, steps, tools = _rows_of(run)
            run_rows.append(row)
            step_rows.extend(steps)
            tool_rows.extend(tools)
        yield run_rows, step_rows, tool_rows


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
        a summary, as ListRuns shows it. A run on a thread needs that thread stored already. Each `batch_size`
        runs are one transaction; `progress` is told the runs stored so far after each. The first failure
        ends the import (InvalidArgument for a record that cannot be imported, FailedPrecondition for a run
        stored already or a thread that is not), and the batches committed until then stay.

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
                await connection.execute(text(f"ANALYZE {RUNS.name}, {STEPS.name}, {RUN_TOOLS.name}"))
        return stored

    async def _insert(self, run_rows: Rows, step_rows: Rows, tool_rows: Rows) -> int:
        try:
            async with self.database.write() as session:
                connection = await session.connection()
                await connection.execute(insert(RUNS), run_rows)
                if step_rows:
                    await connection.execute(insert(STEPS), step_rows)
                if tool_rows:
                    await connection.execute(insert(RUN_TOOLS), tool_rows)
        except IntegrityError as error:
            first, last = run_rows[0]["id"], run_rows[-1]["id"]
            raise FailedPrecondition(
                f"the runs '{first}' to '{last}' were not imported: one of them is stored already, or its thread "
                f"is not ({error.orig})"
            ) from None
        return len(run_rows)
