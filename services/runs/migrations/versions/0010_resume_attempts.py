"""Runs resumed after their engine stopped (issue 18): how many times a run was resumed, and the `resumed` step
type an engine records when it continues such a run from its steps.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

OLD_TYPES = (
    "type IN ('user-request', 'agent-thought', 'tool-call', 'tool-result', 'agent-response', 'error', "
    "'approval-request', 'approval-decision', 'node-outcome')"
)
NEW_TYPES = (
    "type IN ('user-request', 'agent-thought', 'tool-call', 'tool-result', 'agent-response', 'error', "
    "'approval-request', 'approval-decision', 'node-outcome', 'resumed')"
)


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("run_steps") as batch:
        batch.drop_constraint(op.f("ck_run_steps_type"), type_="check")
        batch.create_check_constraint(op.f("ck_run_steps_type"), sa.text(NEW_TYPES))


def downgrade() -> None:
    # A resume marker has no older form; the steps after it stay, numbered as they were.
    op.execute("DELETE FROM run_steps WHERE type = 'resumed'")
    with op.batch_alter_table("run_steps") as batch:
        batch.drop_constraint(op.f("ck_run_steps_type"), type_="check")
        batch.create_check_constraint(op.f("ck_run_steps_type"), sa.text(OLD_TYPES))
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("attempts")
