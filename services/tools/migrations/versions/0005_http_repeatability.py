"""An HTTP tool's declared repeatability (read_only, idempotent, not_idempotent), for a tool whose method does not
say whether a call may be repeated; NULL (every tool created before) keeps the method's answer.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch: SQLite adds a check constraint only by rebuilding the table.
    with op.batch_alter_table("http_tools") as batch:
        batch.add_column(sa.Column("repeatability", sa.String(16), nullable=True))
        batch.create_check_constraint(
            op.f("ck_http_tools_repeatability"), "repeatability IN ('read_only', 'idempotent', 'not_idempotent')"
        )


def downgrade() -> None:
    with op.batch_alter_table("http_tools") as batch:
        batch.drop_constraint(op.f("ck_http_tools_repeatability"), type_="check")
        batch.drop_column("repeatability")
