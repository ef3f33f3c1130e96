"""Feedback scores: a person's thumbs-up, an API client's rating or an evaluator's verdict on a run or one of its
steps, listed with the run and summed up per agent revision (no gRPC here). Part of `RunStore`.

What is checked (each an InvalidArgument naming the field, nothing stored):
- `name`: 1 to 64 of letters, digits, '_', '-', '.', ':' ("helpfulness", "judge:correct");
- the value: a finite number from -1e9 to 1e9, a boolean, or a category of 1 to 100 characters;
- `comment`: at most 4,000 characters; `source`: person, api or evaluator;
- `step_sequence`: 0 (the run) or a step the run has.
Who may: whoever may read the run scores it and reads its scores (its owner, an admin); a score is deleted by its
author, the run's owner or an admin. A run holds at most MAX_SCORES_PER_RUN scores (FailedPrecondition past it),
so listing them needs no pages.
"""

import math
import re
import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection

from services.common.checks import check_text, parse_uuid
from services.common.db.database import runs_to_completion, utcnow
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.runs.checks import parse_run_id
from services.runs.models import SCORE_SOURCES, ScoreRow
from services.runs.parts import StoreParts
from services.runs.records import NewScore, ScoreRecord, ScoreSummary, ScoreValue
from services.runs.rows import RUNS, Values, load_run

SCORES = ScoreRow.__table__

MAX_SCORES_PER_RUN = 1000
MAX_NAME_CHARS = 64
MAX_CATEGORY_CHARS = 100
MAX_COMMENT_CHARS = 4000
#: A number score's bound either way: far beyond any rating scale, and exactly representable.
MAX_NUMBER = 1e9
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _kind(value: ScoreValue) -> str:
    # bool before float: a bool is an int in Python.
    if isinstance(value, bool):
        return "boolean"
    return "category" if isinstance(value, str) else "number"


def check_new_score(score: NewScore) -> None:
    """Raise InvalidArgument naming the first field of `score` that cannot be stored."""
    if not _NAME.match(score.name):
        raise InvalidArgument(
            f"score.name must be 1 to {MAX_NAME_CHARS} letters, digits, '_', '-', '.' or ':', got {score.name[:80]!r}"
        )
    value = score.value
    if isinstance(value, str):
        check_text("score.category_value", value, MAX_CATEGORY_CHARS, required=True)
    elif not isinstance(value, bool) and not (math.isfinite(value) and abs(value) <= MAX_NUMBER):
        raise InvalidArgument(f"score.number_value must be a finite number from -1e9 to 1e9, got {value}")
    check_text("score.comment", score.comment, MAX_COMMENT_CHARS)
    if score.source not in SCORE_SOURCES:
        raise InvalidArgument(f"score.source must be one of {', '.join(SCORE_SOURCES)}, got {score.source!r}")
    if score.step_sequence < 0:
        raise InvalidArgument(
            f"score.step_sequence must be 0 (the run) or a step's sequence, got {score.step_sequence}"
        )


def _values(score: NewScore, author: str, now: datetime) -> dict[str, Any]:
    kind = _kind(score.value)
    return {
        "id": str(uuid.uuid4()),
        "run_id": score.run_id,
        "step_sequence": score.step_sequence,
        "name": score.name,
        "kind": kind,
        "number_value": None if kind == "category" else float(score.value),
        "category_value": score.value if kind == "category" else None,
        "comment": score.comment,
        "source": score.source,
        "author": author,
        "created_at": now,
    }


def stored_score_values(score: ScoreRecord) -> dict[str, Any]:
    """The run_scores row of a stored score, for `RunImports.import_runs` (the reverse of `score_record`); the
    score is checked as CreateScore checks one."""
    check_new_score(NewScore(score.run_id, score.name, score.value, score.step_sequence, score.comment, score.source))
    kind = _kind(score.value)
    return {
        "id": parse_uuid(score.id, "scores.id", "score"), "run_id": score.run_id, "step_sequence": score.step_sequence,
        "name": score.name, "kind": kind, "number_value": None if kind == "category" else float(score.value),
        "category_value": score.value if kind == "category" else None, "comment": score.comment,
        "source": score.source, "author": score.author, "created_at": score.created_at,
    }


def score_record(row: Values) -> ScoreRecord:
    kind = row["kind"]
    value: ScoreValue = (
        row["category_value"] if kind == "category" else bool(row["number_value"]) if kind == "boolean"
        else row["number_value"]
    )
    return ScoreRecord(
        id=row["id"], run_id=row["run_id"], step_sequence=row["step_sequence"], name=row["name"], value=value,
        comment=row["comment"], source=row["source"], author=row["author"], created_at=row["created_at"],
    )


def load_scores(connection: Connection, run_id: str) -> list[ScoreRecord]:
    """A run's scores, oldest first."""
    rows = connection.execute(
        select(SCORES).where(SCORES.c.run_id == run_id).order_by(SCORES.c.created_at, SCORES.c.id)
    )
    return [score_record(row) for row in rows.mappings()]


class RunScores(StoreParts):
    """The run store's score methods: create, list, delete, summarise."""

    async def create_score(self, score: NewScore, *, author: str, owner: str | None = None) -> ScoreRecord:
        """Record `score` by `author` on a run `owner` may read (None: any); NotFound for a run it may not."""
        score = NewScore(**{**score.__dict__, "run_id": parse_run_id(score.run_id)})
        check_new_score(score)
        values = _values(score, author, utcnow())

        def create(connection: Connection) -> None:
            run = load_run(connection, score.run_id, owner=owner)
            # Steps are numbered 1..step_count without gaps.
            if score.step_sequence > run["step_count"]:
                raise InvalidArgument(
                    f"score.step_sequence: run '{score.run_id}' has no step {score.step_sequence} "
                    f"(it has {run['step_count']})"
                )
            # One writer per process serialises this count and the insert; replicas on PostgreSQL may each add
            # one past the bound at the same moment, which the bound (a size, not a quota) tolerates.
            count = connection.scalar(
                select(func.count()).select_from(SCORES).where(SCORES.c.run_id == score.run_id)
            )
            if (count or 0) >= MAX_SCORES_PER_RUN:
                raise FailedPrecondition(
                    f"run '{score.run_id}' has {MAX_SCORES_PER_RUN} scores, the most a run may have; delete some "
                    "before adding more"
                )
            connection.execute(SCORES.insert().values(values))

        await self._writer.write(create)
        return score_record(values)

    @runs_to_completion
    async def list_scores(self, run_id: str, *, owner: str | None = None) -> list[ScoreRecord]:
        """The scores of a run `owner` may read (None: any), oldest first."""
        run_id = parse_run_id(run_id)
        async with self.database.read() as session:
            connection = await session.connection()
            await connection.run_sync(load_run, run_id, owner=owner)
            return await connection.run_sync(load_scores, run_id)

    async def delete_score(self, score_id: str, *, caller: str, admin: bool) -> None:
        """Delete a score: by its author, the owner of its run, or an admin; NotFound for anyone else (as for a
        score that does not exist, so ids tell nothing)."""
        score_id = parse_uuid(score_id, "score_id", "score")

        def delete_(connection: Connection) -> None:
            row = connection.execute(
                select(SCORES.c.author, RUNS.c.owner).join(RUNS, RUNS.c.id == SCORES.c.run_id)
                .where(SCORES.c.id == score_id)
            ).first()
            if row is None or not (admin or caller in (row.author, row.owner)):
                raise NotFound(f"score '{score_id}' not found")
            connection.execute(delete(SCORES).where(SCORES.c.id == score_id))

        await self._writer.write(delete_)

    @runs_to_completion
    async def summarize_scores(
        self,
        agent_id: str,
        *,
        owner: str | None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[ScoreSummary]:
        """The scores of `agent_id`'s runs ("" the default agent) created in [start, end), those of `owner`
        (None: every user's), per agent revision, name and kind, by revision then name."""
        if start is not None and end is not None and end <= start:
            raise InvalidArgument(f"end_time ({end.isoformat()}) must be after start_time ({start.isoformat()})")
        runs = [RUNS.c.agent_id == agent_id, RUNS.c.workflow_id == ""]
        if owner is not None:
            runs.append(RUNS.c.owner == owner)
        if start is not None:
            runs.append(RUNS.c.created_at >= start)
        if end is not None:
            runs.append(RUNS.c.created_at < end)
        key = (RUNS.c.agent_revision, SCORES.c.name, SCORES.c.kind)
        numbers = (
            select(*key, func.count(), func.avg(SCORES.c.number_value), func.min(SCORES.c.number_value),
                   func.max(SCORES.c.number_value))
            .join(RUNS, RUNS.c.id == SCORES.c.run_id).where(*runs).group_by(*key)
        )
        categories = (
            select(*key, SCORES.c.category_value, func.count())
            .join(RUNS, RUNS.c.id == SCORES.c.run_id).where(*runs, SCORES.c.kind == "category")
            .group_by(*key, SCORES.c.category_value)
        )
        counted: dict[tuple[int, str, str], list[tuple[str, int]]] = defaultdict(list)
        async with self.database.read() as session:
            totals = (await session.execute(numbers)).all()
            for revision, name, kind, category, count in (await session.execute(categories)).all():
                counted[(revision, name, kind)].append((category, count))
        summaries = []
        for revision, name, kind, count, mean, least, greatest in totals:
            by_count = tuple(sorted(counted[(revision, name, kind)], key=lambda pair: (-pair[1], pair[0])))
            summaries.append(ScoreSummary(
                agent_revision=revision, name=name, kind=kind, count=count, mean=float(mean or 0),
                least=float(least or 0), greatest=float(greatest or 0), categories=by_count,
            ))
        return sorted(summaries, key=lambda summary: (summary.agent_revision, summary.name, summary.kind))
