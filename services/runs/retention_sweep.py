"""The runs service's retention sweep: every RUNS_RETENTION_INTERVAL_SECONDS it deletes the finished runs past
the retention policy's age (services/runs/retention.py), in batches; nothing at all when no policy is set."""

import asyncio
import contextlib
import logging

from services.runs import metrics
from services.runs.retention import RetentionPolicy
from services.runs.store import RunStore

log = logging.getLogger(__name__)


class RetentionSweep:
    """Sweeps at start (a service restarted daily would otherwise never reach its first interval), then every
    `interval` seconds."""

    def __init__(self, store: RunStore, policy: RetentionPolicy, interval: float, batch: int) -> None:
        self._store = store
        self._policy = policy
        self._interval = interval
        self._batch = batch
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._policy.enabled:
            self._task = asyncio.create_task(self._loop(), name="retention-sweep")

    async def sweep(self) -> int:
        deleted = await self._store.delete_expired_runs(self._policy, batch=self._batch)
        if deleted:
            metrics.RUNS_DELETED_BY_RETENTION.inc(deleted)
            log.info("retention: deleted %d finished run(s) past their maximum age", deleted)
        return deleted

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("the retention sweep failed; trying again in %.0fs", self._interval)
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
