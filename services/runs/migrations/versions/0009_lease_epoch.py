"""Fenced leases: a run's lease epoch, which every lease taken on the run increments and every engine write must
carry (services/runs/leases.py). Runs from before it are at epoch 0, which an engine of the previous version
also sends (it sends none): their writes keep the checks they had.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("lease_epoch", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("lease_epoch")
