"""Search (issue 21): what ListRuns' filters need of a run, recorded when it ends (its final answer, duration and
the tools it called, in run_tools), the indexes of the filters and orders, and each database's full-text index
of the user query and the final answer (services/runs/full_text.py). Ended runs are backfilled from their steps.

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

from services.runs.full_text import install_full_text

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

#: (name, columns) of the indexes on runs the filters and orders use.
_INDEXES = (
    ("ix_runs_completed_at_id", ["completed_at", "id"]),
    ("ix_runs_agent_created_at_id", ["agent_id", "created_at", "id"]),
    ("ix_runs_workflow_created_at_id", ["workflow_id", "created_at", "id"]),
    ("ix_runs_model_created_at_id", ["model", "created_at", "id"]),
    ("ix_runs_error_code_created_at_id", ["error_code", "created_at", "id"]),
    ("ix_runs_duration_ms_id", ["duration_ms", "id"]),
    ("ix_runs_total_tokens_id", ["total_tokens", "id"]),
)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    # Plain ALTER TABLE ADD COLUMN (no batch rebuild), which keeps SQLite's rowids, the full-text index's keys.
    op.add_column("runs", sa.Column("final_answer", sa.Text(), nullable=False, server_default=""))
    op.add_column("runs", sa.Column("duration_ms", sa.BigInteger(), nullable=True))
    op.create_table(
        "run_tools",
        sa.Column("run_id", sa.String(36), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tool", sa.String(200), primary_key=True),
    )
    op.create_index("ix_run_tools_tool_run_id", "run_tools", ["tool", "run_id"])

    # The backfill of ended runs, as services/runs/rows.py end_run records them.
    if sqlite:
        answer, tool = "json_extract(s.content, '$.text')", "json_extract(s.content, '$.tool_name')"
        duration = "CAST(round((julianday(completed_at) - julianday(created_at)) * 86400000) AS INTEGER)"
    else:
        answer, tool = "s.content ->> 'text'", "s.content ->> 'tool_name'"
        duration = "CAST(round(EXTRACT(EPOCH FROM completed_at - created_at) * 1000) AS BIGINT)"
    op.execute(f"UPDATE runs SET duration_ms = CASE WHEN {duration} < 0 THEN 0 ELSE {duration} END "
               "WHERE completed_at IS NOT NULL")
    op.execute(
        f"UPDATE runs SET final_answer = COALESCE((SELECT {answer} FROM run_steps s WHERE s.run_id = runs.id "
        "AND s.type = 'agent-response' ORDER BY s.sequence DESC LIMIT 1), '') WHERE completed_at IS NOT NULL"
    )
    op.execute(
        f"INSERT INTO run_tools (run_id, tool) SELECT DISTINCT s.run_id, substr({tool}, 1, 200) FROM run_steps s "
        f"JOIN runs r ON r.id = s.run_id WHERE s.type = 'tool-call' AND r.completed_at IS NOT NULL "
        f"AND {tool} IS NOT NULL AND {tool} <> ''"
    )
    for name, columns in _INDEXES:
        op.create_index(name, "runs", columns)
    # Created after the backfill, so it indexes the final answers once.
    install_full_text(op.get_bind())


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for trigger in ("runs_fts_insert", "runs_fts_delete", "runs_fts_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS runs_fts_vocab")
        op.execute("DROP TABLE IF EXISTS runs_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_runs_full_text")
        op.execute("DROP INDEX IF EXISTS ix_runs_metadata")
    for name, _ in reversed(_INDEXES):
        op.drop_index(name, "runs")
    op.drop_index("ix_run_tools_tool_run_id", "run_tools")
    op.drop_table("run_tools")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("duration_ms")
        batch.drop_column("final_answer")
