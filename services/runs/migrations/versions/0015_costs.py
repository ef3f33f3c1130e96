"""Cost (issue 21): model prices set by admins, each model call's model, cached tokens and cost, and a run's
total; the runs from before prices count their model calls as unpriced (their cost is unknown, not zero).

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_prices",
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("input_picos", sa.BigInteger(), nullable=False),
        sa.Column("cached_input_picos", sa.BigInteger(), nullable=False),
        sa.Column("output_picos", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("model", name=op.f("pk_model_prices")),
    )
    with op.batch_alter_table("run_steps") as batch:
        batch.add_column(sa.Column("call_model", sa.String(200), nullable=False, server_default=""))
        batch.add_column(sa.Column("cached_prompt_tokens", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("cost_nanos", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("cost_nanos", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("unpriced_calls", sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE runs SET unpriced_calls = (SELECT count(*) FROM run_steps "
        "WHERE run_steps.run_id = runs.id AND run_steps.prompt_tokens IS NOT NULL)"
    )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("unpriced_calls")
        batch.drop_column("cost_nanos")
    with op.batch_alter_table("run_steps") as batch:
        batch.drop_column("cost_nanos")
        batch.drop_column("cached_prompt_tokens")
        batch.drop_column("call_model")
    op.drop_table("model_prices")
