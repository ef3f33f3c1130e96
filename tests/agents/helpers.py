"""Helpers of the agents tests: identities, agents to create, the invalid agents and what they are told."""

from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from sqlalchemy import text

from agentplatform.agents.v1 import agents_pb2
from agentplatform.runs.v1 import runs_pb2
from services.common.db.database import Database
from tests.support.keys import ADMIN, ALICE, AUTH, BOB, SERVICE_TOKEN, as_  # noqa: F401 (re-exported)

# The users, their keys and the service token every agents test shares.
TOKEN = SERVICE_TOKEN


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def drop_agents_schema(url: str) -> None:
    """Drop the agents and workflows tables and their Alembic version table, if there are any."""
    db = Database(url)
    try:
        async with db.engine.begin() as connection:
            for table in ("workflow_revisions", "workflows", "agent_revisions", "agents", "agents_alembic_version"):
                await connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
    finally:
        await db.dispose()


def agent(display_name: str = "Math tutor", **fields: Any) -> agents_pb2.Agent:
    """An Agent message as a client sends it; keyword arguments set any field."""
    return agents_pb2.Agent(display_name=display_name, **fields)


async def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    """The status code and details a call fails with."""
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    return exc.value.code(), exc.value.details() or ""


def _duration(seconds: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds)


#: (test id, fields of an otherwise valid agent, the start of what the refusal says). Every check names its field
#: as on the wire. The limits' maximums are the defaults (ENGINE_*_LIMIT).
INVALID_AGENTS: list[tuple[str, dict[str, Any], str]] = [
    ("no-display-name", {"display_name": ""}, "agent.display_name is required"),
    ("blank-display-name", {"display_name": "   "}, "agent.display_name is required"),
    ("long-display-name", {"display_name": "x" * 201}, "agent.display_name is 201 characters long; the limit is 200"),
    ("nul-display-name", {"display_name": "a\x00b"}, "agent.display_name contains a NUL character"),
    ("long-description", {"description": "d" * 2001}, "agent.description is 2001 characters long; the limit is 2000"),
    ("long-instructions", {"instructions": "i" * 32_001},
     "agent.instructions is 32001 characters long; the limit is 32000"),
    ("nul-instructions", {"instructions": "be\x00good"}, "agent.instructions contains a NUL character"),
    ("long-model", {"model": "m" * 201}, "agent.model is 201 characters long; the limit is 200"),
    ("hot-temperature", {"model_parameters": agents_pb2.ModelParameters(temperature=2.5)},
     "agent.model_parameters.temperature must be 0 to 2, got 2.5"),
    ("negative-temperature", {"model_parameters": agents_pb2.ModelParameters(temperature=-0.1)},
     "agent.model_parameters.temperature must be 0 to 2"),
    ("nan-temperature", {"model_parameters": agents_pb2.ModelParameters(temperature=float("nan"))},
     "agent.model_parameters.temperature must be 0 to 2"),
    ("zero-top-p", {"model_parameters": agents_pb2.ModelParameters(top_p=0)},
     "agent.model_parameters.top_p must be above 0 and at most 1"),
    ("big-top-p", {"model_parameters": agents_pb2.ModelParameters(top_p=1.5)},
     "agent.model_parameters.top_p must be above 0 and at most 1"),
    ("zero-output-tokens", {"model_parameters": agents_pb2.ModelParameters(max_output_tokens=0)},
     "agent.model_parameters.max_output_tokens must be 1 to 1,000,000, got 0"),
    ("many-output-tokens", {"model_parameters": agents_pb2.ModelParameters(max_output_tokens=1_000_001)},
     "agent.model_parameters.max_output_tokens must be 1 to 1,000,000"),
    ("65-tools", {"tools": [f"tool{i}" for i in range(65)]}, "agent.tools has 65 tools; an agent may have at most 64"),
    ("empty-tool", {"tools": ["calculator", ""]}, "agent.tools[1] is empty"),
    ("tool-twice", {"tools": ["calculator", "calculator"]}, "agent.tools[1]: tool 'calculator' is listed twice"),
    ("huge-tool-id", {"tools": ["t" * 65]}, "agent.tools[0]: unknown tool"),
    ("model-calls-above", {"limits": runs_pb2.RunLimits(max_model_calls=51)},
     "agent.limits.max_model_calls is 51; this platform allows at most 50"),
    ("negative-model-calls", {"limits": runs_pb2.RunLimits(max_model_calls=-1)},
     "agent.limits.max_model_calls must be positive"),
    ("duration-above", {"limits": runs_pb2.RunLimits(max_duration=_duration(3601))},
     "agent.limits.max_duration is 3,601 s; this platform allows at most 3,600 s"),
    ("negative-duration", {"limits": runs_pb2.RunLimits(max_duration=_duration(-5))},
     "agent.limits.max_duration must be positive"),
    ("tokens-above", {"limits": runs_pb2.RunLimits(max_total_tokens=2_000_001)},
     "agent.limits.max_total_tokens is 2,000,001; this platform allows at most 2,000,000"),
    ("tool-calls-above", {"limits": runs_pb2.RunLimits(max_tool_calls=501)},
     "agent.limits.max_tool_calls is 501; this platform allows at most 500"),
    ("17-labels", {"metadata": {f"k{i}": "v" for i in range(17)}}, "agent.metadata has 17 pairs; at most 16"),
    ("empty-label-key", {"metadata": {"": "v"}}, "agent.metadata keys must not be empty"),
    ("long-label-key", {"metadata": {"k" * 65: "v"}}, "agent.metadata key 'kkkk"),
    ("long-label-value", {"metadata": {"team": "v" * 513}},
     "agent.metadata['team'] is 513 characters long; the limit is 512"),
]
