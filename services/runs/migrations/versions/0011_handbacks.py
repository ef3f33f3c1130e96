"""Runs handed back by an engine at its shutdown (issue 18): how many times, and by which engine last, so the
engine that continues the run says so in its `resumed` step; hand-backs do not count toward `attempts`.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("handbacks", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("handed_back_by", sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("handed_back_by")
        batch.drop_column("handbacks")
