"""The agent store on SQLite and PostgreSQL: revisions, updates that copy what they do not name, listing by
name with keyset pages and a filter, and each owner seeing only their own agents, with the same answers on both."""

import asyncio
import base64
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from services.agents.records import AgentSpec, ModelParameters
from services.agents.store import MAX_PAGE_BYTES, REVISIONS, AgentStore
from services.common.errors import InvalidArgument, NotFound
from services.common.limits import RunLimits

FULL = AgentSpec(
    display_name="Math tutor",
    description="Explains sums",
    instructions="Show your working.",
    model="demo",
    model_parameters=ModelParameters(temperature=0.2, top_p=0.9, max_output_tokens=512),
    tools=("calculator", "web_search"),
    limits=RunLimits(max_model_calls=5, max_duration_seconds=90.5, max_total_tokens=10_000, max_tool_calls=7),
    metadata={"team": "maths", "tier": "gold"},
)


async def names(store: AgentStore, owner: str = "alice", **listing: Any) -> list[str]:
    """Every page of a listing, joined, as display names; checks that pages neither repeat nor skip."""
    seen: list[str] = []
    ids: set[str] = set()
    token = ""
    while True:
        page, token = await store.list_agents(owner, page_token=token, **listing)
        for record in page:
            assert record.id not in ids
            ids.add(record.id)
            seen.append(record.spec.display_name)
        if not token:
            return seen


async def test_an_agent_is_created_at_revision_one_with_every_field(store: AgentStore) -> None:
    created = await store.create_agent("alice", FULL)
    assert created.revision == 1 and created.owner == "alice" and created.spec == FULL
    assert created.created_at == created.revision_created_at and created.created_at.tzinfo is not None
    got = await store.get_agent(created.id, "alice")
    assert got == created
    assert await store.get_agent(created.id, "alice", revision=1) == created


async def test_an_update_makes_the_next_revision_and_keeps_what_it_does_not_name(store: AgentStore) -> None:
    created = await store.create_agent("alice", FULL)
    change = AgentSpec(display_name="ignored", instructions="Be brief.", tools=(), limits=RunLimits(max_tool_calls=1))
    updated = await store.update_agent(created.id, "alice", change, ["instructions", "tools", "limits"])
    assert updated.revision == 2 and updated.created_at == created.created_at
    assert updated.revision_created_at >= created.revision_created_at
    assert updated.spec == AgentSpec(
        display_name="Math tutor",
        description="Explains sums",
        instructions="Be brief.",
        model="demo",
        model_parameters=FULL.model_parameters,
        tools=(),
        limits=RunLimits(max_tool_calls=1),
        metadata=FULL.metadata,
    )
    assert await store.get_agent(created.id, "alice") == updated
    assert (await store.get_agent(created.id, "alice", revision=1)).spec == FULL  # revisions are immutable
    with pytest.raises(NotFound, match=f"^agent '{created.id}' has no revision 3; its latest is 2$"):
        await store.get_agent(created.id, "alice", revision=3)


async def test_concurrent_updates_make_consecutive_revisions(store: AgentStore) -> None:
    created = await store.create_agent("alice", FULL)
    updates = [
        store.update_agent(created.id, "alice", AgentSpec(display_name=f"v{n}"), ["display_name"]) for n in range(8)
    ]
    revisions = sorted(record.revision for record in await asyncio.gather(*updates))
    assert revisions == list(range(2, 10))
    page, _ = await store.list_revisions(created.id, "alice")
    assert [record.revision for record in page] == list(range(9, 0, -1))


async def test_another_owners_agent_is_not_found_with_the_same_words_as_none(store: AgentStore) -> None:
    alices = await store.create_agent("alice", FULL)
    missing = "00000000-0000-4000-8000-000000000000"
    for agent_id in (alices.id, missing):
        message = f"^agent '{agent_id}' not found$"
        with pytest.raises(NotFound, match=message):
            await store.get_agent(agent_id, "bob")
        with pytest.raises(NotFound, match=message):
            await store.get_agent(agent_id, "bob", revision=1)
        with pytest.raises(NotFound, match=message):
            await store.update_agent(agent_id, "bob", AgentSpec(display_name="mine"), ["display_name"])
        with pytest.raises(NotFound, match=message):
            await store.list_revisions(agent_id, "bob")
        with pytest.raises(NotFound, match=message):
            await store.delete_agent(agent_id, "bob")
    assert await names(store, "bob") == []
    assert await store.get_agent(alices.id, "alice") == alices  # untouched


async def test_delete_removes_the_agent_and_every_revision(store: AgentStore) -> None:
    doomed = await store.create_agent("alice", FULL)
    await store.update_agent(doomed.id, "alice", AgentSpec(display_name="v2"), ["display_name"])
    kept = await store.create_agent("alice", FULL)
    await store.delete_agent(doomed.id, "alice")
    with pytest.raises(NotFound):
        await store.get_agent(doomed.id, "alice")
    with pytest.raises(NotFound):
        await store.delete_agent(doomed.id, "alice")
    async with store.database.read() as session:
        left = await session.scalar(
            select(func.count()).select_from(REVISIONS).where(REVISIONS.c.agent_id == doomed.id)
        )
    assert left == 0
    assert await store.get_agent(kept.id, "alice") == kept


async def test_agents_are_listed_by_name_ignoring_case_then_by_id(store: AgentStore) -> None:
    for name in ("beta", "Alpha", "gamma", "alpha", "Zeta", "élan", "Beta 2", "alpha"):
        await store.create_agent("alice", AgentSpec(display_name=name))
    await store.create_agent("bob", AgentSpec(display_name="Aardvark"))
    everything = ["Alpha", "alpha", "alpha", "beta", "Beta 2", "gamma", "Zeta", "élan"]
    for page_size in (1, 2, 3, 50):
        listed = await names(store, page_size=page_size)
        # Equal names come in id order, which differs per run: compare them case-insensitively.
        assert [name.lower() for name in listed] == [name.lower() for name in everything]
    page, _ = await store.list_agents("alice", page_size=3)
    ids = [record.id for record in page if record.spec.display_name.lower() == "alpha"]
    assert ids == sorted(ids)


async def test_the_listing_shows_each_agents_latest_revision_in_its_new_place(store: AgentStore) -> None:
    first = await store.create_agent("alice", AgentSpec(display_name="a first"))
    await store.create_agent("alice", AgentSpec(display_name="m middle"))
    await store.update_agent(first.id, "alice", AgentSpec(display_name="z last now"), ["display_name"])
    page, _ = await store.list_agents("alice")
    assert [(record.spec.display_name, record.revision) for record in page] == [("m middle", 1), ("z last now", 2)]


async def test_the_name_filter_ignores_case_and_takes_wildcards_literally(store: AgentStore) -> None:
    for name in ("50% off", "5000 off", "a_b", "axb", "École", "Math tutor", "MATHS", "back\\slash"):
        await store.create_agent("alice", AgentSpec(display_name=name))
    assert await names(store, name_contains="math") == ["Math tutor", "MATHS"]
    assert await names(store, name_contains="%") == ["50% off"]
    assert await names(store, name_contains="_") == ["a_b"]
    assert await names(store, name_contains="\\") == ["back\\slash"]
    assert await names(store, name_contains="éCOLE") == ["École"]  # not ASCII: folded the same on both databases
    assert await names(store, name_contains=" OFF", page_size=1) == ["50% off", "5000 off"]
    assert await names(store, name_contains="nothing") == []


async def test_a_page_token_belongs_to_its_listing(store: AgentStore) -> None:
    for name in ("math 1", "math 2", "math 3"):
        await store.create_agent("alice", AgentSpec(display_name=name))
    _, token = await store.list_agents("alice", page_size=1, name_contains="math")
    assert token
    with pytest.raises(InvalidArgument, match=r"^page_token is not valid for this request"):
        await store.list_agents("alice", page_size=1, page_token=token, name_contains="other")
    forged = base64.urlsafe_b64encode(json.dumps({"name": "x", "id": "not-a-uuid", "filter": ""}).encode()).decode()
    for bad in ("garbage!", "bm90IGpzb24=", forged, "W10="):
        with pytest.raises(InvalidArgument, match=r"^page_token is not valid"):
            await store.list_agents("alice", page_token=bad)
    with pytest.raises(InvalidArgument, match=r"^page_size must be >= 0"):
        await store.list_agents("alice", page_size=-1)
    with pytest.raises(InvalidArgument, match=r"^name_contains is 201 characters long"):
        await store.list_agents("alice", name_contains="x" * 201)


async def test_a_page_ends_early_rather_than_grow_past_its_byte_limit(store: AgentStore) -> None:
    big = "i" * 32_000
    count = MAX_PAGE_BYTES // len(big) + 8
    await asyncio.gather(*(
        store.create_agent("alice", AgentSpec(display_name=f"agent {n:03}", instructions=big)) for n in range(count)
    ))
    page, token = await store.list_agents("alice", page_size=1000)
    assert token and len(page) < count
    assert sum(len(record.spec.instructions) for record in page) <= MAX_PAGE_BYTES
    assert len(await names(store, page_size=1000)) == count


async def test_revisions_are_listed_newest_first_in_pages(store: AgentStore) -> None:
    agent = await store.create_agent("alice", FULL)
    for n in range(2, 6):
        await store.update_agent(agent.id, "alice", AgentSpec(display_name=f"v{n}"), ["display_name"])
    other = await store.create_agent("alice", FULL)
    seen: list[int] = []
    token = ""
    while True:
        page, token = await store.list_revisions(agent.id, "alice", page_size=2, page_token=token)
        seen += [record.revision for record in page]
        if not token:
            break
        with pytest.raises(InvalidArgument, match=r"^page_token is not valid"):
            await store.list_revisions(other.id, "alice", page_token=token)
    assert seen == [5, 4, 3, 2, 1]
    page, _ = await store.list_revisions(agent.id, "alice")
    assert [record.spec.display_name for record in page] == ["v5", "v4", "v3", "v2", "Math tutor"]
    assert page[-1].spec == FULL and all(record.created_at == agent.created_at for record in page)


async def test_ids_must_be_uuids(store: AgentStore) -> None:
    with pytest.raises(InvalidArgument, match=r"^agent_id 'nope' is not a valid agent id"):
        await store.get_agent("nope", "alice")
    with pytest.raises(InvalidArgument, match=r"^agent.id is required"):
        await store.update_agent("", "alice", AgentSpec(display_name="x"), ["display_name"])
