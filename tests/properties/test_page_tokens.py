"""Property: whatever a client sends as page_token to any List method of the real services (random text, random
bytes in base64, JSON of any shape in base64, a real token altered), the answer is OK or INVALID_ARGUMENT, promptly,
never INTERNAL."""

import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentplatform.agents.v1 import agents_pb2, agents_pb2_grpc, workflows_pb2, workflows_pb2_grpc
from agentplatform.runs.v1 import runs_pb2
from agentplatform.tools.v1 import tools_pb2
from tests.runs.helpers import create_request
from tests.support.platform import start_registries
from tests.support.stubs import runs_stubs, tools_stubs

#: Each call must be answered within this (a token is checked before any query runs).
PROMPTLY = 5.0
ANY_ID = "00000000-0000-4000-8000-000000000000"

Call = Callable[[str], Any]


@pytest.fixture
async def list_calls(tmp_path: Path) -> AsyncIterator[dict[str, Call]]:
    """Every List method of the platform's public APIs, as a function of the page_token."""
    async with start_registries(tmp_path) as services:
        run_stub, tool_stub = runs_stubs(services.runs_channel), tools_stubs(services.tools_channel)
        agent_stub = agents_pb2_grpc.AgentRegistryServiceStub(services.agents_channel)
        workflow_stub = workflows_pb2_grpc.WorkflowRegistryServiceStub(services.agents_channel)
        run = await run_stub.CreateRun(create_request("q"))
        agent = await agent_stub.CreateAgent(
            agents_pb2.CreateAgentRequest(agent=agents_pb2.Agent(display_name="a", model="m"))
        )
        yield {
            "ListRuns": lambda token: run_stub.ListRuns(runs_pb2.ListRunsRequest(page_token=token), timeout=PROMPTLY),
            "ListRuns(thread)": lambda token: run_stub.ListRuns(
                runs_pb2.ListRunsRequest(page_token=token, thread_id=run.thread_id), timeout=PROMPTLY
            ),
            "ListThreads": lambda token: run_stub.ListThreads(
                runs_pb2.ListThreadsRequest(page_token=token), timeout=PROMPTLY
            ),
            "ListAgents": lambda token: agent_stub.ListAgents(
                agents_pb2.ListAgentsRequest(page_token=token), timeout=PROMPTLY
            ),
            "ListAgentRevisions": lambda token: agent_stub.ListAgentRevisions(
                agents_pb2.ListAgentRevisionsRequest(agent_id=agent.id, page_token=token), timeout=PROMPTLY
            ),
            "ListWorkflows": lambda token: workflow_stub.ListWorkflows(
                workflows_pb2.ListWorkflowsRequest(page_token=token), timeout=PROMPTLY
            ),
            "ListWorkflowRevisions": lambda token: workflow_stub.ListWorkflowRevisions(
                workflows_pb2.ListWorkflowRevisionsRequest(workflow_id=ANY_ID, page_token=token), timeout=PROMPTLY
            ),
            "ListTools": lambda token: tool_stub.ListTools(
                tools_pb2.ListToolsRequest(page_token=token), timeout=PROMPTLY
            ),
            "ListMcpServers": lambda token: tool_stub.ListMcpServers(
                tools_pb2.ListMcpServersRequest(page_token=token), timeout=PROMPTLY
            ),
        }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
_positions = st.fixed_dictionaries(
    {},
    optional={
        name: st.integers() | st.text(max_size=40) | st.sampled_from(["9999-12-31T23:59:59-23:59", ANY_ID])
        for name in ("created_at", "updated_at", "id", "turn", "before", "name", "after_id", "after_name", "state")
    },
)
#: A proto string is UTF-8: no lone surrogates (the client could not even send them).
_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=300)
tokens = st.one_of(
    _text,
    st.binary(max_size=300).map(_b64),
    _json.map(lambda value: _b64(json.dumps(value).encode())),
    _positions.map(lambda value: _b64(json.dumps(value).encode())),
    st.integers(1, 5000).map(lambda depth: _b64(b"[" * depth + b"]" * depth)),
    st.binary(min_size=32, max_size=32).flatmap(
        lambda mac: _positions.map(lambda value: _b64(mac + json.dumps(value).encode()))
    ),
)


@given(token=tokens.filter(bool))  # "" is the first page, not a token
async def test_any_page_token_is_ok_or_invalid_argument(list_calls: dict[str, Call], token: str) -> None:
    for name, call in list_calls.items():
        try:
            await call(token)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, token[:100], error.details())
            assert error.details().startswith("page_token is not valid"), (name, error.details())
