"""MCP tools and repeated calls, over real gRPC against a real MCP server (mcp_test_server.py over stdio): whether a
tool may be repeated follows its annotations, and a keyed call's key reaches the server in the request's _meta."""

from agentplatform.tools.v1 import tools_pb2
from services.tools.mcp.connection import IDEMPOTENCY_META_KEY
from tests.tools.conftest import execute_request
from tests.tools.mcp_servers import ServerFiles
from tests.tools.mcp_sources.helpers import CONNECTED, Tools


async def test_annotations_decide_repeats_and_the_key_reaches_the_server_in_meta(
    tools: Tools, stdio_files: ServerFiles
) -> None:
    await tools.register_stdio("local", stdio_files)
    await tools.wait_for_state("local", CONNECTED)
    listed = await tools.tools()
    # readOnlyHint (add), idempotentHint alone (stamp), and no annotations at all: MCP's defaults (echo).
    assert listed["mcp__local__add"].repeat_safe
    stamp = await tools.stub.GetTool(tools_pb2.GetToolRequest(tool_id="mcp__local__stamp"))
    assert stamp.repeat_safe and stamp.hints.idempotent and not stamp.hints.read_only
    assert not listed["mcp__local__echo"].repeat_safe

    request = execute_request("mcp__local__stamp", text="hello")
    request.idempotency_key = "0b5f-run:3"
    await tools.stub.ExecuteTool(request)
    await tools.stub.ExecuteTool(request)  # the same call repeated
    await tools.stub.ExecuteTool(execute_request("mcp__local__stamp", text="unkeyed"))

    metas = [entry["meta"] for entry in stdio_files.seen()]
    assert [(meta or {}).get(IDEMPOTENCY_META_KEY) for meta in metas] == ["0b5f-run:3", "0b5f-run:3", None]
    assert IDEMPOTENCY_META_KEY == "agentplatform/idempotency_key"
