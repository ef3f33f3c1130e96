"""Logs as a collector reads them (issue 19): every service of a real stack, at DEBUG with `LOG_FORMAT=json`, writes
one JSON object per line with time, level, service and message, the request id of the RPC it handles and the run
id of the run the engine executes; and no secret reaches any log over a whole run that uses them all: an API key, the
platform's service token, the model endpoint's key, an HTTP tool's header, an MCP server's environment."""

import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from agentplatform.tools.v1 import tools_pb2, tools_pb2_grpc
from tests.e2e.browser_page import ADMIN_KEY, api_key_entries
from tests.e2e.faults import explained, fault_stack
from tests.support.scripted_llm import ScriptedLLM, text_reply, tool_calls_reply
from tests.tools.http_endpoint import serving_endpoint
from tests.tools.http_tools.helpers import SECRET as HTTP_HEADER_SECRET
from tests.tools.http_tools.helpers import struct
from tests.tools.mcp_servers import ENV_SECRET, server_files

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SERVICE_TOKEN = "svc-token-log-check-91ac"
LLM_KEY = "sk-llm-key-log-check-4b7e"
SECRETS = (ADMIN_KEY, SERVICE_TOKEN, LLM_KEY, HTTP_HEADER_SECRET, "http-secret", ENV_SECRET)
SERVICES = ("runs", "tools", "agents", "engine")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of a service's log as the object it must be (a line that is not one fails here, quoted)."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"a log line that is not JSON: {line!r}") from None
        assert isinstance(record, dict), line
        records.append(record)
    return records


async def test_every_service_logs_json_lines_with_their_context_and_no_secret(tmp_path: Path) -> None:
    files = server_files(tmp_path / "mcp")
    async with serving_endpoint() as endpoint, ScriptedLLM() as llm:
        llm.script(
            tool_calls_reply(("http__lookup", {"city": "Oslo"}), ("mcp__logcheck__echo", {"text": "hello"})),
            text_reply("done"),
        )
        with fault_stack(
            tmp_path, LOG_FORMAT="json", LOG_LEVEL="DEBUG", AUTH_API_KEYS=api_key_entries(),
            PLATFORM_SERVICE_TOKEN=SERVICE_TOKEN, LLM_BASE_URL=llm.base_url, LLM_API_KEY=LLM_KEY,
            TOOLS_HTTP_ALLOWED_HOSTS="127.0.0.1", TOOLS_HTTP_SYNC_SECONDS=0.2, TOOLS_MCP_PING_SECONDS=0.2,
            ENGINE_TOOLS_CACHE_SECONDS=0,
        ) as stack, explained(stack, *SERVICES):
            key = (("authorization", f"Bearer {ADMIN_KEY}"),)
            async with grpc.aio.insecure_channel(stack.stack.tools_address) as channel:
                tools = tools_pb2_grpc.ToolServiceStub(channel)
                await tools.CreateTool(tools_pb2.CreateToolRequest(http=tools_pb2.HttpToolSpec(
                    name="lookup", description="Looks a city up.", url=endpoint.url("/echo"),
                    method=tools_pb2.HTTP_METHOD_POST, headers={"Authorization": HTTP_HEADER_SECRET},
                    parameters=struct({"type": "object", "properties": {"city": {"type": "string"}}}),
                )), metadata=key)
                await tools.CreateMcpServer(tools_pb2.CreateMcpServerRequest(mcp_server=tools_pb2.McpServer(
                    name="logcheck",
                    stdio=tools_pb2.McpStdioTransport(
                        command=sys.executable, args=[str(files.script), "stdio"], env=files.env()
                    ),
                )), metadata=key)
                await wait_for_tool(tools, "mcp__logcheck__echo", key)
            async with grpc.aio.insecure_channel(stack.stack.engine_address) as channel:
                reply = await engine_pb2_grpc.AgentServiceStub(channel).Chat(
                    engine_pb2.ChatRequest(message="Oslo?"), metadata=key
                )
            assert reply.response == "done"
            # Both tools were called with their secrets: the check below looks where they went.
            assert endpoint.received and endpoint.received[0].headers["authorization"] == HTTP_HEADER_SECRET
            assert files.seen() and files.seen()[0]["tool"] == "echo"
            run_id = reply.run_id

        logs = {name: stack.log(name) for name in SERVICES}
    for name, text in logs.items():
        for secret in SECRETS:
            assert secret not in text, f"the {name} log holds a secret ({secret[:8]}...)"
        records = json_lines(text)
        assert records, f"the {name} service logged nothing at DEBUG"
        for record in records:
            assert {"time", "level", "service", "logger", "message"} <= record.keys(), record
            assert record["service"] == name
            assert record["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
            datetime.fromisoformat(record["time"])
        # The lines of an RPC carry the request id the interceptor gave the call (the run calls no agents service).
        if name != "agents":
            assert any(record.get("request_id") for record in records), f"no {name} line names its request"
    engine = json_lines(logs["engine"])
    assert any(record.get("run_id") == run_id for record in engine), "no engine line names the run it executes"


async def wait_for_tool(tools: tools_pb2_grpc.ToolServiceStub, tool_id: str, key: Any) -> None:
    for _ in range(200):
        listed = await tools.ListTools(tools_pb2.ListToolsRequest(), metadata=key)
        if any(tool.id == tool_id for tool in listed.tools):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{tool_id} was never listed")
