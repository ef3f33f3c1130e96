"""Human approval: the WAITING state, the approval-request and approval-decision step types, and what a waiting
run waits for (the request's step sequence and its timeout).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OLD_STATES = "state IN ('queued', 'running', 'completed', 'failed', 'cancelled')"
NEW_STATES = "state IN ('queued', 'running', 'completed', 'failed', 'cancelled', 'waiting')"
OLD_TYPES = "type IN ('user-request', 'agent-thought', 'tool-call', 'tool-result', 'agent-response', 'error')"
NEW_TYPES = (
    "type IN ('user-request', 'agent-thought', 'tool-call', 'tool-result', 'agent-response', 'error', "
    "'approval-request', 'approval-decision')"
)


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint(op.f("ck_runs_state"), type_="check")
        batch.create_check_constraint(op.f("ck_runs_state"), sa.text(NEW_STATES))
        batch.add_column(sa.Column("awaiting_sequence", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("approval_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_runs_approval_expires_at", ["approval_expires_at"])
    with op.batch_alter_table("run_steps") as batch:
        batch.drop_constraint(op.f("ck_run_steps_type"), type_="check")
        batch.create_check_constraint(op.f("ck_run_steps_type"), sa.text(NEW_TYPES))


def downgrade() -> None:
    # Runs that waited, and their approval steps, cannot be expressed in the old schema: they end as cancelled.
    op.execute("DELETE FROM run_steps WHERE type IN ('approval-request', 'approval-decision')")
    op.execute("UPDATE runs SET state = 'cancelled' WHERE state = 'waiting'")
    with op.batch_alter_table("run_steps") as batch:
        batch.drop_constraint(op.f("ck_run_steps_type"), type_="check")
        batch.create_check_constraint(op.f("ck_run_steps_type"), sa.text(OLD_TYPES))
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_approval_expires_at")
        batch.drop_column("approval_expires_at")
        batch.drop_column("awaiting_sequence")
        batch.drop_constraint(op.f("ck_runs_state"), type_="check")
        batch.create_check_constraint(op.f("ck_runs_state"), sa.text(OLD_STATES))
