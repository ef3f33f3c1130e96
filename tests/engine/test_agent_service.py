"""The engine over real gRPC, with real runs and tools services, and the real openai SDK speaking HTTP to a
scripted OpenAI-compatible server."""

import asyncio
import socket
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2

from agentplatform.engine.v1 import engine_pb2
from agentplatform.runs.v1 import runs_pb2
from agentplatform.tools.v1 import tools_pb2
from services.common.rpc.protoconv import dict_from_struct, python_from_value
from tests.support.platform import Platform, start_platform
from tests.support.scripted_llm import HttpError, ScriptedLLM, text_reply, tool_call_reply
from tests.support.seed import SEED_QUESTION


def kinds(steps: list[runs_pb2.Step]) -> list[str]:
    return [step.WhichOneof("content") for step in steps]


async def stream_chat(platform: Platform, message: str, **fields: str) -> list[runs_pb2.RunEvent]:
    call = platform.engine_stub.StreamChat(engine_pb2.StreamChatRequest(message=message, **fields))
    return [event async for event in call]


def steps_of(events: list[runs_pb2.RunEvent]) -> list[runs_pb2.Step]:
    return [event.step for event in events if event.WhichOneof("event") == "step"]


async def get_run(platform: Platform, run_id: str) -> runs_pb2.Run:
    return await platform.runs_stub.GetRun(runs_pb2.GetRunRequest(run_id=run_id))


def seed_script() -> list:
    return [
        tool_call_reply("calculator", {"operation": "add", "x": 5, "y": 10},
                        content="First, I need to add 5 and 10."),
        tool_call_reply("calculator", {"operation": "multiply", "x": 15, "y": 3},
                        content="Got 15. Now I need to multiply it by 3."),
        text_reply("The result is 45."),
    ]


async def test_seed_example_records_and_streams_every_step_in_order(tmp_path: Path) -> None:
    async with ScriptedLLM(*seed_script()) as llm, start_platform(tmp_path, llm.base_url) as platform:
        events = await stream_chat(platform, SEED_QUESTION)

        assert events[0].WhichOneof("event") == "run"
        assert events[0].run.state == runs_pb2.RUN_STATE_RUNNING
        run_id = events[0].run.id
        final = events[-1]
        assert final.WhichOneof("event") == "run"
        assert final.run.state == runs_pb2.RUN_STATE_COMPLETED

        steps = steps_of(events)
        assert kinds(steps) == [
            "user_request", "agent_thought", "tool_call", "tool_result",
            "agent_thought", "tool_call", "tool_result", "agent_response",
        ]
        assert [s.sequence for s in steps] == list(range(1, 9))
        assert steps[0].user_request.text == SEED_QUESTION
        assert steps[1].agent_thought.text == "First, I need to add 5 and 10."
        assert steps[2].tool_call.tool_name == "calculator"
        assert dict_from_struct(steps[2].tool_call.params) == {"operation": "add", "x": 5, "y": 10}
        assert python_from_value(steps[3].tool_result.result) == 15
        assert steps[3].tool_result.text == "5 + 10 = 15"
        assert steps[3].tool_result.tool_call_id == steps[2].tool_call.tool_call_id
        assert steps[3].HasField("duration")
        assert python_from_value(steps[6].tool_result.result) == 45
        assert steps[7].agent_response.text == "The result is 45."

        # The model got the tools' answers back as tool messages, and was offered the enabled tools.
        assert llm.requests[1]["messages"][-1] == {
            "role": "tool", "tool_call_id": steps[2].tool_call.tool_call_id, "content": "5 + 10 = 15",
        }
        offered = {tool["function"]["name"] for tool in llm.requests[0]["tools"]}
        assert {"calculator", "file_io", "web_search"} <= offered

        stored = await get_run(platform, run_id)
        assert list(stored.steps) == steps
        assert stored.state == runs_pb2.RUN_STATE_COMPLETED
        assert stored.model == "scripted"
        assert stored.usage.total_tokens > 0
        assert stored.usage.total_tokens == stored.usage.prompt_tokens + stored.usage.completion_tokens


async def test_text_deltas_stream_before_the_response_step(tmp_path: Path) -> None:
    answer = "Paris is the capital of France, and it is lovely in spring."
    # Paced like a real model: pieces that arrive together are sent on as one delta (executor_link.coalesced).
    paced = ScriptedLLM(text_reply(answer), chunk_delay_seconds=0.01)
    async with paced as llm, start_platform(tmp_path, llm.base_url) as platform:
        events = await stream_chat(platform, "What is the capital of France?")

    names = [event.WhichOneof("event") for event in events]
    deltas = [event.delta.text for event in events if event.WhichOneof("event") == "delta"]
    assert len(deltas) > 3, "the answer should arrive in pieces while the model writes"
    assert "".join(deltas) == answer
    response_index = next(i for i, e in enumerate(events) if e.step.WhichOneof("content") == "agent_response")
    assert names.index("delta") < response_index
    assert events[response_index].step.agent_response.text == answer
    assert llm.requests[0]["stream"] is True


async def test_chat_returns_the_answer_and_the_run_id(tmp_path: Path) -> None:
    async with ScriptedLLM(*seed_script()) as llm, start_platform(tmp_path, llm.base_url) as platform:
        response = await platform.engine_stub.Chat(engine_pb2.ChatRequest(message=SEED_QUESTION, model="other-model"))
        assert response.response == "The result is 45."
        stored = await get_run(platform, response.run_id)
        assert stored.state == runs_pb2.RUN_STATE_COMPLETED
        assert stored.model == "other-model"
        assert llm.requests[0]["model"] == "other-model"


async def test_a_retried_chat_answers_from_the_first_run(tmp_path: Path) -> None:
    # The retry arrives after the first run ended, so it is answered from the store, not re-executed.
    async with ScriptedLLM(*seed_script()) as llm, start_platform(tmp_path, llm.base_url) as platform:
        request = engine_pb2.ChatRequest(message=SEED_QUESTION, request_id=str(uuid.uuid4()))
        first = await platform.engine_stub.Chat(request)
        retry = await platform.engine_stub.Chat(request)
        assert (retry.run_id, retry.response) == (first.run_id, "The result is 45.")
        assert len(llm.requests) == 3, "the retry must not call the model again"
        assert len((await platform.runs_stub.ListRuns(runs_pb2.ListRunsRequest())).runs) == 1


async def test_invalid_json_arguments_become_a_tool_error_the_model_can_fix(tmp_path: Path) -> None:
    script = [
        tool_call_reply("calculator", '{"operation": "add", "x": 5,'),
        text_reply("Sorry, let me stop here."),
    ]
    async with ScriptedLLM(*script) as llm, start_platform(tmp_path, llm.base_url) as platform:
        steps = steps_of(await stream_chat(platform, "add 5 and"))

        call, result = steps[2].tool_call, steps[3].tool_result
        assert call.raw_arguments == '{"operation": "add", "x": 5,'
        assert not call.HasField("params")
        assert "not valid JSON" in result.error
        assert not result.HasField("result")
        assert llm.requests[1]["messages"][-1]["content"].startswith("Error: the arguments are not valid JSON")
        assert kinds(steps)[-1] == "agent_response"


async def test_unknown_tool_is_reported_to_the_model(tmp_path: Path) -> None:
    script = [tool_call_reply("teleport", {"to": "Mars"}), text_reply("I can't teleport.")]
    async with ScriptedLLM(*script) as llm, start_platform(tmp_path, llm.base_url) as platform:
        events = await stream_chat(platform, "teleport me")

        result = steps_of(events)[3].tool_result
        assert result.tool_name == "teleport"
        assert "not found" in result.error
        assert events[-1].run.state == runs_pb2.RUN_STATE_COMPLETED


async def test_disabled_tool_is_not_offered_and_cannot_run(tmp_path: Path) -> None:
    script = [tool_call_reply("calculator", {"operation": "add", "x": 1, "y": 2}), text_reply("It is disabled.")]
    async with ScriptedLLM(*script) as llm, start_platform(tmp_path, llm.base_url) as platform:
        await platform.tools_stub.UpdateTool(
            tools_pb2.UpdateToolRequest(
                tool=tools_pb2.Tool(id="calculator", enabled=False),
                update_mask=field_mask_pb2.FieldMask(paths=["enabled"]),
            )
        )
        steps = steps_of(await stream_chat(platform, "add 1 and 2"))

        offered = {tool["function"]["name"] for tool in llm.requests[0]["tools"]}
        assert "calculator" not in offered
        assert "disabled" in steps[3].tool_result.error


async def test_tool_error_division_by_zero_goes_back_to_the_model(tmp_path: Path) -> None:
    script = [tool_call_reply("calculator", {"operation": "divide", "x": 1, "y": 0}), text_reply("Cannot divide.")]
    async with ScriptedLLM(*script) as llm, start_platform(tmp_path, llm.base_url) as platform:
        events = await stream_chat(platform, "1 / 0")

        assert "division by zero" in steps_of(events)[3].tool_result.error
        assert llm.requests[1]["messages"][-1]["content"].startswith("Error: ")
        assert events[-1].run.state == runs_pb2.RUN_STATE_COMPLETED


async def test_model_endpoint_500_fails_the_run_with_an_error_step(tmp_path: Path) -> None:
    async with ScriptedLLM(HttpError(500, "the GPU caught fire")) as llm, \
            start_platform(tmp_path, llm.base_url) as platform:
        events = await stream_chat(platform, "hello")

        final = events[-1].run
        assert final.state == runs_pb2.RUN_STATE_FAILED
        assert "HTTP 500" in final.error_message and "the GPU caught fire" in final.error_message
        steps = steps_of(events)
        assert kinds(steps) == ["user_request", "error"]
        assert steps[-1].error.code == "model_unavailable"
        assert (await get_run(platform, final.id)).state == runs_pb2.RUN_STATE_FAILED


async def test_model_endpoint_500_answers_chat_with_unavailable_naming_the_run(tmp_path: Path) -> None:
    async with ScriptedLLM(HttpError(500, "overloaded")) as llm, start_platform(tmp_path, llm.base_url) as platform:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await platform.engine_stub.Chat(engine_pb2.ChatRequest(message="hello"))
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        runs = (await platform.runs_stub.ListRuns(runs_pb2.ListRunsRequest())).runs
        assert len(runs) == 1 and runs[0].state == runs_pb2.RUN_STATE_FAILED
        assert f"run {runs[0].id} failed" in failure.value.details()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # Closed again on exit: nothing listens there.


async def test_unreachable_model_endpoint_fails_the_run(tmp_path: Path) -> None:
    async with start_platform(tmp_path, f"http://127.0.0.1:{closed_port()}/v1") as platform:
        events = await stream_chat(platform, "hello")

        final = events[-1].run
        assert final.state == runs_pb2.RUN_STATE_FAILED
        assert "could not be reached" in final.error_message
        assert steps_of(events)[-1].error.code == "model_unavailable"


async def test_a_model_that_never_stops_calling_tools_is_stopped(tmp_path: Path) -> None:
    calls = [tool_call_reply("calculator", {"operation": "add", "x": i, "y": 1}) for i in range(3)]
    async with ScriptedLLM(*calls) as llm, start_platform(tmp_path, llm.base_url, ENGINE_MAX_ITERATIONS=3) as platform:
        events = await stream_chat(platform, "count forever")

        final = events[-1].run
        assert final.state == runs_pb2.RUN_STATE_FAILED
        assert "limits.max_model_calls" in final.error_message
        assert final.error_code == "max_model_calls"
        assert steps_of(events)[-1].error.code == "max_model_calls"
        assert len(llm.requests) == 3


async def test_client_disconnect_cancels_the_run(tmp_path: Path) -> None:
    # A slow model: the run is still going when the client walks away.
    async with ScriptedLLM(text_reply("word " * 200), chunk_delay_seconds=0.02) as llm, \
            start_platform(tmp_path, llm.base_url) as platform:
        call = platform.engine_stub.StreamChat(engine_pb2.StreamChatRequest(message="tell me a long story"))
        first = await call.read()
        run_id = first.run.id
        await call.read()  # the user-request step
        call.cancel()

        for _ in range(100):
            run = await get_run(platform, run_id)
            if run.state != runs_pb2.RUN_STATE_RUNNING:
                break
            await asyncio.sleep(0.05)
        assert run.state == runs_pb2.RUN_STATE_CANCELLED
        assert run.error_code == "cancelled"
        assert run.steps[-1].error.code == "cancelled"
        assert "went away" in run.steps[-1].error.message


@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [
        ({"message": ""}, "message is required"),
        ({"message": "   "}, "message is required"),
        ({"message": "x" * 40_000}, "limit is 32000"),
        ({"message": "hi", "model": "m" * 300}, "model must be"),
    ],
)
async def test_bad_requests_are_rejected_before_any_run_exists(
    tmp_path: Path, request_fields: dict, expected: str
) -> None:
    async with ScriptedLLM() as llm, start_platform(tmp_path, llm.base_url) as platform:
        for rpc in (platform.engine_stub.StreamChat, platform.engine_stub.Chat):
            request_type = engine_pb2.StreamChatRequest if rpc is platform.engine_stub.StreamChat \
                else engine_pb2.ChatRequest
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                result = rpc(request_type(**request_fields))
                if rpc is platform.engine_stub.StreamChat:
                    [event async for event in result]
                else:
                    await result
            assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert expected in failure.value.details()
        assert not (await platform.runs_stub.ListRuns(runs_pb2.ListRunsRequest())).runs
        assert llm.requests == []


async def test_runs_service_down_answers_unavailable(tmp_path: Path) -> None:
    async with ScriptedLLM(text_reply("hi")) as llm, \
            start_platform(tmp_path, llm.base_url, ENGINE_STORE_OUTAGE_SECONDS=1) as platform:
        await platform.runs.stop()
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            [event async for event in platform.engine_stub.StreamChat(engine_pb2.StreamChatRequest(message="hi"))]
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "runs service" in failure.value.details()
