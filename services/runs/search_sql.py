"""A run search (`services.runs.search.RunFilter`) as SQL, on SQLite and PostgreSQL alike; used by
`services.runs.queries` (ListRuns). The full-text indexes it queries are in `services.runs.full_text`.

Full text: the user query and the final answer of each run are indexed by the database's own full-text engine,
SQLite FTS5 (`runs_fts`, an external-content table over `runs` kept by triggers) and PostgreSQL tsvector (each
run's words in a table of their own, `run_texts`, kept by triggers, with a GIN index; the two columns' ASCII
punctuation turned into spaces, with the "simple" configuration: lower case, no stemming, no stop words, as FTS5's
unicode61 tokeniser). A query is reduced to its words (`search.text_words`) and matches the runs whose text has
every word as a whole token, on both (docs/runs.md says where the tokenisers may still differ). PostgreSQL indexes
the first 100,000 characters of each column (a tsvector holds at most 1 MB).
"""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Integer,
    Select,
    bindparam,
    exists,
    func,
    literal,
    literal_column,
    select,
    table,
    text,
    tuple_,
)
from sqlalchemy import column as table_column
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.db.database import UtcDateTime
from services.common.errors import InvalidArgument
from services.common.pages import PagePosition
from services.runs.full_text import PG_TEXTS
from services.runs.models import ScoreRow
from services.runs.rows import RUN_TOOLS, RUNS
from services.runs.search import RunFilter, RunOrder, text_words

RUN_SCORES = ScoreRow.__table__
#: PostgreSQL's words of each run (services/runs/full_text.py), a table the models do not describe.
RUN_TEXTS = table(PG_TEXTS, table_column("run_id"), table_column("words"))

# --- filters ---------------------------------------------------------------------------------------------------


#: SQLite: a text whose rarest word more runs have than this is searched by walking the runs in the page's order
#: and keeping those in the match; a rarer one by reading its matches and sorting them (`common_text`).
COMMON_TEXT_RUNS = 1000


def _text_match(words: list[str], sqlite: bool, common: bool) -> ColumnElement[bool]:
    if sqlite:
        # Each word a quoted FTS5 string (no operators, whatever it holds): all of them must match.
        query = " ".join(f'"{word}"' for word in words)
        matching: Select[Any] = select(literal_column("rowid")).select_from(text("runs_fts")).where(
            text("runs_fts MATCH :fts_query").bindparams(fts_query=query)
        )
        # SQLite's planner reads the matches and sorts them, whatever their number (0.5 s for a word in one run of
        # seven at 300,000 runs). For a common text, the unary + keeps it from using the rowid for the match, so
        # it walks the order's index and stops at the page's end, the matches a list it checks each run against.
        rowid: ColumnElement[int] = literal_column("+runs.rowid" if common else "runs.rowid", Integer)
        return rowid.in_(matching)
    # Words are letters and digits only, so no tsquery operator can be in them.
    terms = func.to_tsquery(literal_column("'simple'::regconfig"), " & ".join(words))
    return RUNS.c.id.in_(select(RUN_TEXTS.c.run_id).where(RUN_TEXTS.c.words.op("@@", return_type=Boolean)(terms)))


async def common_text(connection: AsyncConnection, search: RunFilter) -> bool:
    """Whether `search`'s text is common on SQLite: even its rarest word more than COMMON_TEXT_RUNS runs have
    (FTS5's own count, from fts5vocab). False without a text, and on PostgreSQL (whose planner weighs it)."""
    if not search.text or connection.dialect.name != "sqlite":
        return False
    words = text_words(search.text)
    counts = await connection.execute(
        text("SELECT term, doc FROM runs_fts_vocab WHERE term IN :words").bindparams(
            bindparam("words", words, expanding=True)
        )
    )
    runs_with: dict[str, int] = {term: doc for term, doc in counts.all()}
    return min(runs_with.get(word, 0) for word in words) > COMMON_TEXT_RUNS


def filter_clauses(search: RunFilter, sqlite: bool, common: bool = False) -> list[ColumnElement[bool]]:
    """The WHERE conditions of a checked `search` (the order's are added by `ordered`); `common`: its text is
    (`common_text`), which picks another plan on SQLite."""
    runs = RUNS.c
    clauses: list[ColumnElement[bool]] = []
    if search.states:
        clauses.append(runs.state.in_(sorted(set(search.states))))
    for column, times in ((runs.created_at, search.created), (runs.completed_at, search.finished)):
        if times.start is not None:
            clauses.append(column >= literal(times.start, UtcDateTime()))
        if times.end is not None:
            clauses.append(column < literal(times.end, UtcDateTime()))
    if search.finished.end is not None:
        # Implied (a run ends after it is created), and what lets the (created_at, id) index serve a finished
        # range: without it PostgreSQL walked that index from the newest run, filtering out every run since
        # (half a million at 1,000,000 runs for yesterday's).
        clauses.append(runs.created_at < literal(search.finished.end, UtcDateTime()))
    if search.agent_id:
        clauses.append(runs.agent_id == search.agent_id)
        if search.agent_revision:
            clauses.append(runs.agent_revision == search.agent_revision)
    for column, value in ((runs.workflow_id, search.workflow_id), (runs.model, search.model),
                          (runs.error_code, search.error_code)):
        if value:
            clauses.append(column == value)
    if search.tool:
        clauses.append(exists().where(RUN_TOOLS.c.run_id == runs.id, RUN_TOOLS.c.tool == search.tool))
    if search.metadata:
        if sqlite:
            # json_each, not a JSON path: a path cannot name every key (one with a quote or a backslash).
            for key, value in search.metadata:
                pairs = func.json_each(runs.metadata).table_valued("key", "value")
                clauses.append(exists().where(pairs.c.key == key, pairs.c.value == value))
        else:
            # Containment, which the GIN index over metadata serves.
            clauses.append(runs.metadata.op("@>")(literal(dict(search.metadata), JSONB())))
    if search.text:
        clauses.append(_text_match(text_words(search.text), sqlite, common))
    if search.score_name:
        scored = [RUN_SCORES.c.run_id == runs.id, RUN_SCORES.c.name == search.score_name]
        if search.score_range.low is not None:
            scored.append(RUN_SCORES.c.number_value >= search.score_range.low)
        if search.score_range.high is not None:
            scored.append(RUN_SCORES.c.number_value <= search.score_range.high)
        clauses.append(exists().where(*scored))
    for column, numbers in ((runs.duration_ms, search.duration_ms), (runs.total_tokens, search.total_tokens),
                            (runs.cost_nanos, search.cost_nanos)):
        if numbers.low is not None:
            clauses.append(column >= numbers.low)
        if numbers.high is not None:
            clauses.append(column <= numbers.high)
    return clauses


# --- order and keyset -------------------------------------------------------------------------------------------


def _order_key(order: RunOrder) -> tuple[Any, str]:
    """The column an order sorts by (before the run id), and its name in a page token."""
    if order is RunOrder.LONGEST:
        return RUNS.c.duration_ms, "duration_ms"
    if order is RunOrder.MOST_TOKENS:
        return RUNS.c.total_tokens, "total_tokens"
    if order is RunOrder.MOST_COSTLY:
        return RUNS.c.cost_nanos, "cost_nanos"
    return RUNS.c.created_at, "created_at"


def ordered(query: Select[Any], order: RunOrder) -> Select[Any]:
    """`query` in `order`, the run id breaking ties."""
    column, _ = _order_key(order)
    if order is RunOrder.OLDEST:
        return query.order_by(column.asc(), RUNS.c.id.asc())
    if order is RunOrder.LONGEST:
        query = query.where(RUNS.c.duration_ms.is_not(None))
    return query.order_by(column.desc(), RUNS.c.id.desc())


def position_of(row: Any, order: RunOrder) -> dict[str, str | int]:
    """A page token's position after the run `row` (a RunRecord-like row with the order's column)."""
    _, name = _order_key(order)
    value = row[name]
    return {name: value.isoformat() if isinstance(value, datetime) else int(value), "id": row["id"]}


def after(position: PagePosition, order: RunOrder) -> ColumnElement[bool]:
    """Runs after `position` in `order`. A row-value comparison, which both databases serve as a range of a
    (column, id) index: the equivalent OR of two conditions made them scan from the first run to the page."""
    column, name = _order_key(order)
    run_id = literal(position.uuid("id"), RUNS.c.id.type)
    if order in (RunOrder.NEWEST, RunOrder.OLDEST):
        value: Any = literal(position.time(name), UtcDateTime())
    else:
        value = literal(position.integer(name, 0, 2**63 - 1), column.type)
    if order is RunOrder.OLDEST:
        return tuple_(column, RUNS.c.id) > tuple_(value, run_id)
    return tuple_(column, RUNS.c.id) < tuple_(value, run_id)


def check_thread_order(order: RunOrder) -> None:
    if order is not RunOrder.NEWEST:
        raise InvalidArgument("order cannot be combined with thread_id: a thread's runs are listed in turn order")

