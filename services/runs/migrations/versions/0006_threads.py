"""Conversations: a `threads` table, and each run's thread and turn.

Runs stored before threads existed were single-turn conversations: each becomes the first and only turn of a
thread of its own (with the run's id as the thread's), so the Playground's history lists them too.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "threads",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("turn_count", sa.Integer(), nullable=False),
    )
    op.create_index("ix_threads_owner_updated_at_id", "threads", ["owner", "updated_at", "id"])
    op.create_index("ix_threads_updated_at_id", "threads", ["updated_at", "id"])
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("thread_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("thread_turn", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_runs_thread_id_threads", "threads", ["thread_id"], ["id"], ondelete="CASCADE")
    op.execute(
        "INSERT INTO threads (id, owner, title, created_at, updated_at, turn_count) "
        "SELECT id, owner, substr(user_query, 1, 200), created_at, created_at, 1 FROM runs"
    )
    op.execute("UPDATE runs SET thread_id = id, thread_turn = 1")
    op.create_index("ux_runs_thread_id_thread_turn", "runs", ["thread_id", "thread_turn"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_runs_thread_id_thread_turn", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("fk_runs_thread_id_threads", type_="foreignkey")
        batch.drop_column("thread_turn")
        batch.drop_column("thread_id")
    op.drop_index("ix_threads_updated_at_id", table_name="threads")
    op.drop_index("ix_threads_owner_updated_at_id", table_name="threads")
    op.drop_table("threads")
