"""Which tool calls may be repeated when their outcome is unknown, as ListTools and GetTool show it (built-in tools,
plugin tools' class declarations), and the idempotency key a plugin tool finds in its context; over real gRPC
against a real tools service with its real worker processes. HTTP and MCP tools: http_tools/ and mcp_sources/."""

from pathlib import Path

import grpc
import pytest

from agentplatform.tools.v1 import tools_pb2
from services.tools.app import start_tools
from services.tools.executor import MAX_IDEMPOTENCY_KEY_LENGTH
from tests.support.stubs import tools_stubs
from tests.tools.conftest import SettingsFactory, execute_request, write_plugin

KEYED_TOOLS = """
    from services.tools.base import BaseTool, ToolHints


    class KeyTeller(BaseTool):
        name = "key_teller"
        display_name = "Key teller"
        description = "Says the idempotency key of its call."
        hints = ToolHints(read_only=False, destructive=False, idempotent=True, open_world=False)
        parameters = {"type": "object", "properties": {}, "additionalProperties": False}

        async def run(self, arguments, context):
            return context.idempotency_key


    class Undeclared(BaseTool):
        name = "undeclared"
        display_name = "Undeclared"
        description = "Declares nothing about what it does."
        parameters = {"type": "object", "properties": {}, "additionalProperties": False}

        def execute(self):
            return "done"
"""


async def test_tools_declare_which_calls_may_be_repeated_and_a_plugin_tool_gets_its_calls_key(
    make_settings: SettingsFactory, plugin_dir: Path
) -> None:
    write_plugin(plugin_dir, "keyed_tools.py", KEYED_TOOLS)
    app = await start_tools(make_settings())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    try:
        stub = tools_stubs(channel)
        listed = {tool.id: tool for tool in (await stub.ListTools(tools_pb2.ListToolsRequest())).tools}
        # Built in: calculator and web_search only read; file_io is safe for some operations only.
        assert listed["calculator"].repeat_safe and listed["web_search"].repeat_safe
        file_io = listed["file_io"]
        assert not file_io.repeat_safe and file_io.HasField("repeat_safe_calls")
        assert file_io.repeat_safe_calls.argument == "operation"
        assert list(file_io.repeat_safe_calls.values) == ["list", "read", "write"]
        assert not listed["calculator"].HasField("repeat_safe_calls")
        # Plugin tools: what their class declares, and the safe answer (not safe) when it declares nothing.
        assert listed["key_teller"].repeat_safe and listed["key_teller"].hints.idempotent
        assert not listed["undeclared"].repeat_safe and not listed["undeclared"].HasField("repeat_safe_calls")
        shown = await stub.GetTool(tools_pb2.GetToolRequest(tool_id="file_io"))
        assert shown.repeat_safe_calls == file_io.repeat_safe_calls

        # The key reaches the tool's context, the same on a repeat; the model's arguments never carry it.
        request = execute_request("key_teller")
        request.idempotency_key = "run-7f3a:4"
        first = await stub.ExecuteTool(request)
        again = await stub.ExecuteTool(request)
        assert first.text == again.text == "run-7f3a:4"
        assert (await stub.ExecuteTool(execute_request("key_teller"))).text == ""

        # A key that cannot travel as a header value is the caller's mistake.
        for bad in ("run 1:4", "run-1:\n4", "é:1", "k" * (MAX_IDEMPOTENCY_KEY_LENGTH + 1)):
            request.idempotency_key = bad
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ExecuteTool(request)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "idempotency_key" in (refused.value.details() or "")
    finally:
        await channel.close()
        await app.stop()
