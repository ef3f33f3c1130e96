"""End to end: the seed's example through Envoy as grpc-web, against the stack started as `make run` does."""

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from agentplatform.engine.v1 import engine_pb2
from agentplatform.runs.v1 import runs_pb2
from tests.e2e.conftest import RunningStack, wait_ready
from tests.support import grpc_web
from tests.support.seed import SEED_QUESTION, SEED_TIMELINE, timeline

pytestmark = pytest.mark.e2e

STREAM_CHAT = "agentplatform.engine.v1.AgentService/StreamChat"
GET_RUN = "agentplatform.runs.v1.RunService/GetRun"
LIST_RUNS = "agentplatform.runs.v1.RunService/ListRuns"
REPO_ROOT = Path(__file__).resolve().parents[2]
BUF = REPO_ROOT / "node_modules" / ".bin" / "buf"


async def get_run(stack: RunningStack, client: httpx.AsyncClient, run_id: str) -> runs_pb2.Run:
    return await grpc_web.unary(client, stack.url(GET_RUN), runs_pb2.GetRunRequest(run_id=run_id), runs_pb2.Run)


async def test_seed_example_streams_live_through_envoy_and_survives_a_runs_restart(
    platform_stack: RunningStack,
) -> None:
    stack = platform_stack
    async with httpx.AsyncClient(timeout=30) as client:
        events: list[runs_pb2.RunEvent] = []
        state_while_streaming: list[int] = []
        async for event in grpc_web.stream(
            client, stack.url(STREAM_CHAT), engine_pb2.StreamChatRequest(message=SEED_QUESTION),
            runs_pb2.RunEvent, origin="http://localhost:5173",
        ):
            events.append(event)
            if event.step.WhichOneof("content") == "tool_result":
                # A second client looks at the run while the stream is still delivering it.
                state_while_streaming.append((await get_run(stack, client, events[0].run.id)).state)

        run_id = events[0].run.id
        assert events[0].run.state == runs_pb2.RUN_STATE_RUNNING
        assert events[-1].run.state == runs_pb2.RUN_STATE_COMPLETED
        assert state_while_streaming == [runs_pb2.RUN_STATE_RUNNING] * 2, "steps must arrive while the run runs"

        steps = [event.step for event in events if event.WhichOneof("event") == "step"]
        assert timeline(steps) == SEED_TIMELINE
        assert "45" in steps[-1].agent_response.text
        assert [step.sequence for step in steps] == list(range(1, len(steps) + 1))

        stored = await get_run(stack, client, run_id)
        assert list(stored.steps) == steps
        listed = await grpc_web.unary(client, stack.url(LIST_RUNS), runs_pb2.ListRunsRequest(),
                                      runs_pb2.ListRunsResponse)
        assert [(run.id, run.state) for run in listed.runs] == [(run_id, runs_pb2.RUN_STATE_COMPLETED)]

        # Restart the runs service: graceful on SIGTERM, and everything is still there afterwards.
        assert stack.stop("runs") == 0
        stack.start(stack.spec("runs"))
        wait_ready(stack, ["runs", "gateway"])
        after_restart = await get_run(stack, client, run_id)
        assert list(after_restart.steps) == steps
        assert after_restart.state == runs_pb2.RUN_STATE_COMPLETED
        listed = await grpc_web.unary(client, stack.url(LIST_RUNS), runs_pb2.ListRunsRequest(),
                                      runs_pb2.ListRunsResponse)
        assert [(run.id, run.state) for run in listed.runs] == [(run_id, runs_pb2.RUN_STATE_COMPLETED)]


async def test_errors_reach_grpc_web_clients_with_their_status(platform_stack: RunningStack) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        with pytest.raises(grpc_web.GrpcWebError) as failure:
            await get_run(platform_stack, client, "00000000-0000-4000-8000-000000000000")
        assert failure.value.status == 5  # NOT_FOUND
        assert "not found" in failure.value.message
        with pytest.raises(grpc_web.GrpcWebError) as failure:
            [e async for e in grpc_web.stream(client, platform_stack.url(STREAM_CHAT),
                                              engine_pb2.StreamChatRequest(message=" "),
                                              runs_pb2.RunEvent)]
        assert failure.value.status == 3  # INVALID_ARGUMENT
        assert "message is required" in failure.value.message


@pytest.mark.parametrize(("origin", "allowed"), [("http://localhost:5173", True), ("http://localhost:3000", True),
                                                 ("https://evil.example", False)])
def test_cors_allows_exactly_the_configured_origins(platform_stack: RunningStack, origin: str, allowed: bool) -> None:
    response = httpx.options(
        platform_stack.url(STREAM_CHAT),
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-grpc-web,x-user-agent",
        },
    )
    if allowed:
        assert response.headers["access-control-allow-origin"] == origin
        exposed = response.headers["access-control-expose-headers"]
        assert "grpc-status" in exposed and "grpc-message" in exposed
    else:
        assert "access-control-allow-origin" not in response.headers


def buf_curl(*args: str) -> str:
    result = subprocess.run([str(BUF), "curl", *args], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_buf_curl_direct_grpc_with_reflection(platform_stack: RunningStack) -> None:
    """What the README shows: no proto files needed, the services describe themselves."""
    out = buf_curl("--protocol", "grpc", "--http2-prior-knowledge", "-d", "{}",
                   f"http://{platform_stack.stack.tools_address}/agentplatform.tools.v1.ToolService/ListTools")
    ids = [tool["id"] for tool in json.loads(out)["tools"]]
    assert {"calculator", "file_io", "web_search"} <= set(ids)


def test_buf_curl_grpc_web_stream_through_envoy(platform_stack: RunningStack) -> None:
    out = buf_curl("--protocol", "grpcweb", "--schema", "protos", "-d", json.dumps({"message": "add 2 and 3"}),
                   platform_stack.url(STREAM_CHAT))
    # buf curl prints one JSON object per streamed message.
    decoder, events, text = json.JSONDecoder(), [], out.strip()
    while text:
        event, end = decoder.raw_decode(text)
        events.append(event)
        text = text[end:].strip()
    assert events[0]["run"]["state"] == "RUN_STATE_RUNNING"
    assert events[-1]["run"]["state"] == "RUN_STATE_COMPLETED"
    results = [e["step"]["toolResult"] for e in events if "toolResult" in e.get("step", {})]
    assert results[0]["result"] == 5


def test_every_process_stops_cleanly_on_sigterm(platform_stack: RunningStack) -> None:
    """Runs last in this module: graceful shutdown of each service (exit code 0 on SIGTERM)."""
    time.sleep(0.2)
    codes = {name: platform_stack.stop(name) for name in list(platform_stack.processes)}
    assert codes == {name: 0 for name in codes}
