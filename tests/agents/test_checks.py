"""What an agent may be: every refusal names its field as on the wire, and an update checks only the fields it
names."""

from typing import Any

import pytest

from agentplatform.agents.v1 import agents_pb2
from agentplatform.runs.v1 import runs_pb2
from services.agents import convert
from services.agents.checks import check_spec, check_update_mask, parse_agent_id
from services.agents.records import AGENT_FIELDS
from services.agents.settings import AgentsSettings
from services.common.errors import InvalidArgument
from tests.agents.helpers import INVALID_AGENTS

MAXIMUMS = AgentsSettings(_env_file=None)


def spec(**fields: Any) -> Any:
    return convert.spec_from_proto(agents_pb2.Agent(**{"display_name": "Helper", **fields}))


@pytest.mark.parametrize(("fields", "message"), [case[1:] for case in INVALID_AGENTS],
                         ids=[case[0] for case in INVALID_AGENTS])
def test_each_refusal_names_its_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_spec(spec(**fields), MAXIMUMS)
    assert str(exc.value).startswith(message)


def test_a_full_agent_at_the_edges_passes() -> None:
    check_spec(
        spec(
            display_name="x" * 200,
            description="d" * 2000,
            instructions="i" * 32_000,
            model="m" * 200,
            model_parameters=agents_pb2.ModelParameters(temperature=0, top_p=1, max_output_tokens=1_000_000),
            tools=[f"tool{i}" for i in range(64)],
            metadata={f"k{i}": "v" * 512 for i in range(16)},
        ),
        MAXIMUMS,
    )


def test_limits_are_checked_against_the_configured_maximums() -> None:
    lower = AgentsSettings(_env_file=None, ENGINE_MAX_TOOL_CALLS_LIMIT=5)
    agent = spec(limits=runs_pb2.RunLimits(max_tool_calls=6))
    check_spec(agent, MAXIMUMS)
    with pytest.raises(InvalidArgument, match=r"^agent\.limits\.max_tool_calls is 6; this platform allows at most 5"):
        check_spec(agent, lower)


def test_only_the_named_fields_are_checked() -> None:
    unnamed_bad = spec(display_name="", description="fine")
    check_spec(unnamed_bad, MAXIMUMS, ["description"])
    with pytest.raises(InvalidArgument, match=r"agent.display_name"):
        check_spec(unnamed_bad, MAXIMUMS, ["description", "display_name"])


def test_an_update_mask_names_known_fields() -> None:
    assert check_update_mask(["tools", "display_name", "tools"]) == ("display_name", "tools")
    assert check_update_mask(list(AGENT_FIELDS)) == AGENT_FIELDS
    with pytest.raises(InvalidArgument, match=r"^update_mask is required"):
        check_update_mask([])
    with pytest.raises(InvalidArgument, match=r"^update_mask names unknown field\(s\) 'id', 'owner'; use any of"):
        check_update_mask(["display_name", "owner", "id"])
    with pytest.raises(InvalidArgument, match=r"'limits.max_tool_calls'"):
        check_update_mask(["limits.max_tool_calls"])


def test_agent_ids_are_uuids() -> None:
    assert parse_agent_id("9AF127A1-F83D-4718-9C68-4255AC287F44") == "9af127a1-f83d-4718-9c68-4255ac287f44"
    with pytest.raises(InvalidArgument, match=r"^agent_id is required"):
        parse_agent_id("")
    with pytest.raises(InvalidArgument, match=r"^agent_id 'nope' is not a valid agent id"):
        parse_agent_id("nope")
