"""RunStore on a real database (SQLite, and the session's PostgreSQL server: `postgres_url`)."""

import asyncio

import pytest
from sqlalchemy import func, select

from services.common.database import Database
from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.runs.models import RunStepRow
from services.runs.store import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, NewStep, RunStore, Usage, _checked_page_size

UNKNOWN_RUN = "00000000-0000-4000-8000-000000000000"


def thought(text: str, sequence: int = 0) -> NewStep:
    return NewStep("agent-thought", {"text": text}, sequence)


async def test_create_run_starts_running_and_rejects_a_blank_query(store: RunStore) -> None:
    run = await store.create_run("what is 5 + 10?", "demo", {"session": "s1"})
    assert (run.state, run.model, run.metadata, run.step_count) == ("running", "demo", {"session": "s1"}, 0)
    assert run.completed_at is None and run.created_at.tzinfo is not None
    with pytest.raises(InvalidArgument, match="user_query is required"):
        await store.create_run("   ")


async def test_append_assigns_sequences_and_get_returns_steps_in_order(store: RunStore) -> None:
    run = await store.create_run("q")
    first = await store.append_steps(run.id, [NewStep("user-request", {"text": "q"}), thought("a")])
    second = await store.append_steps(run.id, [NewStep("tool-call", {"tool_name": "calculator"}, 3, 1.5)])
    assert [s.sequence for s in first + second] == [1, 2, 3]
    stored = await store.get_run(run.id)
    assert [(s.sequence, s.type) for s in stored.steps] == [(1, "user-request"), (2, "agent-thought"), (3, "tool-call")]
    assert stored.steps[2].content == {"tool_name": "calculator"} and stored.steps[2].duration_ms == 1.5
    assert stored.step_count == 3
    assert (await store.get_run(run.id, with_steps=False)).steps == []


async def test_reappending_a_stored_step_is_an_idempotent_no_op(store: RunStore) -> None:
    run = await store.create_run("q")
    [original] = await store.append_steps(run.id, [thought("a")])
    # A retry of step 1 next to a new step: the retry returns the stored step, the new one gets 2.
    again = await store.append_steps(run.id, [thought("a", 1), thought("b")])
    assert [(s.sequence, s.created_at) for s in again] == [(1, original.created_at), (2, again[1].created_at)]
    assert (await store.get_run(run.id)).step_count == 2


async def test_reappending_a_sequence_with_other_content_is_a_conflict(store: RunStore) -> None:
    run = await store.create_run("q")
    await store.append_steps(run.id, [thought("a")])
    with pytest.raises(AlreadyExists, match=r"step 1 of run .* is already stored with other content"):
        await store.append_steps(run.id, [thought("changed", 1)])
    with pytest.raises(AlreadyExists):
        await store.append_steps(run.id, [NewStep("agent-response", {"text": "a"}, 1)])


async def test_a_gap_names_the_expected_sequence_and_stores_nothing_of_the_batch(store: RunStore) -> None:
    run = await store.create_run("q")
    with pytest.raises(FailedPrecondition, match="the next sequence is 2"):
        # The first step would be fine alone: the batch is one transaction, so it is not stored either.
        await store.append_steps(run.id, [thought("a"), thought("b", 5)])
    stored = await store.get_run(run.id)
    assert (stored.step_count, stored.steps) == (0, [])


async def test_append_rejects_bad_steps_and_unknown_or_finished_runs(store: RunStore) -> None:
    run = await store.create_run("q")
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
    run = await store.create_run("q")
    results = await asyncio.gather(*(store.append_steps(run.id, [thought(str(i))]) for i in range(10)))
    assert sorted(step.sequence for [step] in results) == list(range(1, 11))
    stored = await store.get_run(run.id)
    assert [s.sequence for s in stored.steps] == list(range(1, 11)) and stored.step_count == 10


async def test_finish_run_validates_and_happens_once(store: RunStore) -> None:
    run = await store.create_run("q")
    with pytest.raises(InvalidArgument, match="can only be finished as completed, failed, cancelled"):
        await store.finish_run(run.id, "running")
    with pytest.raises(InvalidArgument, match="error_message is required"):
        await store.finish_run(run.id, "failed", " ")
    with pytest.raises(InvalidArgument, match="usage token counts must be >= 0"):
        await store.finish_run(run.id, "completed", usage=Usage(prompt_tokens=-1))
    finished = await store.finish_run(run.id, "failed", "model unavailable", Usage(10, 5))
    assert (finished.state, finished.error_message) == ("failed", "model unavailable")
    assert finished.usage == Usage(10, 5, 15) and finished.completed_at is not None
    with pytest.raises(FailedPrecondition, match="is already failed; only a RUNNING run can be finished"):
        await store.finish_run(run.id, "completed")


async def test_run_ids_are_validated(store: RunStore) -> None:
    with pytest.raises(InvalidArgument, match="run_id is required"):
        await store.get_run("")
    with pytest.raises(InvalidArgument, match="run_id 'nope' is not a valid run id"):
        await store.get_run("nope")
    with pytest.raises(NotFound, match="not found"):
        await store.get_run(UNKNOWN_RUN)


async def test_list_runs_pages_newest_first_by_keyset(store: RunStore) -> None:
    created = [await store.create_run(f"q{i}") for i in range(5)]
    for run in created[::2]:
        await store.finish_run(run.id, "completed")
    page1, token = await store.list_runs(page_size=2)
    # A run created while paging is newer than the whole listing, so it shifts nothing that follows.
    await store.create_run("newcomer")
    page2, token = await store.list_runs(page_size=2, page_token=token)
    page3, last_token = await store.list_runs(page_size=2, page_token=token)
    listed = [run.id for run in page1 + page2 + page3]
    assert listed == [run.id for run in reversed(created)] and last_token == ""
    completed, token = await store.list_runs(page_size=10, state="completed")
    assert [run.id for run in completed] == [created[4].id, created[2].id, created[0].id] and token == ""


async def test_list_runs_rejects_bad_tokens_sizes_and_states(store: RunStore) -> None:
    for _ in range(3):
        await store.create_run("q")
    _, token = await store.list_runs(page_size=1)
    assert token
    for bad in ("garbage", "eyJhIjoxfQ==", token[:-4]):
        with pytest.raises(InvalidArgument, match="page_token is not valid for this request; start again"):
            await store.list_runs(page_size=1, page_token=bad)
    with pytest.raises(InvalidArgument, match="page_token is not valid"):
        await store.list_runs(page_size=1, page_token=token, state="running")
    with pytest.raises(InvalidArgument, match="page_size must be >= 0, got -3"):
        await store.list_runs(page_size=-3)
    with pytest.raises(InvalidArgument, match="unknown run state 'paused'"):
        await store.list_runs(state="paused")


def test_page_size_defaults_and_caps() -> None:
    assert _checked_page_size(0) == DEFAULT_PAGE_SIZE == 50
    assert _checked_page_size(5000) == MAX_PAGE_SIZE == 1000
    assert _checked_page_size(7) == 7


async def test_delete_run_removes_its_steps(store: RunStore, database: Database) -> None:
    run = await store.create_run("q")
    kept = await store.create_run("other")
    await store.append_steps(run.id, [thought("a"), thought("b")])
    await store.append_steps(kept.id, [thought("c")])
    await store.delete_run(run.id)
    with pytest.raises(NotFound):
        await store.get_run(run.id)
    with pytest.raises(NotFound):
        await store.delete_run(run.id)
    async with database.read() as session:
        orphans = await session.scalar(select(func.count()).where(RunStepRow.run_id == run.id))
        others = await session.scalar(select(func.count()).where(RunStepRow.run_id == kept.id))
    assert (orphans, others) == (0, 1)


async def test_writes_signal_watchers_after_commit(store: RunStore) -> None:
    run = await store.create_run("q")
    with store.signals.subscribe(run.id) as subscription:
        await store.append_steps(run.id, [thought("a")])
        assert await subscription.wait(0.01) is True
        assert await subscription.wait(0.01) is False  # consumed
        await store.finish_run(run.id, "cancelled", "user stopped it")
        assert await subscription.wait(0.01) is True


async def test_an_operation_whose_caller_is_cancelled_still_completes(store: RunStore) -> None:
    # A client that disconnects must not interrupt a write half way (nor tear down a pooled connection).
    run = await store.create_run("q")
    caller = asyncio.create_task(store.append_steps(run.id, [thought("a")]))
    await asyncio.sleep(0)  # the operation has started
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await store.database.drain()
    assert (await store.get_run(run.id)).step_count == 1
