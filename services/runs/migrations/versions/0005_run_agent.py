"""A run records the saved agent it executes and that agent's revision ("" and 0: the built-in default agent).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("agent_id", sa.String(36), nullable=False, server_default=""))
        batch.add_column(sa.Column("agent_revision", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("agent_revision")
        batch.drop_column("agent_id")
