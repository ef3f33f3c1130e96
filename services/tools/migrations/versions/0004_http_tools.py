"""HTTP tools created with CreateTool: name, description, argument schema, endpoint, method and headers (secrets).
Their settings stay in tool_settings, under the id http__<name>.

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
    op.create_table(
        "http_tools",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("method IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE')", name=op.f("ck_http_tools_method")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_http_tools")),
    )


def downgrade() -> None:
    op.drop_table("http_tools")
