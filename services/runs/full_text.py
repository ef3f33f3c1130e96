"""The full-text index of runs' user queries and final answers, in each database's own engine (SQLite FTS5,
PostgreSQL tsvector with GIN, in a table of its own), and the other indexes of the search that the models cannot
declare. Created by migration 0017 (0019 moved PostgreSQL's off the runs row) and, for `metadata.create_all`
(tests, development), by a listener the models register; queried by `services.runs.search_sql` (whose docstring
says how the two engines differ).

A later migration that rebuilds the `runs` table on SQLite (Alembic's batch mode recreating it) drops the FTS
triggers with it and changes the rowids the index is keyed by: it must call `recreate_sqlite_full_text`.
"""

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

#: How much of the user query and of the final answer PostgreSQL's full-text index holds.
FULL_TEXT_CHARS = 100_000


def _pg_text_vector(row: str) -> str:
    """The tsvector PostgreSQL indexes of a runs row (`row`: NEW in a trigger).

    ASCII punctuation becomes spaces first: PostgreSQL's parser would keep a path, a host, an e-mail address or a
    number such as 3.14 as one token ("notes/python.md"), which no query of words (letters and digits) can match,
    where FTS5 splits them into words; so both index the same words."""
    return (
        f"to_tsvector('simple'::regconfig, regexp_replace(left({row}.user_query, {FULL_TEXT_CHARS}) || ' ' || "
        f"left({row}.final_answer, {FULL_TEXT_CHARS}), '[[:punct:]]+', ' ', 'g'))"
    )


#: PostgreSQL: the words of each run in a table of its own, `run_texts` (its GIN index `ix_run_texts_words`),
#: kept by triggers on runs that fire only when the user query or the final answer is written (at create, import
#: and end), not on a step append's UPDATE of the run's count, usage and lease. Why not an index on runs (0017 to
#: 0018 had a GIN index over this expression there): an UPDATE of runs that is not HOT adds an entry to every index
#: of the row, so each append whose usage moved the token and cost columns recomputed the tsvector and wrote the
#: GIN index (issue 22).
PG_TEXTS = "run_texts"
PG_TEXTS_INDEX = "ix_run_texts_words"
PG_FULL_TEXT = (
    f"CREATE TABLE IF NOT EXISTS {PG_TEXTS} (run_id varchar(36) PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE, "
    "words tsvector NOT NULL)",
    "CREATE OR REPLACE FUNCTION run_texts_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    f"INSERT INTO {PG_TEXTS} (run_id, words) VALUES (NEW.id, {_pg_text_vector('NEW')}) "
    "ON CONFLICT (run_id) DO UPDATE SET words = EXCLUDED.words; RETURN NULL; END $$",
    "DROP TRIGGER IF EXISTS runs_texts_insert ON runs",
    "CREATE TRIGGER runs_texts_insert AFTER INSERT ON runs FOR EACH ROW EXECUTE FUNCTION run_texts_write()",
    "DROP TRIGGER IF EXISTS runs_texts_update ON runs",
    "CREATE TRIGGER runs_texts_update AFTER UPDATE OF user_query, final_answer ON runs FOR EACH ROW "
    "WHEN (OLD.user_query IS DISTINCT FROM NEW.user_query OR OLD.final_answer IS DISTINCT FROM NEW.final_answer) "
    "EXECUTE FUNCTION run_texts_write()",
    # Filled from the runs there are (a migrated database), then indexed once.
    f"INSERT INTO {PG_TEXTS} (run_id, words) SELECT id, {_pg_text_vector('runs')} FROM runs "
    "ON CONFLICT (run_id) DO NOTHING",
    f"CREATE INDEX IF NOT EXISTS {PG_TEXTS_INDEX} ON {PG_TEXTS} USING gin (words)",
    "DROP INDEX IF EXISTS ix_runs_full_text",
)

#: PostgreSQL: metadata key=value filters as JSONB containment (@>), which this index serves.
PG_METADATA_INDEX = "CREATE INDEX IF NOT EXISTS ix_runs_metadata ON runs USING gin (metadata jsonb_path_ops)"
#: What these DDL statements make that the models do not describe (Alembic's comparison skips them).
UNMODELLED = frozenset({
    PG_TEXTS, PG_TEXTS_INDEX, "ix_runs_metadata",
    # FTS5's own tables.
    "runs_fts", "runs_fts_vocab", "runs_fts_data", "runs_fts_idx", "runs_fts_docsize", "runs_fts_config",
})

#: SQLite: an FTS5 table over runs' two text columns, keyed by runs' rowid, kept by triggers (an update of
#: either column deletes the old terms and adds the new).
SQLITE_FULL_TEXT = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS runs_fts USING fts5(user_query, final_answer, content='runs', "
    "content_rowid='rowid', tokenize='unicode61 remove_diacritics 0')",
    "CREATE TRIGGER IF NOT EXISTS runs_fts_insert AFTER INSERT ON runs BEGIN "
    "INSERT INTO runs_fts(rowid, user_query, final_answer) VALUES (new.rowid, new.user_query, new.final_answer); END",
    "CREATE TRIGGER IF NOT EXISTS runs_fts_delete AFTER DELETE ON runs BEGIN "
    "INSERT INTO runs_fts(runs_fts, rowid, user_query, final_answer) "
    "VALUES ('delete', old.rowid, old.user_query, old.final_answer); END",
    "CREATE TRIGGER IF NOT EXISTS runs_fts_update AFTER UPDATE OF user_query, final_answer ON runs BEGIN "
    "INSERT INTO runs_fts(runs_fts, rowid, user_query, final_answer) "
    "VALUES ('delete', old.rowid, old.user_query, old.final_answer); "
    "INSERT INTO runs_fts(rowid, user_query, final_answer) VALUES (new.rowid, new.user_query, new.final_answer); "
    "END",
    # How many runs have each term, read from the FTS index itself: search picks its plan by it.
    "CREATE VIRTUAL TABLE IF NOT EXISTS runs_fts_vocab USING fts5vocab(runs_fts, 'row')",
)


def install_full_text(connection: Connection) -> None:
    """Create the full-text index of the connection's database over an existing runs table, and fill it."""
    if connection.dialect.name == "sqlite":
        for statement in SQLITE_FULL_TEXT:
            connection.execute(text(statement))
        connection.execute(text("INSERT INTO runs_fts(runs_fts) VALUES ('rebuild')"))
    else:
        for statement in PG_FULL_TEXT:
            connection.execute(text(statement))
        connection.execute(text(PG_METADATA_INDEX))


def recreate_sqlite_full_text(connection: Connection) -> None:
    """After a rebuild of the runs table on SQLite: the FTS table, its triggers and its terms made again."""
    for name in ("runs_fts_insert", "runs_fts_delete", "runs_fts_update"):
        connection.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
    connection.execute(text("DROP TABLE IF EXISTS runs_fts_vocab"))
    connection.execute(text("DROP TABLE IF EXISTS runs_fts"))
    install_full_text(connection)


def after_create(target: Any, connection: Connection, **kw: Any) -> None:
    """An "after_create" listener of the runs table: `metadata.create_all` builds these indexes too."""
    install_full_text(connection)


def before_drop(target: Any, connection: Connection, **kw: Any) -> None:
    """A "before_drop" listener of the runs table: `metadata.drop_all` drops PostgreSQL's run_texts first, whose
    foreign key would refuse the drop of runs."""
    if connection.dialect.name != "sqlite":
        connection.execute(text(f"DROP TABLE IF EXISTS {PG_TEXTS}"))
