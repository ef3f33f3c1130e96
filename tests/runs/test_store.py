"""A run's lifecycle in RunStore on a real database (SQLite, and the session's PostgreSQL server:
`postgres_url`): creating (request ids, first steps), begin and finish, deleting, signals, cancelled callers,
agent revisions and workflow runs.

Appending steps is in test_appends.py, listing and query plans in test_queries.py."""

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from services.common.db.database import Database
from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.common.limits import RunLimits
from services.common.usage import Usage
from services.runs.models import RunRow, RunStepRow
from services.runs.records import ModelCallStats, NewStep, RunRecord
from services.runs.store import RunStore
from tests.runs.helpers import EXECUTOR, UNKNOWN_RUN, new_run
from tests.runs.store_helpers import thought

REQUEST_ID = "6f1c2f7e-4f55-4c1e-9a1e-3f3b8f0d2a11"


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

    def miss_twice(
        connection: Connection, request_id: str, fingerprint: str, with_steps: int = 0
    ) -> RunRecord | None:
        nonlocal misses
        if misses:
            misses -= 1
            return None
        return lookup(connection, request_id, fingerprint, with_steps)

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


async def test_a_cancel_is_final_even_when_the_engine_reports_the_run_completed(store: RunStore) -> None:
    """The cancel reached the store (through another replica, say) while the engine wrote its answer: the run ends
    CANCELLED, with the cancel's error step after the answer, never COMPLETED."""
    run = await store.create_run(new_run())
    await store.append_steps(run.id, [thought("the answer", 1)])
    asked = await store.cancel_run(run.id, "changed my mind", by="alice")
    assert (asked.state, asked.cancel_requested) == ("running", True)
    finished = await store.finish_run(run.id, "completed")
    assert (finished.state, finished.error_code) == ("cancelled", "cancelled")
    assert "changed my mind" in finished.error_message
    stored = await store.get_run(run.id)
    assert [step.type for step in stored.steps][-2:] == ["agent-thought", "error"]
    assert stored.steps[-1].content == {"code": "cancelled", "message": finished.error_message}
    # The engine retrying its finish (its answer lost) gets the run as it ended, not an error.
    again = await store.finish_run(run.id, "completed")
    assert (again.state, again.completed_at, again.step_count) == ("cancelled", finished.completed_at, 2)


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


@pytest.mark.parametrize(
    ("trace_id", "span_id", "problem"),
    [
        ("4BF92F3577B34DA6A3CE929D0E0E4736", "00f067aa0ba902b7", "trace_id must be 32 lowercase hex digits"),
        ("4bf92f3577b34da6", "00f067aa0ba902b7", "trace_id must be 32 lowercase hex digits"),
        ("0" * 32, "00f067aa0ba902b7", "not all zero"),
        ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902-7", "trace_span_id must be 16"),
        ("4bf92f3577b34da6a3ce929d0e0e4736", "", "go together"),
    ],
)
async def test_a_run_records_its_trace_and_refuses_ids_that_are_not_w3c(
    store: RunStore, trace_id: str, span_id: str, problem: str
) -> None:
    trace = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    run = await store.create_run(new_run("q", trace_id=trace[0], trace_span_id=trace[1]))
    got = await store.get_run(run.id)
    assert (got.trace_id, got.trace_span_id) == trace
    assert (await store.get_run((await store.create_run(new_run("q"))).id)).trace_id == ""
    with pytest.raises(InvalidArgument, match=problem):
        await store.create_run(new_run("q", trace_id=trace_id, trace_span_id=span_id))


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
