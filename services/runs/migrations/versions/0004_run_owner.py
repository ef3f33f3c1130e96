"""Runs belong to a user: an `owner` column, and indexes for listing one user's runs newest first.

Runs stored before identity existed were made in development mode, where every caller is the user "local":
they become that user's.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("owner", sa.String(200), nullable=False, server_default="local"))
    op.create_index("ix_runs_owner_created_at_id", "runs", ["owner", "created_at", "id"])
    op.create_index("ix_runs_owner_state_created_at_id", "runs", ["owner", "state", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_runs_owner_state_created_at_id", table_name="runs")
    op.drop_index("ix_runs_owner_created_at_id", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("owner")
