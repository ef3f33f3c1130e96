"""Substring search (issue 21): each database's trigram index of the user query and the final answer
(services/runs/full_text.py), filled from the runs already stored. On SQLite, the words' FTS5 table is made again
with the run's owner as a third column (a user's search of its own runs is answered from FTS5's lists alone), and
the fts5vocab table 0017 made goes: search no longer reads FTS5's term counts (each counted by reading the term's
whole list) but a sample.

Revision ID: 0020
Revises: 0019
"""

from alembic import op

from services.runs.full_text import drop_sqlite_fts, drop_substrings, install_full_text, install_substrings

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


#: What 0017 made on SQLite, for the downgrade.
_SQLITE_0017 = (
    "CREATE VIRTUAL TABLE runs_fts USING fts5(user_query, final_answer, content='runs', content_rowid='rowid', "
    "tokenize='unicode61 remove_diacritics 0')",
    "CREATE TRIGGER runs_fts_insert AFTER INSERT ON runs BEGIN INSERT INTO runs_fts(rowid, user_query, "
    "final_answer) VALUES (new.rowid, new.user_query, new.final_answer); END",
    "CREATE TRIGGER runs_fts_delete AFTER DELETE ON runs BEGIN INSERT INTO runs_fts(runs_fts, rowid, user_query, "
    "final_answer) VALUES ('delete', old.rowid, old.user_query, old.final_answer); END",
    "CREATE TRIGGER runs_fts_update AFTER UPDATE OF user_query, final_answer ON runs BEGIN INSERT INTO "
    "runs_fts(runs_fts, rowid, user_query, final_answer) VALUES ('delete', old.rowid, old.user_query, "
    "old.final_answer); INSERT INTO runs_fts(rowid, user_query, final_answer) VALUES (new.rowid, new.user_query, "
    "new.final_answer); END",
    "CREATE VIRTUAL TABLE runs_fts_vocab USING fts5vocab(runs_fts, 'row')",
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS runs_fts_vocab")
        drop_sqlite_fts(bind, "runs_fts")
        install_full_text(bind)
    install_substrings(bind)


def downgrade() -> None:
    bind = op.get_bind()
    drop_substrings(bind)
    if bind.dialect.name == "sqlite":
        # 0017's words table, without the owner.
        drop_sqlite_fts(bind, "runs_fts")
        for statement in _SQLITE_0017:
            op.execute(statement)
        op.execute("INSERT INTO runs_fts(runs_fts) VALUES ('rebuild')")
