"""The workflow store on SQLite and PostgreSQL: the graph is stored as this service's own versioned document (not
the wire format), a document it cannot read is an Internal error rather than a wrong answer, updates are
consecutive revisions even when concurrent, and a graph update checked against an older revision is checked again.
"""

import asyncio
import dataclasses

import pytest
from sqlalchemy import select, update

from services.agents.records import AgentRecord, AgentSpec
from services.agents.settings import AgentsSettings
from services.agents.workflows import convert
from services.agents.workflows.records import WorkflowSpec
from services.agents.workflows.registry import WorkflowRegistry
from services.agents.workflows.store import REVISIONS, RevisionConflict, WorkflowStore
from services.common.db.database import Database, utcnow
from services.common.errors import Internal, InvalidArgument, NotFound
from services.common.identity import Caller
from tests.agents.workflow_helpers import SOME_AGENT, every_kind, find, plain


@pytest.fixture
def workflow_store(database: Database) -> WorkflowStore:
    return WorkflowStore(database)


def spec_of_every_kind() -> WorkflowSpec:
    message = every_kind()
    find(message, "draft").agent.agent_revision = 4
    return convert.spec_from_proto(message)


async def test_the_graph_is_stored_as_a_versioned_document_of_the_services_own_shape(
    workflow_store: WorkflowStore, database: Database
) -> None:
    spec = spec_of_every_kind()
    created = await workflow_store.create_workflow("alice", spec)
    assert await workflow_store.get_workflow(created.id, "alice") == created
    async with database.read() as session:
        document = await session.scalar(select(REVISIONS.c.graph).where(REVISIONS.c.workflow_id == created.id))
    assert document["schema"] == 1
    assert document["inputs"][0] == {"name": "question", "description": "What to answer", "required": True}
    by_id = {node["id"]: node for node in document["nodes"]}
    # The storage's names, not the wire's (if_else, while_loop, agent_id, from_node).
    assert by_id["check"] == {"id": "check", "name": "", "kind": "if", "condition": "size(answer) > 0"}
    assert by_id["loop"] == {"id": "loop", "name": "", "kind": "while", "condition": "attempts < 3",
                             "max_iterations": 5}
    assert by_id["draft"]["agent"] == SOME_AGENT and by_id["draft"]["agent_revision"] == 4
    assert by_id["approve"]["timeout_ms"] == 3_600_000
    assert document["edges"][2] == {"from": "loop", "to": "calc", "branch": "body"}
    assert [node["id"] for node in document["nodes"]] == [node.id for node in spec.nodes]


async def test_a_document_of_another_schema_is_an_internal_error(
    workflow_store: WorkflowStore, database: Database
) -> None:
    created = await workflow_store.create_workflow("alice", spec_of_every_kind())
    async with database.write() as session:
        await session.execute(
            update(REVISIONS).where(REVISIONS.c.workflow_id == created.id).values(graph={"schema": 2, "nodes": []})
        )
    with pytest.raises(Internal, match=r"schema version 2; this agents service reads version 1"):
        await workflow_store.get_workflow(created.id, "alice")
    async with database.write() as session:
        await session.execute(
            update(REVISIONS).where(REVISIONS.c.workflow_id == created.id).values(graph={"schema": 1, "nodes": []})
        )
    with pytest.raises(Internal, match=r"damaged"):
        await workflow_store.get_workflow(created.id, "alice")


async def test_concurrent_updates_make_consecutive_revisions(workflow_store: WorkflowStore) -> None:
    created = await workflow_store.create_workflow("alice", convert.spec_from_proto(plain()))
    names = [f"name {i}" for i in range(6)]
    results = await asyncio.gather(*(
        workflow_store.update_workflow(created.id, "alice", WorkflowSpec(display_name=name), ["display_name"])
        for name in names
    ))
    assert sorted(result.revision for result in results) == [2, 3, 4, 5, 6, 7]
    latest = await workflow_store.get_workflow(created.id, "alice")
    assert latest.revision == 7 and latest.spec.nodes == created.spec.nodes
    with pytest.raises(RevisionConflict, match=r"changed while this update was checked \(revision 7, not 3\)"):
        await workflow_store.update_workflow(created.id, "alice", created.spec, ["nodes"], expected_revision=3)


async def test_another_owners_workflow_is_not_found_and_ids_are_checked(workflow_store: WorkflowStore) -> None:
    created = await workflow_store.create_workflow("alice", convert.spec_from_proto(plain()))
    with pytest.raises(NotFound, match=rf"^workflow '{created.id}' not found$"):
        await workflow_store.get_workflow(created.id, "bob")
    with pytest.raises(NotFound, match=rf"^workflow '{created.id}' not found$"):
        await workflow_store.delete_workflow(created.id, "bob")
    with pytest.raises(InvalidArgument, match=r"^workflow_id 'nope' is not a valid workflow id"):
        await workflow_store.get_workflow("nope", "alice")
    assert (await workflow_store.list_workflows("bob"))[0] == []


class _Agents:
    """An agent directory where every agent exists at revision 1."""

    async def get_agent(self, caller: Caller, agent_id: str, revision: int = 0) -> AgentRecord:
        return AgentRecord(agent_id, revision or 1, caller.user, utcnow(), utcnow(), AgentSpec("Agent"))


class _Tools:
    async def tool_ids(self, caller: Caller, time_left: float | None = None) -> set[str]:
        return {"calculator"}


async def test_a_graph_update_is_checked_again_when_another_update_came_first(
    workflow_store: WorkflowStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = WorkflowRegistry(workflow_store, AgentsSettings(_env_file=None), _Agents(), _Tools())
    alice = Caller(user="alice", role="user")
    created = await registry.create_workflow(alice, convert.spec_from_proto(plain()))
    # Between the registry's read and its write, another update renames the workflow: the first attempt
    # conflicts, and the second is checked against the new revision and stored on top of it.
    original = workflow_store.get_workflow
    interfered = False

    async def get_then_interfere(workflow_id: str, owner: str, revision: int = 0):  # type: ignore[no-untyped-def]
        nonlocal interfered
        record = await original(workflow_id, owner, revision)
        if not interfered:
            interfered = True
            await workflow_store.update_workflow(workflow_id, owner, WorkflowSpec("Renamed"), ["display_name"])
        return record

    monkeypatch.setattr(workflow_store, "get_workflow", get_then_interfere)
    new_edges = convert.spec_from_proto(plain())
    changed = dataclasses.replace(
        new_edges, nodes=tuple(
            dataclasses.replace(node, display_name="Set x") if node.id == "set" else node for node in new_edges.nodes
        )
    )
    updated = await registry.update_workflow(alice, created.id, changed, ["nodes"])
    assert updated.revision == 3 and updated.spec.display_name == "Renamed"
    assert [node.display_name for node in updated.spec.nodes] == ["", "Set x", ""]
