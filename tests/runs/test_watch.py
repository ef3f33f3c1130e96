"""The watch algorithm and its change signals, on a real store (SQLite and PostgreSQL)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from services.common.errors import InvalidArgument, NotFound, OutOfRange
from services.common.step_delta import StepDelta, ToolCallDelta
from services.runs import signals as signals_module
from services.runs import watch
from services.runs.records import NewStep, RunRecord, StepRecord
from services.runs.signals import RunSignals
from services.runs.store import RunStore
from services.runs.watch import Heartbeat, WatchEvent, watch_run
from tests.runs.helpers import new_run

#: Long enough that a test passing within it cannot have been woken by a heartbeat.
NO_HEARTBEAT = 30.0
#: How long a test waits for an event that should come at once.
PROMPTLY = 2.0


def thought(text: str) -> NewStep:
    return NewStep("agent-thought", {"text": text})


async def collect(store: RunStore, run_id: str, after: int = 0) -> list[WatchEvent]:
    return [event async for event in watch_run(store, store.signals, run_id, after, NO_HEARTBEAT)]


async def next_event(events: AsyncIterator[WatchEvent]) -> WatchEvent:
    return await asyncio.wait_for(anext(events), PROMPTLY)


async def nothing_yet(events: AsyncIterator[WatchEvent]) -> asyncio.Future[WatchEvent]:
    """The watch's next event, still pending after a moment (it is waiting, not done and not erring)."""
    pending = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.05)
    assert not pending.done()
    return pending


async def received_within(events: AsyncIterator[WatchEvent], seconds: float = 0.1) -> list[WatchEvent]:
    """The events the watch sends until it has been quiet for `seconds`; the watch is closed then."""
    received: list[WatchEvent] = []
    while True:
        pending = asyncio.ensure_future(anext(events))
        done, _ = await asyncio.wait({pending}, timeout=seconds)
        if not done:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
            return received
        received.append(pending.result())


async def test_replay_of_a_finished_run_yields_the_run_later_steps_then_the_run(store: RunStore) -> None:
    run = await store.create_run(new_run())
    await store.append_steps(run.id, [thought("a"), thought("b"), thought("c")])
    await store.finish_run(run.id, "completed")
    events = await collect(store, run.id, after=1)
    assert len(events) == 4
    assert isinstance(events[0], RunRecord) and events[0].id == run.id and not events[0].steps
    assert [e.sequence for e in events[1:-1] if isinstance(e, StepRecord)] == [2, 3]
    assert isinstance(events[-1], RunRecord) and events[-1].state == "completed"


async def test_replay_reads_in_batches_without_losing_steps(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "STEP_BATCH", 2)
    run = await store.create_run(new_run())
    await store.append_steps(run.id, [thought(str(i)) for i in range(5)])
    await store.finish_run(run.id, "completed")
    events = await collect(store, run.id)
    assert [e.sequence for e in events if isinstance(e, StepRecord)] == [1, 2, 3, 4, 5]


async def test_live_watch_sees_appends_at_once_and_ends_with_the_finished_run(store: RunStore) -> None:
    run = await store.create_run(new_run())
    events = watch_run(store, store.signals, run.id, 0, NO_HEARTBEAT)
    first = await next_event(events)
    assert isinstance(first, RunRecord) and first.state == "running"
    pending = await nothing_yet(events)  # nothing to say yet, and no heartbeat for 30 s
    await store.append_steps(run.id, [thought("live")])
    step = await asyncio.wait_for(pending, PROMPTLY)
    assert isinstance(step, StepRecord) and step.content == {"text": "live"}
    await store.finish_run(run.id, "completed")
    final = await next_event(events)
    assert isinstance(final, RunRecord) and final.state == "completed"
    with pytest.raises(StopAsyncIteration):
        await anext(events)
    assert store.signals.watcher_count(run.id) == 0


async def test_the_run_is_sent_again_when_its_state_or_cancel_request_changes(store: RunStore) -> None:
    run = await store.create_run(new_run(state="queued"))
    events = watch_run(store, store.signals, run.id, 0, NO_HEARTBEAT)
    try:
        assert (await next_event(events)).state == "queued"  # type: ignore[union-attr]
        await store.begin_run(run.id, run.executor_id)
        begun = await next_event(events)
        assert isinstance(begun, RunRecord) and begun.state == "running" and not begun.cancel_requested
        await store.cancel_run(run.id, "stop")
        requested = await next_event(events)
        assert isinstance(requested, RunRecord) and requested.state == "running" and requested.cancel_requested
    finally:
        await events.aclose()


async def test_quiet_run_gets_heartbeats_that_carry_the_cursor(store: RunStore) -> None:
    run = await store.create_run(new_run())
    await store.append_steps(run.id, [thought("a"), thought("b"), thought("c")])
    events = watch_run(store, store.signals, run.id, 1, 0.01)
    try:
        kinds = [type(await next_event(events)) for _ in range(3)]
        assert kinds == [RunRecord, StepRecord, StepRecord]
        beats = [await next_event(events) for _ in range(2)]
        assert all(isinstance(beat, Heartbeat) and beat.last_sequence == 3 for beat in beats)
    finally:
        await events.aclose()
    assert store.signals.watcher_count(run.id) == 0

    quiet = await store.create_run(new_run())
    events = watch_run(store, store.signals, quiet.id, 0, 0.01)
    try:
        await next_event(events)
        beat = await next_event(events)
        assert isinstance(beat, Heartbeat) and beat.last_sequence == 0 and beat.time.tzinfo is not None
    finally:
        await events.aclose()


async def test_cancelled_watcher_is_cleaned_up(store: RunStore) -> None:
    run = await store.create_run(new_run())
    task = asyncio.create_task(collect(store, run.id))
    await asyncio.sleep(0.05)
    assert store.signals.watcher_count(run.id) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.signals.watcher_count(run.id) == 0


async def test_deleting_a_watched_run_ends_the_watch_with_not_found(store: RunStore) -> None:
    run = await store.create_run(new_run())
    task = asyncio.create_task(collect(store, run.id))
    await asyncio.sleep(0.05)
    await store.delete_run(run.id)
    with pytest.raises(NotFound, match="not found"):
        await asyncio.wait_for(task, PROMPTLY)


async def test_unknown_run_and_negative_cursor_are_rejected(store: RunStore) -> None:
    with pytest.raises(NotFound):
        await collect(store, "00000000-0000-4000-8000-000000000000")
    run = await store.create_run(new_run())
    with pytest.raises(InvalidArgument, match=r"after_sequence must be 0 to 2147483647 \(0 replays .*\), got -1"):
        await collect(store, run.id, after=-1)


# --- cursors past the end ----------------------------------------------------------------------------------


async def test_a_cursor_beyond_a_finished_runs_steps_is_out_of_range(store: RunStore) -> None:
    run = await store.create_run(new_run())
    await store.append_steps(run.id, [thought("a"), thought("b")])
    await store.finish_run(run.id, "completed")
    with pytest.raises(OutOfRange, match=r"after_sequence 3 is beyond the last step .* resume from 2 or lower"):
        await collect(store, run.id, after=3)
    assert [type(e) for e in await collect(store, run.id, after=2)] == [RunRecord, RunRecord]  # at the end: fine
    assert store.signals.watcher_count(run.id) == 0


async def test_a_cursor_beyond_a_live_runs_steps_waits_for_the_steps_after_it(store: RunStore) -> None:
    run = await store.create_run(new_run())
    await store.append_steps(run.id, [thought("1")])
    events = watch_run(store, store.signals, run.id, 2, NO_HEARTBEAT)
    try:
        assert isinstance(await next_event(events), RunRecord)
        pending = await nothing_yet(events)
        await store.append_steps(run.id, [thought("2")])  # the caller has seen it already
        await asyncio.sleep(0.05)
        assert not pending.done()
        await store.append_steps(run.id, [thought("3")])
        step = await asyncio.wait_for(pending, PROMPTLY)
        assert isinstance(step, StepRecord) and (step.sequence, step.content) == (3, {"text": "3"})
    finally:
        await events.aclose()


# --- deltas ------------------------------------------------------------------------------------------------


def text_delta(run_id: str, sequence: int, text: str) -> StepDelta:
    return StepDelta(run_id, sequence, text=text)


async def test_deltas_reach_a_live_watcher_and_stop_once_their_step_is_stored(store: RunStore) -> None:
    run = await store.create_run(new_run())
    await store.append_steps(run.id, [thought("1")])
    events = watch_run(store, store.signals, run.id, 0, NO_HEARTBEAT)
    try:
        assert [type(await next_event(events)) for _ in range(2)] == [RunRecord, StepRecord]
        store.signals.publish_delta(text_delta(run.id, 2, "Hel"))
        store.signals.publish_delta(text_delta(run.id, 2, "lo"))
        assert await next_event(events) == StepDelta(run.id, 2, text="Hel")
        assert await next_event(events) == StepDelta(run.id, 2, text="lo")

        await store.append_steps(run.id, [thought("Hello")])
        step = await next_event(events)
        assert isinstance(step, StepRecord) and step.sequence == 2
        # A straggler of the stored step is not sent; the next step's deltas are.
        store.signals.publish_delta(text_delta(run.id, 2, " again"))
        piece = ToolCallDelta("call_1", "calculator", '{"x":')
        store.signals.publish_delta(StepDelta(run.id, 3, tool_call=piece))
        assert await next_event(events) == StepDelta(run.id, 3, tool_call=piece)
    finally:
        await events.aclose()


async def test_deltas_and_their_step_together_send_the_step_only(store: RunStore) -> None:
    run = await store.create_run(new_run())
    events = watch_run(store, store.signals, run.id, 0, NO_HEARTBEAT)
    try:
        assert isinstance(await next_event(events), RunRecord)
        pending = await nothing_yet(events)
        # Both land before the watcher runs again: it sees the stored step, so the delta is stale.
        store.signals.publish_delta(text_delta(run.id, 1, "Hel"))
        await store.append_steps(run.id, [thought("Hello")])
        store.signals.publish_delta(text_delta(run.id, 2, "next"))
        first = await asyncio.wait_for(pending, PROMPTLY)
        if isinstance(first, StepDelta):  # the watcher may have run between the delta and the append
            assert first == StepDelta(run.id, 1, text="Hel")
            first = await next_event(events)
        assert isinstance(first, StepRecord) and first.sequence == 1
        assert await next_event(events) == StepDelta(run.id, 2, text="next")
    finally:
        await events.aclose()


async def test_a_watcher_that_attaches_mid_step_gets_what_was_written_in_one_delta(store: RunStore) -> None:
    run = await store.create_run(new_run())
    await store.append_steps(run.id, [thought("1")])
    for piece in ("The ", "answer ", "is"):
        store.signals.publish_delta(text_delta(run.id, 2, piece))
    events = watch_run(store, store.signals, run.id, 0, NO_HEARTBEAT)
    try:
        assert [type(await next_event(events)) for _ in range(2)] == [RunRecord, StepRecord]
        assert await next_event(events) == StepDelta(run.id, 2, text="The answer is", replace=True)
        store.signals.publish_delta(text_delta(run.id, 2, " 15"))
        assert await next_event(events) == StepDelta(run.id, 2, text=" 15")
    finally:
        await events.aclose()


async def test_a_late_watcher_gets_a_forming_tool_call_coalesced(store: RunStore) -> None:
    run = await store.create_run(new_run())
    store.signals.publish_delta(StepDelta(run.id, 1, tool_call=ToolCallDelta("call_1", "calc", '{"x": ')))
    store.signals.publish_delta(StepDelta(run.id, 1, tool_call=ToolCallDelta("", "", "5}")))
    events = watch_run(store, store.signals, run.id, 0, NO_HEARTBEAT)
    try:
        assert isinstance(await next_event(events), RunRecord)
        expected = StepDelta(run.id, 1, tool_call=ToolCallDelta("call_1", "calc", '{"x": 5}'), replace=True)
        assert await next_event(events) == expected
    finally:
        await events.aclose()


async def test_deltas_written_while_the_first_event_is_delivered_are_sent_once(store: RunStore) -> None:
    # The watcher is slow to take its first event (a busy network): the deltas written meanwhile must reach it
    # once, in the coalesced delta or one by one, never both (which would show the text twice).
    run = await store.create_run(new_run())
    events = watch_run(store, store.signals, run.id, 0, NO_HEARTBEAT)
    assert isinstance(await next_event(events), RunRecord)
    store.signals.publish_delta(text_delta(run.id, 1, "Hel"))
    store.signals.publish_delta(text_delta(run.id, 1, "lo"))
    received = await received_within(events)
    assert received == [StepDelta(run.id, 1, text="Hello", replace=True)]
    # The next watcher still finds everything written so far.
    store.signals.publish_delta(text_delta(run.id, 1, "!"))
    events = watch_run(store, store.signals, run.id, 0, NO_HEARTBEAT)
    later = await received_within(events)
    assert later[1:] == [StepDelta(run.id, 1, text="Hello!", replace=True)] and isinstance(later[0], RunRecord)


async def test_forming_state_is_dropped_when_the_step_is_stored_or_the_run_ends(store: RunStore) -> None:
    run = await store.create_run(new_run())
    store.signals.publish_delta(text_delta(run.id, 1, "a"))
    assert store.signals.forming(run.id, 0) == [StepDelta(run.id, 1, text="a", replace=True)]
    await store.append_steps(run.id, [thought("a")])
    assert store.signals.forming(run.id, 0) == [] and store.signals.tracked_runs() == 0
    store.signals.publish_delta(text_delta(run.id, 2, "b"))
    await store.finish_run(run.id, "failed", "model_unavailable", "the model went away")
    assert store.signals.tracked_runs() == 0


async def test_deltas_that_arrive_after_the_run_ended_are_dropped(store: RunStore) -> None:
    # The engine's deltas travel on their own stream: some still arrive after FinishRun, after a cancel, or
    # after the reaper ended the run. Kept, they would hold their text for ever (nothing stores that step).
    finished = await store.create_run(new_run())
    await store.finish_run(finished.id, "cancelled", "cancelled", "cancelled: stop")
    deleted = await store.create_run(new_run())
    await store.delete_run(deleted.id)
    for run_id in (finished.id, deleted.id):
        store.signals.publish_delta(text_delta(run_id, 1, "late"))
    assert store.signals.forming(finished.id, 0) == [] and store.signals.tracked_runs() == 0
    assert [type(e) for e in await collect(store, finished.id)] == [RunRecord, RunRecord]


# --- signals -----------------------------------------------------------------------------------------------


async def test_a_signal_sent_before_waiting_is_not_lost() -> None:
    signals = RunSignals()
    with signals.subscribe("r") as subscription:
        signals.notify("r")  # e.g. while the watcher was still querying
        assert await asyncio.wait_for(subscription.wait(NO_HEARTBEAT), 1) is True
        committed, deltas, overflowed = subscription.take()
        # A signal that carries nothing makes the watcher query.
        assert committed is not None and committed.following(0) is None and (deltas, overflowed) == ([], False)
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
    assert signals.watcher_count("r") == 0 and signals.tracked_runs() == 0


async def test_a_watcher_that_falls_behind_on_deltas_is_resynchronised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signals_module, "MAX_QUEUED_DELTAS", 3)
    signals = RunSignals()
    with signals.subscribe("r") as subscription:
        for piece in "abcde":
            signals.publish_delta(StepDelta("r", 1, text=piece))
        committed, deltas, overflowed = subscription.take()
        assert (committed, overflowed) == (None, True) and len(deltas) < 5
        assert signals.forming("r", 0) == [StepDelta("r", 1, text="abcde", replace=True)]


async def test_a_caught_up_watcher_takes_committed_steps_from_the_signal_without_a_query(
    store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = await store.create_run(new_run())
    queries = 0
    steps_after = store.steps_after

    async def counted(*args: object, **kwargs: object) -> tuple[RunRecord, list[StepRecord]]:
        nonlocal queries
        queries += 1
        return await steps_after(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "steps_after", counted)
    events = aiter(watch_run(store, store.signals, run.id, 0, NO_HEARTBEAT))
    assert isinstance(await next_event(events), RunRecord)
    for text in ("a", "b", "c"):
        await store.append_steps(run.id, [NewStep("agent-thought", {"text": text})])
        step = await next_event(events)
        assert isinstance(step, StepRecord) and step.content == {"text": text}
    await store.finish_run(run.id, "completed")
    final = await next_event(events)
    assert isinstance(final, RunRecord) and (final.state, final.step_count) == ("completed", 3)
    assert queries == 1  # the first look only


async def test_a_signal_whose_steps_leave_a_gap_makes_the_watcher_query(store: RunStore) -> None:
    run = await store.create_run(new_run())
    events = aiter(watch_run(store, store.signals, run.id, 0, NO_HEARTBEAT))
    assert isinstance(await next_event(events), RunRecord)
    # Step 1 is stored without its signal (as if written by another replica); step 2's signal leaves a gap.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store.signals, "steps_stored", lambda *args: None)
        await store.append_steps(run.id, [NewStep("agent-thought", {"text": "unsignalled"})])
    await store.append_steps(run.id, [NewStep("agent-thought", {"text": "signalled"})])
    first, second = await next_event(events), await next_event(events)
    assert [(e.sequence, e.content["text"]) for e in (first, second)] == [(1, "unsignalled"), (2, "signalled")]  # type: ignore[union-attr]
