"""Workflow runs: which workflow (and revision) a run executes, the node each step belongs to, and the
node-outcome step type.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

OLD_TYPES = (
    "type IN ('user-request', 'agent-thought', 'tool-call', 'tool-result', 'agent-response', 'error', "
    "'approval-request', 'approval-decision')"
)
NEW_TYPES = (
    "type IN ('user-request', 'agent-thought', 'tool-call', 'tool-result', 'agent-response', 'error', "
    "'approval-request', 'approval-decision', 'node-outcome')"
)


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("workflow_id", sa.String(36), nullable=False, server_default=""))
        batch.add_column(sa.Column("workflow_revision", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("run_steps") as batch:
        batch.add_column(sa.Column("node_id", sa.String(64), nullable=False, server_default=""))
        batch.drop_constraint(op.f("ck_run_steps_type"), type_="check")
        batch.create_check_constraint(op.f("ck_run_steps_type"), sa.text(NEW_TYPES))


def downgrade() -> None:
    op.execute("DELETE FROM run_steps WHERE type = 'node-outcome'")
    with op.batch_alter_table("run_steps") as batch:
        batch.drop_constraint(op.f("ck_run_steps_type"), type_="check")
        batch.create_check_constraint(op.f("ck_run_steps_type"), sa.text(OLD_TYPES))
        batch.drop_column("node_id")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("workflow_revision")
        batch.drop_column("workflow_id")
