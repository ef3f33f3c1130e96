"""PostgreSQL's full-text index off the runs row (issue 22): each run's words in `run_texts`, kept by triggers that
fire when the user query or the final answer is written, with the GIN index there; the GIN index over an
expression of runs (ix_runs_full_text) goes. Filled from the runs there are. SQLite's FTS5 table is unchanged.

Revision ID: 0019
Revises: 0018
"""

from alembic import op

from services.runs.full_text import install_full_text

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

#: The index 0017 made, for the downgrade.
_RUNS_FULL_TEXT_0017 = (
    "CREATE INDEX IF NOT EXISTS ix_runs_full_text ON runs USING gin (to_tsvector('simple'::regconfig, "
    "regexp_replace(left(user_query, 100000) || ' ' || left(final_answer, 100000), '[[:punct:]]+', ' ', 'g')))"
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        install_full_text(bind)
        # Without statistics of the new table the planner reads every match of a common word and sorts them,
        # where it should walk the runs newest first and look each one up (search_sql's text predicate).
        op.execute("ANALYZE run_texts")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute("DROP TRIGGER IF EXISTS runs_texts_insert ON runs")
    op.execute("DROP TRIGGER IF EXISTS runs_texts_update ON runs")
    op.execute("DROP FUNCTION IF EXISTS run_texts_write()")
    op.execute("DROP TABLE IF EXISTS run_texts")
    op.execute(_RUNS_FULL_TEXT_0017)
