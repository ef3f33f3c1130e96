"""Case 3: GetRun of a finished run with many steps, as the timeline view reads it."""

from collections.abc import Callable, Sequence

from bench.store.databases import database_kind
from bench.store.results import CaseResult, Stopwatch
from bench.store.steps import new_run, new_step
from services.common.run_vocabulary import COMPLETED
from services.runs.records import StepRecord
from services.runs.store import RunStore

#: Steps per AppendSteps call while the run is built (not measured).
SETUP_BATCH = 100
WARMUP_CALLS = 3


async def _run_with_steps(store: RunStore, steps: int) -> str:
    run_id = (await store.create_run(new_run())).id
    for first in range(1, steps + 1, SETUP_BATCH):
        last = min(steps, first + SETUP_BATCH - 1)
        await store.append_steps(run_id, [new_step(sequence) for sequence in range(first, last + 1)])
    await store.finish_run(run_id, COMPLETED)
    return run_id


async def bench_get_run(store: RunStore, steps: int, calls: int, progress: Callable[[str], None]) -> CaseResult:
    """GetRun with steps, `calls` times, of a run with `steps` steps."""
    kind = database_kind(store)
    progress(f"{kind}: GetRun of a run with {steps:,} steps")
    run_id = await _run_with_steps(store, steps)
    for _ in range(WARMUP_CALLS):
        await store.get_run(run_id, with_steps=True)
    latencies_ms: list[float] = []
    returned: set[int] = set()
    total = Stopwatch()
    for _ in range(calls):
        watch = Stopwatch()
        run = await store.get_run(run_id, with_steps=True)
        latencies_ms.append(watch.ms)
        returned.add(len(run.steps))
    return CaseResult(
        f"get_run ({steps:,} steps)",
        kind,
        calls,
        total.seconds,
        latencies_ms,
        facts={"steps_returned": sorted(returned), "sequences_in_order": _in_order(run.steps)},
    )


def _in_order(steps: Sequence[StepRecord]) -> bool:
    return [step.sequence for step in steps] == list(range(1, len(steps) + 1))
