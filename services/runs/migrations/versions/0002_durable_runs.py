"""Durable runs: the QUEUED state, leases, cancel requests, idempotency keys, limits, per-step model usage.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OLD_STATES = "state IN ('running', 'completed', 'failed', 'cancelled')"
NEW_STATES = "state IN ('queued', 'running', 'completed', 'failed', 'cancelled')"


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint(op.f("ck_runs_state"), type_="check")
        batch.create_check_constraint(op.f("ck_runs_state"), sa.text(NEW_STATES))
        batch.add_column(sa.Column("error_code", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("request_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("request_hash", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("executor_id", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("lease_seconds", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("cancel_reason", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("max_model_calls", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_duration_ms", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("max_total_tokens", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("max_tool_calls", sa.Integer(), nullable=True))
        batch.create_unique_constraint(op.f("uq_runs_request_id"), ["request_id"])
        batch.create_index("ix_runs_lease_expires_at", ["lease_expires_at"])
    # Runs left RUNNING by the foundation had no lease and never will: give them one that has run out, so the
    # reaper ends them FAILED "interrupted" instead of leaving them RUNNING for ever.
    op.execute("UPDATE runs SET lease_expires_at = created_at, lease_seconds = 1 WHERE state = 'running'")
    with op.batch_alter_table("run_steps") as batch:
        batch.add_column(sa.Column("prompt_tokens", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("completion_tokens", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("time_to_first_token_ms", sa.Float(), nullable=True))
        batch.add_column(sa.Column("model_latency_ms", sa.Float(), nullable=True))


def downgrade() -> None:
    op.execute("DELETE FROM runs WHERE state = 'queued'")
    with op.batch_alter_table("run_steps") as batch:
        for column in ("model_latency_ms", "time_to_first_token_ms", "completion_tokens", "prompt_tokens"):
            batch.drop_column(column)
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_lease_expires_at")
        batch.drop_constraint(op.f("uq_runs_request_id"), type_="unique")
        for column in (
            "max_tool_calls", "max_total_tokens", "max_duration_ms", "max_model_calls", "cancel_reason",
            "cancel_requested_at", "lease_seconds", "lease_expires_at", "executor_id", "request_hash", "request_id",
            "started_at", "error_code",
        ):
            batch.drop_column(column)
        batch.drop_constraint(op.f("ck_runs_state"), type_="check")
        batch.create_check_constraint(op.f("ck_runs_state"), sa.text(OLD_STATES))
