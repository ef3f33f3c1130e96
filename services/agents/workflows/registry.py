"""WorkflowRegistry: the workflows' domain layer (no gRPC here). It checks a workflow (its fields, its graph, its
expressions), then what its nodes name (agents, through this service's own AgentRegistry; tools, through the
tools service), pins every agent node to an agent revision, and keeps the workflow in the store, always as the
caller's own.

Ownership is the agents' rule (services/agents/registry.py): another user's workflow is NotFound as if it did not
exist, for admins too. An agent node may name only an agent the caller can read, i.e. one of their own: another
user's agent is NotFound in the same words as a missing one, naming the node.
"""

import dataclasses
from collections.abc import Sequence
from typing import Protocol

from services.agents.records import AgentRecord
from services.agents.registry import ToolDirectory
from services.agents.workflows.checks import (
    check_graph,
    check_revision,
    check_update_mask,
    check_workflow,
    node_field,
    parse_workflow_id,
)
from services.agents.workflows.records import (
    GRAPH_FIELDS,
    WORKFLOW_FIELDS,
    AgentNode,
    Node,
    ToolNode,
    WorkflowRecord,
    WorkflowSpec,
)
from services.agents.workflows.store import RevisionConflict, WorkflowStore
from services.common.errors import InvalidArgument, NotFound
from services.common.identity import Caller
from services.common.limits import RunLimitMaximums

#: How many times an update that touches the graph is checked again when another update came first.
UPDATE_ATTEMPTS = 3


class AgentDirectory(Protocol):
    """Reads the caller's agents (services.agents.registry.AgentRegistry)."""

    async def get_agent(self, caller: Caller, agent_id: str, revision: int = 0) -> AgentRecord: ...


class WorkflowRegistry:
    """Saved, versioned workflows, checked before they are stored."""

    def __init__(
        self, store: WorkflowStore, maximums: RunLimitMaximums, agents: AgentDirectory, tools: ToolDirectory
    ) -> None:
        self.store = store
        self._maximums = maximums
        self._agents = agents
        self._tools = tools

    async def create_workflow(
        self, caller: Caller, spec: WorkflowSpec, time_left: float | None = None
    ) -> WorkflowRecord:
        """A new workflow of the caller's, at revision 1, its agent nodes pinned. `time_left` is what remains of
        the request's deadline."""
        check_workflow(spec, self._maximums, WORKFLOW_FIELDS)
        spec = await self._resolve(caller, spec, time_left)
        return await self.store.create_workflow(caller.user, spec)

    async def get_workflow(self, caller: Caller, workflow_id: str, revision: int = 0) -> WorkflowRecord:
        check_revision(revision)
        return await self.store.get_workflow(workflow_id, caller.user, revision)

    async def list_workflows(
        self, caller: Caller, page_size: int = 0, page_token: str = "", name_contains: str = ""
    ) -> tuple[list[WorkflowRecord], str]:
        return await self.store.list_workflows(caller.user, page_size, page_token, name_contains)

    async def update_workflow(
        self, caller: Caller, workflow_id: str, spec: WorkflowSpec, paths: Sequence[str],
        time_left: float | None = None,
    ) -> WorkflowRecord:
        """The workflow's next revision, with the fields `paths` names taken from `spec`.

        Fields outside the graph are checked alone, as for agents. Naming any of inputs, nodes and edges checks
        the whole graph as it will be stored (the named parts with the stored others), and naming nodes checks
        and pins their agents and tools again; the store then writes the graph checked, provided no other update
        came in between (else it is checked again, up to UPDATE_ATTEMPTS times).
        """
        workflow_id = parse_workflow_id(workflow_id, "workflow.id")
        fields = check_update_mask(paths)
        check_workflow(spec, self._maximums, [field for field in fields if field not in GRAPH_FIELDS])
        if not GRAPH_FIELDS & set(fields):
            return await self.store.update_workflow(workflow_id, caller.user, spec, fields)
        for attempt in range(UPDATE_ATTEMPTS):
            current = await self.store.get_workflow(workflow_id, caller.user)
            graph = {field: getattr(spec, field) for field in fields if field in GRAPH_FIELDS}
            merged = dataclasses.replace(current.spec, **graph)
            check_graph(merged)
            if "nodes" in fields:
                merged = await self._resolve(caller, merged, time_left)
            checked = dataclasses.replace(spec, inputs=merged.inputs, nodes=merged.nodes, edges=merged.edges)
            written = tuple(field for field in WORKFLOW_FIELDS if field in fields or field in GRAPH_FIELDS)
            try:
                return await self.store.update_workflow(
                    workflow_id, caller.user, checked, written, expected_revision=current.revision
                )
            except RevisionConflict:
                if attempt == UPDATE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def delete_workflow(self, caller: Caller, workflow_id: str) -> None:
        await self.store.delete_workflow(workflow_id, caller.user)

    async def list_revisions(
        self, caller: Caller, workflow_id: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[WorkflowRecord], str]:
        return await self.store.list_revisions(workflow_id, caller.user, page_size, page_token)

    async def _resolve(self, caller: Caller, spec: WorkflowSpec, time_left: float | None) -> WorkflowSpec:
        """`spec` with every agent node pinned to a revision of an agent the caller can read (NotFound naming the
        node otherwise), after checking that every tool node's tool exists (InvalidArgument otherwise)."""
        tool_nodes = [(index, node) for index, node in enumerate(spec.nodes) if isinstance(node.kind, ToolNode)]
        if tool_nodes:
            known = await self._tools.tool_ids(caller, time_left)
            for index, node in tool_nodes:
                assert isinstance(node.kind, ToolNode)
                if node.kind.tool_id not in known:
                    raise InvalidArgument(f"{node_field(index, node, '.tool.tool_id')}: unknown tool "
                                          f"{node.kind.tool_id!r}")
        agents: dict[tuple[str, int], AgentRecord] = {}
        nodes: list[Node] = []
        for index, node in enumerate(spec.nodes):
            kind = node.kind
            if isinstance(kind, AgentNode):
                key = (kind.agent_id, kind.agent_revision)
                if key not in agents:
                    try:
                        agents[key] = await self._agents.get_agent(caller, kind.agent_id, kind.agent_revision)
                    except NotFound as exc:
                        raise NotFound(f"{node_field(index, node, '.agent.agent_id')}: {exc}") from None
                agent = agents[key]
                # The agent's id as the agents store spells it (a UUID in canonical form), and its revision.
                pinned = dataclasses.replace(kind, agent_id=agent.id, agent_revision=agent.revision)
                node = dataclasses.replace(node, kind=pinned)
            nodes.append(node)
        return dataclasses.replace(spec, nodes=tuple(nodes))
