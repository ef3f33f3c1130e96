"""Retention (issue 21): finished runs past the policy's age are deleted with their steps and scores, in batches;
live runs and held runs are kept whatever their age; a saved agent's own maximum age replaces the global one;
threads left without runs go too; two sweeps at once delete each run once. On SQLite and PostgreSQL."""

import asyncio
from datetime import timedelta
from typing import Any

import grpc
import pytest

from agentplatform.runs.v1 import runs_pb2
from services.common.db.database import Database, utcnow
from services.common.errors import InvalidArgument, NotFound
from services.runs.records import NewScore, NewStep
from services.runs.retention import RetentionPolicy
from services.runs.search import RunFilter
from services.runs.signals import RunSignals
from services.runs.store import RunStore
from services.runs.threads import THREADS
from tests.runs.helpers import new_run, set_columns
from tests.runs.service_helpers import ADMIN, ALICE, as_, create_for, status_of

AGENT = "7f0e6a62-3c4b-4d7a-9f52-1d2c3b4a5e6f"


async def _run(store: RunStore, database: Database, days_old: float, *, finish: bool = True, **fields: Any) -> str:
    run = await store.create_run(new_run("q", steps=(NewStep("user-request", {"text": "q"}),), **fields))
    if finish:
        await store.finish_run(run.id, "completed")
    await set_columns(database, run.id, created_at=utcnow() - timedelta(days=days_old))
    return run.id


async def _exists(store: RunStore, run_id: str) -> bool:
    try:
        await store.get_run(run_id, with_steps=False)
    except NotFound:
        return False
    return True


async def test_old_finished_runs_go_in_batches_and_live_held_and_young_ones_stay(
    store: RunStore, database: Database
) -> None:
    old = [await _run(store, database, 40) for _ in range(5)]
    await store.create_score(NewScore(old[0], "thumbs", True), author="alice")
    young = await _run(store, database, 10)
    live = await _run(store, database, 400, finish=False)
    held = await _run(store, database, 400)
    await store.set_retention_hold(held, True)

    deleted = await store.delete_expired_runs(RetentionPolicy(max_age_days=30), batch=2)
    assert deleted == 5
    assert [await _exists(store, run_id) for run_id in old] == [False] * 5
    assert await _exists(store, young) and await _exists(store, live) and await _exists(store, held)
    assert (await store.get_run(held, with_steps=False)).retention_hold
    # Taken off hold, it goes at the next sweep; nothing else does.
    await store.set_retention_hold(held, False)
    assert await store.delete_expired_runs(RetentionPolicy(max_age_days=30)) == 1
    assert not await _exists(store, held)


async def test_an_agents_own_age_replaces_the_global_one_both_ways(store: RunStore, database: Database) -> None:
    keeps_longer = "0b7d2c1e-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
    agents_old = await _run(store, database, 8, agent_id=AGENT, agent_revision=1)
    agents_young = await _run(store, database, 6, agent_id=AGENT, agent_revision=1)
    kept_long = await _run(store, database, 60, agent_id=keeps_longer, agent_revision=1)
    default_old = await _run(store, database, 40)
    policy = RetentionPolicy(max_age_days=30, agent_max_age_days={AGENT: 7, keeps_longer: 90})
    assert await store.delete_expired_runs(policy) == 2
    assert not await _exists(store, agents_old) and not await _exists(store, default_old)
    assert await _exists(store, agents_young) and await _exists(store, kept_long)
    # Only an agent's policy, none global: the other runs are kept forever.
    other = await _run(store, database, 4000)
    assert await store.delete_expired_runs(RetentionPolicy(agent_max_age_days={AGENT: 1})) == 1
    assert await _exists(store, other)


async def test_a_thread_whose_runs_are_all_gone_goes_too(store: RunStore, database: Database) -> None:
    first = await _run(store, database, 40)
    thread_id = (await store.get_run(first, with_steps=False)).thread_id
    second = await _run(store, database, 40, thread_id=thread_id)
    kept = await _run(store, database, 40)
    await store.set_retention_hold(kept, True)
    kept_thread = (await store.get_run(kept, with_steps=False)).thread_id
    async with database.write() as session:
        await session.execute(THREADS.update().values(updated_at=utcnow() - timedelta(days=40)))
    assert await store.delete_expired_runs(RetentionPolicy(max_age_days=30)) == 2
    assert not await _exists(store, second)
    with pytest.raises(NotFound):
        await store.get_thread(thread_id)
    assert (await store.get_thread(kept_thread)).id == kept_thread


async def test_two_replicas_sweeping_at_once_delete_each_run_once(
    store: RunStore, database: Database, database_url: str
) -> None:
    for _ in range(40):
        await _run(store, database, 40)
    policy = RetentionPolicy(max_age_days=30)
    # On PostgreSQL a second store on its own connections, as another runs replica; SQLite has one writer.
    other_database = database if database.is_sqlite else Database(database_url)
    other = store if database.is_sqlite else RunStore(other_database, RunSignals())
    try:
        counts = await asyncio.gather(
            store.delete_expired_runs(policy, batch=3), other.delete_expired_runs(policy, batch=3)
        )
    finally:
        if other is not store:
            await other.close()
            await other_database.dispose()
    assert sum(counts) == 40
    assert (await store.list_runs(page_size=100))[0] == []


@pytest.mark.parametrize("days", [-1, 36_501])
def test_an_age_out_of_range_is_refused(days: int) -> None:
    with pytest.raises(InvalidArgument, match="36500"):
        RetentionPolicy(max_age_days=days)
    with pytest.raises(InvalidArgument, match=AGENT):
        RetentionPolicy(agent_max_age_days={AGENT: days})


async def test_only_an_admin_sets_a_hold(keyed_stub: Any) -> None:
    run = await create_for(keyed_stub, "alice")
    hold = runs_pb2.SetRetentionHoldRequest(run_id=run.id, hold=True)
    assert await status_of(keyed_stub.SetRetentionHold(hold, metadata=as_(ALICE))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    held = await keyed_stub.SetRetentionHold(hold, metadata=as_(ADMIN))
    assert held.retention_hold and held.id == run.id
    got = await keyed_stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id), metadata=as_(ALICE))
    assert got.retention_hold
    missing = runs_pb2.SetRetentionHoldRequest(run_id="00000000-0000-4000-8000-000000000000", hold=True)
    assert await status_of(keyed_stub.SetRetentionHold(missing, metadata=as_(ADMIN))) == grpc.StatusCode.NOT_FOUND


async def test_an_admin_deletes_what_a_search_finds_after_a_dry_run_count(store: RunStore, database: Database) -> None:
    old_mini = [await _run(store, database, 3, model="gpt-4o-mini") for _ in range(3)]
    other_model = await _run(store, database, 3, model="gpt-4o")
    live_mini = await _run(store, database, 3, finish=False, model="gpt-4o-mini")
    bobs_mini = await _run(store, database, 3, owner="bob", model="gpt-4o-mini")
    search = RunFilter(model="gpt-4o-mini")
    assert await store.delete_runs_found(search, owner=None, dry_run=True) == 4  # live runs are not counted
    assert all([await _exists(store, run_id) for run_id in old_mini])  # a dry run deletes nothing
    assert await store.delete_runs_found(search, owner="bob", dry_run=False, batch=2) == 1
    assert not await _exists(store, bobs_mini)
    assert await store.delete_runs_found(search, owner=None, dry_run=False, batch=2) == 3
    assert [await _exists(store, run_id) for run_id in (*old_mini, other_model, live_mini)] == [
        False, False, False, True, True,
    ]


async def test_only_an_admin_deletes_by_search(keyed_stub: Any) -> None:
    request = runs_pb2.DeleteRunsRequest(filter=runs_pb2.ListRunsRequest(all_users=True), dry_run=True)
    assert await status_of(keyed_stub.DeleteRuns(request, metadata=as_(ALICE))) == grpc.StatusCode.PERMISSION_DENIED
    await create_for(keyed_stub, "alice")  # live: never deleted by a search
    counted = await keyed_stub.DeleteRuns(request, metadata=as_(ADMIN))
    assert counted.runs == 0
