"""Export and import (issue 21): ExportRuns streams every run a search finds, whole (steps and scores), each with
a cursor that resumes after it; what it exported, imported into an emptied store, reads back the same, threads
included. The store on SQLite and PostgreSQL, then the RPCs over gRPC with API keys."""

from typing import Any

import grpc
from sqlalchemy import delete

from agentplatform.runs.v1 import runs_pb2
from services.common.usage import Usage
from services.runs import convert
from services.runs.records import ModelCallStats, NewScore, NewStep, RunRecord
from services.runs.search import NO_FILTER, RunFilter, RunOrder
from services.runs.store import RunStore
from services.runs.threads import THREADS
from tests.runs.helpers import new_run
from tests.runs.service_helpers import ADMIN, ALICE, as_, create_for, status_of


async def _ended_runs(store: RunStore) -> list[str]:
    """Three ended runs: two turns of one thread (one scored, with a priced model call), and one of bob's."""
    first = await store.create_run(new_run("What is 5 + 10?", owner="alice", model="gpt-4o-mini",
                                           steps=(NewStep("user-request", {"text": "What is 5 + 10?"}),)))
    await store.append_steps(first.id, [
        NewStep("agent-thought", {"text": "adding"}, model_call=ModelCallStats(Usage(1000, 50), model="gpt-4o-mini")),
        NewStep("agent-response", {"text": "15"}),
    ])
    await store.finish_run(first.id, "completed")
    await store.create_score(NewScore(first.id, "thumbs", True, source="person"), author="alice")
    second = await store.create_run(new_run("times 3?", owner="alice", thread_id=first.thread_id))
    await store.finish_run(second.id, "failed", "max_model_calls", "too many")
    bobs = await store.create_run(new_run("hello", owner="bob"))
    await store.finish_run(bobs.id, "completed")
    return [first.id, second.id, bobs.id]


async def _exported(store: RunStore, search: RunFilter = NO_FILTER, **kwargs: Any) -> list[tuple[RunRecord, str]]:
    return [item async for item in store.export_runs(search, **kwargs)]


async def test_what_is_exported_imports_into_an_emptied_store_and_reads_back_the_same(store: RunStore) -> None:
    ids = await _ended_runs(store)
    exported = [record for record, _ in await _exported(store, RunFilter(order=RunOrder.OLDEST), batch=2)]
    assert [record.id for record in exported] == ids
    assert exported[0].steps and exported[0].scores and exported[0].cost_nanos == 1000 * 150 + 50 * 600
    threads = {record.thread_id: await store.get_thread(record.thread_id) for record in exported}

    async with store.database.write() as session:  # an empty store: no run, no thread
        await session.execute(delete(THREADS))
    assert (await store.list_runs(page_size=10))[0] == []

    # Through the RPC's own conversion, as ImportRuns receives the runs ExportRuns sent.
    received = [convert.stored_run_from_proto(i, convert.run_to_proto(run)) for i, run in enumerate(exported)]
    assert await store.import_runs(received) == 3
    for record in exported:
        assert await store.get_run(record.id, with_scores=True) == record
        thread = await store.get_thread(record.thread_id)
        before = threads[record.thread_id]
        assert (thread.owner, thread.title, thread.turn_count) == (before.owner, before.title, before.turn_count)


async def test_an_export_resumes_after_its_cursor_and_reads_the_callers_runs_only(store: RunStore) -> None:
    first, second, _bobs = await _ended_runs(store)
    alices = await _exported(store, owner="alice")  # newest first
    assert [record.id for record, _ in alices] == [second, first]
    rest = await _exported(store, owner="alice", cursor=alices[0][1])
    assert [record.id for record, _ in rest] == [first]
    assert await _exported(store, owner="alice", cursor=alices[1][1]) == []
    # A run created after the export began (newer than all) does not shift what follows the cursor.
    await store.create_run(new_run("new", owner="alice"))
    assert [record.id for record, _ in await _exported(store, owner="alice", cursor=alices[0][1])] == [first]


async def test_export_and_import_over_grpc(keyed_stub: Any) -> None:
    stub = keyed_stub
    mine, theirs = await create_for(stub, "alice"), await create_for(stub, "bob")
    exported = [item async for item in stub.ExportRuns(runs_pb2.ExportRunsRequest(), metadata=as_(ALICE))]
    assert [item.run.id for item in exported] == [mine.id] and exported[0].cursor
    everyone = runs_pb2.ExportRunsRequest(filter=runs_pb2.ListRunsRequest(all_users=True))
    assert {item.run.id async for item in stub.ExportRuns(everyone, metadata=as_(ADMIN))} == {mine.id, theirs.id}
    refused = stub.ExportRuns(everyone, metadata=as_(ALICE))
    assert await status_of(anext(aiter(refused))) == grpc.StatusCode.PERMISSION_DENIED

    runs = runs_pb2.ImportRunsRequest(runs=[item.run for item in exported])
    assert await status_of(stub.ImportRuns(runs, metadata=as_(ALICE))) == grpc.StatusCode.PERMISSION_DENIED
    # Live runs are not imported (they belong to the engine holding them), and the store says which.
    assert await status_of(stub.ImportRuns(runs, metadata=as_(ADMIN))) == grpc.StatusCode.INVALID_ARGUMENT
    # A cost that is no amount is named, not an INTERNAL error of the rounding.
    for usd in (float("nan"), float("inf"), -1.0):
        ended = runs_pb2.Run(id=mine.id, state=runs_pb2.RUN_STATE_COMPLETED, create_time=exported[0].run.create_time)
        ended.cost.usd = usd
        bad = stub.ImportRuns(runs_pb2.ImportRunsRequest(runs=[ended]), metadata=as_(ADMIN))
        assert await status_of(bad) == grpc.StatusCode.INVALID_ARGUMENT, usd
    too_many = runs_pb2.ImportRunsRequest(runs=[runs_pb2.Run()] * 101)
    assert await status_of(stub.ImportRuns(too_many, metadata=as_(ADMIN))) == grpc.StatusCode.INVALID_ARGUMENT
