"""Lease renewals: every run an engine holds (queued or running) has its lease renewed every third of
ENGINE_LEASE_SECONDS, all of them in one RenewLeases call, each with the epoch of its lease. The answer names runs
lost (ended or deleted in the store: stopped here without recording), runs fenced (another engine took them: stopped
at once, without recording) and runs to cancel (a CancelRun another replica took)."""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

from services.common import errors
from services.engine import metrics
from services.engine.upstream.runs_client import RunsClient

log = logging.getLogger(__name__)


class LeaseRenewer:
    """Renews the leases of the runs `held()` names (run id: the epoch of its lease), every `interval` seconds,
    until stopped."""

    def __init__(self, runs: RunsClient, executor_id: str, interval: float) -> None:
        self._runs = runs
        self._executor_id = executor_id
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(
        self, held: Callable[[], Mapping[str, int]], lose: Callable[[str], None], cancel: Callable[[str, str], object]
    ) -> None:
        """`lose(run_id)` stops a run the store no longer holds for this engine; `cancel(run_id, reason)` cancels
        one."""
        self._task = asyncio.create_task(self._renew(held, lose, cancel), name="lease-renewals")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _renew(
        self, held: Callable[[], Mapping[str, int]], lose: Callable[[str], None], cancel: Callable[[str, str], object]
    ) -> None:
        # Runs the store reported lost once. One is stopped when the next renewal reports it lost again: a run
        # that finished while the renewal was in flight is reported lost too, and is gone from here by then.
        # A fenced run is stopped at once: its lease was taken by another engine, which a run ending here cannot
        # look like.
        suspects: set[str] = set()
        while True:
            await asyncio.sleep(self._interval)
            epochs = dict(held())
            if not epochs:
                continue
            try:
                renewal = await self._runs.renew_leases(self._executor_id, epochs)
            except errors.DomainError as exc:
                metrics.LEASE_RENEWALS.labels("failed").inc()
                log.warning("could not renew the leases of %d run(s): %s", len(epochs), exc)
                continue
            metrics.LEASE_RENEWALS.labels("ok").inc()
            still_held = held()
            for run_id in renewal.fenced_run_ids:
                # Still under the lease renewed: not a run held here again, since, under a newer one.
                if run_id in epochs and still_held.get(run_id) == epochs[run_id]:
                    lose(run_id)
            lost = (set(renewal.lost_run_ids) - renewal.fenced_run_ids) & set(still_held)
            for run_id in lost & suspects:
                lose(run_id)
            suspects = lost - suspects
            for run_id, reason in renewal.cancels:
                cancel(run_id, reason)
