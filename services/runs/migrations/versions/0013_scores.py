"""Feedback scores (issue 21): a score on a run or one of its steps, by a person, an API client or an
evaluator; deleted with its run.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_scores",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("step_sequence", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("number_value", sa.Float(), nullable=True),
        sa.Column("category_value", sa.String(100), nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('number', 'boolean', 'category')", name=op.f("ck_run_scores_kind")),
        sa.CheckConstraint("source IN ('person', 'api', 'evaluator')", name=op.f("ck_run_scores_source")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_scores_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_scores")),
    )
    op.create_index("ix_run_scores_run_id_created_at", "run_scores", ["run_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_run_scores_run_id_created_at", "run_scores")
    op.drop_table("run_scores")
