"""The full-text index of runs' user queries and final answers, in each database's own engine (SQLite FTS5,
PostgreSQL tsvector with GIN), their substring index (SQLite FTS5's trigram tokeniser, PostgreSQL pg_trgm), and
the other indexes of the search that the models cannot declare. Created by migrations 0017 and 0019 and, for
`metadata.create_all` (tests, development), by a listener the models register; queried by
`services.runs.search_sql` (whose docstring says how the two engines differ).

A later migration that rebuilds the `runs` table on SQLite (Alembic's batch mode recreating it) drops the FTS
triggers with it and changes the rowids the indexes are keyed by: it must call `recreate_sqlite_full_text`.
"""

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

#: How much of the user query and of the final answer PostgreSQL's full-text index holds.
FULL_TEXT_CHARS = 100_000
#: The tsvector the GIN index holds; a query must name the same expression, with constants, not bound values,
#: for the planner to use the index.
#: ASCII punctuation becomes spaces first: PostgreSQL's parser would keep a path, a host, an e-mail address or a
#: number such as 3.14 as one token ("notes/python.md"), which no query of words (letters and digits) can match,
#: where FTS5 splits them into words; so both index the same words.
PG_TEXT_VECTOR = (
    f"to_tsvector('simple'::regconfig, regexp_replace(left(runs.user_query, {FULL_TEXT_CHARS}) || ' ' || "
    f"left(runs.final_answer, {FULL_TEXT_CHARS}), '[[:punct:]]+', ' ', 'g'))"
)
_PG_INDEX_VECTOR = PG_TEXT_VECTOR.replace("runs.", "")
PG_FULL_TEXT_INDEX = f"CREATE INDEX IF NOT EXISTS ix_runs_full_text ON runs USING gin ({_PG_INDEX_VECTOR})"

#: PostgreSQL: metadata key=value filters as JSONB containment (@>), which this index serves.
PG_METADATA_INDEX = "CREATE INDEX IF NOT EXISTS ix_runs_metadata ON runs USING gin (metadata jsonb_path_ops)"
#: PostgreSQL: substrings of either column (ILIKE '%...%'), served by trigrams (the pg_trgm extension, which a
#: database owner may create: it is a trusted extension).
PG_SUBSTRING_INDEX = (
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS ix_runs_substrings ON runs USING gin (user_query gin_trgm_ops, "
    "final_answer gin_trgm_ops)",
)
#: What these DDL statements make that the models do not describe (Alembic's comparison skips them).
UNMODELLED = frozenset({
    "ix_runs_full_text", "ix_runs_metadata", "ix_runs_substrings",
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


def install_substrings(connection: Connection) -> None:
    """Create the substring index of the connection's database over an existing runs table, and fill it."""
    if connection.dialect.name == "sqlite":
        for statement in SQLITE_SUBSTRINGS:
            connection.execute(text(statement))
        connection.execute(text("INSERT INTO runs_substrings(runs_substrings) VALUES ('rebuild')"))
    else:
        for statement in PG_SUBSTRING_INDEX:
            connection.execute(text(statement))


def drop_sqlite_fts(connection: Connection, table: str) -> None:
    """SQLite: an FTS5 table made by `_sqlite_fts`, and its triggers."""
    for trigger in ("insert", "delete", "update"):
        connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_{trigger}"))
    connection.execute(text(f"DROP TABLE IF EXISTS {table}"))


def drop_substrings(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        drop_sqlite_fts(connection, "runs_substrings")
    else:
        connection.execute(text("DROP INDEX IF EXISTS ix_runs_substrings"))


def install_full_text(connection: Connection) -> None:
    """Create the full-text index of the connection's database over an existing runs table, and fill it."""
    if connection.dialect.name == "sqlite":
        for statement in SQLITE_FULL_TEXT:
            connection.execute(text(statement))
        connection.execute(text("INSERT INTO runs_fts(runs_fts) VALUES ('rebuild')"))
    else:
        connection.execute(text(PG_FULL_TEXT_INDEX))
        connection.execute(text(PG_METADATA_INDEX))


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
