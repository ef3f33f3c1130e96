"""The lease reaper: takes the runs whose engine stopped renewing their lease from it, to be resumed by another
engine (or ends them, past RUNS_MAX_ATTEMPTS), so no run stays with a dead engine; and times out approvals nobody
decided, so a run waiting for one follows its timeout."""

import asyncio
import contextlib
import logging

from services.runs import metrics
from services.runs.store import RunStore

log = logging.getLogger(__name__)


class LeaseReaper:
    """Every `interval` seconds, orphans the live runs whose lease ran out, offering them to engines to resume,
    or ends them (FAILED "interrupted" past their attempts, or CANCELLED when a cancel was pending; see
    services/runs/leases.py). On start it first gives every live run one full lease period, so that engines which
    kept running while this service was down can renew before anything is reaped."""

    def __init__(self, store: RunStore, interval: float) -> None:
        self._store = store
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        extended = await self._store.extend_live_leases()
        if extended:
            log.info("gave %d live run(s) a fresh lease period for their engines to renew", extended)
        self._task = asyncio.create_task(self._loop(), name="lease-reaper")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                reaped = await self._store.reap_expired()
            except Exception:
                log.exception("reaping expired runs failed; trying again in %.1fs", self._interval)
                continue
            if reaped:
                metrics.LEASES_EXPIRED.inc(len(reaped))
                log.warning("took %d run(s) from an engine that stopped renewing the lease (offered to resume, "
                            "or ended): %s", len(reaped), ", ".join(reaped))
            try:
                # Approvals past their timeout are decided "timed out"; runs ready to resume (decided or orphaned)
                # not yet taken (the offer went to an engine that went away, or to none) are offered again.
                timed_out = await self._store.expire_approvals()
                await self._store.offer_ready_runs()
            except Exception:
                log.exception("timing out approvals failed; trying again in %.1fs", self._interval)
                continue
            if timed_out:
                metrics.APPROVALS_TIMED_OUT.inc(len(timed_out))
                log.info("%d approval(s) timed out: %s", len(timed_out), ", ".join(timed_out))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
