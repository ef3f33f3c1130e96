"""AgentStore: agents and their revisions in a database (no gRPC here), on SQLite and PostgreSQL alike.

A VersionedStore (services/agents/versioned.py), whose rules it follows: it stores what `services.agents.registry`
has checked and checks ids, page sizes and page tokens; another user's agent is NotFound with the same message as a
missing one; revisions are immutable, and an update writes revision n + 1 in one transaction that holds the agent's
row. What is an agent's own is here: how an AgentSpec becomes revision columns and back.
"""

from collections.abc import Sequence
from typing import Any

from services.agents.checks import parse_agent_id
from services.agents.listing import MAX_PAGE_BYTES
from services.agents.models import AgentRevisionRow, AgentRow
from services.agents.records import AGENT_FIELDS, AgentRecord, AgentSpec, ModelParameters
from services.agents.versioned import Values, VersionedStore, limits_values, read_limits
from services.common.db.database import Database
from services.common.pages import PageTokens

# MAX_PAGE_BYTES: the page limit agents are listed under, importable from here as before.
__all__ = ["AGENTS", "MAX_PAGE_BYTES", "REVISIONS", "AgentStore"]

AGENTS = AgentRow.__table__
REVISIONS = AgentRevisionRow.__table__


def _revision_values(spec: AgentSpec) -> dict[str, Any]:
    return {
        "display_name": spec.display_name,
        "description": spec.description,
        "instructions": spec.instructions,
        "model": spec.model,
        "temperature": spec.model_parameters.temperature,
        "top_p": spec.model_parameters.top_p,
        "max_output_tokens": spec.model_parameters.max_output_tokens,
        "tools": list(spec.tools),
        **limits_values(spec.limits),
        "metadata": dict(spec.metadata),
    }


def _spec(row: Values) -> AgentSpec:
    return AgentSpec(
        display_name=row["display_name"],
        description=row["description"],
        instructions=row["instructions"],
        model=row["model"],
        model_parameters=ModelParameters(row["temperature"], row["top_p"], row["max_output_tokens"]),
        tools=tuple(row["tools"]),
        limits=read_limits(row),
        metadata=dict(row["labels"]),
    )


def _approximate_bytes(row: Values) -> int:
    """About how many bytes an agent takes in a response (its text dominates)."""
    texts = (row["display_name"], row["description"], row["instructions"], row["model"], *row["tools"],
             *row["labels"].keys(), *row["labels"].values())
    return sum(len(text.encode()) for text in texts) + 256


class AgentStore:
    """Agents and their revisions, each user's own."""

    def __init__(self, database: Database, page_tokens: PageTokens | None = None) -> None:
        self.database = database
        self._agents = VersionedStore[AgentSpec, AgentRecord](
            database,
            kind="agent",
            resources=AGENTS,
            revisions=REVISIONS,
            fields=AGENT_FIELDS,
            revision_values=_revision_values,
            read_spec=_spec,
            record_type=AgentRecord,
            approximate_bytes=_approximate_bytes,
            page_tokens=page_tokens,
        )

    async def create_agent(self, owner: str, spec: AgentSpec) -> AgentRecord:
        """A new agent of `owner`'s, at revision 1."""
        return await self._agents.create(owner, spec)

    async def get_agent(self, agent_id: str, owner: str, revision: int = 0) -> AgentRecord:
        """The owner's agent as of `revision` (0: the latest)."""
        return await self._agents.get(parse_agent_id(agent_id), owner, revision)

    async def list_agents(
        self, owner: str, page_size: int = 0, page_token: str = "", name_contains: str = ""
    ) -> tuple[list[AgentRecord], str]:
        """One page of the owner's agents at their latest revision, by display name (case-insensitively, then
        by id), and the token of the next page ("" on the last). `name_contains` keeps the agents whose display
        name contains it, ignoring case; `%` and `_` in it are plain characters."""
        return await self._agents.list_by_name(owner, page_size, page_token, name_contains)

    async def update_agent(self, agent_id: str, owner: str, spec: AgentSpec, fields: Sequence[str]) -> AgentRecord:
        """Make the owner's agent's next revision: its latest with `fields` (names of AGENT_FIELDS) taken from
        `spec`."""
        return await self._agents.update(parse_agent_id(agent_id, "agent.id"), owner, spec, fields)

    async def delete_agent(self, agent_id: str, owner: str) -> None:
        """Delete the owner's agent and all its revisions."""
        await self._agents.delete(parse_agent_id(agent_id), owner)

    async def list_revisions(
        self, agent_id: str, owner: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[AgentRecord], str]:
        """One page of the owner's agent's revisions, newest first, and the token of the next page."""
        return await self._agents.list_revisions(parse_agent_id(agent_id), owner, page_size, page_token)
