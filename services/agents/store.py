"""AgentStore: agents and their revisions in a database (no gRPC here), on SQLite and PostgreSQL alike.

It stores what `services.agents.registry` has checked, and checks what is its own to check: ids, page sizes and
page tokens. Every read and write names the owner, and another user's agent is NotFound with the same message
as a missing one, so an agent's existence never leaks.

Revisions are immutable: a create writes revision 1, an update writes revision n + 1 (a copy of revision n with
the named fields replaced) and moves the agent's `latest_revision` to it, in one transaction that holds the
agent's row (PostgreSQL's row lock; SQLite's one writer), so concurrent updates make consecutive revisions.
"""

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, delete, func, insert, literal, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.agents.checks import parse_agent_id
from services.agents.listing import INVALID_PAGE_TOKEN, MAX_PAGE_BYTES
from services.agents.listing import checked_page_size as _checked_page_size
from services.agents.listing import decode_token as _decode_token
from services.agents.listing import encode_token as _encode_token
from services.agents.listing import name_key as _name_key
from services.agents.models import MAX_DISPLAY_NAME_CHARS, AgentRevisionRow, AgentRow
from services.agents.records import AGENT_FIELDS, AgentRecord, AgentSpec, ModelParameters
from services.common.checks import check_text
from services.common.database import Database, runs_to_completion, utcnow
from services.common.errors import InvalidArgument, NotFound
from services.common.limits import RunLimits

AGENTS = AgentRow.__table__
REVISIONS = AgentRevisionRow.__table__
#: What a record is read from: the agent's columns and one revision's (`metadata` read as `labels`).
_RECORD_COLUMNS = [
    AGENTS.c.owner,
    AGENTS.c.created_at.label("agent_created_at"),
    *(column.label("labels") if column.key == "metadata" else column for column in REVISIONS.columns),
]

Values = Mapping[str, Any]


def _not_found(agent_id: str) -> NotFound:
    # The one message for "no such agent" and "someone else's agent".
    return NotFound(f"agent '{agent_id}' not found")


def _revision_values(agent_id: str, revision: int, spec: AgentSpec) -> dict[str, Any]:
    limits = spec.limits
    duration = limits.max_duration_seconds
    return {
        "agent_id": agent_id,
        "revision": revision,
        "created_at": utcnow(),
        "display_name": spec.display_name,
        "description": spec.description,
        "instructions": spec.instructions,
        "model": spec.model,
        "temperature": spec.model_parameters.temperature,
        "top_p": spec.model_parameters.top_p,
        "max_output_tokens": spec.model_parameters.max_output_tokens,
        "tools": list(spec.tools),
        "max_model_calls": limits.max_model_calls,
        "max_duration_ms": round(duration * 1000) if duration is not None else None,
        "max_total_tokens": limits.max_total_tokens,
        "max_tool_calls": limits.max_tool_calls,
        "metadata": dict(spec.metadata),
    }


def _spec(row: Values) -> AgentSpec:
    duration_ms = row["max_duration_ms"]
    return AgentSpec(
        display_name=row["display_name"],
        description=row["description"],
        instructions=row["instructions"],
        model=row["model"],
        model_parameters=ModelParameters(row["temperature"], row["top_p"], row["max_output_tokens"]),
        tools=tuple(row["tools"]),
        limits=RunLimits(
            max_model_calls=row["max_model_calls"],
            max_duration_seconds=duration_ms / 1000 if duration_ms is not None else None,
            max_total_tokens=row["max_total_tokens"],
            max_tool_calls=row["max_tool_calls"],
        ),
        metadata=dict(row["labels"]),
    )


def _record(row: Values) -> AgentRecord:
    return AgentRecord(
        id=row["agent_id"],
        revision=row["revision"],
        owner=row["owner"],
        created_at=row["agent_created_at"],
        revision_created_at=row["created_at"],
        spec=_spec(row),
    )


def _records_query(owner: str) -> Select[Any]:
    """An owner's agents joined with their revisions; callers choose which revisions."""
    return (
        select(*_RECORD_COLUMNS)
        .select_from(AGENTS.join(REVISIONS, REVISIONS.c.agent_id == AGENTS.c.id))
        .where(AGENTS.c.owner == owner)
    )


def _approximate_bytes(record: AgentRecord) -> int:
    """About how many bytes an agent takes in a response (its text dominates)."""
    spec = record.spec
    texts = (spec.display_name, spec.description, spec.instructions, spec.model, *spec.tools, *spec.metadata.keys(),
             *spec.metadata.values())
    return sum(len(text.encode()) for text in texts) + 256


def _page(rows: Sequence[Values], limit: int) -> tuple[list[AgentRecord], bool]:
    """Up to `limit` records of `rows` (which hold one more, if there is more), ending early at MAX_PAGE_BYTES;
    and whether more follow."""
    page: list[AgentRecord] = []
    size = 0
    for row in rows[:limit]:
        record = _record(row)
        size += _approximate_bytes(record)
        if page and size > MAX_PAGE_BYTES:
            break
        page.append(record)
    return page, len(rows) > len(page)


def _after_name(name_key: str, agent_id: str) -> ColumnElement[bool]:
    """Agents after (name_key, id) in listing order: a row-value comparison, served by the owner's index."""
    return tuple_(AGENTS.c.name_key, AGENTS.c.id) > tuple_(
        literal(name_key, AGENTS.c.name_key.type), literal(agent_id, AGENTS.c.id.type)
    )


async def _lock_agent(connection: AsyncConnection, agent_id: str, owner: str) -> int:
    """The latest revision of the owner's agent, its row held for the transaction; NotFound otherwise."""
    latest = await connection.scalar(
        select(AGENTS.c.latest_revision)
        .where(AGENTS.c.id == agent_id, AGENTS.c.owner == owner)
        .with_for_update()
    )
    if latest is None:
        raise _not_found(agent_id)
    return int(latest)


class AgentStore:
    """Agents and their revisions, each user's own."""

    def __init__(self, database: Database) -> None:
        self.database = database

    @runs_to_completion
    async def create_agent(self, owner: str, spec: AgentSpec) -> AgentRecord:
        """A new agent of `owner`'s, at revision 1."""
        agent_id = str(uuid.uuid4())
        async with self.database.write() as session:
            connection = await session.connection()
            values = _revision_values(agent_id, 1, spec)
            await connection.execute(
                insert(AGENTS).values(
                    id=agent_id,
                    owner=owner,
                    created_at=values["created_at"],
                    latest_revision=1,
                    name_key=_name_key(spec.display_name),
                )
            )
            await connection.execute(insert(REVISIONS).values(values))
        return AgentRecord(agent_id, 1, owner, values["created_at"], values["created_at"], spec)

    @runs_to_completion
    async def get_agent(self, agent_id: str, owner: str, revision: int = 0) -> AgentRecord:
        """The owner's agent as of `revision` (0: the latest)."""
        agent_id = parse_agent_id(agent_id)
        wanted = AGENTS.c.latest_revision if revision == 0 else literal(revision)
        query = _records_query(owner).where(AGENTS.c.id == agent_id, REVISIONS.c.revision == wanted)
        async with self.database.read() as session:
            row = (await session.execute(query)).mappings().first()
            if row is None and revision:
                latest = await session.scalar(
                    select(AGENTS.c.latest_revision).where(AGENTS.c.id == agent_id, AGENTS.c.owner == owner)
                )
                if latest is not None:
                    raise NotFound(f"agent '{agent_id}' has no revision {revision}; its latest is {latest}")
        if row is None:
            raise _not_found(agent_id)
        return _record(row)

    @runs_to_completion
    async def list_agents(
        self, owner: str, page_size: int = 0, page_token: str = "", name_contains: str = ""
    ) -> tuple[list[AgentRecord], str]:
        """One page of the owner's agents at their latest revision, by display name (case-insensitively, then
        by id), and the token of the next page ("" on the last). `name_contains` keeps the agents whose display
        name contains it, ignoring case; `%` and `_` in it are plain characters."""
        limit = _checked_page_size(page_size)
        check_text("name_contains", name_contains, MAX_DISPLAY_NAME_CHARS)
        query = (
            _records_query(owner)
            .where(REVISIONS.c.revision == AGENTS.c.latest_revision)
            .order_by(AGENTS.c.name_key, AGENTS.c.id)
            .limit(limit + 1)
        )
        if name_contains:
            query = query.where(AGENTS.c.name_key.contains(_name_key(name_contains), autoescape=True))
        if page_token:
            position = _decode_token(page_token)
            try:
                name_key, agent_id = str(position["name"]), str(uuid.UUID(position["id"]))
                valid = position["filter"] == name_contains
            except (KeyError, ValueError, TypeError, AttributeError):
                valid = False
            if not valid:
                raise InvalidArgument(INVALID_PAGE_TOKEN)
            query = query.where(_after_name(name_key, agent_id))
        async with self.database.read() as session:
            rows = (await session.execute(query)).mappings().all()
        page, more = _page(rows, limit)
        if not more:
            return page, ""
        last = page[-1]
        # The filter is part of the token: a position in one filtered listing is meaningless in another.
        return page, _encode_token({"name": _name_key(last.spec.display_name), "id": last.id, "filter": name_contains})

    @runs_to_completion
    async def update_agent(self, agent_id: str, owner: str, spec: AgentSpec, fields: Sequence[str]) -> AgentRecord:
        """Make the owner's agent's next revision: its latest with `fields` (names of AGENT_FIELDS) taken from
        `spec`."""
        agent_id = parse_agent_id(agent_id, "agent.id")
        unknown = set(fields) - set(AGENT_FIELDS)
        if unknown:
            raise InvalidArgument(f"unknown agent field(s) {', '.join(sorted(unknown))}")
        async with self.database.write() as session:
            connection = await session.connection()
            latest = await _lock_agent(connection, agent_id, owner)
            query = _records_query(owner).where(AGENTS.c.id == agent_id, REVISIONS.c.revision == latest)
            current = _record((await connection.execute(query)).mappings().one())
            changes = {field: getattr(spec, field) for field in fields}
            merged = dataclasses.replace(current.spec, **changes)
            values = _revision_values(agent_id, latest + 1, merged)
            await connection.execute(insert(REVISIONS).values(values))
            await connection.execute(
                update(AGENTS)
                .where(AGENTS.c.id == agent_id)
                .values(latest_revision=latest + 1, name_key=_name_key(merged.display_name))
            )
        return AgentRecord(agent_id, latest + 1, owner, current.created_at, values["created_at"], merged)

    @runs_to_completion
    async def delete_agent(self, agent_id: str, owner: str) -> None:
        """Delete the owner's agent and all its revisions."""
        agent_id = parse_agent_id(agent_id)
        async with self.database.write() as session:
            connection = await session.connection()
            await _lock_agent(connection, agent_id, owner)
            # Explicitly, not only by the foreign key's ON DELETE CASCADE, which SQLite applies only on
            # connections that turned foreign keys on.
            await connection.execute(delete(REVISIONS).where(REVISIONS.c.agent_id == agent_id))
            await connection.execute(delete(AGENTS).where(AGENTS.c.id == agent_id))

    @runs_to_completion
    async def list_revisions(
        self, agent_id: str, owner: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[AgentRecord], str]:
        """One page of the owner's agent's revisions, newest first, and the token of the next page."""
        agent_id = parse_agent_id(agent_id)
        limit = _checked_page_size(page_size)
        query = (
            _records_query(owner)
            .where(AGENTS.c.id == agent_id)
            .order_by(REVISIONS.c.revision.desc())
            .limit(limit + 1)
        )
        if page_token:
            position = _decode_token(page_token)
            before = position.get("before")
            if position.get("agent") != agent_id or not isinstance(before, int) or isinstance(before, bool):
                raise InvalidArgument(INVALID_PAGE_TOKEN)
            query = query.where(REVISIONS.c.revision < before)
        async with self.database.read() as session:
            rows = (await session.execute(query)).mappings().all()
            if not rows:
                exists = await session.scalar(
                    select(func.count()).select_from(AGENTS).where(and_(AGENTS.c.id == agent_id,
                                                                        AGENTS.c.owner == owner))
                )
                if not exists:
                    raise _not_found(agent_id)
        page, more = _page(rows, limit)
        return page, _encode_token({"agent": agent_id, "before": page[-1].revision}) if more else ""
