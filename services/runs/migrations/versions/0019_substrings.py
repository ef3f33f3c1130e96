"""Substring search (issue 21): each database's trigram index of the user query and the final answer
(services/runs/full_text.py), filled from the runs already stored. And on SQLite the fts5vocab table 0017 made
goes: search no longer reads FTS5's term counts (each counted by reading the term's whole list) but a sample.

Revision ID: 0019
Revises: 0018
"""

from alembic import op

from services.runs.full_text import drop_substrings, install_substrings

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


_SQLITE_VOCABULARY = "CREATE VIRTUAL TABLE IF NOT EXISTS runs_fts_vocab USING fts5vocab(runs_fts, 'row')"


def upgrade() -> None:
    install_substrings(op.get_bind())
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS runs_fts_vocab")


def downgrade() -> None:
    drop_substrings(op.get_bind())
    if op.get_bind().dialect.name == "sqlite":
        op.execute(_SQLITE_VOCABULARY)
