"""The agents service's tables, as a SQLAlchemy 2 ORM (no gRPC here).

An agent is a row of `agents` (who owns it, when it was made, its latest revision) and one immutable row of
`agent_revisions` per revision, which holds everything a client set. A workflow is the same: a row of
`workflows` and immutable rows of `workflow_revisions`, whose graph is one JSON document of
services.agents.workflows.document's shape. Portable between SQLite and PostgreSQL
like the runs tables: JSON becomes JSONB on PostgreSQL, times are timezone-aware UTC on both.
"""

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Table, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db.database import UtcDateTime, make_metadata

#: The Alembic migrations of this schema (package:folder), for Database.migrate.
MIGRATIONS = "services.agents:migrations"
#: Where this schema's Alembic keeps its version: a table of its own, since the agents tables may share the runs
#: service's PostgreSQL database (whose schema uses Alembic's default), and its name keys the schema's migration lock.
VERSION_TABLE = "agents_alembic_version"

#: JSON on SQLite, JSONB on PostgreSQL.
JsonDocument = JSON().with_variant(JSONB(), "postgresql")

#: Widths of the columns, which the checks keep values within.
MAX_DISPLAY_NAME_CHARS = 200
MAX_MODEL_CHARS = 200
MAX_OWNER_CHARS = 200

#: Text compared byte by byte on both databases: SQLite's default (BINARY) collation does, and PostgreSQL's "C"
#: collation does, while its default follows the server's locale. So a listing sorts, and its keyset pages
#: split, the same way on both.
BytewiseName = String(MAX_DISPLAY_NAME_CHARS).with_variant(String(MAX_DISPLAY_NAME_CHARS, collation="C"), "postgresql")


class Base(AsyncAttrs, DeclarativeBase):
    metadata = make_metadata()
    # Every model here is declared with __tablename__, so SQLAlchemy maps it to a Table; DeclarativeBase types
    # the attribute as any FromClause (a class may be mapped to a join or a subquery), which insert() and
    # update() refuse.
    __table__: ClassVar[Table]


class AgentRow(Base):
    """One saved agent: its identity and owner, and which of its revisions is the latest."""

    __tablename__ = "agents"
    __table_args__ = (
        # ListAgents: one user's agents by name, keyset-paginated by (name_key, id).
        Index("ix_agents_owner_name_key_id", "owner", "name_key", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    #: The id of the user who created the agent and owns it.
    owner: Mapped[str] = mapped_column(String(MAX_OWNER_CHARS))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: The newest revision's number (revisions are 1, 2, 3 ... with no gaps).
    latest_revision: Mapped[int] = mapped_column(Integer)
    #: The latest revision's display name in lower case (Python's str.lower, the same on both databases, where
    #: SQLite's lower() folds ASCII only): what ListAgents sorts by and searches.
    name_key: Mapped[str] = mapped_column(BytewiseName)


class AgentRevisionRow(Base):
    """One immutable revision of an agent: everything a client set, as of that revision."""

    __tablename__ = "agent_revisions"

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    display_name: Mapped[str] = mapped_column(String(MAX_DISPLAY_NAME_CHARS))
    description: Mapped[str] = mapped_column(Text)
    instructions: Mapped[str] = mapped_column(Text)
    #: "" for the engine's default model.
    model: Mapped[str] = mapped_column(String(MAX_MODEL_CHARS))
    #: Model parameters; NULL leaves the endpoint's default.
    temperature: Mapped[float | None] = mapped_column(Float)
    top_p: Mapped[float | None] = mapped_column(Float)
    max_output_tokens: Mapped[int | None] = mapped_column(Integer)
    #: The tool ids, in the order given: a JSON list of strings.
    tools: Mapped[list[str]] = mapped_column(JsonDocument)
    #: The run limits, as the runs table keeps them (NULL: the engine's default).
    max_model_calls: Mapped[int | None] = mapped_column(Integer)
    max_duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    max_total_tokens: Mapped[int | None] = mapped_column(BigInteger)
    max_tool_calls: Mapped[int | None] = mapped_column(Integer)
    # `metadata` is taken by DeclarativeBase, so the attribute has another name than the column.
    labels: Mapped[dict[str, str]] = mapped_column("metadata", JsonDocument)


class WorkflowRow(Base):
    """One saved workflow: its identity and owner, and which of its revisions is the latest."""

    __tablename__ = "workflows"
    __table_args__ = (
        # ListWorkflows: one user's workflows by name, keyset-paginated by (name_key, id).
        Index("ix_workflows_owner_name_key_id", "owner", "name_key", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(MAX_OWNER_CHARS))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    latest_revision: Mapped[int] = mapped_column(Integer)
    #: The latest revision's display name in lower case (as agents.name_key).
    name_key: Mapped[str] = mapped_column(BytewiseName)


class WorkflowRevisionRow(Base):
    """One immutable revision of a workflow: everything a client set, as of that revision."""

    __tablename__ = "workflow_revisions"

    workflow_id: Mapped[str] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    display_name: Mapped[str] = mapped_column(String(MAX_DISPLAY_NAME_CHARS))
    description: Mapped[str] = mapped_column(Text)
    #: The inputs, nodes and edges: a JSON document with a schema version, in the shape
    #: services.agents.workflows.document defines (not the wire format, so renaming a proto field orphans nothing).
    graph: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    #: The run limits, as agent_revisions keeps them (NULL: the engine's default).
    max_model_calls: Mapped[int | None] = mapped_column(Integer)
    max_duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    max_total_tokens: Mapped[int | None] = mapped_column(BigInteger)
    max_tool_calls: Mapped[int | None] = mapped_column(Integer)
    labels: Mapped[dict[str, str]] = mapped_column("metadata", JsonDocument)
