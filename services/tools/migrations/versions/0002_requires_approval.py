"""Whether a tool's calls wait for a person's approval: NULL keeps the tool's own default.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tool_settings") as batch:
        batch.add_column(sa.Column("requires_approval", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tool_settings") as batch:
        batch.drop_column("requires_approval")
