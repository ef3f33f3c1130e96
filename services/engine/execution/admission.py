"""Admission ahead of execution: new chats are acknowledged (their runs created with their first steps) before the
runs this engine already executes spend its event loop on their next model calls.

One engine process is one event loop, and everything it does waits its turn there: the gRPC server takes a new
call in only every few turns of the loop, and a turn lasts as long as all the work that was ready in it. With a
thousand runs streaming model answers, a burst of new chats took 6 to 25 s just to reach the engine's handler,
then waited for their creates' answers behind the runs' appends (issue 22's profile, docs/performance.md). So each
start is counted here while it is admitted (`admitting`), and a running run asks for its turn before each model
call (`wait_turn`): while any start is being admitted it waits, at most ENGINE_ADMISSION_HOLD_SECONDS, so a burst
is taken in on a quiet loop and execution is delayed by a bounded time, never starved. The scheduler
(execution/scheduler.py) counts the starts; the agent loop waits.
"""

import asyncio
import contextlib
import time
from collections.abc import Iterator

from services.engine import metrics


class Admissions:
    """The starts being admitted in this process, and the runs waiting for them."""

    def __init__(self, hold_seconds: float) -> None:
        """`hold_seconds`: the longest a run's model call waits for starts being admitted (0: never waits)."""
        self._hold_seconds = hold_seconds
        self._in_flight = 0
        #: Set while no start is being admitted.
        self._clear = asyncio.Event()
        self._clear.set()
        metrics.ADMISSIONS_IN_FLIGHT.set_function(lambda: self._in_flight)

    @property
    def in_flight(self) -> int:
        """Starts being admitted now."""
        return self._in_flight

    @contextlib.contextmanager
    def admitting(self) -> Iterator[None]:
        """Count a start (a chat, a run, a workflow run) as being admitted until the block ends."""
        self._in_flight += 1
        self._clear.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._clear.set()

    async def wait_turn(self) -> None:
        """Return once no start is being admitted, or after the hold."""
        if self._clear.is_set() or self._hold_seconds <= 0:
            return
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._hold_seconds):
                await self._clear.wait()
        except TimeoutError:
            pass  # held long enough: the run goes on, admissions or not
        finally:
            metrics.ADMISSION_HOLD.observe(time.perf_counter() - started)
