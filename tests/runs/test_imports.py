"""The run store's bulk import of ended runs (`RunStore.import_runs`, services/runs/imports.py): a record read
from a store goes back in as it was, and what cannot be imported as it is, is refused."""

import dataclasses

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.limits import RunLimits
from services.common.usage import Usage
from services.runs.records import ModelCallStats, NewStep, RunRecord
from services.runs.store import RunStore
from tests.runs.helpers import EXECUTOR, new_run

WORKFLOW = "7d9f3c1e-2b4a-4c5d-8e6f-0a1b2c3d4e5f"


async def ended_runs(store: RunStore) -> list[RunRecord]:
    """Three ended runs, as GetRun returns them: completed on a thread with a model call, failed with limits,
    and a workflow run cancelled while queued."""
    call = ModelCallStats(Usage(12, 3), time_to_first_token_ms=4.5, latency_ms=9.0)
    steps = (NewStep("user-request", {"text": "q"}), NewStep("agent-response", {"text": "a"}, model_call=call))
    completed = await store.create_run(new_run("q", metadata={"channel": "web"}, steps=steps))
    await store.finish_run(completed.id, "completed")
    limits = RunLimits(max_model_calls=3, max_duration_seconds=1.5, max_total_tokens=100, max_tool_calls=2)
    failed = await store.create_run(new_run("f", limits=limits, model="demo"))
    await store.finish_run(failed.id, "failed", "boom", "it failed")
    workflow = await store.create_run(new_run("w", workflow_id=WORKFLOW, workflow_revision=2, state="queued"))
    await store.cancel_run(workflow.id, "not needed")
    return [await store.get_run(run.id) for run in (completed, failed, workflow)]


async def test_a_run_read_from_the_store_goes_back_in_as_it_was(store: RunStore) -> None:
    runs = await ended_runs(store)
    assert [run.state for run in runs] == ["completed", "failed", "cancelled"]
    assert runs[0].thread_id and runs[0].steps[1].model_call and runs[2].cancel_requested
    for run in runs:
        await store.delete_run(run.id)
    assert await store.import_runs(runs) == 3
    assert [await store.get_run(run.id) for run in runs] == runs


async def test_runs_import_in_batches_and_a_summary_keeps_its_step_count(store: RunStore) -> None:
    runs = await ended_runs(store)
    for run in runs:
        await store.delete_run(run.id)
    summaries = [dataclasses.replace(run, steps=[]) for run in runs]
    told: list[int] = []
    assert await store.import_runs(iter(summaries), batch_size=2, progress=told.append) == 3
    # Told after each batch; on PostgreSQL the two batches are written at once, and either may end first.
    assert len(told) == 2 and told[-1] == 3
    page, _ = await store.list_runs()
    assert {run.id: run.step_count for run in page} == {run.id: run.step_count for run in runs}
    assert (await store.get_run(runs[0].id)).steps == []


async def test_what_cannot_be_imported_as_it_is_is_refused(store: RunStore) -> None:
    runs = await ended_runs(store)
    live = await store.create_run(new_run("live", executor_id=EXECUTOR))
    with pytest.raises(InvalidArgument, match="only ended runs"):
        await store.import_runs([live])
    with pytest.raises(InvalidArgument, match="user query cut"):
        await store.import_runs([dataclasses.replace(runs[1], user_query_truncated=True)])
    with pytest.raises(InvalidArgument, match="not steps 1 to 2"):
        await store.import_runs([dataclasses.replace(runs[0], steps=runs[0].steps[1:])])
    with pytest.raises(InvalidArgument, match="not a valid run id"):
        await store.import_runs([dataclasses.replace(runs[1], id="nope")])
    with pytest.raises(FailedPrecondition, match="stored already"):
        await store.import_runs([runs[1]])


async def test_an_id_is_stored_in_its_canonical_form(store: RunStore) -> None:
    run = (await ended_runs(store))[1]
    await store.delete_run(run.id)
    await store.import_runs([dataclasses.replace(run, id=run.id.upper())])
    assert await store.get_run(run.id) == run


async def test_the_first_failure_ends_the_import_and_the_batches_before_it_stay(store: RunStore) -> None:
    runs = await ended_runs(store)
    for run in runs:
        await store.delete_run(run.id)
    # Batches of one: runs[0] is written, the live run stops the import, runs[2] is never written.
    live = dataclasses.replace(runs[1], state="running")
    with pytest.raises(InvalidArgument, match="only ended runs"):
        await store.import_runs([runs[0], live, runs[2]], batch_size=1)
    assert await store.get_run(runs[0].id) == runs[0]
    for missing in runs[1:]:
        with pytest.raises(NotFound):
            await store.get_run(missing.id)
