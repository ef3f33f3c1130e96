"""Fenced leases in the run store (SQLite and PostgreSQL): every lease taken on a run increments its epoch, and a
write that comes with another epoch than the run's current one is refused, stored nowhere; epoch 0 (an engine of
the previous version) keeps the checks from before epochs."""

import asyncio
import re
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentplatform.runs.internal.v1 import execution_pb2
from agentplatform.runs.v1 import runs_pb2
from services.common.errors import FailedPrecondition, InvalidArgument
from services.runs.app import RunsApp
from services.runs.records import APPROVED, NewStep, RunRecord
from services.runs.store import RunStore
from tests.runs.helpers import EXECUTOR, LEASE_SECONDS, new_run
from tests.runs.helpers import thought as thought_message
from tests.runs.test_approvals import OTHER_ENGINE, approval_request
from tests.runs.test_executor_link import PROMPTLY, open_link


def thought(text: str, sequence: int = 0) -> NewStep:
    return NewStep("agent-thought", {"text": text}, sequence)


def lease_lost(run_id: str, epoch: int, holder: str, sent: int) -> str:
    """The start of the refusal of a write with epoch `sent` on a run at `epoch` held as `holder` says."""
    return re.escape(f"lease lost: run '{run_id}' is at epoch {epoch}, {holder}; this ") + r"\w[\w ]* came with " + (
        re.escape(f"epoch {sent} and was not stored")
    )


async def resumed_elsewhere(store: RunStore) -> RunRecord:
    """A run EXECUTOR created (epoch 1) and paused for approval, approved and resumed by OTHER_ENGINE (epoch 2)."""
    run = await store.create_run(new_run("write my notes", steps=(NewStep("user-request", {"text": "write"}),)))
    assert run.lease_epoch == 1
    await store.await_approval(run.id, EXECUTOR, approval_request(), None, epoch=1)
    await store.decide_approval(run.id, 2, APPROVED, by="alice")
    return await store.resume_run(run.id, OTHER_ENGINE, LEASE_SECONDS)


async def test_each_lease_taken_increments_the_epoch_and_a_retry_does_not(store: RunStore) -> None:
    run = await store.create_run(new_run(request_id="11111111-1111-4111-8111-111111111111"))
    assert (run.lease_epoch, (await store.get_run(run.id)).lease_epoch) == (1, 1)
    retried = await store.create_run(new_run(request_id="11111111-1111-4111-8111-111111111111"))
    assert (retried.id, retried.lease_epoch) == (run.id, 1)
    resumed = await resumed_elsewhere(store)
    assert (resumed.lease_epoch, resumed.executor_id) == (2, OTHER_ENGINE)
    assert (await store.resume_run(resumed.id, OTHER_ENGINE, LEASE_SECONDS)).lease_epoch == 2  # a retry
    # Paused and resumed again (by the first engine this time): the next epoch.
    await store.await_approval(resumed.id, OTHER_ENGINE, approval_request(), None, epoch=2)
    await store.decide_approval(resumed.id, 4, APPROVED)
    assert (await store.resume_run(resumed.id, EXECUTOR, LEASE_SECONDS)).lease_epoch == 3


async def test_a_resumed_run_fences_the_engine_that_held_it_before(store: RunStore) -> None:
    run = await resumed_elsewhere(store)
    held = f"held by executor '{OTHER_ENGINE}'"
    # The old engine's late writes, each with its old epoch: refused, naming the epoch and the holder.
    with pytest.raises(FailedPrecondition, match=lease_lost(run.id, 2, held, 1)):
        await store.append_steps(run.id, [thought("late", 3)], epoch=1)
    with pytest.raises(FailedPrecondition, match=lease_lost(run.id, 2, held, 1)):
        await store.finish_run(run.id, "completed", epoch=1)
    with pytest.raises(FailedPrecondition, match=lease_lost(run.id, 2, held, 1)):
        await store.await_approval(run.id, EXECUTOR, approval_request(), None, epoch=1)
    with pytest.raises(FailedPrecondition, match=lease_lost(run.id, 2, held, 1)):
        await store.begin_run(run.id, EXECUTOR, epoch=1)
    renewal = await store.renew_leases(EXECUTOR, [run.id], {run.id: 1})
    assert (renewal.lost_run_ids, renewal.fenced_run_ids) == ([run.id], [run.id])
    # Nothing of them was stored: the run is as the resume left it, and its holder goes on.
    stored = await store.get_run(run.id)
    assert (stored.state, stored.step_count, stored.executor_id) == ("running", 3, OTHER_ENGINE)
    assert [step.type for step in stored.steps] == ["user-request", "approval-request", "approval-decision"]
    assert [step.sequence for step in await store.append_steps(run.id, [thought("mine", 4)], epoch=2)] == [4]
    assert (await store.renew_leases(OTHER_ENGINE, [run.id], {run.id: 2})).lost_run_ids == []
    assert (await store.finish_run(run.id, "completed", epoch=2)).state == "completed"


async def test_a_stale_epoch_is_refused_on_a_run_no_engine_holds(store: RunStore) -> None:
    run = await store.create_run(new_run())
    await store.await_approval(run.id, EXECUTOR, approval_request(), None, epoch=1)
    await store.decide_approval(run.id, 1, APPROVED)
    await store.resume_run(run.id, OTHER_ENGINE, LEASE_SECONDS)
    await store.await_approval(run.id, OTHER_ENGINE, approval_request(), None, epoch=2)
    # WAITING at epoch 2: the first engine's retry of its own pause (epoch 1) is not taken for a retry.
    with pytest.raises(FailedPrecondition, match=lease_lost(run.id, 2, "WAITING and held by no executor", 1)):
        await store.await_approval(run.id, EXECUTOR, approval_request(sequence=1), None, epoch=1)
    # A retry from the holder of epoch 2 is one.
    assert (await store.await_approval(run.id, OTHER_ENGINE, approval_request(sequence=3), None, epoch=2)).state == (
        "waiting"
    )


async def test_a_queued_run_begins_only_at_its_epoch(store: RunStore) -> None:
    run = await store.create_run(new_run(state="queued"))
    with pytest.raises(FailedPrecondition, match=lease_lost(run.id, 1, f"held by executor '{EXECUTOR}'", 7)):
        await store.begin_run(run.id, EXECUTOR, epoch=7)
    assert (await store.get_run(run.id)).state == "queued"
    assert (await store.begin_run(run.id, EXECUTOR, epoch=1)).state == "running"


async def test_the_holders_writes_at_its_epoch_and_retries_are_stored(store: RunStore) -> None:
    run = await store.create_run(new_run())
    [step] = await store.append_steps(run.id, [thought("a", 1)], epoch=1)
    assert [s.sequence for s in await store.append_steps(run.id, [thought("a", 1)], epoch=1)] == [step.sequence]
    assert (await store.finish_run(run.id, "completed", epoch=1)).state == "completed"
    assert (await store.finish_run(run.id, "completed", epoch=1)).state == "completed"  # a retry


async def test_epoch_zero_keeps_the_checks_from_before_epochs(store: RunStore) -> None:
    """An engine of the previous version sends no epoch (0): a rolling upgrade's old engines go on working, with
    the state and executor checks they had."""
    run = await resumed_elsewhere(store)
    assert [s.sequence for s in await store.append_steps(run.id, [thought("old engine", 0)])] == [4]
    assert (await store.renew_leases(OTHER_ENGINE, [run.id])).lost_run_ids == []
    renewal = await store.renew_leases(EXECUTOR, [run.id])  # the executor check still holds
    assert (renewal.lost_run_ids, renewal.fenced_run_ids) == ([run.id], [run.id])
    assert (await store.finish_run(run.id, "completed")).state == "completed"


async def test_epochs_are_validated(store: RunStore) -> None:
    run = await store.create_run(new_run())
    with pytest.raises(InvalidArgument, match="lease_epoch must be 0"):
        await store.append_steps(run.id, [thought("x")], epoch=-1)
    with pytest.raises(InvalidArgument, match="lease_epoch must be 0"):
        await store.finish_run(run.id, "completed", epoch=2**63)
    with pytest.raises(InvalidArgument, match="lease_epoch must be 0"):
        await store.renew_leases(EXECUTOR, [run.id], {run.id: -5})


@given(
    writes=st.lists(
        st.tuples(st.sampled_from(["old", "new"]), st.sampled_from(["append", "renew", "finish"])), max_size=12
    )
)
async def test_two_executors_racing_writes_only_the_holders_are_stored(
    store: RunStore, writes: list[tuple[str, str]]
) -> None:
    """Whatever the two engines send, in whatever order and concurrently: the old holder's writes (epoch 1) are all
    refused once the run was resumed by the new one (epoch 2), and exactly the new holder's appends are stored."""
    run = await resumed_elsewhere(store)
    engines = {"old": (EXECUTOR, 1), "new": (OTHER_ENGINE, 2)}

    async def write(index: int, engine: str, kind: str) -> str:
        executor_id, epoch = engines[engine]
        try:
            if kind == "append":
                await store.append_steps(run.id, [thought(f"{engine} {index}")], epoch=epoch)
            elif kind == "renew":
                renewal = await store.renew_leases(executor_id, [run.id], {run.id: epoch})
                return "lost" if renewal.fenced_run_ids else "stored"
            else:
                await store.finish_run(run.id, "completed", epoch=epoch)
        except FailedPrecondition as exc:
            return "lease lost" if str(exc).startswith("lease lost") else "refused"
        return "stored"

    outcomes = await asyncio.gather(*(write(index, *w) for index, w in enumerate(writes)))
    for (engine, _), outcome in zip(writes, outcomes, strict=True):
        if engine == "old":
            assert outcome in ("lease lost", "lost")
    stored = await store.get_run(run.id)
    texts = [step.content["text"] for step in stored.steps if step.type == "agent-thought"]
    assert all(text.startswith("new ") for text in texts)
    stored_appends = {
        f"new {index}" for index, ((engine, kind), outcome) in enumerate(zip(writes, outcomes, strict=True))
        if engine == "new" and kind == "append" and outcome == "stored"
    }
    assert set(texts) == stored_appends
    await store.delete_run(run.id)


# --- over gRPC ---------------------------------------------------------------------------------------------------


async def test_the_internal_api_returns_the_epoch_and_refuses_a_stale_one(stub: Any, runs_app: RunsApp) -> None:
    """Through ExecutionService as the engine calls it: the run comes back with its epoch, and a write with a stale
    one is FAILED_PRECONDITION "lease lost", unary or over the executor link; RenewLeases reports it fenced."""
    run = await resumed_elsewhere(runs_app.store)
    assert (await stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id))).lease_epoch == 2
    late = execution_pb2.AppendStepsRequest(run_id=run.id, steps=[thought_message("late", 4)], lease_epoch=1)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.AppendSteps(late)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert re.match(lease_lost(run.id, 2, f"held by executor '{OTHER_ENGINE}'", 1), refused.value.details() or "")
    link = await open_link(stub, runs_app)
    finish = execution_pb2.FinishRunRequest(run_id=run.id, state=runs_pb2.RUN_STATE_COMPLETED, lease_epoch=1)
    call = execution_pb2.ExecutorCall(call_id=1, finish_run=finish)
    await link.write(execution_pb2.ConnectExecutorRequest(call=call))
    result = (await asyncio.wait_for(link.read(), PROMPTLY)).call_result
    assert result.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert result.error.message.startswith("lease lost")
    await link.done_writing()
    renewal = await stub.RenewLeases(execution_pb2.RenewLeasesRequest(
        executor_id=EXECUTOR, leases=[execution_pb2.HeldLease(run_id=run.id, lease_epoch=1)]
    ))
    assert (list(renewal.lost_run_ids), list(renewal.fenced_run_ids)) == ([run.id], [run.id])
    held = await stub.RenewLeases(execution_pb2.RenewLeasesRequest(
        executor_id=OTHER_ENGINE, leases=[execution_pb2.HeldLease(run_id=run.id, lease_epoch=2)]
    ))
    assert not held.lost_run_ids and not held.fenced_run_ids
    stored = await stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id))
    assert (stored.state, stored.step_count) == (runs_pb2.RUN_STATE_RUNNING, 3)
