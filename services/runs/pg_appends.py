"""PostgreSQL's statements of an append batch (services/runs/appends.py `_append_batch`), as plain SQL the driver
prepares once: lock the runs, insert the steps, update the runs. Used only on PostgreSQL; SQLite's store writer
runs the same batch through SQLAlchemy Core.

Why: a profile of 32 runs appending one step per call (python -m bench.store) had most of the runs service's CPU
in SQLAlchemy building each batch's statements (cache keys, the IN list rendered per batch size, bind processing
per parameter), more than asyncpg and PostgreSQL took to run them. Sent with `exec_driver_sql`, the statements
are asyncpg's prepared statements (executemany for the rows), still inside the transaction of the writer's
SQLAlchemy connection, with its error translation (an IntegrityError is still what a duplicate step raises).
Synchronous, as every write of the store's writer is (services/common/db/group_commit.py runs a batch through
`run_sync` on PostgreSQL).
The tables are the ones services/runs/models.py defines; only the SQL text is written here.
"""

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from services.runs.rows import RUNS, STEPS

#: The columns of a run an append batch checks and carries forward (appends.py `Progress`).
PROGRESS_COLUMNS = (
    "id", "state", "executor_id", "lease_epoch", "step_count", "prompt_tokens", "completion_tokens",
    "lease_seconds", "lease_expires_at", "model", "cost_nanos", "unpriced_calls",
)
_LOCK = (
    f"SELECT {', '.join(PROGRESS_COLUMNS)} FROM {RUNS.name} WHERE id = ANY($1::varchar[]) ORDER BY id FOR UPDATE"
)
_UPDATE = (
    f"UPDATE {RUNS.name} SET step_count = $2, prompt_tokens = $3::bigint, completion_tokens = $4::bigint, "
    "total_tokens = $3::bigint + $4::bigint, cost_nanos = $5, unpriced_calls = $6, lease_expires_at = $7 "
    "WHERE id = $1"
)
#: The run_steps columns in the order of the INSERT's parameters; a step row (rows.py `step_values`) has them all.
STEP_COLUMNS = tuple(column.name for column in STEPS.columns)
_INSERT = (
    f"INSERT INTO {STEPS.name} ({', '.join(STEP_COLUMNS)}) "
    f"VALUES ({', '.join(f'${number}' for number in range(1, len(STEP_COLUMNS) + 1))})"
)


def lock_progress(connection: Connection, run_ids: list[str]) -> list[Any]:
    """The PROGRESS_COLUMNS of the runs `run_ids` (sorted: row locks in one order), their rows locked."""
    result = connection.exec_driver_sql(_LOCK, (run_ids,))
    return [row._mapping for row in result]


def insert_steps(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert step rows (rows.py `step_values`); their content as JSON text, as the JSONB column's type sends it."""
    connection.exec_driver_sql(
        _INSERT,
        [
            tuple(json.dumps(row["content"]) if name == "content" else row[name] for name in STEP_COLUMNS)
            for row in rows
        ],
    )


def store_progress(connection: Connection, changed: Sequence[dict[str, Any]]) -> None:
    """Write runs' step counts, usage and lease (appends.py `_store_progress`'s parameters) in one executemany."""
    connection.exec_driver_sql(
        _UPDATE,
        [
            (run["run"], run["steps"], run["prompt"], run["completion"], run["cost"], run["unpriced"], run["lease"])
            for run in changed
        ],
    )
