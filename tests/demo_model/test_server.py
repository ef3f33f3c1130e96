"""The demo model over HTTP with the real openai SDK: the seed example turn by turn, errors, models, health."""

import json
import os
import signal
import subprocess
import sys
from typing import Any

import httpx
import openai
import pytest

from services.demo_model.app import DemoModelApp
from tests.conftest import REPO_ROOT
from tests.demo_model.helpers import CALCULATOR_TOOL, collect_stream
from tests.support.seed import SEED_QUESTION

#: What the calculator answers for each of the seed's two calls.
SEED_TOOL_RESULTS = ["5 + 10 = 15", "15 * 3 = 45"]
SEED_CALLS = [{"operation": "add", "x": 5, "y": 10}, {"operation": "multiply", "x": 15, "y": 3}]


def _tool_turn(call_id: str, name: str, arguments: str, content: str | None, result: str) -> list[dict[str, Any]]:
    """The messages an engine appends after a tool call: the assistant's call and the tool's answer."""
    assistant = {
        "role": "assistant",
        "content": content,
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
    }
    return [assistant, {"role": "tool", "tool_call_id": call_id, "content": result}]


async def test_seed_example_streamed_turn_by_turn(client: openai.AsyncOpenAI) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": SEED_QUESTION}]
    thoughts = []
    for expected_call, result in zip(SEED_CALLS, SEED_TOOL_RESULTS, strict=True):
        stream = await client.chat.completions.create(
            model="demo",
            messages=messages,
            tools=[CALCULATOR_TOOL],
            stream=True,
            stream_options={"include_usage": True},
        )
        reply = await collect_stream(stream)
        assert reply.first_delta_role == "assistant"
        assert reply.finish_reason == "tool_calls"
        assert list(reply.tool_calls) == [0], "one tool call per turn"
        call = reply.tool_calls[0]
        assert call["name"] == "calculator" and call["id"]
        assert reply.argument_pieces[0] >= 2, "arguments arrive in several pieces, as from the real API"
        assert json.loads(call["arguments"]) == expected_call  # the pieces join into valid JSON; ints stay ints
        assert reply.content_pieces > 1, "the thought streams word by word"
        assert reply.usage is not None and reply.usage.total_tokens == (
            reply.usage.prompt_tokens + reply.usage.completion_tokens
        )
        assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
        thoughts.append(reply.content)
        messages += _tool_turn(call["id"], call["name"], call["arguments"], reply.content, result)

    assert thoughts == [
        "That takes two calculations. First, I need to add 5 and 10.",
        "Got 15. Now I need to multiply it by 3.",
    ]
    final = await collect_stream(
        await client.chat.completions.create(
            model="demo",
            messages=messages,
            tools=[CALCULATOR_TOOL],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert final.content == "The result is 45."
    assert final.finish_reason == "stop" and final.tool_calls == {}


async def test_seed_example_not_streamed(client: openai.AsyncOpenAI) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": SEED_QUESTION}]
    for expected_call, result in zip(SEED_CALLS, SEED_TOOL_RESULTS, strict=True):
        response = await client.chat.completions.create(model="demo", messages=messages, tools=[CALCULATOR_TOOL])
        choice = response.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert response.id.startswith("chatcmpl-") and response.model == "demo"
        assert response.usage is not None and response.usage.completion_tokens > 0
        (call,) = choice.message.tool_calls or []
        assert call.function.name == "calculator"
        assert json.loads(call.function.arguments) == expected_call
        messages += _tool_turn(call.id, "calculator", call.function.arguments, choice.message.content, result)

    response = await client.chat.completions.create(model="demo", messages=messages, tools=[CALCULATOR_TOOL])
    assert response.choices[0].message.content == "The result is 45."
    assert response.choices[0].finish_reason == "stop"
    assert response.choices[0].message.tool_calls is None
    assert response.usage is not None and response.usage.prompt_tokens > len(SEED_QUESTION.split())


async def test_stream_without_include_usage_sends_no_usage_chunk(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="gpt-anything", messages=[{"role": "user", "content": "hello"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    assert {chunk.model for chunk in chunks} == {"gpt-anything"}, "the requested model name is echoed"
    assert "offline demo model" in "".join(c.choices[0].delta.content or "" for c in chunks)


async def test_request_without_messages_is_a_400_with_an_openai_error_body(
    client: openai.AsyncOpenAI, demo_model: DemoModelApp
) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        await client.chat.completions.create(model="demo", messages=[])
    assert exc.value.status_code == 400
    assert "'messages' must be a non-empty list" in exc.value.message

    async with httpx.AsyncClient(base_url=demo_model.server.base_url) as http:
        missing = await http.post("/chat/completions", json={"model": "demo"})
        bad_json = await http.post("/chat/completions", content=b"{not json")
    assert missing.status_code == 400
    error = missing.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "missing_messages"
    assert "messages" in error["message"]
    assert bad_json.status_code == 400
    assert "not valid JSON" in bad_json.json()["error"]["message"]


async def test_models_health_and_unknown_path(client: openai.AsyncOpenAI, demo_model: DemoModelApp) -> None:
    models = await client.models.list()
    assert [model.id for model in models.data] == ["demo"]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{demo_model.port}") as http:
        health = await http.get("/health")
        unknown = await http.get("/v1/nope")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert unknown.status_code == 404
    assert "/v1/nope" in unknown.json()["error"]["message"]


def test_main_serves_until_sigterm_and_exits_cleanly() -> None:
    """`python -m services.demo_model` (what `make run` starts) logs where it listens and stops on SIGTERM."""
    env = {**os.environ, "DEMO_MODEL_PORT": "0", "LOG_LEVEL": "INFO"}
    process = subprocess.Popen(
        [sys.executable, "-m", "services.demo_model"],
        cwd=REPO_ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "offline demo model" in line:
                break
        else:
            pytest.fail("the demo model never logged that it is serving")
        base_url = line.rsplit(" on ", 1)[1].strip()
        response = httpx.post(
            f"{base_url}/chat/completions",
            json={"model": "demo", "messages": [{"role": "user", "content": "add 2 and 3"}]},
        )
        assert response.status_code == 200
        assert "calculator tool is not available" in response.json()["choices"][0]["message"]["content"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
