"""The lease reaper: ends the runs whose engine stopped renewing their lease, so no run stays live for ever; and
times out approvals nobody decided, so a run waiting for one follows its timeout."""

import asyncio
import contextlib
import logging

from services.runs.store import RunStore

log = logging.getLogger(__name__)


class LeaseReaper:
    """Every `interval` seconds, ends live runs whose lease ran out (FAILED "interrupted", or CANCELLED when a
    cancel was pending). On start it first gives every live run one full lease period, so that engines which
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
                log.warning("ended %d run(s) whose engine stopped renewing the lease: %s", len(reaped),
                            ", ".join(reaped))
            try:
                # Approvals past their timeout are decided "timed out"; decided runs not yet resumed (the offer went
                # to an engine that went away, or to none) are offered again.
                timed_out = await self._store.expire_approvals()
                await self._store.offer_ready_runs()
            except Exception:
                log.exception("timing out approvals failed; trying again in %.1fs", self._interval)
                continue
            if timed_out:
                log.info("%d approval(s) timed out: %s", len(timed_out), ", ".join(timed_out))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
