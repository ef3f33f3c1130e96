"""WatchRun's algorithm (no gRPC here): replay a run's steps after a cursor, then follow it live through its
`signals.RunSignals` subscription, with heartbeats while quiet. `servicer.RunServicer.WatchRun` streams it.

A signal means "look again" (see `signals`); whenever what a signal carries does not follow on from the watcher's
cursor without a gap, the watcher reads the steps after its cursor through `StepReader.steps_after`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.common.db.database import utcnow
from services.common.errors import InvalidArgument, OutOfRange
from services.common.run_vocabulary import ACTIVE_STATES
from services.common.step_delta import StepDelta
from services.runs.checks import MAX_SEQUENCE, parse_run_id
from services.runs.records import RunRecord, StepRecord
from services.runs.signals import RunSignals

#: How many steps one look reads at most, so replaying a long run does not load it all at once.
STEP_BATCH = 500


class StepReader(Protocol):
    """What the watch reads from the run store (`RunStore` is one); a protocol, so the watch does not import the
    store and the store can import the signals without a circle."""

    async def steps_after(
        self, run_id: str, after_sequence: int, limit: int
    ) -> tuple[RunRecord, list[StepRecord]]: ...


@dataclass(frozen=True)
class Heartbeat:
    """Sent while a watched run is quiet; `last_sequence` is the watcher's cursor (a bookmark)."""

    time: datetime
    last_sequence: int


WatchEvent = RunRecord | StepRecord | StepDelta | Heartbeat


async def _first_look(store: StepReader, run_id: str, cursor: int) -> tuple[RunRecord, list[StepRecord]]:
    """The run and its first steps after `cursor`; OutOfRange when the cursor is past the end of a finished run."""
    run, steps = await store.steps_after(run_id, cursor, limit=STEP_BATCH)
    if run.state not in ACTIVE_STATES and cursor > run.step_count:
        raise OutOfRange(
            f"after_sequence {cursor} is beyond the last step of run '{run_id}', which ended "
            f"{run.state} with {run.step_count} steps; resume from {run.step_count} or lower"
        )
    return run, steps


async def watch_run(
    store: StepReader,
    signals: RunSignals,
    run_id: str,
    after_sequence: int,
    heartbeat_seconds: float,
) -> AsyncGenerator[WatchEvent, None]:
    """The run, its steps after `after_sequence`, then live steps, deltas, the run on state changes (and when
    its engine stopped) and heartbeats while quiet; last, the run in its final state.

    Raises NotFound for an unknown run and when the run is deleted while watched, OutOfRange when the cursor
    is beyond the last step of a finished run.
    """
    run_id = parse_run_id(run_id)
    if not 0 <= after_sequence <= MAX_SEQUENCE:
        raise InvalidArgument(
            f"after_sequence must be 0 to {MAX_SEQUENCE} (0 replays every step), got {after_sequence}"
        )
    cursor = after_sequence
    # Subscribe before the first query: a step committed between a query and the wait sets the
    # subscription's flag, so the wait returns at once instead of sleeping until the heartbeat.
    with signals.subscribe(run_id) as subscription:
        run, steps = await _first_look(store, run_id, cursor)
        yield run
        # An orphaned or handed-back run (its engine stopped) shows again with its attempt or hand-back count,
        # though its state stays.
        shown = (run.state, run.cancel_requested, run.attempts, run.handbacks)
        # Deltas published since subscribing (while querying, or while the caller took the run) are both in
        # the coalesced state and queued for this watcher: keep the coalesced copy only, or they come twice.
        deltas = signals.forming(run_id, cursor)
        subscription.drop_deltas()
        while True:
            for step in steps:
                yield step
                cursor = step.sequence
            if len(steps) == STEP_BATCH:
                run, steps = await store.steps_after(run_id, cursor, limit=STEP_BATCH)
                continue  # more to replay; no need to wait
            # steps_after reads the run before its steps, and a finished run takes no more steps, so once
            # the run is seen finished the steps just read were the last ones.
            if run.state not in ACTIVE_STATES:
                yield run
                return
            if (run.state, run.cancel_requested, run.attempts, run.handbacks) != shown:
                yield run
                shown = (run.state, run.cancel_requested, run.attempts, run.handbacks)
            for delta in deltas:
                if delta.sequence > cursor:
                    yield delta
            steps, deltas = [], []
            if not await subscription.wait(heartbeat_seconds):
                yield Heartbeat(utcnow(), cursor)
                if signals.distributed:
                    # A replica that died between a commit and its message leaves nothing to wake this watcher:
                    # look at every heartbeat, so such a change costs a heartbeat of latency, never a hang.
                    run, steps = await store.steps_after(run_id, cursor, limit=STEP_BATCH)
                continue
            committed, deltas, overflowed = subscription.take()
            if overflowed:
                deltas = signals.forming(run_id, cursor)
            if committed is None:
                continue
            carried = committed.following(cursor)
            if carried is None:
                run, steps = await store.steps_after(run_id, cursor, limit=STEP_BATCH)
            else:
                run, steps = committed.run or run, carried
