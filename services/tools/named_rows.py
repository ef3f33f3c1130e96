"""Rows kept under a unique name: the registered MCP servers and the HTTP tools (services.tools.tables). Insert one
unless the name is taken, read them all in name order, delete one by name; the same on SQLite and PostgreSQL.
Rows are turned into the caller's plain types inside the session (`convert`), since they cannot be read after it."""

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.common.db.database import Database
from services.common.errors import DomainError


class NamedRow(Protocol):
    """A row whose primary key is its `name`."""

    name: Any


RowT = TypeVar("RowT", bound=NamedRow)
T = TypeVar("T")


async def insert_named(database: Database, row: RowT, convert: Callable[[RowT], T], taken: DomainError) -> T:
    """Store `row`, raising `taken` when its name is; returns it converted."""
    row_type = type(row)
    try:
        async with database.write() as session:
            if await session.get(row_type, row.name) is not None:
                raise taken
            session.add(row)
            await session.flush()
            return convert(row)
    except IntegrityError:
        # Another replica inserted the name between our check and insert (PostgreSQL; SQLite's BEGIN IMMEDIATE
        # serialises writers); anything else is not the caller's doing.
        async with database.read() as session:
            if await session.get(row_type, row.name) is not None:
                raise taken from None
        raise


async def all_named(database: Database, row_type: type[RowT], convert: Callable[[RowT], T]) -> list[T]:
    """Every row of `row_type`, in name order, converted."""
    async with database.read() as session:
        rows = (await session.scalars(select(row_type).order_by(row_type.name))).all()
        return [convert(row) for row in rows]


async def delete_named(database: Database, row_type: type[RowT], name: str, missing: DomainError) -> None:
    """Delete the row named `name`, raising `missing` when there is none."""
    async with database.write() as session:
        row = await session.get(row_type, name)
        if row is None:
            raise missing
        await session.delete(row)


def is_header_name(key: str) -> bool:
    """Whether `key` may name an HTTP header: RFC 9110's token characters."""
    return bool(key) and all(ch.isascii() and (ch.isalnum() or ch in "!#$%&'*+-.^_`|~") for ch in key)
