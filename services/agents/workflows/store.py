"""WorkflowStore: workflows and their revisions in the agents database (no gRPC here), on SQLite and PostgreSQL.

As AgentStore (services/agents/store.py), whose rules it follows: it stores what the registry has checked and
checks what is its own (ids, page sizes, page tokens); every read and write names the owner, and another user's
workflow is NotFound in the same words as a missing one; revisions are immutable, and an update writes revision
n + 1 in one transaction that holds the workflow's row. The graph is stored as the document of
services.agents.workflows.document.
"""

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, delete, func, insert, literal, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.agents.listing import (
    INVALID_PAGE_TOKEN,
    MAX_PAGE_BYTES,
    checked_page_size,
    decode_token,
    encode_token,
    name_key,
)
from services.agents.models import MAX_DISPLAY_NAME_CHARS, WorkflowRevisionRow, WorkflowRow
from services.agents.workflows.checks import parse_workflow_id
from services.agents.workflows.document import graph_document, read_graph
from services.agents.workflows.records import WORKFLOW_FIELDS, WorkflowRecord, WorkflowSpec
from services.common.checks import check_text
from services.common.database import Database, runs_to_completion, utcnow
from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.common.limits import RunLimits

WORKFLOWS = WorkflowRow.__table__
REVISIONS = WorkflowRevisionRow.__table__
_RECORD_COLUMNS = [
    WORKFLOWS.c.owner,
    WORKFLOWS.c.created_at.label("workflow_created_at"),
    *(column.label("labels") if column.key == "metadata" else column for column in REVISIONS.columns),
]

Values = Mapping[str, Any]


class RevisionConflict(AlreadyExists):
    """The workflow's latest revision is not the one the update was checked against."""


def not_found(workflow_id: str) -> NotFound:
    """The one message for "no such workflow" and "someone else's workflow"."""
    return NotFound(f"workflow '{workflow_id}' not found")


def _revision_values(workflow_id: str, revision: int, spec: WorkflowSpec) -> dict[str, Any]:
    limits = spec.limits
    duration = limits.max_duration_seconds
    return {
        "workflow_id": workflow_id,
        "revision": revision,
        "created_at": utcnow(),
        "display_name": spec.display_name,
        "description": spec.description,
        "graph": graph_document(spec.inputs, spec.nodes, spec.edges),
        "max_model_calls": limits.max_model_calls,
        "max_duration_ms": round(duration * 1000) if duration is not None else None,
        "max_total_tokens": limits.max_total_tokens,
        "max_tool_calls": limits.max_tool_calls,
        "metadata": dict(spec.metadata),
    }


def _spec(row: Values) -> WorkflowSpec:
    inputs, nodes, edges = read_graph(row["graph"])
    duration_ms = row["max_duration_ms"]
    return WorkflowSpec(
        display_name=row["display_name"],
        description=row["description"],
        inputs=inputs,
        nodes=nodes,
        edges=edges,
        limits=RunLimits(
            max_model_calls=row["max_model_calls"],
            max_duration_seconds=duration_ms / 1000 if duration_ms is not None else None,
            max_total_tokens=row["max_total_tokens"],
            max_tool_calls=row["max_tool_calls"],
        ),
        metadata=dict(row["labels"]),
    )


def _record(row: Values) -> WorkflowRecord:
    return WorkflowRecord(
        id=row["workflow_id"],
        revision=row["revision"],
        owner=row["owner"],
        created_at=row["workflow_created_at"],
        revision_created_at=row["created_at"],
        spec=_spec(row),
    )


def _records_query(owner: str) -> Select[Any]:
    return (
        select(*_RECORD_COLUMNS)
        .select_from(WORKFLOWS.join(REVISIONS, REVISIONS.c.workflow_id == WORKFLOWS.c.id))
        .where(WORKFLOWS.c.owner == owner)
    )


def _approximate_bytes(row: Values) -> int:
    """About how many bytes a workflow takes in a response: its texts and its graph's."""
    texts = (row["display_name"], row["description"], *row["labels"].keys(), *row["labels"].values())
    return sum(len(text.encode()) for text in texts) + len(str(row["graph"]).encode()) + 256


def _page(rows: Sequence[Values], limit: int) -> tuple[list[WorkflowRecord], bool]:
    page: list[WorkflowRecord] = []
    size = 0
    for row in rows[:limit]:
        size += _approximate_bytes(row)
        if page and size > MAX_PAGE_BYTES:
            break
        page.append(_record(row))
    return page, len(rows) > len(page)


def _after_name(key: str, workflow_id: str) -> ColumnElement[bool]:
    return tuple_(WORKFLOWS.c.name_key, WORKFLOWS.c.id) > tuple_(
        literal(key, WORKFLOWS.c.name_key.type), literal(workflow_id, WORKFLOWS.c.id.type)
    )


async def _lock_workflow(connection: AsyncConnection, workflow_id: str, owner: str) -> int:
    latest = await connection.scalar(
        select(WORKFLOWS.c.latest_revision)
        .where(WORKFLOWS.c.id == workflow_id, WORKFLOWS.c.owner == owner)
        .with_for_update()
    )
    if latest is None:
        raise not_found(workflow_id)
    return int(latest)


class WorkflowStore:
    """Workflows and their revisions, each user's own."""

    def __init__(self, database: Database) -> None:
        self.database = database

    @runs_to_completion
    async def create_workflow(self, owner: str, spec: WorkflowSpec) -> WorkflowRecord:
        """A new workflow of `owner`'s, at revision 1."""
        workflow_id = str(uuid.uuid4())
        values = _revision_values(workflow_id, 1, spec)
        async with self.database.write() as session:
            connection = await session.connection()
            await connection.execute(
                insert(WORKFLOWS).values(
                    id=workflow_id,
                    owner=owner,
                    created_at=values["created_at"],
                    latest_revision=1,
                    name_key=name_key(spec.display_name),
                )
            )
            await connection.execute(insert(REVISIONS).values(values))
        return WorkflowRecord(workflow_id, 1, owner, values["created_at"], values["created_at"], spec)

    @runs_to_completion
    async def get_workflow(self, workflow_id: str, owner: str, revision: int = 0) -> WorkflowRecord:
        """The owner's workflow as of `revision` (0: the latest)."""
        workflow_id = parse_workflow_id(workflow_id)
        wanted = WORKFLOWS.c.latest_revision if revision == 0 else literal(revision)
        query = _records_query(owner).where(WORKFLOWS.c.id == workflow_id, REVISIONS.c.revision == wanted)
        async with self.database.read() as session:
            row = (await session.execute(query)).mappings().first()
            if row is None and revision:
                latest = await session.scalar(
                    select(WORKFLOWS.c.latest_revision).where(WORKFLOWS.c.id == workflow_id,
                                                              WORKFLOWS.c.owner == owner)
                )
                if latest is not None:
                    raise NotFound(f"workflow '{workflow_id}' has no revision {revision}; its latest is {latest}")
        if row is None:
            raise not_found(workflow_id)
        return _record(row)

    @runs_to_completion
    async def list_workflows(
        self, owner: str, page_size: int = 0, page_token: str = "", name_contains: str = ""
    ) -> tuple[list[WorkflowRecord], str]:
        """One page of the owner's workflows at their latest revision, by display name (case-insensitively, then
        by id), and the token of the next page ("" on the last); `name_contains` as for agents."""
        limit = checked_page_size(page_size)
        check_text("name_contains", name_contains, MAX_DISPLAY_NAME_CHARS)
        query = (
            _records_query(owner)
            .where(REVISIONS.c.revision == WORKFLOWS.c.latest_revision)
            .order_by(WORKFLOWS.c.name_key, WORKFLOWS.c.id)
            .limit(limit + 1)
        )
        if name_contains:
            query = query.where(WORKFLOWS.c.name_key.contains(name_key(name_contains), autoescape=True))
        if page_token:
            position = decode_token(page_token)
            try:
                key, workflow_id = str(position["name"]), str(uuid.UUID(position["id"]))
                valid = position["filter"] == name_contains and position.get("of") == "workflows"
            except (KeyError, ValueError, TypeError, AttributeError):
                valid = False
            if not valid:
                raise InvalidArgument(INVALID_PAGE_TOKEN)
            query = query.where(_after_name(key, workflow_id))
        async with self.database.read() as session:
            rows = (await session.execute(query)).mappings().all()
        page, more = _page(rows, limit)
        if not more:
            return page, ""
        last = page[-1]
        return page, encode_token(
            {"of": "workflows", "name": name_key(last.spec.display_name), "id": last.id, "filter": name_contains}
        )

    @runs_to_completion
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
        unknown = set(fields) - set(WORKFLOW_FIELDS)
        if unknown:
            raise InvalidArgument(f"unknown workflow field(s) {', '.join(sorted(unknown))}")
        async with self.database.write() as session:
            connection = await session.connection()
            latest = await _lock_workflow(connection, workflow_id, owner)
            if expected_revision is not None and latest != expected_revision:
                raise RevisionConflict(f"workflow '{workflow_id}' changed while this update was checked (revision "
                                       f"{latest}, not {expected_revision}); send the update again")
            query = _records_query(owner).where(WORKFLOWS.c.id == workflow_id, REVISIONS.c.revision == latest)
            current = _record((await connection.execute(query)).mappings().one())
            merged = dataclasses.replace(current.spec, **{field: getattr(spec, field) for field in fields})
            values = _revision_values(workflow_id, latest + 1, merged)
            await connection.execute(insert(REVISIONS).values(values))
            await connection.execute(
                update(WORKFLOWS)
                .where(WORKFLOWS.c.id == workflow_id)
                .values(latest_revision=latest + 1, name_key=name_key(merged.display_name))
            )
        return WorkflowRecord(workflow_id, latest + 1, owner, current.created_at, values["created_at"], merged)

    @runs_to_completion
    async def delete_workflow(self, workflow_id: str, owner: str) -> None:
        """Delete the owner's workflow and all its revisions."""
        workflow_id = parse_workflow_id(workflow_id)
        async with self.database.write() as session:
            connection = await session.connection()
            await _lock_workflow(connection, workflow_id, owner)
            # Explicitly, not only by ON DELETE CASCADE, which SQLite applies only with foreign keys turned on.
            await connection.execute(delete(REVISIONS).where(REVISIONS.c.workflow_id == workflow_id))
            await connection.execute(delete(WORKFLOWS).where(WORKFLOWS.c.id == workflow_id))

    @runs_to_completion
    async def list_revisions(
        self, workflow_id: str, owner: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[WorkflowRecord], str]:
        """One page of the owner's workflow's revisions, newest first, and the token of the next page."""
        workflow_id = parse_workflow_id(workflow_id)
        limit = checked_page_size(page_size)
        query = (
            _records_query(owner)
            .where(WORKFLOWS.c.id == workflow_id)
            .order_by(REVISIONS.c.revision.desc())
            .limit(limit + 1)
        )
        if page_token:
            position = decode_token(page_token)
            before = position.get("before")
            if position.get("workflow") != workflow_id or not isinstance(before, int) or isinstance(before, bool):
                raise InvalidArgument(INVALID_PAGE_TOKEN)
            query = query.where(REVISIONS.c.revision < before)
        async with self.database.read() as session:
            rows = (await session.execute(query)).mappings().all()
            if not rows:
                exists = await session.scalar(
                    select(func.count()).select_from(WORKFLOWS).where(
                        and_(WORKFLOWS.c.id == workflow_id, WORKFLOWS.c.owner == owner)
                    )
                )
                if not exists:
                    raise not_found(workflow_id)
        page, more = _page(rows, limit)
        return page, encode_token({"workflow": workflow_id, "before": page[-1].revision}) if more else ""
