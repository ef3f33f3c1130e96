"""The tools service's tables: per-tool settings, the registered MCP servers and the HTTP tools. Built by the Alembic
migrations in services/tools/migrations (whose env.py compares against SCHEMA)."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from services.common.db.database import UtcDateTime, make_metadata
from services.tools.secret_codec import codec_for


class SealedSecrets(TypeDecorator[dict[str, str]]):
    """A mapping of secret values (header or environment variable name -> value), stored encrypted with the
    database's codec (services.tools.secret_codec): the column holds a JSON string, the Fernet token.

    The column stays JSON, as before encryption: a JSON object in it is a row an earlier version stored in plain
    text, which is still read, and which services.tools.secrets encrypts at the service's start."""

    impl = JSON(none_as_null=True)
    cache_ok = True

    def process_bind_param(self, value: dict[str, str] | None, dialect: Dialect) -> str | None:
        return None if value is None else codec_for(dialect).seal(value)

    def process_result_value(self, value: object, dialect: Dialect) -> dict[str, str] | None:
        if value is None or isinstance(value, dict):
            return value
        return codec_for(dialect).open(str(value))


class _Base(AsyncAttrs, DeclarativeBase):
    metadata = make_metadata()


#: Where the migrations are, and the table that keeps their version (of its own: the tools tables may share a
#: database with another service's).
MIGRATIONS = "services.tools:migrations"
VERSION_TABLE = "tools_alembic_version"


class ToolSettingRow(_Base):
    """One tool's stored settings."""

    __tablename__ = "tool_settings"

    tool_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    description_override: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    #: Whether calls wait for a person's approval; NULL: the tool's own default (BaseTool.requires_approval).
    requires_approval: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


class McpServerRow(_Base):
    """A registered MCP server: how to reach it. Its connection state is not stored (each replica has its own
    connection); its tools are not either (they are listed from the server on every connection).

    One row per transport kind: stdio has `command` (+ `args`, `env`), http has `url` (+ `headers`); the check
    constraint keeps the other kind's columns empty. `env` and `headers` hold secrets: they are read only to
    connect, and the API returns their keys alone."""

    __tablename__ = "mcp_servers"
    __table_args__ = (
        CheckConstraint(
            "(transport = 'stdio' AND command IS NOT NULL AND url IS NULL AND headers IS NULL)"
            " OR (transport = 'http' AND url IS NOT NULL AND command IS NULL AND args IS NULL AND env IS NULL)",
            name="transport_columns",
        ),
    )

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: "stdio" or "http".
    transport: Mapped[str] = mapped_column(String(8), nullable=False)
    command: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: A JSON list of strings.
    args: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    #: The process's extra environment variables (secrets, encrypted).
    env: Mapped[dict[str, str] | None] = mapped_column(SealedSecrets, nullable=True)
    url: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The HTTP headers sent with every request (secrets, encrypted).
    headers: Mapped[dict[str, str] | None] = mapped_column(SealedSecrets, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class HttpToolRow(_Base):
    """An HTTP tool created with CreateTool: everything needed to offer and call it (its id is http__<name>).
    Its settings (enabled, approval, description override) are in `tool_settings`, like every tool's.

    `headers` holds secrets: it is read only to call the endpoint, and the API returns its keys alone. The
    definition is immutable (delete and create again to change it), so there is no updated_at."""

    __tablename__ = "http_tools"
    __table_args__ = (
        CheckConstraint("method IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE')", name="method"),
        CheckConstraint("repeatability IN ('read_only', 'idempotent', 'not_idempotent')", name="repeatability"),
    )

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    display_name: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    #: The JSON schema of the arguments (an object schema).
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    #: GET, POST, PUT, PATCH or DELETE.
    method: Mapped[str] = mapped_column(String(8), nullable=False)
    #: The HTTP headers sent with every call (secrets, encrypted).
    headers: Mapped[dict[str, str]] = mapped_column(SealedSecrets, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    #: read_only, idempotent or not_idempotent as its creator declared; NULL: the method decides.
    repeatability: Mapped[str | None] = mapped_column(String(16), nullable=True)


#: The tools service's schema, for its migrations.
SCHEMA = _Base.metadata
