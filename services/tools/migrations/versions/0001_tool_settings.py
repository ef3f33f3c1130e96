"""Per-tool settings: enabled, and a description override. (The table as the service created it before it had
migrations; such a database is adopted at this revision.)

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tool_settings",
        sa.Column("tool_id", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("description_override", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tool_id", name=op.f("pk_tool_settings")),
    )


def downgrade() -> None:
    op.drop_table("tool_settings")
