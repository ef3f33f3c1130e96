"""A model call's messages in the GenAI conventions' structured form (what a span carries with content capture
on): each message a role and typed parts, system instructions apart, tool calls and their answers as such."""

import json

from services.engine.genai_content import input_content, output_content


def test_a_conversation_with_a_tool_round_trip_becomes_roles_and_typed_parts() -> None:
    system, chat = input_content([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "calculator", "arguments": '{"operation": "add", "a": 2, "b": 3}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "5"},
        {"role": "user", "content": [{"type": "text", "text": "and "}, {"type": "image_url"}, {"type": "text",
                                                                                                 "text": "times 4?"}]},
    ])
    assert json.loads(system) == [{"type": "text", "content": "You are terse."}]
    assert json.loads(chat) == [
        {"role": "user", "parts": [{"type": "text", "content": "What is 2+3?"}]},
        {"role": "assistant", "parts": [
            {"type": "tool_call", "id": "call_1", "name": "calculator",
             "arguments": {"operation": "add", "a": 2, "b": 3}},
        ]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "5"}]},
        {"role": "user", "parts": [{"type": "text", "content": "and times 4?"}]},
    ]


def test_no_system_message_gives_no_system_instructions() -> None:
    system, chat = input_content([{"role": "user", "content": "hi"}])
    assert system == ""
    assert json.loads(chat) == [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]


def test_the_answer_is_one_assistant_message_with_its_finish_reason_in_the_conventions_spelling() -> None:
    calls = [("call_1", "calculator", '{"a": 1}'), ("call_2", "search", "not json")]
    assert json.loads(output_content("Let me compute.", calls, "tool_calls")) == [{
        "role": "assistant",
        "parts": [
            {"type": "text", "content": "Let me compute."},
            {"type": "tool_call", "id": "call_1", "name": "calculator", "arguments": {"a": 1}},
            # What the model wrote is kept as it wrote it when it is not JSON.
            {"type": "tool_call", "id": "call_2", "name": "search", "arguments": "not json"},
        ],
        "finish_reason": "tool_call",
    }]
    assert json.loads(output_content("Done.", [], "length"))[0]["finish_reason"] == "length"
    # A model that gave no reason stopped for its calls, or because it was done (the schema requires one).
    assert json.loads(output_content("", calls[:1], ""))[0]["finish_reason"] == "tool_call"
    assert json.loads(output_content("Done.", [], ""))[0] == {
        "role": "assistant", "parts": [{"type": "text", "content": "Done."}], "finish_reason": "stop",
    }
