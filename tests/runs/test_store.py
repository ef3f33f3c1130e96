"""RunStore on a real database (SQLite, and the session's PostgreSQL server: `postgres_url`)."""

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bench.store.listing import explain
from services.common.db.database import Database
from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.common.limits import RunLimits
from services.common.pages import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, checked_page_size
from services.common.usage import Usage
from services.runs.models import RunRow, RunStepRow
from services.runs.queries import LIST_QUERY_CHARS
from services.runs.records import ModelCallStats, NewStep, RunRecord
from services.runs.store import RunStore
from tests.runs.helpers import EXECUTOR, new_run, set_columns

UNKNOWN_RUN = "00000000-0000-4000-8000-000000000000"
REQUEST_ID = "6f1c2f7e-4f55-4c1e-9a1e-3f3b8f0d2a11"


def thought(text: str, sequence: int = 0, model_call: ModelCallStats | None = None) -> NewStep:
    return NewStep("agent-thought", {"text": text}, sequence, model_call=model_call)


async def count_runs(database: Database) -> int:
    async with database.read() as session:
        return await session.scalar(select(func.count()).select_from(RunRow)) or 0


async def test_create_run_starts_running_and_rejects_a_blank_query(store: RunStore) -> None:
    limits = RunLimits(max_model_calls=5, max_duration_seconds=30.5, max_total_tokens=1000, max_tool_calls=3)
    run = await store.create_run(new_run("what is 5 + 10?", model="demo", metadata={"session": "s1"}, limits=limits))
    assert (run.state, run.model, run.metadata, run.step_count) == ("running", "demo", {"session": "s1"}, 0)
    assert run.completed_at is None and run.created_at.tzinfo is not None
    assert run.started_at is not None and run.executor_id == EXECUTOR and not run.cancel_requested
    assert run.limits == limits and (await store.get_run(run.id)).limits == limits
    with pytest.raises(InvalidArgument, match="user_query is required"):
        await store.create_run(new_run("   "))


async def test_create_run_needs_an_executor_and_a_lease_of_1_s_to_5_min(store: RunStore, database: Database) -> None:
    with pytest.raises(InvalidArgument, match="executor_id is required"):
        await store.create_run(new_run(executor_id=""))
    for seconds in (0, 0.5, 301):
        with pytest.raises(InvalidArgument, match="lease_duration must be 1 s to 300 s"):
            await store.create_run(new_run(lease_seconds=seconds))
    with pytest.raises(InvalidArgument, match="created QUEUED or RUNNING, not completed"):
        await store.create_run(new_run(state="completed"))
    with pytest.raises(InvalidArgument, match=r"limits\.max_model_calls must be positive"):
        await store.create_run(new_run(limits=RunLimits(max_model_calls=-1)))
    assert await count_runs(database) == 0


# --- request ids (AIP-155) ---------------------------------------------------------------------------------


async def test_a_retried_create_returns_the_first_run(store: RunStore, database: Database) -> None:
    first = await store.create_run(new_run("q", request_id=REQUEST_ID, metadata={"a": "b"}))
    await store.append_steps(first.id, [thought("a")])
    # The retry arrives at another engine that queued it, in upper case: it is still the same request.
    again = await store.create_run(
        new_run("q", request_id=REQUEST_ID.upper(), metadata={"a": "b"}, executor_id="engine-2", state="queued")
    )
    assert again.id == first.id
    assert (again.state, again.step_count, again.executor_id) == ("running", 1, EXECUTOR)
    assert await count_runs(database) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"user_query": "another question"},
        {"model": "gpt-4o-mini"},
        {"metadata": {"a": "c"}},
        {"limits": RunLimits(max_tool_calls=2)},
        # Another user with the same request id: never handed the first user's run.
        {"owner": "mallory"},
    ],
    ids=["query", "model", "metadata", "limits", "owner"],
)
async def test_a_request_id_reused_for_another_request_is_already_exists(
    store: RunStore, database: Database, change: dict[str, object]
) -> None:
    await store.create_run(new_run("q", request_id=REQUEST_ID, metadata={"a": "b"}))
    other = new_run(**{"query": "q", "request_id": REQUEST_ID, "metadata": {"a": "b"}} | change)
    with pytest.raises(AlreadyExists, match=rf"request_id {REQUEST_ID} was already used for a different request;"):
        await store.create_run(other)
    assert await count_runs(database) == 1


async def test_a_request_id_must_be_a_uuid(store: RunStore, database: Database) -> None:
    with pytest.raises(InvalidArgument, match="request_id 'retry-1' is not a valid"):
        await store.create_run(new_run(request_id="retry-1"))
    assert await count_runs(database) == 0


async def test_concurrent_creates_with_one_request_id_make_one_run(store: RunStore, database: Database) -> None:
    runs = await asyncio.gather(*(store.create_run(new_run("q", request_id=REQUEST_ID)) for _ in range(8)))
    assert len({run.id for run in runs}) == 1
    assert await count_runs(database) == 1


async def test_two_creates_that_both_miss_the_lookup_still_make_one_run(
    store: RunStore, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both creates look the request id up before either has inserted: the unique key decides, and the loser
    # answers with the winner's run.
    lookup = store._by_request_id
    misses = 2

    async def miss_twice(
        connection: AsyncConnection, request_id: str, fingerprint: str, with_steps: int = 0
    ) -> RunRecord | None:
        nonlocal misses
        if misses:
            misses -= 1
            return None
        return await lookup(connection, request_id, fingerprint, with_steps)

    monkeypatch.setattr(store, "_by_request_id", miss_twice)
    first, second = await asyncio.gather(
        store.create_run(new_run("q", request_id=REQUEST_ID)), store.create_run(new_run("q", request_id=REQUEST_ID))
    )
    assert misses == 0 and first.id == second.id
    assert await count_runs(database) == 1


# --- steps created with the run ------------------------------------------------------------------------------


REQUEST = NewStep("user-request", {"text": "q"})


async def test_a_run_created_with_its_first_step_has_it_at_once(store: RunStore) -> None:
    run = await store.create_run(new_run(steps=(REQUEST,)))
    assert run.step_count == 1 and [(s.sequence, s.type) for s in run.steps] == [(1, "user-request")]
    [next_step] = await store.append_steps(run.id, [thought("then")])
    assert next_step.sequence == 2
    assert [s.type for s in (await store.get_run(run.id)).steps] == ["user-request", "agent-thought"]


async def test_a_retried_create_returns_the_steps_created_with_the_run(store: RunStore) -> None:
    first = await store.create_run(new_run(request_id=REQUEST_ID, steps=(REQUEST,)))
    await store.append_steps(first.id, [thought("later")])
    again = await store.create_run(new_run(request_id=REQUEST_ID, steps=(REQUEST,)))
    assert again.id == first.id and [s.sequence for s in again.steps] == [1]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"state": "queued", "steps": (REQUEST,)}, "steps can only be created with a RUNNING run"),
        ({"steps": (NewStep("user-request", {"text": "q"}, sequence=2),)}, "has sequence 2; use 0 or 1"),
        ({"steps": (NewStep("nonsense", {}),)}, "unknown type"),
        ({"steps": (REQUEST,) * 11}, "at most 10 steps with a create"),
    ],
)
async def test_steps_a_create_cannot_carry_are_invalid_argument_and_make_no_run(
    store: RunStore, database: Database, overrides: dict, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await store.create_run(new_run(**overrides))
    assert await count_runs(database) == 0


# --- begin and finish --------------------------------------------------------------------------------------


async def test_begin_run_moves_a_queued_run_to_running_once(store: RunStore) -> None:
    run = await store.create_run(new_run(state="queued"))
    assert (run.state, run.started_at, run.executor_id) == ("queued", None, EXECUTOR)
    with pytest.raises(FailedPrecondition, match="is queued; steps can only be appended to a RUNNING run"):
        await store.append_steps(run.id, [thought("too early")])
    with pytest.raises(FailedPrecondition, match="not held by executor 'engine-2'; it cannot begin"):
        await store.begin_run(run.id, "engine-2")
    begun = await store.begin_run(run.id, EXECUTOR)
    assert begun.state == "running" and begun.started_at is not None
    again = await store.begin_run(run.id, EXECUTOR)  # a retry
    assert (again.state, again.started_at) == ("running", begun.started_at)
    assert [s.sequence for s in await store.append_steps(run.id, [thought("a")])] == [1]
    await store.finish_run(run.id, "completed")
    with pytest.raises(FailedPrecondition, match="is completed and not held by executor"):
        await store.begin_run(run.id, EXECUTOR)
    with pytest.raises(NotFound):
        await store.begin_run(UNKNOWN_RUN, EXECUTOR)


async def test_finish_run_validates_and_happens_once(store: RunStore) -> None:
    run = await store.create_run(new_run())
    with pytest.raises(InvalidArgument, match="can only be finished as completed, failed, cancelled"):
        await store.finish_run(run.id, "running")
    for code, message in [("model_unavailable", " "), ("", "model unavailable")]:
        with pytest.raises(InvalidArgument, match="error_code and error_message are required to finish a run as "
                                                  "failed"):
            await store.finish_run(run.id, "failed", code, message)
    with pytest.raises(InvalidArgument, match="must be empty for a completed run"):
        await store.finish_run(run.id, "completed", "oops")
    finished = await store.finish_run(run.id, "failed", "model_unavailable", "model unavailable")
    assert (finished.state, finished.error_code, finished.error_message) == (
        "failed", "model_unavailable", "model unavailable"
    )
    assert finished.completed_at is not None and finished.executor_id == ""
    # Finishing again the same way is a retry: the run as it ended, not a second end.
    again = await store.finish_run(run.id, "failed", "model_unavailable", "model unavailable")
    assert (again.state, again.completed_at) == ("failed", finished.completed_at)
    with pytest.raises(FailedPrecondition, match=r"already ended failed \(model_unavailable\); only a QUEUED or "
                                                 "RUNNING run can be finished"):
        await store.finish_run(run.id, "completed")
    with pytest.raises(FailedPrecondition, match="already ended failed"):
        await store.finish_run(run.id, "failed", "max_model_calls", "too many calls")


async def test_a_queued_run_that_fails_gets_an_error_step_from_the_store(store: RunStore) -> None:
    failed = await store.create_run(new_run(state="queued"))
    await store.finish_run(failed.id, "failed", "interrupted", "the engine shut down before it began")
    stored = await store.get_run(failed.id)
    assert stored.state == "failed" and [(s.sequence, s.type) for s in stored.steps] == [(1, "error")]
    assert stored.steps[0].content == {"code": "interrupted", "message": "the engine shut down before it began"}

    completed = await store.create_run(new_run(state="queued"))
    await store.finish_run(completed.id, "completed")
    assert (await store.get_run(completed.id)).steps == []


async def test_run_usage_is_the_sum_of_its_steps_model_calls(store: RunStore) -> None:
    run = await store.create_run(new_run())
    call = ModelCallStats(Usage(10, 5), time_to_first_token_ms=120.0, latency_ms=900.5)
    await store.append_steps(run.id, [thought("a", model_call=call), NewStep("tool-call", {"tool_name": "calc"})])
    assert (await store.get_run(run.id)).usage == Usage(10, 5)
    # A retried step is not counted twice.
    await store.append_steps(run.id, [thought("a", 1, model_call=call)])
    assert (await store.get_run(run.id)).usage == Usage(10, 5)
    answer = NewStep("agent-response", {"text": "15"}, model_call=ModelCallStats(Usage(7, 3)))
    await store.append_steps(run.id, [answer])
    finished = await store.finish_run(run.id, "completed")
    assert finished.usage == Usage(17, 8) and finished.usage.total_tokens == 25
    steps = (await store.get_run(run.id)).steps
    assert [s.model_call for s in steps] == [call, None, ModelCallStats(Usage(7, 3))]
    other = await store.create_run(new_run())
    with pytest.raises(InvalidArgument, match="negative token counts"):
        await store.append_steps(other.id, [thought("a", model_call=ModelCallStats(Usage(-1, 0)))])


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


async def test_run_ids_are_validated(store: RunStore) -> None:
    with pytest.raises(InvalidArgument, match="run_id is required"):
        await store.get_run("")
    with pytest.raises(InvalidArgument, match="run_id 'nope' is not a valid run id"):
        await store.get_run("nope")
    with pytest.raises(NotFound, match="not found"):
        await store.get_run(UNKNOWN_RUN)
    run = await store.create_run(new_run())
    assert (await store.get_run(run.id.upper())).id == run.id  # ids are compared in canonical form


# --- listing -----------------------------------------------------------------------------------------------


async def test_list_runs_pages_newest_first_by_keyset(store: RunStore) -> None:
    created = [await store.create_run(new_run(f"q{i}")) for i in range(5)]
    for run in created[::2]:
        await store.finish_run(run.id, "completed")
    page1, token = await store.list_runs(page_size=2)
    # A run created while paging is newer than the whole listing, so it shifts nothing that follows.
    await store.create_run(new_run("newcomer"))
    page2, token = await store.list_runs(page_size=2, page_token=token)
    page3, last_token = await store.list_runs(page_size=2, page_token=token)
    listed = [run.id for run in page1 + page2 + page3]
    assert listed == [run.id for run in reversed(created)] and last_token == ""
    completed, token = await store.list_runs(page_size=10, state="completed")
    assert [run.id for run in completed] == [created[4].id, created[2].id, created[0].id] and token == ""
    queued = await store.create_run(new_run("waiting", state="queued"))
    assert [run.id for run in (await store.list_runs(state="queued"))[0]] == [queued.id]


async def test_list_runs_rejects_bad_tokens_sizes_and_states(store: RunStore) -> None:
    for _ in range(3):
        await store.create_run(new_run())
    _, token = await store.list_runs(page_size=1)
    assert token
    for bad in ("garbage", "eyJhIjoxfQ==", token[:-4]):
        with pytest.raises(InvalidArgument, match=r"^page_token is not valid for this request: .* ListRuns returned"):
            await store.list_runs(page_size=1, page_token=bad)
    with pytest.raises(InvalidArgument, match="page_token is not valid"):
        await store.list_runs(page_size=1, page_token=token, state="running")
    with pytest.raises(InvalidArgument, match="page_size must be >= 0, got -3"):
        await store.list_runs(page_size=-3)
    with pytest.raises(InvalidArgument, match="unknown run state 'paused'"):
        await store.list_runs(state="paused")


def test_page_size_defaults_and_caps() -> None:
    assert checked_page_size(0) == DEFAULT_PAGE_SIZE == 50
    assert checked_page_size(5000) == MAX_PAGE_SIZE == 1000
    assert checked_page_size(7) == 7


async def test_list_runs_cuts_long_queries_and_get_run_returns_them_whole(store: RunStore, database: Database) -> None:
    exact = await store.create_run(new_run("a" * LIST_QUERY_CHARS))
    over = await store.create_run(new_run("b" * (LIST_QUERY_CHARS + 1)))
    huge = await store.create_run(new_run("placeholder"))
    # 3 MB of two-byte characters: a row from before CreateRun had a size limit. Cut by characters, not bytes.
    await set_columns(database, huge.id, user_query="é" * 1_500_000)
    page, token = await store.list_runs()
    listed = {run.id: (run.user_query, run.user_query_truncated) for run in page}
    assert token == "" and len(listed) == 3
    assert listed[exact.id] == ("a" * 1000, False)
    assert listed[over.id] == ("b" * 1000, True)
    assert listed[huge.id] == ("é" * 1000, True)
    whole = await store.get_run(huge.id)
    assert whole.user_query == "é" * 1_500_000 and not whole.user_query_truncated


async def test_a_list_page_ends_before_it_grows_past_a_mebibyte(store: RunStore, database: Database) -> None:
    created = [await store.create_run(new_run(f"q{i}")) for i in range(3)]
    for run in created:
        # Error messages are capped at 16 KiB now; rows from before the cap can be much longer.
        await set_columns(database, run.id, state="failed", error_code="x", error_message="e" * 400_000)
    page1, token = await store.list_runs()
    assert [run.id for run in page1] == [created[2].id, created[1].id] and token
    page2, token = await store.list_runs(page_token=token)
    assert [run.id for run in page2] == [created[0].id] and token == ""


# --- deleting, signals, cancellation of callers ------------------------------------------------------------


async def test_delete_run_removes_its_steps(store: RunStore, database: Database) -> None:
    run = await store.create_run(new_run())
    kept = await store.create_run(new_run("other"))
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
    run = await store.create_run(new_run())
    with store.signals.subscribe(run.id) as subscription:
        await store.append_steps(run.id, [thought("a")])
        assert await subscription.wait(0.01) is True
        subscription.take()
        assert await subscription.wait(0.01) is False  # consumed
        await store.finish_run(run.id, "cancelled", "cancelled", "user stopped it")
        assert await subscription.wait(0.01) is True


async def test_an_operation_whose_caller_is_cancelled_still_completes(store: RunStore) -> None:
    # A client that disconnects must not interrupt a write half way (nor tear down a pooled connection).
    run = await store.create_run(new_run())
    caller = asyncio.create_task(store.append_steps(run.id, [thought("a")]))
    await asyncio.sleep(0)  # the operation has started
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    # Writes commit in order: once a later one is stored, the cancelled caller's has been too.
    await store.append_steps(run.id, [thought("b")])
    assert [step.content["text"] for step in (await store.get_run(run.id)).steps] == ["a", "b"]



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


# --- query plans ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [None, "failed"])
async def test_a_list_page_is_read_by_index_range_not_by_a_scan(store: RunStore, state: str | None) -> None:
    """A deep page (and a page of one state) seeks into an index and reads its own rows: the plan has no scan
    of the runs table and no sort (a scan from the newest run cost 100-250 ms at 1,000,000 runs)."""
    for n in range(3):
        run = await store.create_run(new_run(f"q{n}"))
        await store.finish_run(run.id, "failed", "boom", "it failed")
    _, token = await store.list_runs(page_size=1, state=state)
    plan = await explain(store, store.list_runs_statement(page_size=1, page_token=token, state=state))
    if store.database.is_sqlite:
        assert any("SEARCH runs USING" in line and "INDEX ix_runs_" in line for line in plan), plan
        assert not any(line.startswith("SCAN runs") or "TEMP B-TREE" in line for line in plan), plan
    else:
        assert any("Index Scan Backward using ix_runs_" in line for line in plan), plan
        assert any("Index Cond" in line and "ROW(created_at" in line for line in plan), plan
        assert not any("Rows Removed by Filter" in line or "Sort" in line for line in plan), plan


async def test_a_run_records_the_agent_revision_it_executes(store: RunStore) -> None:
    agent = "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f"
    run = await store.create_run(new_run("q", agent_id=agent, agent_revision=3))
    got = await store.get_run(run.id)
    assert (got.agent_id, got.agent_revision) == (agent, 3)
    default = await store.get_run((await store.create_run(new_run("q"))).id)
    assert (default.agent_id, default.agent_revision) == ("", 0)
    with pytest.raises(InvalidArgument, match="agent_revision must be the revision"):
        await store.create_run(new_run("q", agent_id=agent))
    with pytest.raises(InvalidArgument, match="agent_id 'nope' is not a valid agent id"):
        await store.create_run(new_run("q", agent_id="nope", agent_revision=1))


# --- workflow runs ---------------------------------------------------------------------------------------------

WORKFLOW = "7d9f3c1e-2b4a-4c5d-8e6f-0a1b2c3d4e5f"


async def test_a_workflow_run_has_no_thread_and_its_steps_keep_their_node(store: RunStore) -> None:
    start = NewStep("node-outcome", {"kind": "start", "assigned": {"n": 1}}, node_id="start")
    run = await store.create_run(new_run("Flow: {}", workflow_id=WORKFLOW, workflow_revision=2, steps=(start,)))
    assert (run.workflow_id, run.workflow_revision, run.thread_id, run.thread_turn) == (WORKFLOW, 2, "", 0)
    await store.append_steps(run.id, [NewStep("agent-thought", {"text": "t"}, node_id="draft")])
    stored = await store.get_run(run.id)
    kinds = [(step.type, step.node_id) for step in stored.steps]
    assert kinds == [("node-outcome", "start"), ("agent-thought", "draft")]
    with pytest.raises(InvalidArgument, match="a workflow run has no thread"):
        await store.create_run(new_run("q", workflow_id=WORKFLOW, workflow_revision=1, thread_id=run.id))
    with pytest.raises(InvalidArgument, match="workflow_revision must be the revision"):
        await store.create_run(new_run("q", workflow_id=WORKFLOW))
    with pytest.raises(InvalidArgument, match="node_id"):
        await store.append_steps(run.id, [NewStep("agent-thought", {"text": "t"}, node_id="x" * 65)])
