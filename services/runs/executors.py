"""Notices from the store to the engine processes executing runs (no gRPC here).

Each engine keeps one ConnectExecutor stream open; the servicer registers it here under the engine's executor
id, and the store drops cancel notices into it the moment a cancel is recorded. A notice that finds no stream
(the engine is reconnecting, or runs on another replica) is not lost: the engine's next lease renewal reports
every pending cancel too.

Runs ready to resume (a WAITING run whose approval was decided) belong to no engine: each is offered to one
connected engine, taking turns. An offer that is lost (no engine connected, an engine that goes away) is made
again: the reaper re-offers ready runs on every pass, and a newly connected engine is offered them at once.

With several runs replicas, an engine's stream may be connected to another one: a cancel for an engine not
connected here, and an offer when no engine is connected here, go to the other replicas through the `relay`
(`services.runs.fanout`), which hands theirs to `cancel_here` and `offer_here`.
"""

import asyncio
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from services.runs.records import CancelNotice, ResumeNotice

Notice = CancelNotice | ResumeNotice

#: Notices one engine may have waiting before the oldest are dropped (lease renewals repeat them anyway).
MAX_PENDING_NOTICES = 10_000


class NoticeRelay(Protocol):
    """Where notices go that no engine connected here can take: the other runs replicas."""

    def cancel(self, executor_id: str, notice: CancelNotice) -> None: ...

    def offer_resume(self, run_id: str) -> None: ...


class ExecutorNotices:
    """Per engine process, the queues of its open ConnectExecutor streams."""

    def __init__(self) -> None:
        self._queues: dict[str, set[asyncio.Queue[Notice]]] = {}
        self._turns = itertools.count()
        self._relay: NoticeRelay | None = None

    def relay_to(self, relay: NoticeRelay) -> None:
        """Hand notices no engine here can take to `relay` (set once, when the service starts)."""
        self._relay = relay

    def cancel(self, executor_id: str, notice: CancelNotice) -> None:
        """Tell `executor_id` to cancel a run: here if it is connected here, else through the other replicas."""
        if not self.cancel_here(executor_id, notice) and self._relay is not None:
            self._relay.cancel(executor_id, notice)

    def cancel_here(self, executor_id: str, notice: CancelNotice) -> bool:
        """Tell `executor_id` to cancel a run if it is connected to this replica; False if it is not."""
        queues = self._queues.get(executor_id, ())
        for queue in queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(notice)
        return bool(queues)

    def offer_resume(self, run_id: str, passing_over: str = "") -> bool:
        """Offer a run ready to resume to one engine connected here (each in turn; never to `passing_over`, the
        engine that just handed it back at its shutdown), else to the other replicas; False when it could be
        offered to nobody."""
        if self.offer_here(run_id, passing_over):
            return True
        if self._relay is None:
            return False
        self._relay.offer_resume(run_id)
        return True

    def offer_here(self, run_id: str, passing_over: str = "") -> bool:
        """Offer a run ready to resume to one engine connected here but `passing_over` (each in turn); False when
        none is."""
        streams = [queue for executor, queues in self._queues.items() if executor != passing_over for queue in queues]
        if not streams:
            # A stopping engine takes no offers: the other replicas may have an engine; if none has, the reaper
            # offers the run again on its next passes, to the engine that connects.
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
