"""Running a saved agent: the engine reads it from a real agents service for the caller, and its revision decides
the system prompt, the model and its sampling, the tools offered and allowed, and the run's limits; the run
records which revision it ran with."""

from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2

from agentplatform.agents.v1 import agents_pb2
from agentplatform.engine.v1 import engine_pb2
from agentplatform.runs.v1 import runs_pb2
from tests.support.keys import ALICE, AUTH, BOB, as_
from tests.support.platform import Platform, start_platform
from tests.support.scripted_llm import ScriptedLLM, text_reply, tool_call_reply


def tutor() -> agents_pb2.Agent:
    agent = agents_pb2.Agent(
        display_name="Math tutor",
        instructions="You are a patient math tutor.",
        # What the scripted endpoint lists (the agents service checks it); the engine's own default is "scripted".
        model="demo",
        tools=["calculator"],
    )
    agent.model_parameters.temperature = 0.2
    agent.model_parameters.max_output_tokens = 300
    agent.limits.max_tool_calls = 3
    return agent


async def create(platform: Platform, agent: agents_pb2.Agent) -> agents_pb2.Agent:
    assert platform.agents_stub is not None
    return await platform.agents_stub.CreateAgent(agents_pb2.CreateAgentRequest(agent=agent), metadata=as_(ALICE))


async def chat(platform: Platform, key: str, **fields: object) -> list[runs_pb2.RunEvent]:
    request = engine_pb2.StreamChatRequest(message="What is 5 + 10?", **fields)
    return [event async for event in platform.engine_stub.StreamChat(request, metadata=as_(key))]


async def test_a_run_executes_as_the_agent_revision_it_names(tmp_path: Path) -> None:
    script = [tool_call_reply("calculator", {"operation": "add", "x": 5, "y": 10}), text_reply("15"), text_reply("ok")]
    async with ScriptedLLM(*script) as llm, start_platform(
        tmp_path, llm.base_url, auth=AUTH, with_agents=True
    ) as platform:
        assert platform.agents_stub is not None
        agent = await create(platform, tutor())

        events = await chat(platform, ALICE, agent_id=agent.id)
        final = events[-1].run
        assert final.state == runs_pb2.RUN_STATE_COMPLETED
        assert (final.agent_id, final.agent_revision, final.model) == (agent.id, 1, "demo")
        first = llm.requests[0]
        assert first["messages"][0] == {"role": "system", "content": "You are a patient math tutor."}
        assert (first["model"], first["temperature"], first["max_tokens"]) == ("demo", 0.2, 300)
        assert [tool["function"]["name"] for tool in first["tools"]] == ["calculator"]  # only the agent's tools
        assert final.limits.max_tool_calls == 3  # the agent's limit became the run's

        # An update is a new revision; a run may still ask for the old one.
        update = agents_pb2.UpdateAgentRequest(
            agent=agents_pb2.Agent(id=agent.id, instructions="Answer in one word."),
            update_mask=field_mask_pb2.FieldMask(paths=["instructions"]),
        )
        assert (await platform.agents_stub.UpdateAgent(update, metadata=as_(ALICE))).revision == 2
        old = await chat(platform, ALICE, agent_id=agent.id, agent_revision=1)
        assert old[-1].run.agent_revision == 1
        assert llm.requests[-1]["messages"][0]["content"] == "You are a patient math tutor."


async def test_another_users_agent_is_not_found_and_starts_nothing(tmp_path: Path) -> None:
    async with ScriptedLLM() as llm, start_platform(tmp_path, llm.base_url, auth=AUTH, with_agents=True) as platform:
        assert platform.agents_stub is not None
        agent = await create(platform, tutor())
        with pytest.raises(grpc.aio.AioRpcError) as hidden:
            await chat(platform, BOB, agent_id=agent.id)
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
        listed = await platform.runs_stub.ListRuns(runs_pb2.ListRunsRequest(), metadata=as_(BOB))
        assert list(listed.runs) == [] and llm.requests == []


async def test_a_request_may_lower_the_agents_limits_but_not_raise_them(tmp_path: Path) -> None:
    async with ScriptedLLM(text_reply("ok")) as llm, start_platform(
        tmp_path, llm.base_url, auth=AUTH, with_agents=True
    ) as platform:
        assert platform.agents_stub is not None
        agent = await create(platform, tutor())
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await chat(platform, ALICE, agent_id=agent.id, limits=runs_pb2.RunLimits(max_tool_calls=10))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "limits.max_tool_calls is 10" in (refused.value.details() or "")
        lowered = await chat(platform, ALICE, agent_id=agent.id, limits=runs_pb2.RunLimits(max_tool_calls=1))
        assert lowered[-1].run.limits.max_tool_calls == 1


async def test_a_tool_outside_the_agent_is_refused_to_the_model(tmp_path: Path) -> None:
    script = [tool_call_reply("web_search", {"query": "x"}), text_reply("I cannot search.")]
    async with ScriptedLLM(*script) as llm, start_platform(
        tmp_path, llm.base_url, auth=AUTH, with_agents=True
    ) as platform:
        assert platform.agents_stub is not None
        agent = await create(platform, tutor())
        events = await chat(platform, ALICE, agent_id=agent.id)
        results = [event.step.tool_result for event in events if event.HasField("step") and
                   event.step.HasField("tool_result")]
        assert [result.error for result in results] == ["tool 'web_search' is not one of this agent's tools"]
        assert events[-1].run.state == runs_pb2.RUN_STATE_COMPLETED
