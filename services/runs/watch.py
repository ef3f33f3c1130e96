"""The live part of WatchRun: change signals and the watch algorithm (no gRPC here).

The algorithm never trusts a signal to carry data: a signal only means "look again", and every look is a
query for the steps after the watcher's cursor. So a missed or duplicated signal can cost a heartbeat of
latency at most, never a lost or repeated step, and a PostgreSQL LISTEN/NOTIFY source can replace the
in-process `RunSignals` without touching `watch_run`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from services.common.database import utcnow
from services.common.errors import InvalidArgument
from services.runs.models import RUNNING

if TYPE_CHECKING:
    from services.runs.store import RunRecord, RunStore, StepRecord

#: How many steps one look reads at most, so replaying a long run does not load it all at once.
STEP_BATCH = 500


class _Channel:
    """The signal state of one watched run: a generation counter and the event of the current generation."""

    def __init__(self) -> None:
        self.generation = 0
        self.event = asyncio.Event()
        self.watchers = 0

    def bump(self) -> None:
        self.generation += 1
        self.event.set()
        # A fresh event per generation: waiters of the old one wake, later waiters wait for the next bump.
        self.event = asyncio.Event()


class Subscription:
    """One watcher's registration for a run's signals. Create it BEFORE the first query."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel
        self._seen = channel.generation

    async def wait(self, timeout: float) -> bool:
        """Wait for a change since the last wait (or since subscribing); False when `timeout` s passed quietly.

        A change signalled while the watcher was querying is not lost: its generation is newer than the one
        seen, so this returns at once.
        """
        channel = self._channel
        if channel.generation == self._seen:
            try:
                # asyncio.timeout rather than wait_for: on Python 3.11 wait_for can swallow a cancellation
                # that coincides with the event, and a watcher must always honour cancellation.
                async with asyncio.timeout(timeout):
                    await channel.event.wait()
            except TimeoutError:
                return False
        self._seen = channel.generation
        return True


class RunSignals:
    """In-process change signals per run: writers `notify(run_id)` after commit, watchers `subscribe`.

    Only runs with at least one watcher hold state, and it is dropped with the last watcher, so
    disconnected watchers leak nothing.
    """

    def __init__(self) -> None:
        self._channels: dict[str, _Channel] = {}

    def notify(self, run_id: str) -> None:
        """Wake every watcher of `run_id` (call it after the change is committed)."""
        channel = self._channels.get(run_id)
        if channel is not None:
            channel.bump()

    @contextmanager
    def subscribe(self, run_id: str) -> Iterator[Subscription]:
        """Register a watcher of `run_id` for the duration of the block (also when it is cancelled)."""
        channel = self._channels.setdefault(run_id, _Channel())
        channel.watchers += 1
        try:
            yield Subscription(channel)
        finally:
            channel.watchers -= 1
            if channel.watchers == 0:
                del self._channels[run_id]

    def watcher_count(self, run_id: str) -> int:
        """How many watchers `run_id` has now (for tests and metrics)."""
        channel = self._channels.get(run_id)
        return channel.watchers if channel else 0


@dataclass(frozen=True)
class Heartbeat:
    """Sent while a watched run is quiet."""

    time: datetime


async def watch_run(
    store: RunStore,
    signals: RunSignals,
    run_id: str,
    after_sequence: int,
    heartbeat_seconds: float,
) -> AsyncIterator[StepRecord | RunRecord | Heartbeat]:
    """The steps of `run_id` after `after_sequence`, then live ones, heartbeats while quiet, then the final run.

    Raises NotFound for an unknown run and when the run is deleted while watched.
    """
    if after_sequence < 0:
        raise InvalidArgument(f"after_sequence must be >= 0, got {after_sequence}")
    cursor = after_sequence
    # Subscribe before the first query: a step committed between a query and the wait bumps the
    # generation, so the wait returns at once instead of sleeping until the heartbeat.
    with signals.subscribe(run_id) as subscription:
        while True:
            run, steps = await store.steps_after(run_id, cursor, limit=STEP_BATCH)
            for step in steps:
                yield step
                cursor = step.sequence
            if len(steps) == STEP_BATCH:
                continue  # more to replay; no need to wait
            # steps_after reads the run before its steps, and a finished run takes no more steps, so once
            # the run is seen finished the steps just read were the last ones.
            if run.state != RUNNING:
                yield run
                return
            if not await subscription.wait(heartbeat_seconds):
                yield Heartbeat(utcnow())
