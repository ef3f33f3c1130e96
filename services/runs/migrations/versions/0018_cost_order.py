"""Search by cost (issue 21): the index of the most-costly-first order.

Revision ID: 0018
Revises: 0017
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_cost_nanos_id", "runs", ["cost_nanos", "id"])


def downgrade() -> None:
    op.drop_index("ix_runs_cost_nanos_id", "runs")
