"""WorkflowStore: workflows and their revisions in the agents database (no gRPC here), on SQLite and PostgreSQL.

A VersionedStore (services/agents/versioned.py), as AgentStore is, whose rules it follows: it stores what the
registry has checked and checks what is its own (ids, page sizes, page tokens); every read and write names the
owner, and another user's workflow is NotFound in the same words as a missing one; revisions are immutable, and an
update writes revision n + 1 in one transaction that holds the workflow's row. The graph is stored as the document
of services.agents.workflows.document.
"""

from collections.abc import Sequence
from typing import Any

from services.agents.models import WorkflowRevisionRow, WorkflowRow
from services.agents.versioned import RevisionConflict, Values, VersionedStore, limits_values, read_limits
from services.agents.workflows.checks import parse_workflow_id
from services.agents.workflows.document import graph_document, read_graph
from services.agents.workflows.records import WORKFLOW_FIELDS, WorkflowRecord, WorkflowSpec
from services.common.db.database import Database
from services.common.pages import PageTokens

# RevisionConflict: raised by update_workflow, importable from here as before.
__all__ = ["REVISIONS", "WORKFLOWS", "RevisionConflict", "WorkflowStore"]

WORKFLOWS = WorkflowRow.__table__
REVISIONS = WorkflowRevisionRow.__table__


def _revision_values(spec: WorkflowSpec) -> dict[str, Any]:
    return {
        "display_name": spec.display_name,
        "description": spec.description,
        "graph": graph_document(spec.inputs, spec.nodes, spec.edges),
        **limits_values(spec.limits),
        "metadata": dict(spec.metadata),
    }


def _spec(row: Values) -> WorkflowSpec:
    inputs, nodes, edges = read_graph(row["graph"])
    return WorkflowSpec(
        display_name=row["display_name"],
        description=row["description"],
        inputs=inputs,
        nodes=nodes,
        edges=edges,
        limits=read_limits(row),
        metadata=dict(row["labels"]),
    )


def _approximate_bytes(row: Values) -> int:
    """About how many bytes a workflow takes in a response: its texts and its graph's."""
    texts = (row["display_name"], row["description"], *row["labels"].keys(), *row["labels"].values())
    return sum(len(text.encode()) for text in texts) + len(str(row["graph"]).encode()) + 256


class WorkflowStore:
    """Workflows and their revisions, each user's own."""

    def __init__(self, database: Database, page_tokens: PageTokens | None = None) -> None:
        self.database = database
        self._workflows = VersionedStore[WorkflowSpec, WorkflowRecord](
            database,
            kind="workflow",
            resources=WORKFLOWS,
            revisions=REVISIONS,
            fields=WORKFLOW_FIELDS,
            revision_values=_revision_values,
            read_spec=_spec,
            record_type=WorkflowRecord,
            approximate_bytes=_approximate_bytes,
            page_tokens=page_tokens,
        )

    async def create_workflow(self, owner: str, spec: WorkflowSpec) -> WorkflowRecord:
        """A new workflow of `owner`'s, at revision 1."""
        return await self._workflows.create(owner, spec)

    async def get_workflow(self, workflow_id: str, owner: str, revision: int = 0) -> WorkflowRecord:
        """The owner's workflow as of `revision` (0: the latest)."""
        return await self._workflows.get(parse_workflow_id(workflow_id), owner, revision)

    async def list_workflows(
        self, owner: str, page_size: int = 0, page_token: str = "", name_contains: str = ""
    ) -> tuple[list[WorkflowRecord], str]:
        """One page of the owner's workflows at their latest revision, by display name (case-insensitively, then
        by id), and the token of the next page ("" on the last); `name_contains` as for agents."""
        return await self._workflows.list_by_name(owner, page_size, page_token, name_contains)

    async def update_workflow(
        self,
        workflow_id: str,
        owner: str,
        spec: WorkflowSpec,
        fields: Sequence[str],
        expected_revision: int | None = None,
    ) -> WorkflowRecord:
        """Make the owner's workflow's next revision: its latest with `fields` (names of WORKFLOW_FIELDS) taken
        from `spec`. With `expected_revision`, RevisionConflict when the latest is another (the caller checked
        `spec` against that one)."""
        workflow_id = parse_workflow_id(workflow_id, "workflow.id")
        return await self._workflows.update(workflow_id, owner, spec, fields, expected_revision)

    async def delete_workflow(self, workflow_id: str, owner: str) -> None:
        """Delete the owner's workflow and all its revisions."""
        await self._workflows.delete(parse_workflow_id(workflow_id), owner)

    async def list_revisions(
        self, workflow_id: str, owner: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[WorkflowRecord], str]:
        """One page of the owner's workflow's revisions, newest first, and the token of the next page."""
        return await self._workflows.list_revisions(parse_workflow_id(workflow_id), owner, page_size, page_token)
