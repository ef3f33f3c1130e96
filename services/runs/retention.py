"""Retention: finished runs older than the policy allows are deleted, with their steps and scores (ON DELETE
CASCADE), and threads left without runs go with them (no gRPC here). Part of `RunStore`, run by the runs
service's `RetentionSweeper` (settings RUNS_RETENTION_*).

The policy (`RetentionPolicy`): a global maximum age, and per saved agent a maximum age of its own, longer or
shorter, which replaces the global one for that agent's runs. Age is counted from a run's creation. Never deleted:
a run that is not finished (QUEUED, RUNNING, WAITING: its engine or a person still has it), and a run on
retention hold (`SetRetentionHold`, admins).

The sweep deletes in batches of `batch` runs, each its own short transaction through the store's writer, so
writers wait for at most one batch. With several runs replicas on one PostgreSQL each sweeps, and a batch's rows
are claimed FOR UPDATE SKIP LOCKED, so two replicas never delete the same run and each run is counted once.
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, exists, false, func, or_, select
from sqlalchemy.engine import Connection

from services.common.db.database import utcnow
from services.common.errors import InvalidArgument
from services.common.run_vocabulary import FINAL_STATES
from services.runs.checks import parse_run_id
from services.runs.parts import StoreParts
from services.runs.rows import RUNS, load_run
from services.runs.search import RunFilter, checked_filter
from services.runs.search_sql import filter_clauses
from services.runs.threads import THREADS

log = logging.getLogger(__name__)

#: A thread is deleted for having no runs only once it has been quiet this long: a thread is created in the same
#: transaction as its first run, but a margin costs nothing and keeps the sweep away from anything in flight.
THREAD_QUIET = timedelta(hours=1)
#: The longest maximum age accepted (100 years): past it, say 0 (keep forever).
MAX_DAYS = 36_500


@dataclass(frozen=True)
class RetentionPolicy:
    """How long finished runs are kept, in days from their creation: `max_age_days` for every run (0: forever),
    `agent_max_age_days` for the runs of a saved agent by its id (0: that agent's runs forever)."""

    max_age_days: int = 0
    agent_max_age_days: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, days in [("max_age_days", self.max_age_days), *self.agent_max_age_days.items()]:
            if not 0 <= days <= MAX_DAYS:
                raise InvalidArgument(f"retention of {name}: {days} days is not 0 (forever) to {MAX_DAYS}")

    @property
    def enabled(self) -> bool:
        return self.max_age_days > 0 or any(days > 0 for days in self.agent_max_age_days.values())

    def expired(self, now: datetime) -> ColumnElement[bool]:
        """Which finished, unheld runs are past their maximum age at `now`."""
        ages = []
        for agent_id, days in self.agent_max_age_days.items():
            if days > 0:
                ages.append(and_(RUNS.c.agent_id == agent_id, RUNS.c.created_at < now - timedelta(days=days)))
        if self.max_age_days > 0:
            others = RUNS.c.created_at < now - timedelta(days=self.max_age_days)
            if self.agent_max_age_days:
                others = and_(RUNS.c.agent_id.not_in(list(self.agent_max_age_days)), others)
            ages.append(others)
        return and_(
            RUNS.c.state.in_(FINAL_STATES), RUNS.c.retention_hold == false(), or_(*ages) if ages else false()
        )


class RunRetention(StoreParts):
    """The run store's retention methods: the hold flag, the sweep, and an admin's deletion of what a search
    finds."""

    async def set_retention_hold(self, run_id: str, hold: bool) -> None:
        """Put a run on retention hold, or take it off; NotFound for no such run."""
        run_id = parse_run_id(run_id)

        def update(connection: Connection) -> None:
            load_run(connection, run_id)
            connection.execute(RUNS.update().where(RUNS.c.id == run_id).values(retention_hold=hold))

        await self._writer.write(update)

    async def delete_expired_runs(
        self, policy: RetentionPolicy, *, batch: int = 500, now: datetime | None = None
    ) -> int:
        """Delete the runs `policy` says are expired at `now` (default: the current time), `batch` at a time,
        then the threads left without runs; how many runs this call deleted."""
        if not policy.enabled:
            return 0
        moment = now or utcnow()
        return await self._delete_where(policy.expired(moment), batch, moment)

    async def delete_runs_found(
        self, search: RunFilter, *, owner: str | None, dry_run: bool, batch: int = 500
    ) -> int:
        """Delete the finished runs `search` finds (`owner` None: every user's), in batches as retention does,
        then the threads left without runs; or, with `dry_run`, only count them. How many runs."""
        search = checked_filter(search)
        found = and_(RUNS.c.state.in_(FINAL_STATES), *filter_clauses(search, self.database.is_sqlite))
        if owner is not None:
            found = and_(found, RUNS.c.owner == owner)
        if dry_run:
            async with self.database.read() as session:
                return int(await session.scalar(select(func.count()).select_from(RUNS).where(found)) or 0)
        return await self._delete_where(found, batch, utcnow())

    async def _delete_where(self, condition: ColumnElement[bool], batch: int, moment: datetime) -> int:
        deleted = 0
        while True:
            def delete_batch(connection: Connection) -> int:
                return self._delete_batch(connection, condition, batch)

            count = await self._writer.write(delete_batch)
            deleted += count
            if count < batch:
                break
        quiet = moment - THREAD_QUIET

        def delete_threads(connection: Connection) -> None:
            connection.execute(delete(THREADS).where(
                THREADS.c.updated_at < quiet, ~exists().where(RUNS.c.thread_id == THREADS.c.id)
            ))

        await self._writer.write(delete_threads)
        return deleted

    def _delete_batch(self, connection: Connection, expired: ColumnElement[bool], batch: int) -> int:
        # Oldest first, on the (created_at, id) index; SKIP LOCKED (PostgreSQL) leaves rows another replica's
        # sweep holds to it. SQLite has one writer and ignores the clause.
        ids = list(connection.execute(
            select(RUNS.c.id).where(expired).order_by(RUNS.c.created_at, RUNS.c.id).limit(batch)
            .with_for_update(skip_locked=True)
        ).scalars())
        if ids:
            connection.execute(delete(RUNS).where(RUNS.c.id.in_(ids)))
        return len(ids)
