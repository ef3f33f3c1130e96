"""The watch algorithm and its change signals, on a real store."""

import asyncio

import pytest

from services.common.errors import InvalidArgument, NotFound
from services.runs import watch
from services.runs.store import NewStep, RunRecord, RunStore, StepRecord
from services.runs.watch import Heartbeat, RunSignals, watch_run

#: Long enough that a test passing within it cannot have been woken by a heartbeat.
NO_HEARTBEAT = 30.0


def thought(text: str) -> NewStep:
    return NewStep("agent-thought", {"text": text})


async def collect(store: RunStore, run_id: str, after: int = 0) -> list[StepRecord | RunRecord | Heartbeat]:
    return [event async for event in watch_run(store, store.signals, run_id, after, NO_HEARTBEAT)]


async def test_replay_of_a_finished_run_yields_later_steps_then_the_run(store: RunStore) -> None:
    run = await store.create_run("q")
    await store.append_steps(run.id, [thought("a"), thought("b"), thought("c")])
    await store.finish_run(run.id, "completed")
    events = await collect(store, run.id, after=1)
    assert [e.sequence for e in events[:-1] if isinstance(e, StepRecord)] == [2, 3]
    assert isinstance(events[-1], RunRecord) and events[-1].state == "completed" and len(events) == 3


async def test_replay_reads_in_batches_without_losing_steps(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "STEP_BATCH", 2)
    run = await store.create_run("q")
    await store.append_steps(run.id, [thought(str(i)) for i in range(5)])
    await store.finish_run(run.id, "completed")
    events = await collect(store, run.id)
    assert [e.sequence for e in events if isinstance(e, StepRecord)] == [1, 2, 3, 4, 5]


async def test_live_watch_sees_appends_at_once_and_ends_with_the_finished_run(store: RunStore) -> None:
    run = await store.create_run("q")
    events = watch_run(store, store.signals, run.id, 0, NO_HEARTBEAT)
    pending = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.05)
    assert not pending.done()  # nothing to say yet, and no heartbeat for 30 s
    await store.append_steps(run.id, [thought("live")])
    step = await asyncio.wait_for(pending, 2)
    assert isinstance(step, StepRecord) and step.content == {"text": "live"}
    await store.finish_run(run.id, "completed")
    final = await asyncio.wait_for(anext(events), 2)
    assert isinstance(final, RunRecord) and final.state == "completed"
    with pytest.raises(StopAsyncIteration):
        await anext(events)
    assert store.signals.watcher_count(run.id) == 0


async def test_quiet_run_gets_heartbeats(store: RunStore) -> None:
    run = await store.create_run("q")
    events = watch_run(store, store.signals, run.id, 0, 0.01)
    try:
        assert isinstance(await asyncio.wait_for(anext(events), 2), Heartbeat)
        assert isinstance(await asyncio.wait_for(anext(events), 2), Heartbeat)
    finally:
        await events.aclose()
    assert store.signals.watcher_count(run.id) == 0


async def test_cancelled_watcher_is_cleaned_up(store: RunStore) -> None:
    run = await store.create_run("q")
    task = asyncio.create_task(collect(store, run.id))
    await asyncio.sleep(0.05)
    assert store.signals.watcher_count(run.id) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.signals.watcher_count(run.id) == 0


async def test_deleting_a_watched_run_ends_the_watch_with_not_found(store: RunStore) -> None:
    run = await store.create_run("q")
    task = asyncio.create_task(collect(store, run.id))
    await asyncio.sleep(0.05)
    await store.delete_run(run.id)
    with pytest.raises(NotFound, match="not found"):
        await asyncio.wait_for(task, 2)


async def test_unknown_run_and_negative_cursor_are_rejected(store: RunStore) -> None:
    with pytest.raises(NotFound):
        await collect(store, "00000000-0000-4000-8000-000000000000")
    run = await store.create_run("q")
    with pytest.raises(InvalidArgument, match="after_sequence must be >= 0, got -1"):
        await collect(store, run.id, after=-1)


async def test_a_signal_sent_before_waiting_is_not_lost() -> None:
    signals = RunSignals()
    with signals.subscribe("r") as subscription:
        signals.notify("r")  # e.g. while the watcher was still querying
        assert await asyncio.wait_for(subscription.wait(NO_HEARTBEAT), 1) is True
        assert await subscription.wait(0.01) is False


async def test_notify_wakes_every_waiter_and_state_is_dropped_with_the_last_one() -> None:
    signals = RunSignals()
    with signals.subscribe("r") as first, signals.subscribe("r") as second:
        waiting = asyncio.gather(first.wait(NO_HEARTBEAT), second.wait(NO_HEARTBEAT))
        await asyncio.sleep(0.01)
        signals.notify("r")
        assert await asyncio.wait_for(waiting, 1) == [True, True]
        assert signals.watcher_count("r") == 2
    assert signals.watcher_count("r") == 0
    signals.notify("r")  # no watchers: a no-op that creates no state
    assert signals.watcher_count("r") == 0
