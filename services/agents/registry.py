"""AgentRegistry: the agents service's domain layer (no gRPC here). It checks an agent (its fields, then the
tools and the model it names against the tools service and the model endpoint) and keeps it in the store,
always as the caller's own.

Agents are personal: every method works on the caller's agents only, and another user's agent is NotFound as
if it did not exist. Admins are no exception: an admin's power is over the platform (tools' settings, everyone's
runs for inspection), while an agent is someone's own work, and the engine runs an agent on behalf of its owner
only.
"""

from collections.abc import Sequence
from typing import Protocol

from services.agents.checks import AGENT, check_revision, check_spec, check_update_mask, parse_agent_id
from services.agents.records import AGENT_FIELDS, AgentRecord, AgentSpec
from services.agents.store import AgentStore
from services.common.errors import InvalidArgument
from services.common.identity import Caller
from services.common.limits import RunLimitMaximums

#: How many of the endpoint's models an error about an unknown one lists.
MODELS_SHOWN = 10


class ToolDirectory(Protocol):
    """Which tools exist (services.agents.clients.ToolIdsClient)."""

    async def tool_ids(self, caller: Caller, time_left: float | None = None) -> set[str]: ...


class ModelDirectory(Protocol):
    """Which models the endpoint serves (services.agents.model_catalog.ModelCatalog); None: it does not say."""

    async def served_models(self) -> list[str] | None: ...


class AgentRegistry:
    """Saved, versioned agents, checked before they are stored."""

    def __init__(
        self,
        store: AgentStore,
        maximums: RunLimitMaximums,
        tools: ToolDirectory,
        models: ModelDirectory | None = None,
    ) -> None:
        self.store = store
        self._maximums = maximums
        self._tools = tools
        self._models = models

    async def create_agent(self, caller: Caller, spec: AgentSpec, time_left: float | None = None) -> AgentRecord:
        """A new agent of the caller's, at revision 1. `time_left` is what remains of the request's deadline."""
        await self._check(caller, spec, AGENT_FIELDS, time_left)
        return await self.store.create_agent(caller.user, spec)

    async def get_agent(self, caller: Caller, agent_id: str, revision: int = 0) -> AgentRecord:
        check_revision(revision)
        return await self.store.get_agent(agent_id, caller.user, revision)

    async def list_agents(
        self, caller: Caller, page_size: int = 0, page_token: str = "", name_contains: str = ""
    ) -> tuple[list[AgentRecord], str]:
        return await self.store.list_agents(caller.user, page_size, page_token, name_contains)

    async def update_agent(
        self, caller: Caller, agent_id: str, spec: AgentSpec, paths: Sequence[str], time_left: float | None = None
    ) -> AgentRecord:
        """The agent's next revision, with the fields `paths` names (an update mask) taken from `spec`.

        Only those fields are checked: the others were when they were stored. So an agent whose tool was since
        removed from the platform can still be renamed; the engine refuses that tool when a run starts.
        """
        agent_id = parse_agent_id(agent_id, "agent.id")
        fields = check_update_mask(paths)
        await self._check(caller, spec, fields, time_left)
        return await self.store.update_agent(agent_id, caller.user, spec, fields)

    async def delete_agent(self, caller: Caller, agent_id: str) -> None:
        await self.store.delete_agent(agent_id, caller.user)

    async def list_revisions(
        self, caller: Caller, agent_id: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[AgentRecord], str]:
        return await self.store.list_revisions(agent_id, caller.user, page_size, page_token)

    async def _check(
        self, caller: Caller, spec: AgentSpec, fields: Sequence[str], time_left: float | None
    ) -> None:
        """`fields` of `spec`: their own form first (no call needed), then what they name elsewhere."""
        check_spec(spec, self._maximums, fields)
        if "tools" in fields and spec.tools:
            known = await self._tools.tool_ids(caller, time_left)
            for index, tool in enumerate(spec.tools):
                if tool not in known:
                    raise InvalidArgument(f"{AGENT}.tools[{index}]: unknown tool {tool!r}")
        if "model" in fields and spec.model and self._models is not None:
            served = await self._models.served_models()
            if served and spec.model not in served:
                shown = ", ".join(repr(model) for model in served[:MODELS_SHOWN])
                more = f" and {len(served) - MODELS_SHOWN} more" if len(served) > MODELS_SHOWN else ""
                raise InvalidArgument(
                    f"{AGENT}.model: the model endpoint does not serve {spec.model!r}; it serves {shown}{more} "
                    "(or leave the model empty for the engine's default)"
                )
