"""Usage summaries: runs, tokens and cost over a time range, by hour or day and by user, agent or model, for a
chart (no gRPC here). Part of `RunStore`.

Runs are counted in the bucket of their creation (UTC), with all their usage so far. The sums are the database's
(GROUP BY on the bucket and the key), so a range of many runs costs one scan of the (created_at, id) index.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import ColumnElement, func, select

from services.common.db.database import runs_to_completion
from services.common.errors import InvalidArgument
from services.common.usage import Usage
from services.runs.parts import StoreParts
from services.runs.rows import RUNS

Grouping = Literal["user", "agent", "model"]
Interval = Literal["hour", "day"]

_KEYS = {"user": RUNS.c.owner, "agent": RUNS.c.agent_id, "model": RUNS.c.model}
#: The longest range of each interval (a chart of at most about 750 buckets per key).
MAX_RANGE = {"hour": timedelta(days=31), "day": timedelta(days=400)}


@dataclass(frozen=True)
class UsageBucket:
    """The runs of one group created in one bucket, their usage and cost (nano-USD; `unpriced_calls` model calls
    of theirs had no price)."""

    start: datetime
    key: str
    runs: int
    usage: Usage
    cost_nanos: int
    unpriced_calls: int


def _bucket(dialect: str, interval: Interval) -> ColumnElement[str]:
    if dialect == "postgresql":
        # created_at is a timestamptz: truncated in UTC, whatever the session's time zone.
        return func.to_char(
            func.date_trunc(interval, func.timezone("UTC", RUNS.c.created_at)), 'YYYY-MM-DD"T"HH24:MI:SS'
        )
    return func.strftime("%Y-%m-%dT%H:00:00" if interval == "hour" else "%Y-%m-%dT00:00:00", RUNS.c.created_at)


class RunUsage(StoreParts):
    """The run store's usage summaries."""

    @runs_to_completion
    async def summarize_usage(
        self, start: datetime, end: datetime, group_by: Grouping, interval: Interval, *, owner: str | None
    ) -> list[UsageBucket]:
        """The buckets of the runs of `owner` (None: every user's) created in [start, end), by time then key."""
        if end <= start:
            raise InvalidArgument(f"end_time ({end.isoformat()}) must be after start_time ({start.isoformat()})")
        if end - start > MAX_RANGE[interval]:
            raise InvalidArgument(
                f"a summary by {interval} spans at most {MAX_RANGE[interval].days} days; got "
                f"{(end - start).days} (ask by day, or for a shorter range)"
            )
        bucket = _bucket("sqlite" if self.database.is_sqlite else "postgresql", interval).label("bucket")
        async with self.database.read() as session:
            key = _KEYS[group_by].label("key")
            query = (
                select(
                    bucket, key, func.count(), func.sum(RUNS.c.prompt_tokens), func.sum(RUNS.c.completion_tokens),
                    func.sum(RUNS.c.cost_nanos), func.sum(RUNS.c.unpriced_calls),
                )
                .where(RUNS.c.created_at >= start, RUNS.c.created_at < end)
                .group_by(bucket, key)
                .order_by(bucket, key)
            )
            if owner is not None:
                query = query.where(RUNS.c.owner == owner)
            rows = (await session.execute(query)).all()
        return [
            UsageBucket(
                start=datetime.fromisoformat(text).replace(tzinfo=UTC), key=group or "", runs=runs,
                usage=Usage(int(prompt or 0), int(completion or 0)), cost_nanos=int(cost or 0),
                unpriced_calls=int(unpriced or 0),
            )
            for text, group, runs, prompt, completion, cost, unpriced in rows
        ]
