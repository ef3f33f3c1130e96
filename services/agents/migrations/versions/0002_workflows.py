"""Workflows and their revisions.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BYTEWISE_NAME = sa.String(200).with_variant(sa.String(200, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("latest_revision", sa.Integer(), nullable=False),
        sa.Column("name_key", BYTEWISE_NAME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
    )
    op.create_index("ix_workflows_owner_name_key_id", "workflows", ["owner", "name_key", "id"])
    op.create_table(
        "workflow_revisions",
        sa.Column("workflow_id", sa.String(36), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("graph", JSON_DOCUMENT, nullable=False),
        sa.Column("max_model_calls", sa.Integer(), nullable=True),
        sa.Column("max_duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("max_total_tokens", sa.BigInteger(), nullable=True),
        sa.Column("max_tool_calls", sa.Integer(), nullable=True),
        sa.Column("metadata", JSON_DOCUMENT, nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_id"], ["workflows.id"], name=op.f("fk_workflow_revisions_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workflow_id", "revision", name=op.f("pk_workflow_revisions")),
    )


def downgrade() -> None:
    op.drop_table("workflow_revisions")
    op.drop_index("ix_workflows_owner_name_key_id", "workflows")
    op.drop_table("workflows")
