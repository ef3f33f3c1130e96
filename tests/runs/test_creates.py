"""Creates in groups (RunStore._create_batch) on SQLite and PostgreSQL: the creates that arrive together are
inserted together, and each still gets its own answer: one that fails (a spent budget, a request id reused for
another request, a busy thread) fails alone while the others commit, and a request id retried within the batch
makes one run."""

import asyncio
from typing import Any

import pytest
from sqlalchemy import bindparam, false, func, select

from services.common.db.database import Database
from services.common.errors import AlreadyExists, FailedPrecondition, ResourceExhausted
from services.common.usage import Usage
from services.runs import store as store_module
from services.runs.budget_book import checked_budget
from services.runs.models import RunRow, RunStepRow, ThreadRow
from services.runs.records import ModelCallStats, NewStep, RunRecord
from services.runs.rows import RUNS
from services.runs.store import RunStore
from tests.runs.helpers import new_run

REQUEST_ID = "0b5d8a4e-2c61-4f0e-8d7a-5e9c1b3f7a20"
WORKFLOW = "3c9e1f4a-7b2d-4e6f-a1c8-9d0b2e4f6a13"


def request(text: str) -> NewStep:
    return NewStep("user-request", {"text": text})


@pytest.fixture
def grouped(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the groups the store inserted together, in order (the real inserts still run)."""
    sizes: list[int] = []
    insert_together = store._insert_together

    def recorded(connection: Any, creates: list[Any]) -> Any:
        sizes.append(len(creates))
        return insert_together(connection, creates)

    monkeypatch.setattr(store, "_insert_together", recorded)
    return sizes


async def counts(database: Database) -> tuple[int, int, int]:
    """Runs, threads and steps stored."""
    async with database.read() as session:
        return tuple([  # type: ignore[return-value]
            await session.scalar(select(func.count()).select_from(table)) or 0
            for table in (RunRow, ThreadRow, RunStepRow)
        ])


async def gather(store: RunStore, *news: Any) -> list[RunRecord | BaseException]:
    """Create `news` at once: they reach the writer together, so one batch takes them."""
    return await asyncio.gather(*(store.create_run(new) for new in news), return_exceptions=True)


async def test_many_creates_in_one_batch_are_inserted_together_each_on_a_thread_of_its_own(
    store: RunStore, database: Database, grouped: list[int]
) -> None:
    news = [new_run(f"q {i}", steps=(request(f"q {i}"),), request_id=None if i % 2 else f"{REQUEST_ID[:-2]}{i:02d}")
            for i in range(20)]
    news.append(new_run("Flow", workflow_id=WORKFLOW, workflow_revision=1, steps=(request("Flow"),)))
    records = await gather(store, *news)
    assert grouped == [21]
    runs = [record for record in records if isinstance(record, RunRecord)]
    assert len(runs) == 21
    assert len({run.id for run in runs}) == 21
    assert len({run.thread_id for run in runs[:20]}) == 20 and all(run.thread_turn == 1 for run in runs[:20])
    assert (runs[20].workflow_id, runs[20].thread_id, runs[20].thread_turn) == (WORKFLOW, "", 0)
    assert await counts(database) == (21, 20, 21)
    for new, run in zip(news, runs, strict=True):
        stored = await store.get_run(run.id)
        assert (stored.user_query, stored.state, stored.step_count) == (new.user_query, "running", 1)
        assert [(step.sequence, step.type, step.content) for step in stored.steps] == [
            (1, "user-request", {"text": new.user_query})
        ]
        assert stored.thread_id == run.thread_id
        if run.thread_id:
            thread = await store.get_thread(run.thread_id)
            assert (thread.title, thread.turn_count) == (new.user_query, 1)
    # A retry after the batch finds its run (the request ids were stored with the runs).
    again = await store.create_run(news[0])
    assert again.id == runs[0].id


async def test_a_create_refused_for_a_spent_budget_fails_alone(
    store: RunStore, database: Database, grouped: list[int]
) -> None:
    await store.set_budget(checked_budget("user", "alice", "tokens", "day", 100, "root"))
    spent = await store.create_run(new_run("q", owner="alice"))
    await store.append_steps(spent.id, [NewStep("agent-thought", {}, model_call=ModelCallStats(Usage(100, 0)))])
    before = await counts(database)
    grouped.clear()
    results = await gather(store, *(new_run(f"bob {i}", owner="bob") for i in range(3)),
                           new_run("alice", owner="alice"), new_run("bob 3", owner="bob"))
    assert grouped == [4]  # alice's was refused in the group: the others inserted together
    assert isinstance(results[3], ResourceExhausted) and "cannot start: the budget of 100 tokens" in str(results[3])
    assert [run.user_query for run in results if isinstance(run, RunRecord)] == [f"bob {i}" for i in range(4)]
    assert await counts(database) == (before[0] + 4, before[1] + 4, before[2])


async def test_a_run_created_with_model_calls_spends_the_budget_for_the_next_create_in_its_batch(
    store: RunStore, grouped: list[int]
) -> None:
    await store.set_budget(checked_budget("user", "alice", "tokens", "day", 100, "root"))
    costly = NewStep("agent-thought", {}, model_call=ModelCallStats(Usage(100, 0)))
    first, second = await gather(store, new_run("q", owner="alice", steps=(costly,)), new_run("q", owner="alice"))
    assert isinstance(first, RunRecord) and first.usage.prompt_tokens == 100
    assert isinstance(second, ResourceExhausted)
    assert grouped == [1]  # both checked together; the first's tokens refused the second


async def test_a_create_whose_budget_a_create_going_alone_before_it_spends_goes_alone_after_it(
    store: RunStore, grouped: list[int]
) -> None:
    await store.set_budget(checked_budget("user", "alice", "tokens", "day", 100, "root"))
    ended = await store.create_run(new_run("q", owner="alice"))
    await store.finish_run(ended.id, "completed")
    grouped.clear()
    costly = NewStep("agent-thought", {}, model_call=ModelCallStats(Usage(100, 0)))
    turn, new, bobs = await gather(
        store, new_run("next", owner="alice", thread_id=ended.thread_id, steps=(costly,)), new_run("q", owner="alice"),
        new_run("q", owner="bob"),
    )
    assert isinstance(turn, RunRecord) and turn.thread_turn == 2
    assert isinstance(new, ResourceExhausted)  # it saw the turn's tokens, as one create after another would
    assert isinstance(bobs, RunRecord)
    assert grouped == [1]  # bob's


async def test_a_request_id_reused_for_another_request_fails_alone_and_a_retry_gets_the_first_run(
    store: RunStore, database: Database, grouped: list[int]
) -> None:
    first = await store.create_run(new_run("q", request_id=REQUEST_ID))
    grouped.clear()
    results = await gather(
        store, new_run("a"), new_run("other", request_id=REQUEST_ID), new_run("b"), new_run("q", request_id=REQUEST_ID)
    )
    assert grouped == [2]
    assert isinstance(results[1], AlreadyExists)
    assert isinstance(results[3], RunRecord) and results[3].id == first.id
    assert [run.user_query for run in results if isinstance(run, RunRecord)] == ["a", "b", "q"]
    assert (await counts(database))[0] == 3


async def test_a_request_id_retried_within_one_batch_makes_one_run(
    store: RunStore, database: Database, grouped: list[int]
) -> None:
    results = await gather(
        store,
        new_run("q", request_id=REQUEST_ID, steps=(request("q"),)),
        new_run("a"),
        new_run("q", request_id=REQUEST_ID, steps=(request("q"),)),
        new_run("other", request_id=REQUEST_ID),
        new_run("q", request_id=REQUEST_ID, steps=(request("q"),)),
    )
    assert grouped == [1]  # "a"; the request id's creates went alone, in order: the first made the run
    first, _, second, other, third = results
    assert isinstance(first, RunRecord) and isinstance(second, RunRecord) and isinstance(third, RunRecord)
    assert first.id == second.id == third.id
    assert [step.type for step in third.steps] == ["user-request"]  # a retry gets the steps created with the run
    assert isinstance(other, AlreadyExists)
    assert await counts(database) == (2, 2, 1)


async def test_a_create_on_a_busy_thread_is_refused_alone(
    store: RunStore, database: Database, grouped: list[int]
) -> None:
    busy = await store.create_run(new_run("first", steps=(request("first"),)))
    grouped.clear()
    results = await gather(
        store, new_run("a"), new_run("second", thread_id=busy.thread_id, multitask="reject"), new_run("b"),
        new_run("queued", thread_id=busy.thread_id, multitask="enqueue", steps=(request("queued"),)),
    )
    assert grouped == [2]
    assert isinstance(results[1], FailedPrecondition) and f"(run '{busy.id}', running)" in str(results[1])
    queued = results[3]
    assert isinstance(queued, RunRecord) and (queued.state, queued.thread_turn, queued.steps) == ("queued", 2, [])
    assert [run.user_query for run in results if isinstance(run, RunRecord)] == ["a", "b", "queued"]
    assert (await store.get_thread(busy.thread_id)).turn_count == 2  # the refused create took no turn
    assert await counts(database) == (4, 3, 1)


async def test_a_request_id_stored_by_another_replica_after_the_lookup_is_answered_as_a_retry(
    store: RunStore, database: Database, grouped: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The batch's lookup misses the request id (another replica stores it just after): the insert of the group
    # hits the unique key, rolls back, and each create alone answers as it always did.
    first = await store.create_run(new_run("q", request_id=REQUEST_ID))
    grouped.clear()
    missing = select(RUNS.c.request_id).where(RUNS.c.request_id.in_(bindparam("ids", expanding=True)), false())
    monkeypatch.setattr(store_module, "_STORED_REQUEST_IDS", missing)
    results = await gather(
        store, new_run("a", steps=(request("a"),)), new_run("q", request_id=REQUEST_ID), new_run("b")
    )
    assert grouped == [3]
    assert isinstance(results[1], RunRecord) and results[1].id == first.id
    assert [run.user_query for run in results if isinstance(run, RunRecord)] == ["a", "q", "b"]
    assert await counts(database) == (3, 3, 1)
