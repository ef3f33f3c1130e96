"""The live events of a run this engine executes, for the StreamChat that started it.

StreamChat used to follow its run through the run store (RunService.WatchRun), which sent every step back to
the engine that had just written it. The engine has each event itself the moment it happens: the run as the
store returned it (created, begun, finished), each step as the store stored it, each delta as the model writes
it. A `RunFeed` hands those to the run's followers in that order, so StreamChat sends the same events as
WatchRun would without the round trip.

What a feed carries is only ever what the store has committed (steps and runs as the store answered), so a
client that switches to WatchRun later (to re-attach) sees nothing it had not seen. When a run's end cannot be
recorded from here (the store stayed away, the run was deleted), the feed ends without a final run and the
follower continues from the store, after the last step it got.
"""

import asyncio
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import replace
from datetime import UTC, datetime

from services.common.run_vocabulary import FINAL_STATES, LIVE_STATES
from services.common.step_delta import StepDelta
from services.engine.deltas import joined
from services.engine.journal import Heartbeat, Run, RunEvent, Step

#: Deltas one follower may have waiting; past that, deltas are dropped until it catches up (the steps they
#: form arrive whole anyway).
MAX_QUEUED_DELTAS = 10_000



class RunFeed:
    """One run's events, from its creation to its end, for the followers subscribed at its start."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self._followers: set[FeedFollower] = set()
        self._last_sequence = 0
        self._ended = False

    def follow(self) -> "FeedFollower":
        """A follower that gets every event from now on; the run as it is now comes first."""
        follower = FeedFollower(self)
        self._followers.add(follower)
        follower._push(self.run)
        if self._ended:
            follower._push(None)
        return follower

    def run_changed(self, run: Run) -> None:
        """The store returned the run in a new state (begun, finished) or with a cancel requested."""
        self.run = run
        self._publish(run)
        if run.state not in LIVE_STATES:
            self.end()

    def cancel_requested(self) -> None:
        """A cancel reached the engine: followers see the run with `cancel_requested`, as WatchRun shows it."""
        if self._ended or self.run.cancel_requested:
            return
        self.run_changed(replace(self.run, cancel_requested=True))

    def steps_stored(self, steps: list[Step]) -> None:
        for step in steps:
            if step.sequence > self._last_sequence:
                self._last_sequence = step.sequence
                self._publish(step)

    def delta(self, delta: StepDelta) -> None:
        # A delta that arrives after its step was stored is stale: the step holds all of it.
        if delta.sequence > self._last_sequence:
            self._publish(delta, droppable=True)

    def end(self) -> None:
        """No more events: after the final run, or without one when the run's end is not recorded here."""
        if not self._ended:
            self._ended = True
            for follower in self._followers:
                follower._push(None)

    def _publish(self, event: RunEvent, droppable: bool = False) -> None:
        if self._ended:
            return
        for follower in self._followers:
            follower._push(event, droppable)


class FeedFollower:
    """One follower's queue of a feed's events."""

    def __init__(self, feed: RunFeed) -> None:
        self._feed = feed
        self._queue: deque[RunEvent | None] = deque()
        self._ready = asyncio.Event()
        self._deltas = 0
        #: The highest step sequence handed out, and whether the final run was.
        self.last_sequence = 0
        self.finished = False

    def _push(self, event: RunEvent | None, droppable: bool = False) -> None:
        if droppable:
            if self._deltas >= MAX_QUEUED_DELTAS:
                return
            self._deltas += 1
        self._queue.append(event)
        self._ready.set()

    async def _next(self, heartbeat_seconds: float) -> RunEvent | None:
        """The next event: deltas of one step queued one after another come as one (the client is sent what the
        model wrote since, not each piece, when it falls behind); a heartbeat after `heartbeat_seconds` quiet."""
        if not self._queue:
            self._ready.clear()
            try:
                async with asyncio.timeout(heartbeat_seconds):
                    await self._ready.wait()
            except TimeoutError:
                return Heartbeat(time=datetime.now(UTC), last_sequence=self.last_sequence)
        event = self._queue.popleft()
        if not isinstance(event, StepDelta):
            return event
        self._deltas -= 1
        delta = event
        while self._queue and isinstance(following := self._queue[0], StepDelta):
            longer = joined(delta, following)
            if longer is None:
                break
            delta = longer
            self._queue.popleft()
            self._deltas -= 1
        return delta

    async def events(self, heartbeat_seconds: float) -> AsyncGenerator[RunEvent, None]:
        """The feed's events, with a heartbeat when it is quiet for `heartbeat_seconds`, until the final run
        or the end of the feed (then `finished` tells which)."""
        try:
            while True:
                event = await self._next(heartbeat_seconds)
                if event is None:
                    return
                if isinstance(event, Step):
                    self.last_sequence = event.sequence
                elif isinstance(event, Run) and event.state in FINAL_STATES:
                    self.finished = True
                yield event
                if self.finished:
                    return
        finally:
            self._feed._followers.discard(self)

