"""MCP servers registered as sources of tools: how to reach each (stdio command or streamable HTTP URL) and its
secrets (environment or headers). Connection state is not stored: each replica keeps its own.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mcp_servers",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("transport", sa.String(8), nullable=False),
        sa.Column("command", sa.Text(), nullable=True),
        sa.Column("args", sa.JSON(), nullable=True),
        sa.Column("env", sa.JSON(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(transport = 'stdio' AND command IS NOT NULL AND url IS NULL AND headers IS NULL)"
            " OR (transport = 'http' AND url IS NOT NULL AND command IS NULL AND args IS NULL AND env IS NULL)",
            name=op.f("ck_mcp_servers_transport_columns"),
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_mcp_servers")),
    )


def downgrade() -> None:
    op.drop_table("mcp_servers")
