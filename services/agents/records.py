"""The agents service's domain types: what callers hand the store and what it hands back (no gRPC, no ORM)."""

from dataclasses import dataclass, field
from datetime import datetime

from services.common.limits import RunLimits

#: The fields of an agent a client sets, by their names on the wire (and in `AgentSpec`); the paths an
#: UpdateAgent's update_mask may name.
AGENT_FIELDS = (
    "display_name",
    "description",
    "instructions",
    "model",
    "model_parameters",
    "tools",
    "limits",
    "metadata",
)


@dataclass(frozen=True)
class ModelParameters:
    """How the model samples; None leaves the endpoint's default."""

    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None


@dataclass(frozen=True)
class AgentSpec:
    """What a client says an agent is: the content of one revision."""

    display_name: str
    description: str = ""
    #: The system prompt; "" for the engine's default.
    instructions: str = ""
    #: "" for the engine's default model.
    model: str = ""
    model_parameters: ModelParameters = field(default_factory=ModelParameters)
    #: Tool ids, in the order given.
    tools: tuple[str, ...] = ()
    limits: RunLimits = field(default_factory=RunLimits)
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentRecord:
    """A stored agent as of one revision."""

    id: str
    revision: int
    owner: str
    #: When revision 1 was made.
    created_at: datetime
    #: When this revision was made.
    revision_created_at: datetime
    spec: AgentSpec
