"""The stack starting up: a run the engine takes before the tools service is listening waits for it (within
the call deadline) instead of failing at once."""

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from services.engine.app import start_engine
from services.runs.app import start_runs
from services.tools.app import start_tools
from tests.conftest import free_port
from tests.support.platform import engine_settings, grpc_channel, runs_settings, tools_settings
from tests.support.scripted_llm import ScriptedLLM, text_reply, tool_call_reply


async def test_a_run_started_before_the_tools_service_is_up_waits_for_it(tmp_path: Path) -> None:
    script = [tool_call_reply("calculator", {"operation": "add", "x": 5, "y": 10}), text_reply("15")]
    tools_port = free_port()
    async with ScriptedLLM(*script) as llm, AsyncExitStack() as stack:
        runs = await start_runs(runs_settings(tmp_path))
        stack.push_async_callback(runs.stop)
        engine = await start_engine(engine_settings(runs.port, tools_port, llm.base_url))
        stack.push_async_callback(engine.stop)
        channel = await stack.enter_async_context(grpc_channel(engine.port))
        chat = asyncio.ensure_future(
            engine_pb2_grpc.AgentServiceStub(channel).Chat(engine_pb2.ChatRequest(message="What is 5 + 10?"))
        )
        await asyncio.sleep(1.0)  # the run is waiting for the tools service, which is not listening yet
        assert not chat.done()
        tools = await start_tools(tools_settings(tmp_path, TOOLS_PORT=tools_port))
        stack.push_async_callback(tools.stop)
        answer = await asyncio.wait_for(chat, 20)
        assert answer.response == "15"
        assert len(llm.requests) == 2 and llm.requests[0]["tools"]  # the tools were offered
