"""RunStore's appends on a real database (SQLite and PostgreSQL): sequences, idempotent re-appends, conflicts and
gaps, and the group commit that batches the appends of many runs."""

import asyncio

import pytest
from sqlalchemy import insert

from services.common.db.database import Database, utcnow
from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.runs.models import RunStepRow
from services.runs.records import NewStep
from services.runs.store import RunStore
from tests.runs.helpers import UNKNOWN_RUN, new_run
from tests.runs.store_helpers import thought

# --- appending ---------------------------------------------------------------------------------------------


async def test_append_assigns_sequences_and_get_returns_steps_in_order(store: RunStore) -> None:
    run = await store.create_run(new_run())
    first = await store.append_steps(run.id, [NewStep("user-request", {"text": "q"}), thought("a")])
    second = await store.append_steps(run.id, [NewStep("tool-call", {"tool_name": "calculator"}, 3, 1.5)])
    assert [s.sequence for s in first + second] == [1, 2, 3]
    stored = await store.get_run(run.id)
    assert [(s.sequence, s.type) for s in stored.steps] == [(1, "user-request"), (2, "agent-thought"), (3, "tool-call")]
    assert stored.steps[2].content == {"tool_name": "calculator"} and stored.steps[2].duration_ms == 1.5
    assert stored.step_count == 3
    assert (await store.get_run(run.id, with_steps=False)).steps == []


async def test_reappending_a_stored_step_is_an_idempotent_no_op(store: RunStore) -> None:
    run = await store.create_run(new_run())
    [original] = await store.append_steps(run.id, [thought("a")])
    # A retry of step 1 next to a new step: the retry returns the stored step, the new one gets 2.
    again = await store.append_steps(run.id, [thought("a", 1), thought("b")])
    assert [(s.sequence, s.created_at) for s in again] == [(1, original.created_at), (2, again[1].created_at)]
    assert (await store.get_run(run.id)).step_count == 2


async def test_reappending_a_sequence_with_other_content_is_a_conflict(store: RunStore) -> None:
    run = await store.create_run(new_run())
    await store.append_steps(run.id, [thought("a")])
    with pytest.raises(AlreadyExists, match=r"step 1 of run .* is already stored with other content"):
        await store.append_steps(run.id, [thought("changed", 1)])
    with pytest.raises(AlreadyExists):
        await store.append_steps(run.id, [NewStep("agent-response", {"text": "a"}, 1)])


async def test_a_gap_names_the_expected_sequence_and_stores_nothing_of_the_batch(store: RunStore) -> None:
    run = await store.create_run(new_run())
    with pytest.raises(FailedPrecondition, match="the next sequence is 2"):
        # The first step would be fine alone: the batch is one transaction, so it is not stored either.
        await store.append_steps(run.id, [thought("a"), thought("b", 5)])
    stored = await store.get_run(run.id)
    assert (stored.step_count, stored.steps) == (0, [])


async def test_append_rejects_bad_steps_and_unknown_or_finished_runs(store: RunStore) -> None:
    run = await store.create_run(new_run())
    with pytest.raises(InvalidArgument, match="step 1 has unknown type 'note'"):
        await store.append_steps(run.id, [NewStep("note", {})])
    with pytest.raises(InvalidArgument, match="sequence -1"):
        await store.append_steps(run.id, [thought("a", -1)])
    with pytest.raises(InvalidArgument, match="steps is empty"):
        await store.append_steps(run.id, [])
    with pytest.raises(NotFound, match=f"run '{UNKNOWN_RUN}' not found"):
        await store.append_steps(UNKNOWN_RUN, [thought("a")])
    await store.finish_run(run.id, "completed")
    with pytest.raises(FailedPrecondition, match="is completed; steps can only be appended to a RUNNING run"):
        await store.append_steps(run.id, [thought("late")])


async def test_concurrent_appenders_get_distinct_consecutive_sequences(store: RunStore) -> None:
    run = await store.create_run(new_run())
    results = await asyncio.gather(*(store.append_steps(run.id, [thought(str(i))]) for i in range(10)))
    assert sorted(step.sequence for [step] in results) == list(range(1, 11))
    stored = await store.get_run(run.id)
    assert [s.sequence for s in stored.steps] == list(range(1, 11)) and stored.step_count == 10


async def test_a_sequence_another_writer_stored_unseen_is_refused_by_the_unique_key(
    store: RunStore, database: Database
) -> None:
    # As a runs replica racing past the row lock would leave it: step 1 stored, the run's count not moved. The
    # append's INSERT then violates (run_id, sequence), which must surface as IntegrityError (retried, then
    # refused), not as some other error, and store nothing.
    run = await store.create_run(new_run())
    async with database.write() as session:
        await session.execute(insert(RunStepRow).values(
            run_id=run.id, sequence=1, type="agent-thought", content={"text": "elsewhere"}, created_at=utcnow()
        ))
    with pytest.raises(AlreadyExists, match="kept taking the same sequences"):
        await store.append_steps(run.id, [thought("here")])
    stored = await store.get_run(run.id)
    assert [s.content for s in stored.steps] == [{"text": "elsewhere"}] and stored.step_count == 0


async def test_run_ids_are_validated(store: RunStore) -> None:
    with pytest.raises(InvalidArgument, match="run_id is required"):
        await store.get_run("")
    with pytest.raises(InvalidArgument, match="run_id 'nope' is not a valid run id"):
        await store.get_run("nope")
    with pytest.raises(NotFound, match="not found"):
        await store.get_run(UNKNOWN_RUN)
    run = await store.create_run(new_run())
    assert (await store.get_run(run.id.upper())).id == run.id  # ids are compared in canonical form


# --- group commit ------------------------------------------------------------------------------------------


async def test_appends_of_many_runs_at_once_are_all_stored_in_order(store: RunStore, database: Database) -> None:
    runs = [await store.create_run(new_run(f"q{i}")) for i in range(32)]

    async def five_steps(run_id: str) -> list[int]:
        stored = []
        for n in range(5):
            [step] = await store.append_steps(run_id, [NewStep("agent-thought", {"n": n})])
            stored.append(step.sequence)
        return stored

    sequences = await asyncio.gather(*(five_steps(run.id) for run in runs))
    assert sequences == [[1, 2, 3, 4, 5]] * 32
    for run in runs:
        got = await store.get_run(run.id)
        assert got.step_count == 5 and [step.content["n"] for step in got.steps] == [0, 1, 2, 3, 4]


async def test_a_refused_append_in_a_batch_fails_alone(store: RunStore) -> None:
    live, finished = await store.create_run(new_run("live")), await store.create_run(new_run("finished"))
    await store.finish_run(finished.id, "completed")
    # Submitted in one event-loop tick, so one transaction holds them all.
    outcomes = await asyncio.gather(
        store.append_steps(live.id, [NewStep("agent-thought", {"text": "a"})]),
        store.append_steps(finished.id, [NewStep("agent-thought", {"text": "refused"})]),
        store.append_steps(live.id, [NewStep("agent-thought", {"text": "b"}, sequence=2)]),
        store.append_steps(live.id, [NewStep("agent-thought", {"text": "gap"}, sequence=9)]),
        store.append_steps(live.id, [NewStep("agent-thought", {"text": "a"}, sequence=1)]),  # a retry
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], FailedPrecondition) and isinstance(outcomes[3], FailedPrecondition)
    assert [o[0].sequence for o in outcomes if isinstance(o, list)] == [1, 2, 1]
    got = await store.get_run(live.id)
    assert [step.content["text"] for step in got.steps] == ["a", "b"] and got.step_count == 2
    assert (await store.get_run(finished.id)).step_count == 0


async def test_a_failed_write_in_a_batch_rolls_back_alone(store: RunStore) -> None:
    run = await store.create_run(new_run())
    outcomes = await asyncio.gather(
        store.finish_run(run.id, "completed"),
        store.begin_run(run.id, "another-engine"),  # refused after the finish in the same transaction
        store.create_run(new_run("next")),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], FailedPrecondition)
    assert (await store.get_run(run.id)).state == "completed"
    assert (await store.get_run(outcomes[2].id)).user_query == "next"  # type: ignore[union-attr]


async def test_closing_the_store_commits_the_writes_still_queued(database: Database) -> None:
    from services.runs.signals import RunSignals

    store = RunStore(database, RunSignals())
    run = await store.create_run(new_run())
    appends = [
        asyncio.ensure_future(store.append_steps(run.id, [NewStep("agent-thought", {"n": n}, sequence=n)]))
        for n in range(1, 11)
    ]
    await asyncio.sleep(0)
    await store.close()
    assert [len(stored) for stored in await asyncio.gather(*appends)] == [1] * 10
    reopened = RunStore(database, RunSignals())
    assert (await reopened.get_run(run.id)).step_count == 10
    await reopened.close()
