"""The demo model's planner: which tool call or answer comes next, from the conversation alone."""

import json
from typing import Any

import pytest

from services.demo_model.openai_wire import ModelReply
from services.demo_model.planner import plan_reply
from tests.demo_model.helpers import tool

ALL_TOOLS = [tool("calculator"), tool("file_io"), tool("web_search")]


def request(user: str, *tool_results: str, tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A request body: the user's message, then one assistant call + tool answer per result."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "be helpful"}, {"role": "user", "content": user}]
    for index, result in enumerate(tool_results):
        call = {"id": f"c{index}", "type": "function", "function": {"name": "t", "arguments": "{}"}}
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"c{index}", "content": result},
        ]
    return {"model": "demo", "messages": messages, "tools": ALL_TOOLS if tools is None else tools}


def only_call(reply: ModelReply) -> tuple[str, dict[str, Any]]:
    """The single tool call of a reply, with its arguments parsed."""
    assert reply.finish_reason == "tool_calls"
    (call,) = reply.tool_calls
    return call.name, json.loads(call.arguments)


@pytest.mark.parametrize(
    ("message", "arguments"),
    [
        ("add 2 and 3", {"operation": "add", "x": 2, "y": 3}),
        ("What is -1.5 * 4?", {"operation": "multiply", "x": -1.5, "y": 4}),
        ("add -2 and 0.5", {"operation": "add", "x": -2, "y": 0.5}),
        ("10 - -3", {"operation": "subtract", "x": 10, "y": -3}),
        ("subtract 3 from 10", {"operation": "subtract", "x": 10, "y": 3}),
        ("what is 10 divided by 4", {"operation": "divide", "x": 10, "y": 4}),
        ("8 ÷ 2", {"operation": "divide", "x": 8, "y": 2}),
        ("2 to the power of 10", {"operation": "power", "x": 2, "y": 10}),
        ("6 \u00d7 7", {"operation": "multiply", "x": 6, "y": 7}),
    ],
)
def test_one_step_arithmetic_calls_the_calculator(message: str, arguments: dict[str, Any]) -> None:
    reply = plan_reply(request(message))
    assert only_call(reply) == ("calculator", arguments)
    assert reply.content and reply.content.startswith("I need to ")


def test_whole_numbers_are_sent_as_json_ints() -> None:
    reply = plan_reply(request("2 to the power of 10"))
    assert json.loads(reply.tool_calls[0].arguments) == {"operation": "power", "x": 2, "y": 10}
    assert '"x": 2,' in reply.tool_calls[0].arguments, "x=2, not 2.0"


def test_chain_takes_each_previous_result_from_the_tool_message() -> None:
    question = "What is 5 + 10, then multiply by 3?"
    first = plan_reply(request(question))
    assert only_call(first) == ("calculator", {"operation": "add", "x": 5, "y": 10})
    assert first.content == "That takes two calculations. First, I need to add 5 and 10."

    second = plan_reply(request(question, "5 + 10 = 15"))
    assert only_call(second) == ("calculator", {"operation": "multiply", "x": 15, "y": 3})
    assert second.content == "Got 15. Now I need to multiply it by 3."

    final = plan_reply(request(question, "5 + 10 = 15", "15 * 3 = 45"))
    assert final.tool_calls == [] and final.content == "The result is 45."
    assert final.finish_reason == "stop"


def test_a_plain_number_tool_result_also_works() -> None:
    reply = plan_reply(request("add 1 and 2, then times 4", "3.0"))
    assert only_call(reply) == ("calculator", {"operation": "multiply", "x": 3, "y": 4})


def test_precedence_uses_results_of_earlier_steps() -> None:
    question = "2*3 + 4*5"
    assert only_call(plan_reply(request(question, "2 * 3 = 6"))) == (
        "calculator",
        {"operation": "multiply", "x": 4, "y": 5},
    )
    assert only_call(plan_reply(request(question, "2 * 3 = 6", "4 * 5 = 20"))) == (
        "calculator",
        {"operation": "add", "x": 6, "y": 20},
    )
    assert plan_reply(request(question, "6", "20", "6 + 20 = 26")).content == "The result is 26."


def test_tool_call_ids_differ_between_turns() -> None:
    first = plan_reply(request("5 + 10, then multiply by 3"))
    second = plan_reply(request("5 + 10, then multiply by 3", "15"))
    assert first.tool_calls[0].id != second.tool_calls[0].id


def test_an_error_tool_message_ends_the_task_with_that_error() -> None:
    reply = plan_reply(request("divide 7 by 0, then add 1", "Error: division by zero"))
    assert reply.tool_calls == []
    assert reply.content == "I couldn't finish: Error: division by zero"


def test_an_unreadable_calculator_answer_is_reported() -> None:
    reply = plan_reply(request("add 2 and 3", "the calculator is on a break"))
    assert reply.tool_calls == []
    assert reply.content and "couldn't read a number" in reply.content


@pytest.mark.parametrize(
    ("message", "arguments"),
    [
        ("read notes.txt", {"operation": "read", "path": "notes.txt"}),
        ("Please read the file docs/notes.txt.", {"operation": "read", "path": "docs/notes.txt"}),
        ("write hello world to notes.txt", {"operation": "write", "path": "notes.txt", "content": "hello world"}),
        ("save 'hello' to notes.txt", {"operation": "write", "path": "notes.txt", "content": "hello"}),
        ("list files", {"operation": "list", "path": "."}),
        ("list the files in docs", {"operation": "list", "path": "docs"}),
    ],
)
def test_file_requests_call_file_io(message: str, arguments: dict[str, Any]) -> None:
    assert only_call(plan_reply(request(message))) == ("file_io", arguments)


@pytest.mark.parametrize(
    ("message", "result", "answer"),
    [
        ("read notes.txt", "hello world", "notes.txt contains: hello world"),
        ("write hi to a.txt", "Wrote 2 bytes to a.txt", "Done: Wrote 2 bytes to a.txt"),
        ("list files", "a.txt\nnotes.txt", "The workspace has: a.txt\nnotes.txt"),
    ],
)
def test_file_io_results_are_answered(message: str, result: str, answer: str) -> None:
    reply = plan_reply(request(message, result))
    assert reply.tool_calls == [] and reply.content == answer


def test_file_io_error_is_answered_plainly() -> None:
    reply = plan_reply(request("read missing.txt", "Error: file 'missing.txt' not found"))
    assert reply.content == "I couldn't finish: Error: file 'missing.txt' not found"


@pytest.mark.parametrize(
    ("message", "query"),
    [
        ("search for starlette streaming", "starlette streaming"),
        ("Look up the weather in Paris?", "the weather in Paris"),
        ("search python 3.11 release", "python 3.11 release"),
    ],
)
def test_searches_call_web_search(message: str, query: str) -> None:
    assert only_call(plan_reply(request(message))) == ("web_search", {"query": query})


def test_search_results_are_summarised_from_their_first_lines() -> None:
    result = "1. Starlette docs\n\n2. Uvicorn docs\n3. SSE spec\n4. Something else"
    reply = plan_reply(request("search for starlette", result))
    assert reply.content == 'Here is what I found for "starlette":\n1. Starlette docs\n2. Uvicorn docs\n3. SSE spec'


def test_search_wins_over_arithmetic_in_the_query() -> None:
    assert only_call(plan_reply(request("search for 2 + 2"))) == ("web_search", {"query": "2 + 2"})


@pytest.mark.parametrize("message", ["hello there", "I have 3 cats and 2 dogs", "what is x?"])
def test_anything_else_gets_a_plain_answer_echoing_the_message(message: str) -> None:
    reply = plan_reply(request(message))
    assert reply.tool_calls == [] and reply.finish_reason == "stop"
    assert reply.content and "offline demo model" in reply.content
    assert f'You said: "{message}"' in reply.content


def test_a_long_message_is_echoed_shortened() -> None:
    reply = plan_reply(request("tell me a story " * 20))
    assert reply.content and reply.content.endswith('…"') and len(reply.content) < 500


@pytest.mark.parametrize(
    ("message", "missing"),
    [("add 2 and 3", "calculator"), ("read notes.txt", "file_io"), ("search for cats", "web_search")],
)
def test_a_tool_not_offered_is_not_called(message: str, missing: str) -> None:
    offered = [t for t in ALL_TOOLS if t["function"]["name"] != missing]
    reply = plan_reply(request(message, tools=offered))
    assert reply.tool_calls == []
    assert reply.content and f"The {missing} tool is not available right now" in reply.content


def test_no_tools_offered_at_all_means_plain_answers() -> None:
    body = request("add 2 and 3")
    del body["tools"]
    assert plan_reply(body).tool_calls == []


def test_only_the_last_user_message_counts() -> None:
    body = request("add 2 and 3", "2 + 3 = 5")
    body["messages"] += [
        {"role": "assistant", "content": "The result is 5."},
        {"role": "user", "content": [{"type": "text", "text": "read notes.txt"}]},
    ]
    assert only_call(plan_reply(body)) == ("file_io", {"operation": "read", "path": "notes.txt"})


# --- a conversation's context ----------------------------------------------------------------------------------


def second_turn(first_answer: str, message: str) -> dict[str, Any]:
    """A request of a thread's second turn: the first turn's exchange, then the new message."""
    body = request(message)
    body["messages"][1:1] = [
        {"role": "user", "content": "What is 5 + 10?"},
        {"role": "assistant", "content": first_answer},
    ]
    return body


@pytest.mark.parametrize("message", ["Multiply that by 3", "now times 3", "multiply it by 3, then subtract 5"])
def test_it_in_a_later_turn_is_the_previous_answers_number(message: str) -> None:
    reply = plan_reply(second_turn("The result is 15.", message))
    assert only_call(reply) == ("calculator", {"operation": "multiply", "x": 15, "y": 3})


def test_it_with_no_earlier_answer_is_not_arithmetic() -> None:
    reply = plan_reply(request("Multiply that by 3"))
    assert reply.tool_calls == [] and "offline demo model" in (reply.content or "")


def test_instructions_that_name_the_model_make_it_introduce_itself_so() -> None:
    body = request("hello")
    body["messages"][0]["content"] = "You are Ada, a patient maths tutor."
    assert (plan_reply(body).content or "").startswith("I'm Ada, running on the offline demo model")
    body["messages"][0]["content"] = "You are a helpful assistant."  # no name: the usual introduction
    assert (plan_reply(body).content or "").startswith("I'm the offline demo model")
