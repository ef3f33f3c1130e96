"""Traces (issue 19): the OpenTelemetry trace a run is recorded in and the span of its first attempt, so GetRun
names the trace and a resumed run continues it.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # "" for the runs before: they were created without tracing.
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("trace_id", sa.String(32), nullable=False, server_default=""))
        batch.add_column(sa.Column("trace_span_id", sa.String(16), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("trace_span_id")
        batch.drop_column("trace_id")
