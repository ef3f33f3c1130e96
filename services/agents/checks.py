"""What the agents service accepts: every field of an agent, checked before anything reaches the database.

Each check raises InvalidArgument with a message naming the field as on the wire (`agent.tools[1]`,
`agent.model_parameters.temperature`), and runs before the database sees the value, so SQLite and PostgreSQL
give the same answer. The references an agent makes outside this service (its tools, its model) are checked by
`services.agents.registry`.

`check_text` and `check_metadata` are this service's own copies of the runs service's (services/runs/checks.py),
with the field's name given by the caller: importing those would pull in the runs service's tables.
"""

from collections.abc import Iterable, Sequence

from services.agents.models import MAX_DISPLAY_NAME_CHARS, MAX_MODEL_CHARS
from services.agents.records import AGENT_FIELDS, AgentSpec
from services.common.checks import check_metadata, check_text, parse_uuid
from services.common.errors import InvalidArgument
from services.common.limits import RunLimitMaximums, check_within

MAX_DESCRIPTION_CHARS = 2_000
MAX_INSTRUCTIONS_CHARS = 32_000
MAX_TOOLS = 64
#: Tool ids are at most this long in the tools service (its settings table's key).
MAX_TOOL_ID_CHARS = 64
MAX_OUTPUT_TOKENS = 1_000_000
MAX_TEMPERATURE = 2.0
#: The field the request carries the agent in: every message names fields under it.
AGENT = "agent"


def parse_agent_id(agent_id: str, field: str = "agent_id") -> str:
    """The canonical form of an agent id (a UUID); InvalidArgument when it is empty or not a UUID."""
    return parse_uuid(agent_id, field, "agent")


def check_revision(revision: int) -> None:
    if revision < 0:
        raise InvalidArgument(f"revision must be 0 (the latest) or a revision number, got {revision}")


def check_update_mask(paths: Sequence[str]) -> tuple[str, ...]:
    """The fields an update_mask names, in AGENT_FIELDS order; InvalidArgument for no path or unknown ones."""
    if not paths:
        raise InvalidArgument(f"update_mask is required: name the fields to change, any of {', '.join(AGENT_FIELDS)}")
    unknown = sorted({path for path in paths if path not in AGENT_FIELDS})
    if unknown:
        names = ", ".join(repr(path[:100]) for path in unknown)
        raise InvalidArgument(f"update_mask names unknown field(s) {names}; use any of {', '.join(AGENT_FIELDS)}")
    return tuple(field for field in AGENT_FIELDS if field in paths)


def check_spec(spec: AgentSpec, maximums: RunLimitMaximums, fields: Iterable[str] = AGENT_FIELDS) -> None:
    """Check `fields` of `spec` (all of them for a create; the ones an update names for an update: the others
    were checked when they were stored)."""
    for field in fields:
        _CHECKS[field](spec, maximums)


def _display_name(spec: AgentSpec, _: RunLimitMaximums) -> None:
    check_text(f"{AGENT}.display_name", spec.display_name, MAX_DISPLAY_NAME_CHARS, required=True)


def _description(spec: AgentSpec, _: RunLimitMaximums) -> None:
    check_text(f"{AGENT}.description", spec.description, MAX_DESCRIPTION_CHARS)


def _instructions(spec: AgentSpec, _: RunLimitMaximums) -> None:
    check_text(f"{AGENT}.instructions", spec.instructions, MAX_INSTRUCTIONS_CHARS)


def _model(spec: AgentSpec, _: RunLimitMaximums) -> None:
    check_text(f"{AGENT}.model", spec.model, MAX_MODEL_CHARS)


def _model_parameters(spec: AgentSpec, _: RunLimitMaximums) -> None:
    field = f"{AGENT}.model_parameters"
    parameters = spec.model_parameters
    # `not a <= x <= b` also refuses NaN, which compares false with everything.
    if parameters.temperature is not None and not 0 <= parameters.temperature <= MAX_TEMPERATURE:
        raise InvalidArgument(f"{field}.temperature must be 0 to {MAX_TEMPERATURE:g}, got {parameters.temperature:g}")
    if parameters.top_p is not None and not 0 < parameters.top_p <= 1:
        raise InvalidArgument(f"{field}.top_p must be above 0 and at most 1, got {parameters.top_p:g}")
    tokens = parameters.max_output_tokens
    if tokens is not None and not 1 <= tokens <= MAX_OUTPUT_TOKENS:
        raise InvalidArgument(f"{field}.max_output_tokens must be 1 to {MAX_OUTPUT_TOKENS:,}, got {tokens}")


def _tools(spec: AgentSpec, _: RunLimitMaximums) -> None:
    if len(spec.tools) > MAX_TOOLS:
        raise InvalidArgument(f"{AGENT}.tools has {len(spec.tools)} tools; an agent may have at most {MAX_TOOLS}")
    seen: set[str] = set()
    for index, tool in enumerate(spec.tools):
        field = f"{AGENT}.tools[{index}]"
        if not tool:
            raise InvalidArgument(f"{field} is empty; name a tool by its id (ListTools shows them)")
        if len(tool) > MAX_TOOL_ID_CHARS or "\x00" in tool:
            raise InvalidArgument(f"{field}: unknown tool {tool[:MAX_TOOL_ID_CHARS]!r}")
        if tool in seen:
            raise InvalidArgument(f"{field}: tool {tool!r} is listed twice")
        seen.add(tool)


def _limits(spec: AgentSpec, maximums: RunLimitMaximums) -> None:
    check_within(spec.limits, maximums, prefix=f"{AGENT}.limits")


def _metadata(spec: AgentSpec, _: RunLimitMaximums) -> None:
    check_metadata(spec.metadata, f"{AGENT}.metadata")


_CHECKS = {
    "display_name": _display_name,
    "description": _description,
    "instructions": _instructions,
    "model": _model,
    "model_parameters": _model_parameters,
    "tools": _tools,
    "limits": _limits,
    "metadata": _metadata,
}
assert tuple(_CHECKS) == AGENT_FIELDS
