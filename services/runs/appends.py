"""Appending steps in batches: what one transaction of the store's writer checks and writes for the appends of many
runs together (no gRPC here). `services.runs.store.RunStore._append_batch` drives it.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.errors import AlreadyExists, FailedPrecondition
from services.common.group_commit import Write
from services.common.run_vocabulary import RUNNING
from services.runs.records import NewStep, StepRecord
from services.runs.rows import STEPS, step_values


class Append(Write[list[StepRecord]]):
    """An AppendSteps waiting for the writer (see `_append_batch`)."""

    __slots__ = ("run_id", "steps")

    def __init__(self, run_id: str, steps: list[NewStep]) -> None:
        super().__init__(APPEND)
        self.run_id = run_id
        self.steps = steps


APPEND = "append"


class Progress:
    """What an append batch tracks of one run: its state, last sequence and usage so far."""

    __slots__ = ("changed", "completion_tokens", "lease_seconds", "prompt_tokens", "state", "step_count")

    def __init__(
        self, state: str, step_count: int, prompt_tokens: int, completion_tokens: int, lease_seconds: float
    ) -> None:
        self.lease_seconds = lease_seconds
        self.state = state
        self.step_count = step_count
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.changed = False

    def apply(self, planned: "Planned") -> None:
        if planned.new_rows:
            self.step_count = planned.step_count
            self.prompt_tokens += planned.prompt_tokens
            self.completion_tokens += planned.completion_tokens
            self.changed = True


@dataclass
class Planned:
    """One append, checked: the rows it returns (stored before or new), the new ones, and what they add."""

    rows: list[dict[str, Any]]
    new_rows: list[dict[str, Any]]
    step_count: int
    prompt_tokens: int = 0
    completion_tokens: int = 0


def plan_append(
    run_id: str, run: Progress, steps: Sequence[NewStep], stored: dict[tuple[str, int], dict[str, Any]], now: datetime
) -> Planned:
    """Check one append against its run as the batch has left it; raises a DomainError and changes nothing if
    any of its steps is refused."""
    if run.state != RUNNING:
        raise FailedPrecondition(f"run '{run_id}' is {run.state}; steps can only be appended to a RUNNING run")
    planned = Planned([], [], run.step_count)
    for step in steps:
        next_sequence = planned.step_count + 1
        sequence = step.sequence or next_sequence
        if sequence > next_sequence:
            raise FailedPrecondition(
                f"step sequence {sequence} would leave a gap in run '{run_id}': the next sequence is "
                f"{next_sequence} (or send 0 to have it assigned)"
            )
        if sequence < next_sequence:
            previous = stored.get((run_id, sequence)) or next(
                row for row in planned.new_rows if row["sequence"] == sequence
            )
            if previous["type"] != step.type or previous["content"] != as_stored(step.content):
                raise AlreadyExists(
                    f"step {sequence} of run '{run_id}' is already stored with other content "
                    f"({previous['type']}); resend it unchanged to retry, or append new steps with "
                    f"sequence 0 or {next_sequence}"
                )
            planned.rows.append(previous)
            continue
        row = step_values(run_id, sequence, step, now)
        if step.model_call is not None:
            planned.prompt_tokens += step.model_call.usage.prompt_tokens
            planned.completion_tokens += step.model_call.usage.completion_tokens
        planned.rows.append(row)
        planned.new_rows.append(row)
        planned.step_count = sequence
    return planned


def as_stored(content: dict[str, Any]) -> Any:
    """`content` as a JSON column hands it back (tuples become lists), to compare a retried step with its first
    attempt. Only retries pay for it."""
    return json.loads(json.dumps(content))


async def stored_steps(
    connection: AsyncConnection, keys: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], dict[str, Any]]:
    """The stored steps with these (run_id, sequence) keys."""
    by_run: dict[str, list[int]] = {}
    for run_id, sequence in keys:
        by_run.setdefault(run_id, []).append(sequence)
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for run_id, sequences in by_run.items():
        rows = await connection.execute(
            select(STEPS).where(STEPS.c.run_id == run_id, STEPS.c.sequence.in_(sequences))
        )
        for row in rows.mappings():
            found[(run_id, row["sequence"])] = dict(row)
    return found
