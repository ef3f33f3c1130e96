"""What a run executes as: a saved agent's revision (from the agents service), or the built-in default agent
(no gRPC here; services.engine.clients.AgentsClient converts the agents service's answer into this)."""

from dataclasses import dataclass, field

from services.common import errors
from services.common.limits import RunLimits


@dataclass(frozen=True)
class AgentProfile:
    """A saved agent as a run uses it. Empty or None fields fall back to the engine's own settings."""

    #: "" for the built-in default agent.
    agent_id: str = ""
    revision: int = 0
    #: The system prompt; "" for the engine's (ENGINE_SYSTEM_PROMPT).
    instructions: str = ""
    #: "" for the engine's default model (LLM_MODEL).
    model: str = ""
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    #: The tools the agent may call; None for every enabled tool (the built-in default agent).
    tools: tuple[str, ...] | None = None
    #: The agent's limits: a run's defaults, which its request may lower but not raise.
    limits: RunLimits = field(default_factory=RunLimits)

    def offers(self, tool: str) -> bool:
        return self.tools is None or tool in self.tools


#: The agent a run without `agent_id` executes as: today's behaviour, every enabled tool.
DEFAULT_AGENT = AgentProfile()


def within_agent(requested: RunLimits, agent: AgentProfile) -> RunLimits:
    """The request's limits under the agent's: each field the request sets must not exceed the agent's; a field
    the request leaves unset takes the agent's."""
    resolved = {}
    for name in ("max_model_calls", "max_duration_seconds", "max_total_tokens", "max_tool_calls"):
        asked, allowed = getattr(requested, name), getattr(agent.limits, name)
        if asked is not None and allowed is not None and asked > allowed:
            wire = name.removesuffix("_seconds")
            raise errors.InvalidArgument(
                f"limits.{wire} is {asked:g}; agent {agent.agent_id} (revision {agent.revision}) allows at most "
                f"{allowed:g}"
            )
        resolved[name] = asked if asked is not None else allowed
    return RunLimits(**resolved)
