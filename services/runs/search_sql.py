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

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Integer,
    Select,
    Text,
    and_,
    exists,
    func,
    literal,
    literal_column,
    or_,
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
RUN_TEXTS = table(
    PG_TEXTS, table_column("run_id"), table_column("words"), table_column("user_query", Text),
    table_column("final_answer", Text),
)

# --- filters ---------------------------------------------------------------------------------------------------


#: SQLite: a text (or substring) that more runs have than this (estimated) is searched by walking the runs in the
#: page's order and keeping those in the match; a rarer one by reading its matches and sorting them
#: (`common_text`).
COMMON_TEXT_RUNS = 1000
#: The rowid tiers of a common text's walk (`CommonText`): each this many times wider than the one before.
TIER_GROWTH = 8
#: The first tier spans at least this many rowids, and the runs that this many pages pass by the text's frequency.
MIN_TIER_ROWIDS = 256
TIER_PAGES = 4


@dataclass(frozen=True)
class CommonText:
    """SQLite: a search text or substring that more than COMMON_TEXT_RUNS runs have (by `common_text`'s
    estimate), and how its walk checks runs against the matches.

    Such a page walks the order's index and keeps the runs the text matches, checking each against a list of the
    matches (SQLite builds the list once, when the walk first needs it). Built whole, that list is the cost of the
    page: a word that 1 run in 4 has is 250,000 matches to read and keep at 1,000,000 runs (74 ms), for a page
    that needs 200. So the matches are cut into tiers by rowid, newest first (a rowid grows as runs are created,
    so the newest runs have the highest): the first tier spans about four pages' worth of runs by the text's
    frequency, each next one TIER_GROWTH times wider, the last all the rest. A run is checked against its own
    tier's list only, and a list is built only when the walk reaches a run of its tier: the first page of a
    common word reads a few hundred matches. Every rowid is in exactly one tier, so the answers are those of one
    list whatever the tiers are; a run whose rowid is out of step with its time (one imported later) only costs
    its tier's list.

    `bounds`: the tiers' lower rowids, highest first (the first tier is `>= bounds[0]`, the last `< bounds[-1]`).
    Empty for an order other than newest first, whose walk the rowids say nothing of: one list."""

    bounds: tuple[int, ...]


#: SQLite's two FTS5 tables over runs' user query and final answer (services/runs/full_text.py): whole words,
#: and trigrams for substrings.
WORDS_TABLE = "runs_fts"
SUBSTRINGS_TABLE = "runs_substrings"


def _fts_query(table: str, terms: str, owner: str | None) -> str:
    """SQLite: an FTS5 query of `terms` in the two texts of `table`'s rows, and of the owner when one is given
    (services/runs/full_text.py says why the owner is there). An owner FTS5 cannot look up (no word in it, or
    fewer than three characters for trigrams) is left to the query's runs.owner condition alone."""
    query = f"{{user_query final_answer}} : ({terms})"
    searchable = len(owner or "") >= 3 if table == SUBSTRINGS_TABLE else bool(text_words(owner or ""))
    return f"owner : {_phrase(owner)} AND {query}" if owner and searchable else query


def _fts_match(table: str, query: str, common: CommonText | None) -> ColumnElement[bool]:
    """SQLite: runs whose row of the FTS5 `table` matches `query`, as a rare or a common text is best checked."""
    if common is None:
        # A rare text: its few matches read and sorted. (SQLite's plan whenever the rowid can drive.)
        return literal_column("runs.rowid", Integer).in_(_fts_matches(table, query))
    # The unary + keeps the planner from driving by the rowid (reading every match, then sorting them all: half a
    # second for a word in one run of seven at 300,000 runs): it walks the order's index.
    rowid = literal_column("+runs.rowid", Integer)
    ranges = zip((None, *common.bounds), (*common.bounds, None), strict=True)
    return or_(*(and_(*_in_range(rowid, low, high), rowid.in_(_fts_matches(table, query, low, high)))
                 for high, low in ranges))


def _in_range(rowid: ColumnElement[int], low: int | None, high: int | None) -> list[ColumnElement[bool]]:
    """`low <= rowid < high`, either bound open when None."""
    return [*([] if low is None else [rowid >= low]), *([] if high is None else [rowid < high])]


def _fts_matches(table: str, query: str, low: int | None = None, high: int | None = None) -> Select[Any]:
    """The rowids of the runs whose row of `table` matches the FTS5 `query`, within `low <= rowid < high` (FTS5
    seeks to a rowid range in its lists rather than reading them whole)."""
    fts_rowid = literal_column("rowid", Integer)
    return select(fts_rowid).select_from(text(table)).where(
        text(f"{table} MATCH :{table}_query").bindparams(**{f"{table}_query": query}),
        *_in_range(fts_rowid, low, high),
    )


def _all_words(words: list[str]) -> str:
    """Each word a quoted FTS5 string (no operators, whatever it holds): all of them must match."""
    return " ".join(f'"{word}"' for word in words)


def _text_match(words: list[str], sqlite: bool, common: CommonText | None, owner: str | None) -> ColumnElement[bool]:
    if sqlite:
        return _fts_match(WORDS_TABLE, _fts_query(WORDS_TABLE, _all_words(words), owner), common)
    # Words are letters and digits only, so no tsquery operator can be in them.
    terms = func.to_tsquery(literal_column("'simple'::regconfig"), " & ".join(words))
    return RUNS.c.id.in_(select(RUN_TEXTS.c.run_id).where(RUN_TEXTS.c.words.op("@@", return_type=Boolean)(terms)))


def _phrase(substring: str) -> str:
    """One FTS5 string (its quotes doubled), which the trigram tokeniser matches as a substring of a column."""
    return '"' + substring.replace('"', '""') + '"'


def _contains_match(
    substring: str, sqlite: bool, common: CommonText | None, owner: str | None
) -> ColumnElement[bool]:
    if sqlite:
        return _fts_match(SUBSTRINGS_TABLE, _fts_query(SUBSTRINGS_TABLE, _phrase(substring), owner), common)
    pattern = "%" + re.sub(r"([\\%_])", r"\\\1", substring) + "%"
    texts = RUN_TEXTS.c
    return RUNS.c.id.in_(select(texts.run_id).where(
        or_(texts.user_query.ilike(pattern, escape="\\"), texts.final_answer.ilike(pattern, escape="\\"))
    ))


async def prepare_search(
    connection: AsyncConnection, search: RunFilter, page_size: int, owner: str | None = None
) -> CommonText | None:
    """Settle what a search's SELECT needs on `connection`, in the read's transaction, before it runs; what
    `filter_clauses` needs to know of its text on SQLite (`common_text`).

    PostgreSQL: plans made for this search's values (`plan_cache_mode`, for the transaction only). The driver
    prepares every statement, and after five runs of one PostgreSQL may keep a generic plan, made for any agent,
    tool or label: the agent + tool + metadata + tokens search went from 50 ms to 400-580 ms on its sixth page at
    1,000,000 runs, walking the wrong index. A search's plan costs under a millisecond to make; a wrong one,
    hundreds."""
    if connection.dialect.name != "sqlite":
        if search != RunFilter(order=search.order):
            await connection.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        return None
    return await common_text(connection, search, page_size, owner)


#: SQLite: how many of the newest rowids a text's frequency is estimated over (`common_text`).
SAMPLE_ROWIDS = 10_000


async def _matches_among(connection: AsyncConnection, table: str, query: str, low: int) -> int:
    """How many runs with a rowid from `low` on the FTS5 `query` matches in `table` (a seek to `low` in each of
    its lists and a read of their tails: about a millisecond)."""
    counted = await connection.execute(
        text(f"SELECT count(*) FROM {table} WHERE {table} MATCH :query AND rowid >= :low"),
        {"query": query, "low": low},
    )
    return int(counted.scalar() or 0)


async def common_text(
    connection: AsyncConnection, search: RunFilter, page_size: int, owner: str | None = None
) -> CommonText | None:
    """The plan of `search`'s text and substring on SQLite when they are common: their matches among the newest
    SAMPLE_ROWIDS runs, scaled to every run, are more than COMMON_TEXT_RUNS. None without either, for a rarer one,
    and on PostgreSQL (whose planner weighs it).

    Why a sample and not FTS5's own counts (an fts5vocab table): those are counted by reading each term's whole
    list, 30-200 ms for a common word or trigram at 1,000,000 runs, on every search. The newest runs are also the
    ones a newest-first walk reads."""
    if not (search.text or search.contains) or connection.dialect.name != "sqlite":
        return None
    newest = (await connection.execute(text("SELECT max(rowid) FROM runs"))).scalar() or 0
    low = max(1, newest - SAMPLE_ROWIDS + 1)
    sampled = newest - low + 1
    matches = []
    if search.text:
        words = _fts_query(WORDS_TABLE, _all_words(text_words(search.text)), owner)
        matches.append(await _matches_among(connection, WORDS_TABLE, words, low))
    if search.contains:
        substring = _fts_query(SUBSTRINGS_TABLE, _phrase(search.contains), owner)
        matches.append(await _matches_among(connection, SUBSTRINGS_TABLE, substring, low))
    found = min(matches)  # both must match: at most the rarer's
    if found * newest // sampled <= COMMON_TEXT_RUNS:
        return None
    if search.order is not RunOrder.NEWEST:
        return CommonText(bounds=())
    # The rowids a walk passes for a page, a few pages' worth.
    span = max(MIN_TIER_ROWIDS, TIER_PAGES * (page_size + 1) * sampled // found)
    bounds: list[int] = []
    low = newest + 1
    while (low := low - span) > 0 and len(bounds) < 4:
        bounds.append(low)
        span *= TIER_GROWTH
    return CommonText(bounds=tuple(bounds))


def filter_clauses(
    search: RunFilter, sqlite: bool, common: CommonText | None = None, owner: str | None = None
) -> list[ColumnElement[bool]]:
    """The WHERE conditions of a checked `search` (the order's are added by `ordered`, the owner's by the
    caller); `common`: what `common_text` says of its text, which picks another plan on SQLite; `owner`: whose
    runs are searched, which SQLite's full-text tables can narrow their matches to."""
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
        clauses.append(_text_match(text_words(search.text), sqlite, common, owner))
    if search.contains:
        clauses.append(_contains_match(search.contains, sqlite, common, owner))
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

