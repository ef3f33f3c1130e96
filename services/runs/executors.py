"""Notices from the store to the engine processes executing runs (no gRPC here).

Each engine keeps one ConnectExecutor stream open; the servicer registers it here under the engine's executor
id, and the store drops cancel notices into it the moment a cancel is recorded. A notice that finds no stream
(the engine is reconnecting, or runs on another replica) is not lost: the engine's next lease renewal reports
every pending cancel too.

Runs ready to resume (a WAITING run whose approval was decided) belong to no engine: each is offered to one
connected engine, taking turns. An offer that is lost (no engine connected, an engine that goes away) is made
again: the reaper re-offers ready runs on every pass, and a newly connected engine is offered them at once.
"""

import asyncio
import itertools
from collections.abc import Iterator
from contextlib import contextmanager

from services.runs.records import CancelNotice, ResumeNotice

Notice = CancelNotice | ResumeNotice

#: Notices one engine may have waiting before the oldest are dropped (lease renewals repeat them anyway).
MAX_PENDING_NOTICES = 10_000


class ExecutorNotices:
    """Per engine process, the queues of its open ConnectExecutor streams."""

    def __init__(self) -> None:
        self._queues: dict[str, set[asyncio.Queue[Notice]]] = {}
        self._turns = itertools.count()

    def cancel(self, executor_id: str, notice: CancelNotice) -> None:
        """Tell `executor_id` to cancel a run, if it is connected."""
        for queue in self._queues.get(executor_id, ()):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(notice)

    def offer_resume(self, run_id: str) -> bool:
        """Offer a run ready to resume to one connected engine (each in turn); False when none is connected."""
        streams = [queue for queues in self._queues.values() for queue in queues]
        if not streams:
            return False
        queue = streams[next(self._turns) % len(streams)]
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(ResumeNotice(run_id))
        return True

    @contextmanager
    def connect(self, executor_id: str) -> Iterator[asyncio.Queue[Notice]]:
        """Register a stream of `executor_id` for the duration of the block; yields its notice queue."""
        queue: asyncio.Queue[Notice] = asyncio.Queue(MAX_PENDING_NOTICES)
        self._queues.setdefault(executor_id, set()).add(queue)
        try:
            yield queue
        finally:
            queues = self._queues[executor_id]
            queues.discard(queue)
            if not queues:
                del self._queues[executor_id]

    def is_connected(self, executor_id: str) -> bool:
        return executor_id in self._queues

    @property
    def any_connected(self) -> bool:
        return bool(self._queues)
