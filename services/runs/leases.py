"""Leases on runs in the run store: an engine renews the leases of the runs it executes, the reaper ends the runs
whose lease ran out, and the service extends every live lease when it starts (no gRPC here). Part of `RunStore`.

A run whose lease ran out (its engine crashed, was killed or cut off) is not ended but orphaned: it stays QUEUED
or RUNNING with no executor, its `attempts` goes up, and it is offered to the connected engines as a decided
approval is (approvals.py `offer_ready_runs`, `resume_run`); the engine that takes it continues it from its steps
under the next epoch, so the engine that lost it is fenced if it comes back. A run already resumed
`StoreLimits.max_attempts` times, a workflow run that never began (its inputs are recorded in its first step, when
it begins), or one with a cancel pending ends as before: FAILED "interrupted", or CANCELLED. A workflow run is
continued node by node (services/engine/workflows/runner.py).

An engine that shuts down (a deploy, a scale-down) does not leave its runs to the reaper: it hands them back
(`hand_back`), and each is orphaned at once the same way, so another engine (or this one, restarted) continues it
without waiting for its lease to run out. A hand-back is not an attempt (`handbacks` counts it, and
`handed_back_by` names the engine, for the `resumed` step of the engine that continues the run): max_attempts
exists to stop a run that keeps making its engine fail, and a clean stop is no sign of that.

Leases are fenced. A run's `lease_epoch` counts the leases taken on it: creating it under an engine's lease makes
it 1, and every later take (resuming it after an approval) adds one. The run comes back to its engine with the
epoch, and every write that engine makes on it (begin, append, await approval, finish, renew) carries it;
`check_fence` refuses a write whose epoch is not the run's current one, so an engine that was paused or cut off
while another took the run cannot write over it. Epoch 0 is "none": what an engine of the previous version
sends during a rolling upgrade, whose writes keep the checks they had before epochs (state, executor id).
"""

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from services.common.db.database import utcnow
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.run_vocabulary import CANCELLED, FAILED, LIVE_STATES, QUEUED, RUNNING
from services.runs.checks import check_executor_id, check_lease_epoch, parse_run_id
from services.runs.parts import StoreParts
from services.runs.records import CancelNotice, HandBack, LeaseRenewal, RunRecord
from services.runs.rows import (
    CANCELLED_CODE,
    INTERRUPTED,
    RUN_COLUMNS,
    RUNS,
    Values,
    add_error_step,
    cancel_message,
    end_run,
    run_record,
    update_run,
)

#: Run ids one RenewLeases call may carry.
MAX_LEASES_PER_RENEWAL = 10_000
#: How many expired runs one reaper pass ends (and approvals it times out, and ready runs it offers again).
REAP_BATCH = 100
#: The epoch of a write that carries none (an engine of the previous version): checked as before epochs.
NO_EPOCH = 0


def check_fence(run: Values, epoch: int, write: str) -> None:
    """Refuse (FailedPrecondition, "lease lost") the `write` ("append", "finish" ...) on `run` (its row) made
    under the lease of `epoch` when the run is at another epoch (its lease was taken again since), or when it is
    orphaned (its lease ran out, and it waits for an engine to resume it: the one that wrote it before is gone)."""
    orphaned = run["state"] in LIVE_STATES and not run["executor_id"]
    if not orphaned and (epoch == NO_EPOCH or epoch == run["lease_epoch"]):
        return
    if orphaned:
        holder = "held by no executor (its lease ran out: it waits for an engine to resume it)"
    elif run["state"] in LIVE_STATES:
        holder = f"held by executor {run['executor_id']!r}"
    else:
        holder = f"{run['state'].upper()} and held by no executor"
    raise FailedPrecondition(
        f"lease lost: run '{run['id']}' is at epoch {run['lease_epoch']}, {holder}; this {write} came with epoch "
        f"{epoch} and was not stored. Stop executing the run here: another engine took it, or the store ended it"
    )


class RunLeases(StoreParts):
    """The run store's lease methods (see the module docstring)."""

    async def renew_leases(
        self, executor_id: str, run_ids: Sequence[str], epochs: Mapping[str, int] | None = None
    ) -> LeaseRenewal:
        """Extend the leases `executor_id` holds on `run_ids`, each by its own lease duration; `epochs` has the
        epoch of each run's lease (a run without one: NO_EPOCH, checked as before epochs).

        Runs it does not hold (ended, reaped, deleted, another engine's, at another epoch) come back as lost, and
        of those, the ones whose lease was taken again (another engine's, or at another epoch) also as fenced;
        runs with a pending cancel come back to be cancelled (a fallback for a notice the engine missed).
        """
        check_executor_id(executor_id)
        if len(run_ids) > MAX_LEASES_PER_RENEWAL:
            raise InvalidArgument(f"at most {MAX_LEASES_PER_RENEWAL} run ids per renewal, got {len(run_ids)}")
        epoch_of: dict[str, int] = {}
        for run_id, epoch in (epochs or {}).items():
            check_lease_epoch(epoch)
            epoch_of[parse_run_id(run_id)] = epoch
        ids = list(dict.fromkeys(parse_run_id(run_id) for run_id in run_ids))
        if not ids:
            return LeaseRenewal([], [])

        def renew(connection: Connection) -> LeaseRenewal:
            now = utcnow()
            held: set[str] = set()
            fenced: list[str] = []
            cancel: list[CancelNotice] = []
            rows = connection.execute(
                select(
                    RUNS.c.id, RUNS.c.state, RUNS.c.executor_id, RUNS.c.lease_epoch, RUNS.c.lease_seconds,
                    RUNS.c.cancel_requested_at, RUNS.c.cancel_reason,
                ).where(RUNS.c.id.in_(ids))
            )
            by_duration: dict[float, list[str]] = {}
            for row in rows:
                epoch = epoch_of.get(row.id, NO_EPOCH)
                live = row.state in LIVE_STATES
                if (epoch != NO_EPOCH and epoch != row.lease_epoch) or (live and row.executor_id != executor_id):
                    fenced.append(row.id)
                    continue
                if not live:
                    continue
                held.add(row.id)
                by_duration.setdefault(row.lease_seconds, []).append(row.id)
                if row.cancel_requested_at is not None:
                    cancel.append(CancelNotice(row.id, row.cancel_reason))
            for seconds, group in by_duration.items():
                connection.execute(
                    update(RUNS).where(RUNS.c.id.in_(group)).values(lease_expires_at=now + timedelta(seconds=seconds))
                )
            return LeaseRenewal([run_id for run_id in ids if run_id not in held], cancel, fenced)

        # Urgent: under a deep queue of appends, a renewal that waited its turn could arrive after the lease ran
        # out, and the reaper would end runs whose engine is alive and renewing.
        return await self._writer.write(renew, urgent=True)

    async def reap_expired(self) -> list[str]:
        """Orphan the live runs whose lease ran out, to be resumed by another engine, or end those that cannot be
        (see the module docstring): FAILED "interrupted", or CANCELLED when a cancel was pending. Returns the ids
        of the runs it orphaned or ended."""

        def reap(connection: Connection) -> tuple[list[RunRecord], list[RunRecord]]:
            now = utcnow()
            ended: list[RunRecord] = []
            orphaned: list[RunRecord] = []
            # SKIP LOCKED: several runs replicas may reap at once on PostgreSQL without waiting on each other.
            rows = connection.execute(
                select(*RUN_COLUMNS)
                .where(RUNS.c.state.in_(LIVE_STATES), RUNS.c.lease_expires_at < now)
                .order_by(RUNS.c.lease_expires_at)
                .limit(REAP_BATCH)
                .with_for_update(skip_locked=True)
            )
            for row in rows.all():
                run = dict(row._mapping)
                moved = self._take_from_engine(connection, run, handed_back=False)
                (orphaned if moved else ended).append(run_record(run))
            return ended, orphaned

        ended, orphaned = await self._writer.write(reap)
        self._taken_from_engines(ended, orphaned)
        return [record.id for record in ended + orphaned]

    async def hand_back(self, executor_id: str, epochs: Mapping[str, int]) -> HandBack:
        """Take back the runs `executor_id` holds, each at its epoch in `epochs` (run id -> epoch), as it shuts
        down: each is orphaned at once as the reaper orphans a run whose lease ran out, without counting an
        attempt (`handbacks` counts it), or ended as the reaper would end it (a cancel pending, not resumable).
        A run it does not hold at that epoch (ended, taken by another engine, unknown) is refused and left as is.
        """
        check_executor_id(executor_id)
        if len(epochs) > MAX_LEASES_PER_RENEWAL:
            raise InvalidArgument(f"at most {MAX_LEASES_PER_RENEWAL} runs per hand-back, got {len(epochs)}")
        epoch_of: dict[str, int] = {}
        for run_id, epoch in epochs.items():
            check_lease_epoch(epoch)
            if epoch == NO_EPOCH:
                raise InvalidArgument(f"run '{run_id}' is handed back without the epoch of the lease on it")
            epoch_of[parse_run_id(run_id)] = epoch
        if not epoch_of:
            return HandBack([], [], [])

        def take_back(connection: Connection) -> tuple[list[RunRecord], list[RunRecord], list[str]]:
            ended: list[RunRecord] = []
            orphaned: list[RunRecord] = []
            rows = connection.execute(
                select(*RUN_COLUMNS).where(RUNS.c.id.in_(list(epoch_of))).order_by(RUNS.c.id).with_for_update()
            )
            held: set[str] = set()
            for row in rows.all():
                run = dict(row._mapping)
                if not (
                    run["state"] in LIVE_STATES
                    and run["executor_id"] == executor_id
                    and run["lease_epoch"] == epoch_of[run["id"]]
                ):
                    continue  # fenced: not this engine's run at this epoch any more
                held.add(run["id"])
                moved = self._take_from_engine(connection, run, handed_back=True)
                (orphaned if moved else ended).append(run_record(run))
            return ended, orphaned, [run_id for run_id in epoch_of if run_id not in held]

        ended, orphaned, refused = await self._writer.write(take_back, urgent=True)  # the engine is stopping
        self._taken_from_engines(ended, orphaned, passing_over=executor_id)
        return HandBack([record.id for record in orphaned], [record.id for record in ended], refused)

    def _take_from_engine(self, connection: Connection, run: dict[str, Any], *, handed_back: bool) -> bool:
        """Take the live `run` (its row, locked) from the engine that held it, which stopped (its lease ran out)
        or handed it back: orphan it, to be offered to engines to resume, and return True; or end it when it
        cannot be resumed (a cancel pending, a workflow run whose inputs were never recorded, out of attempts,
        resumes off) and return False. A
        hand-back is no attempt: max_attempts stops runs that keep making their engine fail, and a clean stop is no
        such sign; but max_attempts 0 (resumes off) means no run moves to another engine, handed back or not."""
        engine = run["executor_id"]
        # A workflow run is continued from its steps, the first of which holds its inputs: one that has none yet
        # (created QUEUED, its inputs only in the engine that stopped) cannot be.
        recorded = not run["workflow_id"] or run["step_count"] > 0
        resumable = run["state"] in (QUEUED, RUNNING) and recorded
        max_attempts = self.limits.max_attempts
        attempts_left = max_attempts > 0 if handed_back else run["attempts"] < max_attempts
        if run["cancel_requested_at"] is None and resumable and attempts_left:
            if handed_back:
                moved: dict[str, Any] = {"handbacks": run["handbacks"] + 1, "handed_back_by": engine}
            else:
                moved = {"attempts": run["attempts"] + 1}
            update_run(connection, run, executor_id="", lease_expires_at=None, **moved)
            return True
        if run["cancel_requested_at"] is not None:
            state, code, message = CANCELLED, CANCELLED_CODE, cancel_message(run["cancel_reason"])
        else:
            state, code = FAILED, INTERRUPTED
            if handed_back:
                message = f"the run was interrupted: its engine ({engine}) shut down"
            else:
                message = (
                    f"the run was interrupted: its engine ({engine}) stopped renewing its lease "
                    "(it was stopped, crashed or lost its connection to the run store)"
                )
            if run["state"] == QUEUED:
                message += " before the run began"
            why = (
                "a workflow run whose inputs were never recorded" if not recorded
                else "RUNS_MAX_ATTEMPTS=0: resumes are off" if handed_back else ""
            )
            if handed_back:
                message += f", and it cannot be resumed ({why})"
            elif not recorded:
                message += f"; {why} cannot be resumed"
            elif resumable:
                message += f", after {run['attempts']} resume(s) (RUNS_MAX_ATTEMPTS)"
        add_error_step(connection, run, code, message)
        end_run(connection, run, state, code, message)
        return False

    def _taken_from_engines(
        self, ended: list[RunRecord], orphaned: list[RunRecord], passing_over: str = ""
    ) -> None:
        """After the commit: tell the watchers, and offer the orphaned runs to the engines (but `passing_over`)."""
        for record in ended:
            self.signals.run_ended(record.id, record)
        for record in orphaned:
            self.signals.notify(record.id, record)
            self.notices.offer_resume(record.id, passing_over=passing_over)

    async def extend_live_leases(self) -> int:
        """Give every live run one full lease period from now; called when the service starts, so engines that
        kept running while the store was away can renew before the reaper looks. Returns how many."""

        # Only the runs an engine holds: an orphaned run, or a WAITING one, has no lease to extend (one given to
        # it would run out with nobody to renew it, and the reaper would take it for a run whose engine stopped).
        held = RUNS.c.executor_id != ""

        def extend(connection: Connection) -> int:
            now = utcnow()
            extended = 0
            durations = connection.execute(
                select(RUNS.c.lease_seconds).where(RUNS.c.state.in_(LIVE_STATES), held).distinct()
            )
            for seconds in list(durations.scalars()):
                result = connection.execute(
                    update(RUNS)
                    .where(RUNS.c.state.in_(LIVE_STATES), held, RUNS.c.lease_seconds == seconds)
                    .values(lease_expires_at=now + timedelta(seconds=seconds))
                )
                extended += result.rowcount
            return extended

        return await self._writer.write(extend)
