"""Page tokens through the real services (runs, agents, tools on SQLite and PostgreSQL, real gRPC): forged,
truncated, re-signed, tampered, deeply nested and out-of-range tokens, and tokens used with other filters, are
INVALID_ARGUMENT saying what to do; a token from one replica is accepted by another with the same settings."""

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from agentplatform.agents.v1 import agents_pb2, agents_pb2_grpc, workflows_pb2, workflows_pb2_grpc
from agentplatform.runs.v1 import runs_pb2
from agentplatform.tools.v1 import tools_pb2
from bench.store.databases import fresh_postgres_database
from services.agents.app import start_agents
from services.common.identity import LOCAL_USER
from services.common.pages import PageTokens, PageTokenSettings
from services.runs.app import start_runs
from services.tools.app import start_tools
from tests.conftest import REPO_ROOT, free_port
from tests.runs.helpers import create_request
from tests.support.platform import agents_settings, runs_settings, tools_settings
from tests.support.processes import METRICS_ON_FREE_PORTS
from tests.support.stubs import runs_stubs, tools_stubs

KEY = "k" * 40
ENQUEUE = runs_pb2.MULTITASK_STRATEGY_ENQUEUE
REFUSAL = "page_token is not valid for this request: it is not a next_page_token that {} returned"


@dataclass
class Services:
    runs: Any
    tools: Any
    agents: agents_pb2_grpc.AgentRegistryServiceStub
    workflows: workflows_pb2_grpc.WorkflowRegistryServiceStub
    #: The codec the services sign with (the same settings), to make signed tokens with values out of range.
    tokens: PageTokens


@pytest.fixture(params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)])
async def services(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Services]:
    """Runs, tools and agents services with one PLATFORM_PAGE_TOKEN_KEY, on SQLite files or a fresh PostgreSQL
    database of their own."""
    async with AsyncExitStack() as stack:
        runs_env: dict[str, str] = {}
        agents_env: dict[str, str] = {}
        if request.param == "postgres":
            url = await stack.enter_async_context(fresh_postgres_database(request.getfixturevalue("postgres_url")))
            runs_env, agents_env = {"DATABASE_URL": url}, {"AGENTS_DATABASE_URL": url}
        key = {"PLATFORM_PAGE_TOKEN_KEY": KEY}
        runs = await start_runs(runs_settings(tmp_path, **key, **runs_env))
        stack.push_async_callback(runs.stop)
        tools = await start_tools(tools_settings(tmp_path, **key))
        stack.push_async_callback(tools.stop)
        agents = await start_agents(agents_settings(tmp_path, tools.port, **key, **agents_env, LLM_BASE_URL=""))
        stack.push_async_callback(agents.stop)
        channels = [
            await stack.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
            for port in (runs.port, tools.port, agents.port)
        ]
        yield Services(
            runs_stubs(channels[0]),
            tools_stubs(channels[1]),
            agents_pb2_grpc.AgentRegistryServiceStub(channels[2]),
            workflows_pb2_grpc.WorkflowRegistryServiceStub(channels[2]),
            PageTokens.from_settings(PageTokenSettings(_env_file=None, **key)),
        )


def _unsigned(value: object) -> str:
    """What the tokens were before they were signed: URL-safe base64 of JSON."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def _nested(depth: int = 100_000) -> str:
    return base64.urlsafe_b64encode(b"[" * depth + b"]" * depth).decode()


def _tampered(token: str) -> str:
    middle = len(token) // 2
    return token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1:]


def _resigned(token: str, listing: str, request: dict[str, object], position: dict[str, Any]) -> str:
    """The same position and request signed with another key: what someone without the key could make."""
    return PageTokens(b"another key of sixteen bytes or more").issue(listing, request, position)


async def _refused(call: Callable[[str], Awaitable[Any]], token: str, listing: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(token)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (token[:80], caught.value.details())
    assert caught.value.details().startswith(REFUSAL.format(listing)), caught.value.details()


async def _check_listing(
    tokens: PageTokens,
    call: Callable[[str], Awaitable[Any]],
    token: str,
    listing: str,
    request: dict[str, object],
    position: dict[str, Any],
    out_of_range: list[dict[str, Any]],
) -> None:
    """`token` (a real next_page_token) works; every bad variant of it is refused."""
    await call(token)
    bad = [
        _unsigned(position), _unsigned({**position, "turn": 10**30}), token[:-4], token[:-1], token + "AAAA",
        _tampered(token), _resigned(token, listing, request, position), _nested(), "", "not a token", "é" * 10_000,
    ]
    for variant in bad:
        if variant:
            await _refused(call, variant, listing)
    for values in out_of_range:
        # Signed with the services' own key: the position's values are checked after the signature.
        await _refused(call, tokens.issue(listing, request, values), listing)


async def test_bad_tokens_of_every_listing_are_invalid_argument(services: Services) -> None:
    runs, tools = services.runs, services.tools
    first = await runs.CreateRun(create_request("one"))
    await runs.CreateRun(create_request("two", thread_id=first.thread_id, multitask_strategy=ENQUEUE))
    await runs.CreateRun(create_request("three"))
    listed = await runs.ListRuns(runs_pb2.ListRunsRequest(page_size=1))
    run_position = {"created_at": "2026-01-01T00:00:00+00:00", "id": listed.runs[0].id}
    await _check_listing(
        services.tokens,
        lambda token: runs.ListRuns(runs_pb2.ListRunsRequest(page_size=1, page_token=token)),
        listed.next_page_token, "ListRuns", {"state": None, "owner": LOCAL_USER}, run_position,
        [
            {**run_position, "created_at": "0001-01-01T00:00:00+23:59"},  # before year 1 in UTC
            {**run_position, "created_at": "9999-12-31T23:59:59-23:59"},  # after year 9999 in UTC
            {**run_position, "created_at": "2026-01-01T00:00:00"},  # no offset
            {**run_position, "id": "not-a-uuid"},
            {"created_at": 10**30, "id": 10**30},
        ],
    )
    in_thread = await runs.ListRuns(runs_pb2.ListRunsRequest(page_size=1, thread_id=first.thread_id))
    # An admin's listing of a thread is of all its runs (owner None).
    thread_request = {"thread_id": first.thread_id, "state": None, "owner": None}
    await _check_listing(
        services.tokens,
        lambda token: runs.ListRuns(runs_pb2.ListRunsRequest(page_size=1, thread_id=first.thread_id, page_token=token)),
        in_thread.next_page_token, "ListRuns", thread_request, {"turn": 1},
        [{"turn": 10**30}, {"turn": -1}, {"turn": 2**31}, {"turn": "1"}, {"turn": True}, {}],
    )
    threads = await runs.ListThreads(runs_pb2.ListThreadsRequest(page_size=1))
    thread_position = {"updated_at": "2026-01-01T00:00:00+00:00", "id": first.thread_id}
    await _check_listing(
        services.tokens,
        lambda token: runs.ListThreads(runs_pb2.ListThreadsRequest(page_size=1, page_token=token)),
        threads.next_page_token, "ListThreads", {"owner": LOCAL_USER}, thread_position,
        [{**thread_position, "updated_at": "0001-01-01T00:00:00+14:00"}, {**thread_position, "id": ["x"] * 3}],
    )

    agents = services.agents
    agent = await agents.CreateAgent(agents_pb2.CreateAgentRequest(agent=agents_pb2.Agent(display_name="a", model="m")))
    await agents.CreateAgent(agents_pb2.CreateAgentRequest(agent=agents_pb2.Agent(display_name="b", model="m")))
    listed_agents = await agents.ListAgents(agents_pb2.ListAgentsRequest(page_size=1))
    await _check_listing(
        services.tokens,
        lambda token: agents.ListAgents(agents_pb2.ListAgentsRequest(page_size=1, page_token=token)),
        listed_agents.next_page_token, "ListAgents", {"owner": LOCAL_USER, "name_contains": ""},
        {"name": "a", "id": agent.id},
        [{"name": "a" * 10_000, "id": agent.id}, {"name": "a", "id": 10**30}, {"name": None, "id": agent.id}],
    )
    update = agents_pb2.UpdateAgentRequest(agent=agents_pb2.Agent(id=agent.id, display_name="c"))
    update.update_mask.paths.append("display_name")
    await agents.UpdateAgent(update)
    revisions = await agents.ListAgentRevisions(agents_pb2.ListAgentRevisionsRequest(agent_id=agent.id, page_size=1))
    await _check_listing(
        services.tokens,
        lambda token: agents.ListAgentRevisions(
            agents_pb2.ListAgentRevisionsRequest(agent_id=agent.id, page_size=1, page_token=token)
        ),
        revisions.next_page_token, "ListAgentRevisions", {"id": agent.id, "owner": LOCAL_USER}, {"before": 2},
        [{"before": 10**30}, {"before": -(10**30)}, {"before": 2**31}, {"before": 1.5}],
    )

    listed_tools = await tools.ListTools(tools_pb2.ListToolsRequest(page_size=1))
    await _check_listing(
        services.tokens,
        lambda token: tools.ListTools(tools_pb2.ListToolsRequest(page_size=1, page_token=token)),
        listed_tools.next_page_token, "ListTools", {"enabled_only": False}, {"after_id": "calculator"},
        [{"after_id": 10**30}, {"after_id": "x" * 100_000}],
    )
    await _refused(
        lambda token: tools.ListMcpServers(tools_pb2.ListMcpServersRequest(page_token=token)),
        _unsigned({"after_name": "a"}), "ListMcpServers",
    )


async def test_a_token_is_bound_to_the_listing_and_filters_that_made_it(services: Services) -> None:
    runs = services.runs
    first = await runs.CreateRun(create_request("one"))
    await runs.CreateRun(create_request("two", thread_id=first.thread_id, multitask_strategy=ENQUEUE))
    all_runs = (await runs.ListRuns(runs_pb2.ListRunsRequest(page_size=1))).next_page_token
    for filters in ({"state": runs_pb2.RUN_STATE_RUNNING}, {"all_users": True}, {"thread_id": first.thread_id}):
        await _refused(
            lambda token, filters=filters: runs.ListRuns(runs_pb2.ListRunsRequest(page_token=token, **filters)),
            all_runs, "ListRuns",
        )
    # A ListRuns token is no ListThreads token, though both are signed with the same key.
    await _refused(
        lambda token: runs.ListThreads(runs_pb2.ListThreadsRequest(page_token=token)), all_runs, "ListThreads"
    )
    listed = await services.tools.ListTools(tools_pb2.ListToolsRequest(page_size=1))
    await _refused(
        lambda token: services.tools.ListTools(tools_pb2.ListToolsRequest(page_token=token, enabled_only=True)),
        listed.next_page_token, "ListTools",
    )
    for name in ("a", "ab"):
        await services.agents.CreateAgent(
            agents_pb2.CreateAgentRequest(agent=agents_pb2.Agent(display_name=name, model="m"))
        )
    token = (await services.agents.ListAgents(agents_pb2.ListAgentsRequest(page_size=1))).next_page_token
    await _refused(
        lambda token: services.agents.ListAgents(agents_pb2.ListAgentsRequest(page_token=token, name_contains="a")),
        token, "ListAgents",
    )
    # An agents token is no workflows token (same service, same key).
    await _refused(
        lambda token: services.workflows.ListWorkflows(
            workflows_pb2.ListWorkflowsRequest(page_token=token)
        ),
        token, "ListWorkflows",
    )


# --- replicas -----------------------------------------------------------------------------------------------


def _start_runs_process(tmp_path: Path, port: int, database_url: str, **env: str) -> subprocess.Popen[bytes]:
    environment = {
        **{name: value for name, value in os.environ.items() if not name.startswith(("PLATFORM_", "AUTH_"))},
        "RUNS_HOST": "127.0.0.1",
        "RUNS_PORT": str(port),
        "DATABASE_URL": database_url,
        **METRICS_ON_FREE_PORTS,
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.runs"], cwd=tmp_path, env={**environment, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    "shared", [{"PLATFORM_PAGE_TOKEN_KEY": KEY}, {"PLATFORM_SERVICE_TOKEN": "s" * 40}], ids=["key", "service-token"]
)
@pytest.mark.postgres
async def test_a_token_from_one_replica_is_accepted_by_another(
    tmp_path: Path, shared: dict[str, str], postgres_url: str
) -> None:
    """Replicas on one PostgreSQL database (SQLite serves one replica)."""
    other = {"PLATFORM_PAGE_TOKEN_KEY": "o" * 40}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        stubs = []
        async with AsyncExitStack() as stack:
            for env in (shared, shared, other):
                port = free_port()
                processes.append(_start_runs_process(tmp_path, port, postgres_url, **env))
                channel = await stack.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
                await asyncio.wait_for(channel.channel_ready(), 30)
                stubs.append(runs_stubs(channel))
            for query in ("one", "two", "three"):
                await stubs[0].CreateRun(create_request(query))
            first = await stubs[0].ListRuns(runs_pb2.ListRunsRequest(page_size=1))
            second = await stubs[1].ListRuns(runs_pb2.ListRunsRequest(page_size=1, page_token=first.next_page_token))
            assert second.runs[0].id != first.runs[0].id and second.next_page_token
            third = await stubs[0].ListRuns(runs_pb2.ListRunsRequest(page_size=1, page_token=second.next_page_token))
            assert len({first.runs[0].id, second.runs[0].id, third.runs[0].id}) == 3
            # A replica with another key refuses them.
            await _refused(
                lambda token: stubs[2].ListRuns(runs_pb2.ListRunsRequest(page_size=1, page_token=token)),
                first.next_page_token, "ListRuns",
            )
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
