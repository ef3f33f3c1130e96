"""Searching runs: the filter and order ListRuns takes, as plain domain types (no gRPC, no SQL), and their checks.

The servicer builds a `RunFilter` from a ListRunsRequest (services/runs/convert.py), the store checks it here
(`checked_filter`) and turns it into SQL (services/runs/search_sql.py). Every check raises InvalidArgument naming
the request's field, before the database sees anything, so SQLite and PostgreSQL answer alike.

What a filter matches is documented for users in docs/runs.md ("Searching runs"). In short: every field set
narrows the runs (AND); ranges are inclusive at the low end and exclusive at the high end for times, inclusive
at both ends for numbers. Facts that a run knows only when it ends (its final answer, the tools it used, its
duration) match ended runs only.
"""

import dataclasses
import math
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from services.common.checks import (
    MAX_METADATA_KEY_CHARS,
    MAX_METADATA_PAIRS,
    MAX_METADATA_VALUE_CHARS,
    check_text,
    parse_uuid,
)
from services.common.errors import InvalidArgument
from services.common.run_vocabulary import RUN_STATES
from services.runs.checks import MAX_ERROR_CODE_CHARS, MAX_MODEL_CHARS

#: The longest text query: a search box's worth. Longer is refused, not cut (a cut query would match otherwise).
MAX_TEXT_CHARS = 1000
#: Words of a text query; each is one more condition of the full-text match.
MAX_TEXT_WORDS = 32
#: A substring to look for: from three characters (the indexes are of trigrams; a shorter one would match by a
#: scan of every run) to a phrase's worth.
MIN_CONTAINS_CHARS = 3
MAX_CONTAINS_CHARS = 200
#: The longest tool name a filter may name (the column's width).
MAX_TOOL_CHARS = 200
#: The longest score name (as CreateScore takes them).
MAX_SCORE_NAME_CHARS = 64
#: A number range's bound is stored in a 64-bit column.
MAX_BOUND = 2**63 - 1

#: A word of a text query: a run of letters and digits. Both databases' tokenisers split text at least at
#: everything else, so a query made of these words means the same to both (docs/runs.md).
_WORD = re.compile(r"[^\W_]+")


class RunOrder(StrEnum):
    """The order of a search's runs. Each is a keyset order ending in the run id, so pages stay stable."""

    #: Newest first by creation time (the default).
    NEWEST = "newest"
    OLDEST = "oldest"
    #: Longest duration first; only ended runs have a duration, so this lists ended runs only.
    LONGEST = "longest"
    #: Most tokens (the run's total usage) first.
    MOST_TOKENS = "most_tokens"
    #: Most costly (its priced model calls) first.
    MOST_COSTLY = "most_costly"


@dataclass(frozen=True)
class TimeRange:
    """[start, end): either end may be open (None)."""

    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True)
class NumberRange:
    """[low, high]: either end may be open (None)."""

    low: int | None = None
    high: int | None = None


@dataclass(frozen=True)
class ScoreRange:
    """[low, high] of a score's value: either end may be open (None)."""

    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class RunFilter:
    """Which runs a search returns (every field set narrows it) and in which order. The empty filter is every
    run the caller may see, newest first."""

    #: Runs in any of these states (none: any state).
    states: tuple[str, ...] = ()
    created: TimeRange = TimeRange()
    #: When the run ended; a range here matches ended runs only.
    finished: TimeRange = TimeRange()
    #: The saved agent, and optionally its revision (0: any revision).
    agent_id: str = ""
    agent_revision: int = 0
    workflow_id: str = ""
    #: The model the run was started with, exactly.
    model: str = ""
    #: A tool the run called (a tool-call step of it), exactly; ended runs only.
    tool: str = ""
    #: The run's error code, exactly ("model_unavailable", "interrupted" ...).
    error_code: str = ""
    #: Metadata pairs the run has, all of them.
    metadata: tuple[tuple[str, str], ...] = ()
    #: Words the user query or the final answer contains, all of them (full-text search, whole words).
    text: str = ""
    #: A string the user query or the final answer contains, case-insensitively (any characters, inside words
    #: too: "voic" finds "Invoice").
    contains: str = ""
    #: The run's duration in milliseconds, from its creation to its end; ended runs only.
    duration_ms: NumberRange = NumberRange()
    #: The run's total tokens (prompt + completion).
    total_tokens: NumberRange = NumberRange()
    #: What the run's priced model calls cost, in nano-USD.
    cost_nanos: NumberRange = NumberRange()
    #: A feedback score the run has, by name, its value in `score_range` when that is bounded.
    score_name: str = ""
    score_range: ScoreRange = ScoreRange()
    order: RunOrder = RunOrder.NEWEST

    def token_key(self) -> dict[str, object]:
        """The filter as a page token is bound to it (services/common/pages.py): JSON-able, one form per filter."""
        key = dataclasses.asdict(self)
        key["states"] = sorted(set(self.states))
        key["metadata"] = sorted(self.metadata)
        if not self.contains:
            del key["contains"]  # so tokens issued before there was a `contains` stay good
        return key


NO_FILTER = RunFilter()


def text_words(text: str) -> list[str]:
    """The words of a text query, lower case, in order, each once (the terms the full-text match ANDs)."""
    return list(dict.fromkeys(word.lower() for word in _WORD.findall(text)))


def _check_time_range(name: str, times: TimeRange) -> None:
    if times.start is not None and times.end is not None and times.end <= times.start:
        raise InvalidArgument(
            f"{name}_before ({times.end.isoformat()}) must be later than {name}_after ({times.start.isoformat()})"
        )


def _check_number_range(low_field: str, high_field: str, numbers: NumberRange) -> None:
    for field, value in ((low_field, numbers.low), (high_field, numbers.high)):
        if value is not None and not 0 <= value <= MAX_BOUND:
            raise InvalidArgument(f"{field} must be 0 or more (and at most {MAX_BOUND}), got {value}")
    if numbers.low is not None and numbers.high is not None and numbers.high < numbers.low:
        raise InvalidArgument(f"{high_field} ({numbers.high}) must not be below {low_field} ({numbers.low})")


def checked_filter(search: RunFilter) -> RunFilter:
    """`search` validated, its ids in canonical form; InvalidArgument naming the field of the first problem."""
    for position, state in enumerate(search.states):
        if state not in RUN_STATES:
            raise InvalidArgument(f"states[{position}] is an unknown run state {state!r}; use one of "
                                  f"{', '.join(RUN_STATES)}")
    _check_time_range("created", search.created)
    _check_time_range("finished", search.finished)
    agent_id = parse_uuid(search.agent_id, "agent_id", "agent") if search.agent_id else ""
    if search.agent_revision < 0 or (search.agent_revision and not agent_id):
        raise InvalidArgument("agent_revision must be a revision (1, 2 ...) of the agent_id given, or 0 for any")
    workflow_id = parse_uuid(search.workflow_id, "workflow_id", "workflow") if search.workflow_id else ""
    check_text("model", search.model, MAX_MODEL_CHARS)
    check_text("tool", search.tool, MAX_TOOL_CHARS)
    check_text("error_code", search.error_code, MAX_ERROR_CODE_CHARS)
    _check_metadata(search.metadata)
    check_text("text", search.text, MAX_TEXT_CHARS)
    if search.text and not text_words(search.text):
        raise InvalidArgument("text has no word to search for (letters or digits); leave it empty to match any text")
    if len(text_words(search.text)) > MAX_TEXT_WORDS:
        raise InvalidArgument(f"text has {len(text_words(search.text))} words; at most {MAX_TEXT_WORDS}")
    check_text("text_contains", search.contains, MAX_CONTAINS_CHARS)
    if search.contains and len(search.contains) < MIN_CONTAINS_CHARS:
        raise InvalidArgument(f"text_contains must be at least {MIN_CONTAINS_CHARS} characters, got "
                              f"{len(search.contains)}; leave it empty to match any text")
    _check_number_range("min_duration_ms", "max_duration_ms", search.duration_ms)
    _check_number_range("min_total_tokens", "max_total_tokens", search.total_tokens)
    _check_number_range("min_cost_usd", "max_cost_usd", search.cost_nanos)
    _check_score(search.score_name, search.score_range)
    if not isinstance(search.order, RunOrder):
        raise InvalidArgument(f"order {search.order!r} is unknown; use one of {', '.join(RunOrder)}")
    return dataclasses.replace(search, agent_id=agent_id, workflow_id=workflow_id)


def _check_score(name: str, values: ScoreRange) -> None:
    if (values.low is not None or values.high is not None) and not name:
        raise InvalidArgument("min_score and max_score need the score_name they bound")
    check_text("score_name", name, MAX_SCORE_NAME_CHARS)
    for field, value in (("min_score", values.low), ("max_score", values.high)):
        if value is not None and not math.isfinite(value):
            raise InvalidArgument(f"{field} must be a finite number, got {value}")
    if values.low is not None and values.high is not None and values.high < values.low:
        raise InvalidArgument(f"max_score ({values.high}) must not be below min_score ({values.low})")


def _check_metadata(pairs: tuple[tuple[str, str], ...]) -> None:
    if len(pairs) > MAX_METADATA_PAIRS:
        raise InvalidArgument(f"metadata has {len(pairs)} pairs; at most {MAX_METADATA_PAIRS}")
    seen: dict[str, str] = {}
    for position, (key, value) in enumerate(pairs):
        field = f"metadata[{position}]"
        if not key:
            raise InvalidArgument(f"{field} has an empty key; write key=value")
        check_text(f"{field} key", key, MAX_METADATA_KEY_CHARS)
        check_text(f"{field} value", value, MAX_METADATA_VALUE_CHARS)
        if seen.get(key, value) != value:
            raise InvalidArgument(f"{field} asks for {key}={value!r} and also {key}={seen[key]!r}: no run has both")
        seen[key] = value


def parse_metadata_pairs(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    """The (key, value) pairs of a request's "key=value" strings (the value may contain "=")."""
    parsed = []
    for position, pair in enumerate(pairs):
        key, equals, value = pair.partition("=")
        if not equals:
            raise InvalidArgument(f"metadata[{position}] {pair[:80]!r} is not key=value")
        parsed.append((key, value))
    return tuple(parsed)
