"""The tests' scripted model server, driven through the real openai SDK as the engine drives it."""

import asyncio
import time
from collections.abc import AsyncIterator

import openai
import pytest

from tests.demo_model.helpers import collect_stream, sdk_client, tool
from tests.support.scripted_llm import HttpError, ScriptedLLM, text_reply, tool_call_reply

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def llm() -> AsyncIterator[ScriptedLLM]:
    """The helper used as an async fixture, as the engine tests do."""
    async with ScriptedLLM() as server:
        yield server


async def test_invalid_json_arguments_arrive_verbatim_streamed_and_not(llm: ScriptedLLM) -> None:
    broken = '{"operation": "add", "x": 5,'
    llm.script(
        tool_call_reply("calculator", broken, id="call_bad", content="Let me add."),
        tool_call_reply("calculator", broken, id="call_bad_2"),
    )
    async with sdk_client(llm.base_url) as client:
        streamed = await collect_stream(await client.chat.completions.create(model="m", messages=USER, stream=True))
        plain = await client.chat.completions.create(model="m", messages=USER)
    assert streamed.tool_calls == {0: {"id": "call_bad", "name": "calculator", "arguments": broken}}
    assert streamed.content == "Let me add." and streamed.finish_reason == "tool_calls"
    (call,) = plain.choices[0].message.tool_calls or []
    assert (call.id, call.function.arguments) == ("call_bad_2", broken)
    assert plain.choices[0].message.content is None


async def test_dict_arguments_are_sent_as_json(llm: ScriptedLLM) -> None:
    llm.script(tool_call_reply("file_io", {"operation": "read", "path": "a.txt"}))
    async with sdk_client(llm.base_url) as client:
        response = await client.chat.completions.create(model="m", messages=USER)
    (call,) = response.choices[0].message.tool_calls or []
    assert call.function.arguments == '{"operation": "read", "path": "a.txt"}'
    assert call.id.startswith("call_")


async def test_http_errors_surface_as_sdk_exceptions(llm: ScriptedLLM) -> None:
    llm.script(HttpError(500, "model crashed"), HttpError(429, "slow down"), text_reply("recovered"))
    async with sdk_client(llm.base_url) as client:
        with pytest.raises(openai.InternalServerError) as crashed:
            await client.chat.completions.create(model="m", messages=USER, stream=True)
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="m", messages=USER)
        response = await client.chat.completions.create(model="m", messages=USER)
    assert crashed.value.status_code == 500 and "model crashed" in crashed.value.message
    assert limited.value.status_code == 429 and "slow down" in limited.value.message
    assert response.choices[0].message.content == "recovered"


async def test_exhausted_script_answers_500(llm: ScriptedLLM) -> None:
    llm.script(text_reply("only one"))
    async with sdk_client(llm.base_url) as client:
        await client.chat.completions.create(model="m", messages=USER)
        with pytest.raises(openai.InternalServerError) as exc:
            await client.chat.completions.create(model="m", messages=USER)
    assert "scripted LLM: no reply left" in exc.value.message
    assert llm.remaining == 0


async def test_requests_are_recorded_in_order() -> None:
    async with ScriptedLLM(text_reply("one"), text_reply("two")) as llm:
        async with sdk_client(llm.base_url) as client:
            await client.chat.completions.create(model="m", messages=USER, tools=[tool("calculator")])
            await client.chat.completions.create(
                model="m",
                messages=[*USER, {"role": "tool", "tool_call_id": "c1", "content": "5"}],
                stream=True,
                stream_options={"include_usage": True},
            )
    assert [r["tools"][0]["function"]["name"] for r in llm.requests[:1]] == ["calculator"]
    assert "tools" not in llm.requests[1] and llm.requests[1]["stream"] is True
    assert llm.requests[1]["messages"][-1] == {"role": "tool", "tool_call_id": "c1", "content": "5"}


async def test_chunk_delay_spreads_a_stream_over_time() -> None:
    async with ScriptedLLM(text_reply("one two three four"), chunk_delay_seconds=0.02) as llm:
        async with sdk_client(llm.base_url) as client:
            started = time.monotonic()
            stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
            arrivals = [time.monotonic() - started async for _ in stream]
    # role, 4 words, finish: 5 delays between 6 chunks.
    assert len(arrivals) == 6 and arrivals[-1] - arrivals[0] >= 0.08


async def test_base_url_needs_a_running_server_and_stop_frees_the_port() -> None:
    llm = ScriptedLLM()
    with pytest.raises(RuntimeError, match="not running"):
        _ = llm.base_url
    async with llm:
        base_url = llm.base_url
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
    async with sdk_client(base_url) as client:
        with pytest.raises(openai.APIConnectionError):
            await asyncio.wait_for(client.models.list(), timeout=5)
