"""The full-text index of runs' user queries and final answers, in each database's own engine (SQLite FTS5,
PostgreSQL tsvector with GIN, in a table of its own), their substring index (SQLite FTS5's trigram tokeniser,
PostgreSQL pg_trgm), and the other indexes of the search that the models cannot declare. Created by migrations
0017, 0019 (PostgreSQL's words off the runs row) and 0020 (substrings) and, for `metadata.create_all` (tests,
development), by a listener the models register; queried by `services.runs.search_sql` (whose docstring says how
the two engines differ).

A later migration that rebuilds the `runs` table on SQLite (Alembic's batch mode recreating it) drops the FTS
triggers with it and changes the rowids the indexes are keyed by: it must call `recreate_sqlite_full_text`.
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


#: PostgreSQL: the words of each run in a table of its own, `run_texts` (its GIN index `ix_run_texts_words`), with
#: a copy of the two texts for the substring index (`PG_SUBSTRINGS`),
#: kept by triggers on runs that fire only when the user query or the final answer is written (at create, import
#: and end), not on a step append's UPDATE of the run's count, usage and lease. Why not an index on runs (0017 to
#: 0018 had a GIN index over this expression there): an UPDATE of runs that is not HOT adds an entry to every index
#: of the row, so each append whose usage moved the token and cost columns recomputed the tsvector and wrote the
#: GIN index (issue 22).
PG_TEXTS = "run_texts"
PG_TEXTS_INDEX = "ix_run_texts_words"
PG_FULL_TEXT = (
    f"CREATE TABLE IF NOT EXISTS {PG_TEXTS} (run_id varchar(36) PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE, "
    "words tsvector NOT NULL, user_query text NOT NULL, final_answer text NOT NULL)",
    "CREATE OR REPLACE FUNCTION run_texts_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    f"INSERT INTO {PG_TEXTS} (run_id, words, user_query, final_answer) "
    f"VALUES (NEW.id, {_pg_text_vector('NEW')}, NEW.user_query, NEW.final_answer) "
    "ON CONFLICT (run_id) DO UPDATE SET words = EXCLUDED.words, user_query = EXCLUDED.user_query, "
    "final_answer = EXCLUDED.final_answer; RETURN NULL; END $$",
    "DROP TRIGGER IF EXISTS runs_texts_insert ON runs",
    "CREATE TRIGGER runs_texts_insert AFTER INSERT ON runs FOR EACH ROW EXECUTE FUNCTION run_texts_write()",
    "DROP TRIGGER IF EXISTS runs_texts_update ON runs",
    "CREATE TRIGGER runs_texts_update AFTER UPDATE OF user_query, final_answer ON runs FOR EACH ROW "
    "WHEN (OLD.user_query IS DISTINCT FROM NEW.user_query OR OLD.final_answer IS DISTINCT FROM NEW.final_answer) "
    "EXECUTE FUNCTION run_texts_write()",
    # Filled from the runs there are (a migrated database), then indexed once.
    f"INSERT INTO {PG_TEXTS} (run_id, words, user_query, final_answer) "
    f"SELECT id, {_pg_text_vector('runs')}, user_query, final_answer FROM runs ON CONFLICT (run_id) DO NOTHING",
    f"CREATE INDEX IF NOT EXISTS {PG_TEXTS_INDEX} ON {PG_TEXTS} USING gin (words)",
    "DROP INDEX IF EXISTS ix_runs_full_text",
)

#: PostgreSQL: metadata key=value filters as JSONB containment (@>), which this index serves.
PG_METADATA_INDEX = "CREATE INDEX IF NOT EXISTS ix_runs_metadata ON runs USING gin (metadata jsonb_path_ops)"
#: PostgreSQL: substrings of either text (ILIKE '%...%'), served by trigrams (the pg_trgm extension, which a
#: database owner may create: it is a trusted extension), over run_texts' copies of the texts, for the reason
#: the words are there: on runs, every append that is not HOT would add every trigram of the user query again.
PG_SUBSTRINGS_INDEX = "ix_run_texts_substrings"
PG_SUBSTRINGS = (
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    f"CREATE INDEX IF NOT EXISTS {PG_SUBSTRINGS_INDEX} ON {PG_TEXTS} USING gin (user_query gin_trgm_ops, "
    "final_answer gin_trgm_ops)",
)
#: What these DDL statements make that the models do not describe (Alembic's comparison skips them).
UNMODELLED = frozenset({
    PG_TEXTS, PG_TEXTS_INDEX, PG_SUBSTRINGS_INDEX, "ix_runs_metadata",
    # FTS5's own tables.
    *(f"{table}{part}" for table in ("runs_fts", "runs_substrings")
      for part in ("", "_data", "_idx", "_docsize", "_config")),
})


def _sqlite_fts(table: str, tokenize: str) -> tuple[str, ...]:
    """SQLite: an FTS5 table over runs' two texts and their owner, keyed by runs' rowid, kept by triggers (an
    update of either text deletes the old terms and adds the new; a run's owner never changes).

    Why the owner: every search of a user who is not an admin is of its own runs, and FTS5 can answer "this
    user's runs with these words" from its lists alone (the owner's list is short), where walking the owner's
    runs newest first and checking each against every match of a common word read them all (60 ms at 1,000,000
    runs). The owner is tokenised as the texts are, so a match is checked against runs.owner too."""
    columns = "user_query, final_answer, owner"
    return (
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {table} USING fts5({columns}, content='runs', content_rowid='rowid', "
        f"tokenize='{tokenize}')",
        f"CREATE TRIGGER IF NOT EXISTS {table}_insert AFTER INSERT ON runs BEGIN "
        f"INSERT INTO {table}(rowid, {columns}) VALUES (new.rowid, new.user_query, new.final_answer, new.owner); END",
        f"CREATE TRIGGER IF NOT EXISTS {table}_delete AFTER DELETE ON runs BEGIN "
        f"INSERT INTO {table}({table}, rowid, {columns}) "
        f"VALUES ('delete', old.rowid, old.user_query, old.final_answer, old.owner); END",
        f"CREATE TRIGGER IF NOT EXISTS {table}_update AFTER UPDATE OF user_query, final_answer ON runs BEGIN "
        f"INSERT INTO {table}({table}, rowid, {columns}) "
        f"VALUES ('delete', old.rowid, old.user_query, old.final_answer, old.owner); "
        f"INSERT INTO {table}(rowid, {columns}) VALUES (new.rowid, new.user_query, new.final_answer, new.owner); "
        "END",
    )


#: SQLite: whole words (FTS5's unicode61 tokeniser).
SQLITE_FULL_TEXT = _sqlite_fts("runs_fts", "unicode61 remove_diacritics 0")
#: SQLite: trigrams (case-insensitive), which answer a phrase query with the runs whose column contains it.
SQLITE_SUBSTRINGS = _sqlite_fts("runs_substrings", "trigram")


def _install(connection: Connection, sqlite: tuple[str, ...], fts_table: str, postgres: tuple[str, ...]) -> None:
    """Run the connection's database's statements; on SQLite, then fill `fts_table` from the runs there are."""
    is_sqlite = connection.dialect.name == "sqlite"
    for statement in sqlite if is_sqlite else postgres:
        connection.execute(text(statement))
    if is_sqlite:
        connection.execute(text(f"INSERT INTO {fts_table}({fts_table}) VALUES ('rebuild')"))


def install_substrings(connection: Connection) -> None:
    """Create the substring index of the connection's database over an existing runs table, and fill it."""
    _install(connection, SQLITE_SUBSTRINGS, "runs_substrings", PG_SUBSTRINGS)


def drop_sqlite_fts(connection: Connection, table: str) -> None:
    """SQLite: an FTS5 table made by `_sqlite_fts`, and its triggers."""
    for trigger in ("insert", "delete", "update"):
        connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_{trigger}"))
    connection.execute(text(f"DROP TABLE IF EXISTS {table}"))


def drop_substrings(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        drop_sqlite_fts(connection, "runs_substrings")
    else:
        connection.execute(text(f"DROP INDEX IF EXISTS {PG_SUBSTRINGS_INDEX}"))


def install_full_text(connection: Connection) -> None:
    """Create the full-text index of the connection's database over an existing runs table, and fill it."""
    _install(connection, SQLITE_FULL_TEXT, "runs_fts", (*PG_FULL_TEXT, PG_METADATA_INDEX))


def recreate_sqlite_full_text(connection: Connection) -> None:
    """After a rebuild of the runs table on SQLite: the FTS tables, their triggers and their terms made again."""
    drop_sqlite_fts(connection, "runs_fts")
    install_full_text(connection)
    drop_substrings(connection)
    install_substrings(connection)


def after_create(target: Any, connection: Connection, **kw: Any) -> None:
    """An "after_create" listener of the runs table: `metadata.create_all` builds these indexes too."""
    install_full_text(connection)
    install_substrings(connection)


def before_drop(target: Any, connection: Connection, **kw: Any) -> None:
    """A "before_drop" listener of the runs table: `metadata.drop_all` drops PostgreSQL's run_texts first, whose
    foreign key would refuse the drop of runs."""
    if connection.dialect.name != "sqlite":
        connection.execute(text(f"DROP TABLE IF EXISTS {PG_TEXTS}"))
