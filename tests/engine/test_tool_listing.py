"""The engine offers the model every enabled tool, however many pages ListTools takes (page_size 0 is the default
page of 50, as for every list method)."""

from pathlib import Path

from google.protobuf import struct_pb2

from agentplatform.engine.v1 import engine_pb2
from agentplatform.tools.v1 import tools_pb2
from services.common.pages import DEFAULT_PAGE_SIZE
from tests.support.platform import start_platform
from tests.support.scripted_llm import ScriptedLLM, text_reply


async def test_a_run_is_offered_every_enabled_tool_past_the_first_page(tmp_path: Path) -> None:
    count = DEFAULT_PAGE_SIZE + 10
    async with ScriptedLLM(text_reply("done")) as llm, start_platform(
        tmp_path, llm.base_url, tools_overrides={"TOOLS_HTTP_ALLOWED_HOSTS": "127.0.0.1"}
    ) as platform:
        parameters = struct_pb2.Struct()
        parameters.update({"type": "object", "properties": {}})
        for n in range(count):
            spec = tools_pb2.HttpToolSpec(
                name=f"lookup{n:03d}", url="http://127.0.0.1:9/lookup", method=tools_pb2.HTTP_METHOD_GET,
                description="Looks up.", parameters=parameters,
            )
            await platform.tools_stub.CreateTool(tools_pb2.CreateToolRequest(http=spec))
        first = await platform.tools_stub.ListTools(tools_pb2.ListToolsRequest(enabled_only=True))
        assert len(first.tools) == DEFAULT_PAGE_SIZE and first.next_page_token  # more than one page
        await platform.engine_stub.Chat(engine_pb2.ChatRequest(message="which tools?"))
    offered = {tool["function"]["name"] for tool in llm.requests[0]["tools"]}
    assert {f"http__lookup{n:03d}" for n in range(count)} <= offered
    assert "calculator" in offered
