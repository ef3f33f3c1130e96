"""VersionedStore: the saved resources of the agents service (agents, workflows) and their immutable revisions in a
database (no gRPC here), on SQLite and PostgreSQL alike. AgentStore and WorkflowStore are this store with their
kind's tables and conversions.

A store stores what its registry has checked, and checks what is its own to check: page sizes and page tokens (ids
are parsed by AgentStore and WorkflowStore, whose fields they name). Every read and write names the owner, and
another user's resource is NotFound with the same message as a missing one, so a resource's existence never leaks.

Revisions are immutable: a create writes revision 1, an update writes revision n + 1 (a copy of revision n with
the named fields replaced) and moves the resource's `latest_revision` to it, in one transaction that holds the
resource's row (PostgreSQL's row lock; SQLite's one writer), so concurrent updates make consecutive revisions.

Each kind has two tables: its resources (id, owner, created_at, latest_revision, name_key) and their revisions
(`<kind>_id`, revision, created_at, display_name, ..., `metadata`).
"""

import dataclasses
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import ColumnElement, Select, Table, and_, delete, func, insert, literal, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.agents.listing import MAX_PAGE_BYTES, name_key
from services.agents.models import MAX_DISPLAY_NAME_CHARS
from services.common.checks import check_text
from services.common.db.database import Database, runs_to_completion, utcnow
from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.common.limits import RunLimits
from services.common.pages import PageTokens, checked_page_size

Values = Mapping[str, Any]


class Spec(Protocol):
    """What a kind's spec (AgentSpec, WorkflowSpec) has that the store reads: a frozen dataclass with a name."""

    @property
    def display_name(self) -> str: ...


class Record(Protocol):
    """A kind's record (AgentRecord, WorkflowRecord), as the store reads it."""

    @property
    def id(self) -> str: ...

    @property
    def revision(self) -> int: ...

    @property
    def created_at(self) -> datetime: ...

    @property
    def spec(self) -> Any: ...


SpecT = TypeVar("SpecT", bound=Spec)
RecordT = TypeVar("RecordT", bound=Record)


class RevisionConflict(AlreadyExists):
    """The resource's latest revision is not the one the update was checked against."""


def limits_values(limits: RunLimits) -> dict[str, Any]:
    """The revision columns of a spec's run limits (both kinds store them alike)."""
    duration = limits.max_duration_seconds
    return {
        "max_model_calls": limits.max_model_calls,
        "max_duration_ms": round(duration * 1000) if duration is not None else None,
        "max_total_tokens": limits.max_total_tokens,
        "max_tool_calls": limits.max_tool_calls,
    }


def read_limits(row: Values) -> RunLimits:
    """The run limits of a revision row, as `limits_values` stored them."""
    duration_ms = row["max_duration_ms"]
    return RunLimits(
        max_model_calls=row["max_model_calls"],
        max_duration_seconds=duration_ms / 1000 if duration_ms is not None else None,
        max_total_tokens=row["max_total_tokens"],
        max_tool_calls=row["max_tool_calls"],
    )


class VersionedStore(Generic[SpecT, RecordT]):
    """One kind's resources and their revisions, each user's own. Ids reach it parsed."""

    def __init__(
        self,
        database: Database,
        *,
        kind: str,
        resources: Table,
        revisions: Table,
        fields: Sequence[str],
        revision_values: Callable[[SpecT], dict[str, Any]],
        read_spec: Callable[[Values], SpecT],
        record_type: Callable[..., RecordT],
        approximate_bytes: Callable[[Values], int],
        page_tokens: PageTokens | None = None,
    ) -> None:
        """`kind` names the resource in messages and page tokens ("agent"); `fields` are the spec's fields an
        update may name; `revision_values` gives a spec's own revision columns and `read_spec` reads them back
        from a record row (where `metadata` reads as `labels`); `approximate_bytes` sizes a record row in a
        response; `page_tokens` signs and reads the listings' page tokens (the settings' key in a service)."""
        self.database = database
        self.kind = kind
        self.resources = resources
        self.revisions = revisions
        self.fields = tuple(fields)
        self._revision_values = revision_values
        self._read_spec = read_spec
        self._record_type = record_type
        self._approximate_bytes = approximate_bytes
        self._page_tokens = page_tokens or PageTokens.for_this_process()
        #: The listings' names, as the API says them (ListAgents, ListWorkflowRevisions): what a token is bound to.
        self._list_name = f"List{kind.capitalize()}s"
        self._list_revisions_name = f"List{kind.capitalize()}Revisions"
        # Each revisions table names its resource's id `<kind>_id`.
        self._resource_id = revisions.c[f"{kind}_id"]
        #: What a record is read from: the resource's columns and one revision's (`metadata` read as `labels`).
        self._record_columns = [
            resources.c.owner,
            resources.c.created_at.label("resource_created_at"),
            *(column.label("labels") if column.key == "metadata" else column for column in revisions.columns),
        ]

    def not_found(self, resource_id: str) -> NotFound:
        """The one message for "no such agent" and "someone else's agent" (or workflow)."""
        return NotFound(f"{self.kind} '{resource_id}' not found")

    @runs_to_completion
    async def create(self, owner: str, spec: SpecT) -> RecordT:
        """A new resource of `owner`'s, at revision 1."""
        resource_id = str(uuid.uuid4())
        values = self._values(resource_id, 1, spec)
        async with self.database.write() as session:
            connection = await session.connection()
            await connection.execute(
                insert(self.resources).values(
                    id=resource_id,
                    owner=owner,
                    created_at=values["created_at"],
                    latest_revision=1,
                    name_key=name_key(spec.display_name),
                )
            )
            await connection.execute(insert(self.revisions).values(values))
        return self._record_type(resource_id, 1, owner, values["created_at"], values["created_at"], spec)

    @runs_to_completion
    async def get(self, resource_id: str, owner: str, revision: int = 0) -> RecordT:
        """The owner's resource as of `revision` (0: the latest)."""
        resources = self.resources
        wanted = resources.c.latest_revision if revision == 0 else literal(revision)
        query = self._records_query(owner).where(resources.c.id == resource_id, self.revisions.c.revision == wanted)
        async with self.database.read() as session:
            row = (await session.execute(query)).mappings().first()
            if row is None and revision:
                latest = await session.scalar(
                    select(resources.c.latest_revision).where(resources.c.id == resource_id,
                                                              resources.c.owner == owner)
                )
                if latest is not None:
                    raise NotFound(f"{self.kind} '{resource_id}' has no revision {revision}; its latest is {latest}")
        if row is None:
            raise self.not_found(resource_id)
        return self._record(row)

    @runs_to_completion
    async def list_by_name(
        self, owner: str, page_size: int = 0, page_token: str = "", name_contains: str = ""
    ) -> tuple[list[RecordT], str]:
        """One page of the owner's resources at their latest revision, by display name (case-insensitively, then
        by id), and the token of the next page ("" on the last). `name_contains` keeps the resources whose display
        name contains it, ignoring case; `%` and `_` in it are plain characters."""
        resources = self.resources
        limit = checked_page_size(page_size)
        check_text("name_contains", name_contains, MAX_DISPLAY_NAME_CHARS)
        query = (
            self._records_query(owner)
            .where(self.revisions.c.revision == resources.c.latest_revision)
            .order_by(resources.c.name_key, resources.c.id)
            .limit(limit + 1)
        )
        if name_contains:
            query = query.where(resources.c.name_key.contains(name_key(name_contains), autoescape=True))
        # The filter is part of the token: a position in one filtered listing is meaningless in another.
        request = {"owner": owner, "name_contains": name_contains}
        if page_token:
            position = self._page_tokens.read(page_token, self._list_name, request)
            key = position.text("name", 4 * MAX_DISPLAY_NAME_CHARS)  # lower() may lengthen a name (İ -> i̇)
            query = query.where(self._after_name(key, position.uuid("id")))
        async with self.database.read() as session:
            rows = (await session.execute(query)).mappings().all()
        page, more = self._page(rows, limit)
        if not more:
            return page, ""
        last = page[-1]
        return page, self._page_tokens.issue(
            self._list_name, request, {"name": name_key(last.spec.display_name), "id": last.id}
        )

    @runs_to_completion
    async def update(
        self,
        resource_id: str,
        owner: str,
        spec: SpecT,
        fields: Sequence[str],
        expected_revision: int | None = None,
    ) -> RecordT:
        """Make the owner's resource's next revision: its latest with `fields` (names of the kind's fields) taken
        from `spec`. With `expected_revision`, RevisionConflict when the latest is another (the caller checked
        `spec` against that one)."""
        unknown = set(fields) - set(self.fields)
        if unknown:
            raise InvalidArgument(f"unknown {self.kind} field(s) {', '.join(sorted(unknown))}")
        resources = self.resources
        async with self.database.write() as session:
            connection = await session.connection()
            latest = await self._lock(connection, resource_id, owner)
            if expected_revision is not None and latest != expected_revision:
                raise RevisionConflict(f"{self.kind} '{resource_id}' changed while this update was checked (revision "
                                       f"{latest}, not {expected_revision}); send the update again")
            query = self._records_query(owner).where(resources.c.id == resource_id, self.revisions.c.revision == latest)
            current = self._record((await connection.execute(query)).mappings().one())
            changes = {field: getattr(spec, field) for field in fields}
            merged = dataclasses.replace(current.spec, **changes)
            values = self._values(resource_id, latest + 1, merged)
            await connection.execute(insert(self.revisions).values(values))
            await connection.execute(
                update(resources)
                .where(resources.c.id == resource_id)
                .values(latest_revision=latest + 1, name_key=name_key(merged.display_name))
            )
        return self._record_type(resource_id, latest + 1, owner, current.created_at, values["created_at"], merged)

    @runs_to_completion
    async def delete(self, resource_id: str, owner: str) -> None:
        """Delete the owner's resource and all its revisions."""
        async with self.database.write() as session:
            connection = await session.connection()
            await self._lock(connection, resource_id, owner)
            # Explicitly, not only by the foreign key's ON DELETE CASCADE, which SQLite applies only on
            # connections that turned foreign keys on.
            await connection.execute(delete(self.revisions).where(self._resource_id == resource_id))
            await connection.execute(delete(self.resources).where(self.resources.c.id == resource_id))

    @runs_to_completion
    async def list_revisions(
        self, resource_id: str, owner: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[RecordT], str]:
        """One page of the owner's resource's revisions, newest first, and the token of the next page (bound to
        the resource and its owner)."""
        resources = self.resources
        limit = checked_page_size(page_size)
        query = (
            self._records_query(owner)
            .where(resources.c.id == resource_id)
            .order_by(self.revisions.c.revision.desc())
            .limit(limit + 1)
        )
        request = {"id": resource_id, "owner": owner}
        if page_token:
            # Revisions start at 1, and the column is an Integer on PostgreSQL.
            before = self._page_tokens.read(page_token, self._list_revisions_name, request).integer("before", 2)
            query = query.where(self.revisions.c.revision < before)
        async with self.database.read() as session:
            rows = (await session.execute(query)).mappings().all()
            if not rows:
                exists = await session.scalar(
                    select(func.count()).select_from(resources).where(
                        and_(resources.c.id == resource_id, resources.c.owner == owner)
                    )
                )
                if not exists:
                    raise self.not_found(resource_id)
        page, more = self._page(rows, limit)
        if not more:
            return page, ""
        return page, self._page_tokens.issue(self._list_revisions_name, request, {"before": page[-1].revision})

    def _values(self, resource_id: str, revision: int, spec: SpecT) -> dict[str, Any]:
        """A revision's row: its key, its time, and the spec's columns."""
        return {
            self._resource_id.key: resource_id,
            "revision": revision,
            "created_at": utcnow(),
            **self._revision_values(spec),
        }

    def _record(self, row: Values) -> RecordT:
        return self._record_type(
            id=row[self._resource_id.key],
            revision=row["revision"],
            owner=row["owner"],
            created_at=row["resource_created_at"],
            revision_created_at=row["created_at"],
            spec=self._read_spec(row),
        )

    def _records_query(self, owner: str) -> Select[Any]:
        """An owner's resources joined with their revisions; callers choose which revisions."""
        return (
            select(*self._record_columns)
            .select_from(self.resources.join(self.revisions, self._resource_id == self.resources.c.id))
            .where(self.resources.c.owner == owner)
        )

    def _page(self, rows: Sequence[Values], limit: int) -> tuple[list[RecordT], bool]:
        """Up to `limit` records of `rows` (which hold one more, if there is more), ending early at MAX_PAGE_BYTES;
        and whether more follow."""
        page: list[RecordT] = []
        size = 0
        for row in rows[:limit]:
            size += self._approximate_bytes(row)
            if page and size > MAX_PAGE_BYTES:
                break
            page.append(self._record(row))
        return page, len(rows) > len(page)

    def _after_name(self, key: str, resource_id: str) -> ColumnElement[bool]:
        """Resources after (name_key, id) in listing order: a row-value comparison, served by the owner's index."""
        resources = self.resources
        return tuple_(resources.c.name_key, resources.c.id) > tuple_(
            literal(key, resources.c.name_key.type), literal(resource_id, resources.c.id.type)
        )

    async def _lock(self, connection: AsyncConnection, resource_id: str, owner: str) -> int:
        """The latest revision of the owner's resource, its row held for the transaction; NotFound otherwise."""
        latest = await connection.scalar(
            select(self.resources.c.latest_revision)
            .where(self.resources.c.id == resource_id, self.resources.c.owner == owner)
            .with_for_update()
        )
        if latest is None:
            raise self.not_found(resource_id)
        return int(latest)
