"""Searching runs in the store (ListRuns' filters and orders) on SQLite and PostgreSQL alike: each filter alone,
combinations, the orders and their keyset pages while runs arrive, another user's runs, what a run records for
search when it ends, and every malformed or contradictory filter's message."""

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy

from bench.store.listing import explain
from services.common.db.database import Database
from services.common.errors import InvalidArgument
from services.common.usage import Usage
from services.runs import search_sql
from services.runs.records import ModelCallStats, NewScore, NewStep
from services.runs.search import NumberRange, RunFilter, RunOrder, ScoreRange, TimeRange
from services.runs.store import RunStore
from tests.runs.helpers import new_run, set_columns

AGENT = "0b6f3c55-5d5e-4c43-9a43-0a5e5cf7a001"
OTHER_AGENT = "0b6f3c55-5d5e-4c43-9a43-0a5e5cf7a002"
WORKFLOW = "7d1e4a10-9a0b-4a55-8c1f-3f2b7c9e0001"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def tool_call(tool: str) -> NewStep:
    return NewStep("tool-call", {"tool_name": tool, "tool_call_id": f"call-{tool}", "raw_arguments": "{}"})


def answer(text: str, prompt: int = 0, completion: int = 0) -> NewStep:
    return NewStep("agent-response", {"text": text}, model_call=ModelCallStats(Usage(prompt, completion)))


async def make_run(
    store: RunStore,
    database: Database,
    name: str,
    *,
    minute: int,
    steps: tuple[NewStep, ...] = (),
    end: tuple[str, str, str] | None = ("completed", "", ""),
    took_ms: int = 1000,
    **fields: Any,
) -> str:
    """A run created at T0 + `minute` minutes, with `steps`, ended as `end` (None: left running) `took_ms` after
    its creation; returns its id."""
    run = await store.create_run(new_run(name, **fields))
    if steps:
        await store.append_steps(run.id, list(steps))
    if end is not None:
        await store.finish_run(run.id, *end)
    created = T0 + timedelta(minutes=minute)
    times: dict[str, Any] = {"created_at": created}
    if end is not None:
        times.update(completed_at=created + timedelta(milliseconds=took_ms), duration_ms=took_ms)
    await set_columns(database, run.id, **times)
    return run.id


@pytest.fixture
async def corpus(store: RunStore, database: Database) -> dict[str, str]:
    """Six runs of two users, named by what sets them apart; name -> id."""
    runs = {
        "invoice": await make_run(
            store, database, "Where is my invoice 42?", minute=1, model="gpt-4o-mini", agent_id=AGENT,
            agent_revision=1, metadata={"channel": "web", "team": "billing"},
            steps=(tool_call("calculator"), answer("Your invoice was sent yesterday.", 100, 20)), took_ms=1500,
        ),
        "weather": await make_run(
            store, database, "What's the weather in Paris?", minute=2, model="llama3.1", agent_id=AGENT,
            agent_revision=2, metadata={"channel": "cli"}, steps=(tool_call("web_search"),),
            end=("failed", "model_unavailable", "the model did not answer"), took_ms=9000,
        ),
        "notes": await make_run(
            store, database, "Summarise my notes", minute=3, model="gpt-4o-mini", workflow_id=WORKFLOW,
            workflow_revision=1, end=None,
        ),
        "poem": await make_run(
            store, database, "write a poem", minute=4, model="demo", agent_id=OTHER_AGENT, agent_revision=1,
            metadata={"channel": "web"}, steps=(tool_call("calculator"), tool_call("files"),
                                                 answer("Roses are red, the invoice is paid", 5000, 900)),
            took_ms=30_000,
        ),
        "cancelled": await make_run(
            store, database, "count to a million", minute=5, model="demo",
            end=("cancelled", "cancelled", "cancelled: changed my mind"), took_ms=200,
        ),
        "bobs": await make_run(
            store, database, "bob's invoice please", minute=6, model="gpt-4o-mini", owner="bob",
            metadata={"channel": "web"}, steps=(answer("Here is the invoice, Bob.", 10, 10),), took_ms=700,
        ),
    }
    return runs


async def found(store: RunStore, search: RunFilter, owner: str | None = None, page_size: int = 50) -> list[str]:
    """The ids of every run `search` finds, all pages walked."""
    ids: list[str] = []
    token = ""
    while True:
        page, token = await store.list_runs(page_size, token, search, owner=owner)
        ids += [run.id for run in page]
        if not token:
            return ids


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


#: (filter, the runs it finds, newest first). Every filter alone, then combinations.
CASES: list[tuple[RunFilter, list[str]]] = [
    (RunFilter(), ["bobs", "cancelled", "poem", "notes", "weather", "invoice"]),
    (RunFilter(states=("failed", "cancelled")), ["cancelled", "weather"]),
    (RunFilter(states=("running",)), ["notes"]),
    (RunFilter(created=TimeRange(at(2), at(4))), ["notes", "weather"]),
    (RunFilter(created=TimeRange(start=at(5))), ["bobs", "cancelled"]),
    (RunFilter(finished=TimeRange(end=at(3))), ["weather", "invoice"]),
    (RunFilter(agent_id=AGENT), ["weather", "invoice"]),
    (RunFilter(agent_id=AGENT, agent_revision=2), ["weather"]),
    (RunFilter(workflow_id=WORKFLOW), ["notes"]),
    (RunFilter(model="gpt-4o-mini"), ["bobs", "notes", "invoice"]),
    (RunFilter(tool="calculator"), ["poem", "invoice"]),
    (RunFilter(tool="files"), ["poem"]),
    (RunFilter(error_code="model_unavailable"), ["weather"]),
    (RunFilter(metadata=(("channel", "web"),)), ["bobs", "poem", "invoice"]),
    (RunFilter(metadata=(("channel", "web"), ("team", "billing"))), ["invoice"]),
    # Whole words, any case, in the query or the final answer; every word must be there.
    (RunFilter(text="INVOICE"), ["bobs", "poem", "invoice"]),
    (RunFilter(text="invoice yesterday"), ["invoice"]),
    (RunFilter(text="roses"), ["poem"]),
    (RunFilter(text="invoic"), []),
    (RunFilter(text="weather, Paris!"), ["weather"]),
    # A substring, any case, anywhere in the query or the final answer (inside words, across spaces and
    # punctuation); %, _ and " are plain characters.
    (RunFilter(contains="voic"), ["bobs", "poem", "invoice"]),
    (RunFilter(contains="VOICE WAS"), ["invoice"]),
    (RunFilter(contains="'s in"), ["bobs"]),
    (RunFilter(contains="red, the"), ["poem"]),
    (RunFilter(contains="a m"), ["cancelled"]),
    (RunFilter(contains="a_m"), []),
    (RunFilter(contains="%in"), []),
    (RunFilter(contains='"in'), []),
    (RunFilter(contains="invoice is paid!"), []),
    (RunFilter(duration_ms=NumberRange(1000, 10_000)), ["weather", "invoice"]),
    (RunFilter(duration_ms=NumberRange(low=10_000)), ["poem"]),
    (RunFilter(total_tokens=NumberRange(low=100)), ["poem", "invoice"]),
    (RunFilter(total_tokens=NumberRange(high=20)), ["bobs", "cancelled", "notes", "weather"]),
    # Combinations.
    (RunFilter(states=("completed",), model="gpt-4o-mini", text="invoice"), ["bobs", "invoice"]),
    (RunFilter(agent_id=AGENT, created=TimeRange(end=at(2)), tool="calculator", metadata=(("channel", "web"),)),
     ["invoice"]),
    (RunFilter(text="invoice", tool="calculator", duration_ms=NumberRange(high=2000)), ["invoice"]),
    (RunFilter(text="roses", contains="nvoi"), ["poem"]),
    (RunFilter(states=("failed",), model="gpt-4o-mini"), []),
]


async def test_each_filter_alone_and_combined(store: RunStore, corpus: dict[str, str]) -> None:
    names = {run_id: name for name, run_id in corpus.items()}
    for search, expected in CASES:
        assert [names[run_id] for run_id in await found(store, search)] == expected, search


@pytest.mark.parametrize("tiers", [(256, 4, 8), (1, 0, 1)], ids=["one tier", "a tier per run"])
async def test_a_common_text_has_a_plan_of_its_own_and_the_same_answers(
    store: RunStore, corpus: dict[str, str], monkeypatch: pytest.MonkeyPatch, tiers: tuple[int, int, int]
) -> None:
    """A common text walks the runs in the page's order, checking each against its rowid tier's matches: the
    answers are the same whatever the tiers, in every order, page after page."""
    names = {run_id: name for name, run_id in corpus.items()}
    monkeypatch.setattr(search_sql, "COMMON_TEXT_RUNS", 0)  # every word that any run has is common now
    for name, value in zip(("MIN_TIER_ROWIDS", "TIER_PAGES", "TIER_GROWTH"), tiers, strict=True):
        monkeypatch.setattr(search_sql, name, value)
    for search, expected in CASES:
        if search.text or search.contains:
            for page_size in (1, 50):
                assert [names[run_id] for run_id in await found(store, search, page_size=page_size)] == expected
            oldest = dataclasses.replace(search, order=RunOrder.OLDEST)
            assert [names[run_id] for run_id in await found(store, oldest)] == expected[::-1], search
    if store.database.is_sqlite:
        search = RunFilter(text="invoice")
        async with store.database.engine.connect() as connection:
            common = await search_sql.common_text(connection, search, 1)
            assert common is not None and len(common.bounds) == (0 if tiers[0] > 1 else 4)
            assert await search_sql.common_text(connection, RunFilter(text="invoice zebra"), 1) is None
        plan = await explain(store, store.list_runs_statement(search=search, common_words=common))
        # The runs walked newest first by the index, none sorted.
        assert any("ix_runs_created_at_id" in line for line in plan) and not any("TEMP B-TREE" in line
                                                                                  for line in plan), plan


async def test_another_users_runs_never_appear(store: RunStore, corpus: dict[str, str]) -> None:
    assert await found(store, RunFilter(text="invoice"), owner="bob") == [corpus["bobs"]]
    assert corpus["bobs"] not in await found(store, RunFilter(text="invoice"), owner="alice")
    assert await found(store, RunFilter(model="gpt-4o-mini"), owner="mallory") == []


async def test_orders(store: RunStore, corpus: dict[str, str]) -> None:
    names = {run_id: name for name, run_id in corpus.items()}
    oldest = await found(store, RunFilter(order=RunOrder.OLDEST), page_size=2)
    assert [names[run_id] for run_id in oldest] == ["invoice", "weather", "notes", "poem", "cancelled", "bobs"]
    # Only ended runs have a duration.
    longest = await found(store, RunFilter(order=RunOrder.LONGEST), page_size=2)
    assert [names[run_id] for run_id in longest] == ["poem", "weather", "invoice", "bobs", "cancelled"]
    tokens = await found(store, RunFilter(order=RunOrder.MOST_TOKENS, states=("completed",)), page_size=1)
    assert [names[run_id] for run_id in tokens] == ["poem", "invoice", "bobs"]


@pytest.mark.parametrize("order", list(RunOrder))
async def test_pages_stay_stable_while_runs_arrive(
    store: RunStore, database: Database, corpus: dict[str, str], order: RunOrder
) -> None:
    search = RunFilter(model="gpt-4o-mini", order=order)
    everything = await found(store, search)
    first, token = await store.list_runs(1, "", search)
    # New matching runs: newer than all, with more tokens and longer than all. None shifts the next pages.
    arrived = [await make_run(store, database, "another invoice", minute=minute, model="gpt-4o-mini",
                              steps=(answer("ok", 9000, 9000),), took_ms=99_000) for minute in (10, 11)]
    rest: list[str] = []
    while token:
        page, token = await store.list_runs(1, token, search)
        rest += [run.id for run in page]
    # Oldest first, the new runs come last, where they belong; in every other order they sort before the page.
    assert [run.id for run in first] + rest == everything + (arrived if order is RunOrder.OLDEST else [])


async def test_a_page_token_is_bound_to_its_filter_and_order(store: RunStore, corpus: dict[str, str]) -> None:
    _, token = await store.list_runs(1, "", RunFilter(model="gpt-4o-mini"))
    for other in (RunFilter(model="demo"), RunFilter(model="gpt-4o-mini", order=RunOrder.OLDEST), RunFilter()):
        with pytest.raises(InvalidArgument, match=r"^page_token is not valid for this request"):
            await store.list_runs(1, token, other)
    # The same filter spelled otherwise (states in another order) is the same filter.
    _, token = await store.list_runs(1, "", RunFilter(states=("completed", "failed")))
    await store.list_runs(1, token, RunFilter(states=("failed", "completed")))


async def test_a_run_records_its_answer_tools_and_duration_when_it_ends(store: RunStore) -> None:
    run = await store.create_run(new_run("plan a trip to Lisbon"))
    await store.append_steps(run.id, [tool_call("web_search"), answer("draft"), tool_call("maps"),
                                      answer("Take the 8:15 train.", 40, 2)])
    # Not ended yet: its answer and tools are not searchable (they are recorded once, at the end).
    assert await found(store, RunFilter(tool="maps")) == []
    await store.finish_run(run.id, "completed")
    for search in (RunFilter(tool="maps"), RunFilter(tool="web_search"), RunFilter(text="train"),
                   RunFilter(text="lisbon train"), RunFilter(duration_ms=NumberRange(low=0))):
        assert await found(store, search) == [run.id], search
    assert await found(store, RunFilter(text="draft")) == []  # the final answer is the last one
    # A queued run cancelled before it began ends too, without an answer.
    queued = await store.create_run(new_run("later", state="queued"))
    await store.cancel_run(queued.id)
    assert await found(store, RunFilter(states=("cancelled",), duration_ms=NumberRange(low=0))) == [queued.id]


async def test_deleting_a_run_removes_it_from_the_text_index(store: RunStore, corpus: dict[str, str]) -> None:
    await store.delete_run(corpus["poem"])
    assert await found(store, RunFilter(text="roses")) == []
    assert await found(store, RunFilter(contains="roses")) == []
    assert await found(store, RunFilter(tool="files")) == []


LONG = "x" * 1001
#: (filter, the message it is refused with).
BAD: list[tuple[RunFilter, str]] = [
    (RunFilter(states=("completed", "paused")), r"^states\[1\] is an unknown run state 'paused'"),
    (RunFilter(created=TimeRange(at(5), at(1))), r"^created_before \(.*\) must be later than created_after"),
    (RunFilter(finished=TimeRange(at(1), at(1))), r"^finished_before \(.*\) must be later than finished_after"),
    (RunFilter(agent_id="not-a-uuid"), r"^agent_id 'not-a-uuid' is not a valid agent id"),
    (RunFilter(agent_revision=3), r"^agent_revision must be a revision .* of the agent_id given"),
    (RunFilter(agent_id=AGENT, agent_revision=-1), r"^agent_revision must be"),
    (RunFilter(workflow_id="w1"), r"^workflow_id 'w1' is not a valid workflow id"),
    (RunFilter(model="m" * 201), r"^model is 201 characters long; the limit is 200"),
    (RunFilter(tool="t\x00"), r"^tool contains a NUL character"),
    (RunFilter(error_code="e" * 65), r"^error_code is 65 characters long; the limit is 64"),
    (RunFilter(metadata=(("", "web"),)), r"^metadata\[0\] has an empty key"),
    (RunFilter(metadata=(("a", "1"), ("a", "2"))), r"^metadata\[1\] asks for a='2' and also a='1': no run has both"),
    (RunFilter(metadata=tuple((f"k{i}", "v") for i in range(17))), r"^metadata has 17 pairs; at most 16"),
    (RunFilter(text=LONG), r"^text is 1001 characters long; the limit is 1000"),
    (RunFilter(text="x" * 10_000), r"^text is 10000 characters long"),
    (RunFilter(text="?!  ..."), r"^text has no word to search for"),
    (RunFilter(text=" ".join(f"w{i}" for i in range(33))), r"^text has 33 words; at most 32"),
    (RunFilter(contains="ab"), r"^text_contains must be at least 3 characters, got 2"),
    (RunFilter(contains="x" * 201), r"^text_contains is 201 characters long; the limit is 200"),
    (RunFilter(duration_ms=NumberRange(low=-1)), r"^min_duration_ms must be 0 or more .*got -1"),
    (RunFilter(duration_ms=NumberRange(5, 4)), r"^max_duration_ms \(4\) must not be below min_duration_ms \(5\)"),
    (RunFilter(total_tokens=NumberRange(high=-5)), r"^max_total_tokens must be 0 or more"),
    (RunFilter(total_tokens=NumberRange(10, 1)), r"^max_total_tokens \(1\) must not be below min_total_tokens"),
    (RunFilter(order="cheapest"), r"^order 'cheapest' is unknown; use one of newest, oldest"),  # type: ignore[arg-type]
]


async def test_bad_filters_are_refused_naming_the_field(store: RunStore, corpus: dict[str, str]) -> None:
    for search, message in BAD:
        with pytest.raises(InvalidArgument, match=message):
            await store.list_runs(search=search)
    with pytest.raises(InvalidArgument, match=r"^order cannot be combined with thread_id"):
        thread = (await store.get_run(corpus["invoice"])).thread_id
        await store.list_runs(search=RunFilter(order=RunOrder.OLDEST), thread_id=thread)


async def test_filters_apply_within_a_thread(store: RunStore) -> None:
    first = await store.create_run(new_run("hello there", model="demo"))
    await store.finish_run(first.id, "completed")
    second = await store.create_run(new_run("and the invoice?", model="demo", thread_id=first.thread_id))
    await store.finish_run(second.id, "completed")
    page, _ = await store.list_runs(search=RunFilter(text="invoice"), thread_id=first.thread_id)
    assert [run.id for run in page] == [second.id]



async def test_metadata_keys_may_hold_any_character(store: RunStore) -> None:
    # A JSON path could not name these keys on SQLite; the filter compares keys as values.
    for key in ('say "hi"', "back\\slash", "a.b[0]", "$"):
        run = await store.create_run(new_run("q", metadata={key: "v"}))
        assert await found(store, RunFilter(metadata=((key, "v"),))) == [run.id], key


async def test_words_inside_paths_addresses_and_numbers_are_found_on_both(store: RunStore) -> None:
    # PostgreSQL's parser alone would keep "notes/python.md", the address and "3.14" as one token each.
    run = await store.create_run(new_run("read notes/python.md, mail bob@example.com the 3.14 figure; what's new?"))
    for text in ("notes", "python md", "notes/python.md", "example com", "bob", "3 14", "3.14", "what s new"):
        assert await found(store, RunFilter(text=text)) == [run.id], text
    assert await found(store, RunFilter(text="python.mdx")) == []


async def test_cost_and_score_filters_and_the_most_costly_order(store: RunStore, corpus: dict[str, str]) -> None:
    # gpt-4o-mini: 0.15 USD per million prompt tokens, 0.60 generated: invoice 27,000 nano-USD, bob's 7,500;
    # the demo model (poem) costs nothing; the others made no model call.
    names = {run_id: name for name, run_id in corpus.items()}

    async def names_found(search: RunFilter) -> list[str]:
        return [names[run_id] for run_id in await found(store, search)]

    assert await names_found(RunFilter(cost_nanos=NumberRange(low=1))) == ["bobs", "invoice"]
    assert await names_found(RunFilter(cost_nanos=NumberRange(7_500, 7_500))) == ["bobs"]
    assert (await names_found(RunFilter(order=RunOrder.MOST_COSTLY)))[:2] == ["invoice", "bobs"]
    await store.create_score(NewScore(corpus["invoice"], "thumbs", True), author="local")
    await store.create_score(NewScore(corpus["poem"], "thumbs", False), author="local")
    await store.create_score(NewScore(corpus["bobs"], "rating", 4.0), author="bob")
    assert await names_found(RunFilter(score_name="thumbs")) == ["poem", "invoice"]
    assert await names_found(RunFilter(score_name="thumbs", score_range=ScoreRange(low=1))) == ["invoice"]
    assert await names_found(RunFilter(score_name="rating", score_range=ScoreRange(high=3))) == []
    for search, field in [
        (RunFilter(score_range=ScoreRange(low=1)), "score_name"),
        (RunFilter(score_name="x", score_range=ScoreRange(2, 1)), "max_score"),
        (RunFilter(cost_nanos=NumberRange(5, 4)), "max_cost_usd"),
    ]:
        with pytest.raises(InvalidArgument, match=field):
            await store.list_runs(search=search)


async def test_a_search_on_postgresql_is_planned_for_its_own_values(store: RunStore) -> None:
    """The driver prepares each statement, and PostgreSQL may keep a generic plan after five runs of one: a search
    plans for its values in its own transaction, and only there."""
    if store.database.is_sqlite:
        pytest.skip("SQLite plans every statement as it comes")
    async with store.database.engine.connect() as connection:
        async with connection.begin():
            await search_sql.prepare_search(connection, RunFilter(agent_id=AGENT), 50)
            assert (await connection.execute(sqlalchemy.text("SHOW plan_cache_mode"))).scalar() == "force_custom_plan"
        assert (await connection.execute(sqlalchemy.text("SHOW plan_cache_mode"))).scalar() == "auto"
        await connection.rollback()
        async with connection.begin():
            await search_sql.prepare_search(connection, RunFilter(order=RunOrder.OLDEST), 50)  # no filter: no skew
            assert (await connection.execute(sqlalchemy.text("SHOW plan_cache_mode"))).scalar() == "auto"


async def test_a_substring_is_found_in_any_case_of_any_letter_on_both(store: RunStore) -> None:
    run = await store.create_run(new_run("Über die Brücke, ÉTÉ 2026"))
    for substring in ("über", "ÜBER", "brücke", "BRÜCKE", "été 20", "e, é"):
        assert await found(store, RunFilter(contains=substring)) == [run.id], substring
    assert await found(store, RunFilter(contains="uber")) == []  # no letter loses its accent


@pytest.mark.parametrize("common", [False, True], ids=["rare", "common"])
async def test_a_users_search_finds_its_own_runs_whatever_its_name(
    store: RunStore, monkeypatch: pytest.MonkeyPatch, common: bool
) -> None:
    """SQLite's full-text tables narrow a user's search by the owner's words or trigrams: names inside others'
    ("bob" in "bobby"), too short for trigrams ("al") or with no word at all ("--") still find exactly their own."""
    if common:
        monkeypatch.setattr(search_sql, "COMMON_TEXT_RUNS", 0)
    owners = ("bob", "bobby", "al", "--", "bob bobby")
    runs = {owner: await store.create_run(new_run("the invoice of " + owner, owner=owner)) for owner in owners}
    for owner in owners:
        for search in (RunFilter(text="invoice"), RunFilter(contains="voice of"), RunFilter(text="invoice bob")):
            # ("invoice bob" asks for the whole word "bob", which "the invoice of bobby" has not)
            expected = [runs[owner].id] if search.text != "invoice bob" or "bob" in owner.split() else []
            assert await found(store, search, owner=owner) == expected, (owner, search)
    # The owner is searched as the owner, never as text: carol's name is in no run's text.
    await store.create_run(new_run("an invoice", owner="carol"))
    for search in (RunFilter(text="carol"), RunFilter(contains="carol")):
        assert await found(store, search, owner="carol") == [] and await found(store, search) == []
