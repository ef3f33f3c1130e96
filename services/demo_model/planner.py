"""The demo model's deterministic brain: what to answer next, derived from the conversation alone.

It understands arithmetic (via the `calculator` tool, one operation per turn), file reading/writing/listing (via
`file_io`) and web searches (via `web_search`); anything else gets a plain answer saying what it can do. It keeps
no state: how far a task has got is read from the tool messages after the last user message.

A message with the word "slowly" in it ("Slowly: what is 5 + 10, then multiply by 3?") asks for a slow pace: the
server pauses DEMO_MODEL_SLOW_SECONDS before each reply of that run (`asks_for_slow_pace`), so a run lasts long
enough to watch and cancel by hand, as docs/runs.md shows.

Two things show that a run's context reaches it:
- multi-turn: in "multiply that by 3", "that" is the number of its previous answer in the conversation;
- the system prompt: instructions that name it ("You are Ada, ...") make it introduce itself by that name.
"""

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.demo_model.arithmetic import (
    CalculationStep,
    StepResult,
    describe_step,
    format_number,
    json_number,
    last_number,
    parse_calculation,
    parse_tool_number,
)
from services.demo_model.openai_wire import ModelReply, ReplyToolCall, message_text

CALCULATOR = "calculator"
FILE_IO = "file_io"
WEB_SEARCH = "web_search"

#: How much of the user's message a plain answer echoes back.
_ECHO_CHARS = 80
#: How many lines of a search result the summary quotes.
_SEARCH_SUMMARY_LINES = 3

#: The word that asks for a slow pace, anywhere in the user's last message.
_SLOWLY = re.compile(r"\bslowly\b", re.I)

#: Instructions that name the model: "You are Ada", "you are Captain-Calc." (a capitalised name).
_PERSONA = re.compile(r"\b[Yy]ou are (?P<name>[A-Z][\w'-]*)")

_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]

# Optional politeness before a command ("please read ...", "can you list ...").
_PREFIX = r"^\s*(?:(?:please|can\s+you|could\s+you|would\s+you)\s+)*"
_END = r"\s*[.?!]*\s*$"
_SEARCH = re.compile(_PREFIX + r"(?:search(?:\s+the\s+web)?(?:\s+for)?|look\s+up)\s+(?P<query>.+?)" + _END, re.I)
_READ = re.compile(_PREFIX + r"(?:read|open|show(?:\s+me)?)\s+(?:the\s+)?(?:file\s+)?(?P<path>\S+?)" + _END, re.I)
_WRITE = re.compile(
    _PREFIX
    + r"(?:write|save|store|put)\s+(?P<content>.+)\s+(?:to|into|in)\s+(?:the\s+)?(?:file\s+)?(?P<path>\S+?)"
    + _END,
    re.I | re.S,
)
_LIST = re.compile(
    _PREFIX + r"(?:list|show)\s+(?:(?:me|all|the|my)\s+)*files?"
    r"(?:\s+(?:in|under|of)\s+(?:the\s+)?(?:folder\s+|directory\s+)?(?P<path>\S+?))?" + _END,
    re.I,
)


@dataclass(frozen=True)
class Conversation:
    """What the planner needs from a request: the last user message and the tool results that followed it."""

    user_text: str
    tool_results: list[str]
    offered_tools: frozenset[str]
    #: Number of messages so far; makes tool call ids unique within the conversation.
    length: int
    #: The number in the last answer before the user's message (an earlier turn), if any.
    earlier_answer: float | None = None
    #: The name the system prompt gives the model ("You are Ada"), if any.
    persona: str = ""


@dataclass(frozen=True)
class SingleCallTask:
    """A task done with one tool call, then an answer made from its result (file_io, web_search)."""

    tool: str
    arguments: dict[str, Any]
    thought: str
    summarize: Callable[[str], str]


@dataclass(frozen=True)
class CalculationTask:
    """Arithmetic done as a chain of calculator calls, one per turn."""

    steps: list[CalculationStep]
    tool: str = CALCULATOR


Task = SingleCallTask | CalculationTask


def read_conversation(body: dict[str, Any]) -> Conversation:
    """Pick out the last user message, the tool results after it and the names of the offered tools."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    user_text = message_text(messages[last_user]).strip() if last_user >= 0 else ""
    tool_results = [message_text(m) for m in messages[last_user + 1 :] if m.get("role") == "tool"]
    offered = frozenset(
        str((tool.get("function") or {}).get("name"))
        for tool in body.get("tools") or []
        if isinstance(tool, dict) and isinstance(tool.get("function"), dict)
    )
    answers = [m for m in messages[: max(last_user, 0)] if m.get("role") == "assistant" and message_text(m)]
    earlier = last_number(message_text(answers[-1])) if answers else None
    system = next((message_text(m) for m in messages if m.get("role") == "system"), "")
    persona = match["name"] if (match := _PERSONA.search(system)) else ""
    return Conversation(user_text, tool_results, offered, len(messages), earlier, persona)


def asks_for_slow_pace(body: dict[str, Any]) -> bool:
    """Whether the user's last message asks for a slow pace (the word "slowly")."""
    return bool(_SLOWLY.search(read_conversation(body).user_text))


def plan_reply(body: dict[str, Any]) -> ModelReply:
    """The demo model's answer to a chat-completions request body: a tool call with a thought, or a final answer."""
    conversation = read_conversation(body)
    task = understand(conversation.user_text, conversation.earlier_answer)
    if task is None:
        return ModelReply(content=plain_answer(conversation.user_text, conversation.persona))
    if conversation.tool_results and is_tool_error(conversation.tool_results[-1]):
        # Tools report failures as text; stop the task and pass the error on rather than guessing onwards.
        return ModelReply(content=f"I couldn't finish: {conversation.tool_results[-1].strip()}")
    if task.tool not in conversation.offered_tools:
        return ModelReply(
            content=f"The {task.tool} tool is not available right now, so I can't do that. Enable it and ask me again."
        )
    if isinstance(task, CalculationTask):
        return _next_calculation_reply(task, conversation)
    if conversation.tool_results:
        return ModelReply(content=task.summarize(conversation.tool_results[-1]))
    return _tool_call(conversation, task.tool, task.arguments, task.thought)


def understand(text: str, earlier_answer: float | None = None) -> Task | None:
    """What the user asks for, or None when it is none of the things the demo model can do with a tool.
    `earlier_answer`: the number of the previous turn's answer, for "it" and "that"."""
    if match := _SEARCH.match(text):
        query = match["query"].strip().strip("\"'")
        return SingleCallTask(
            WEB_SEARCH, {"query": query}, f"I need to search the web for {query}.", _search_summary(query)
        )
    if match := _WRITE.match(text):
        path, content = match["path"], _unquote(match["content"].strip())
        return SingleCallTask(
            FILE_IO,
            {"operation": "write", "path": path, "content": content},
            f"I need to write to {path}.",
            lambda result: f"Done: {result.strip()}",
        )
    if match := _LIST.match(text):
        path = match["path"] or "."
        return SingleCallTask(
            FILE_IO,
            {"operation": "list", "path": path},
            "I need to list the files." if path == "." else f"I need to list the files in {path}.",
            lambda result: f"The workspace has: {result.strip()}",
        )
    if match := _READ.match(text):
        path = match["path"]
        return SingleCallTask(
            FILE_IO,
            {"operation": "read", "path": path},
            f"I need to read {path}.",
            lambda result: f"{path} contains: {result.strip()}",
        )
    steps = parse_calculation(text, earlier_answer)
    return CalculationTask(steps) if steps else None


def is_tool_error(result: str) -> bool:
    """Whether a tool message reports a failure (the tools' convention: the text starts with "Error")."""
    return result.lstrip().lower().startswith("error")


def plain_answer(user_text: str, persona: str = "") -> str:
    """The answer to anything the demo model cannot help with: what it is and what it can do (introduced by the
    name its instructions give it, if any)."""
    who = f"I'm {persona}, running on the offline demo model" if persona else "I'm the offline demo model"
    intro = (
        f"{who}, so I only know a few tricks: arithmetic with the calculator "
        '(try "What is 5 + 10, then multiply by 3?"), reading, writing and listing files with file_io '
        '(try "read notes.txt"), and web searches (try "search for starlette").'
    )
    if not user_text:
        return intro
    echo = user_text if len(user_text) <= _ECHO_CHARS else user_text[: _ECHO_CHARS - 1] + "…"
    return f'{intro} You said: "{echo}"'


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _search_summary(query: str) -> Callable[[str], str]:
    def summarize(result: str) -> str:
        lines = [line.strip() for line in result.splitlines() if line.strip()]
        if not lines:
            return f'I searched for "{query}" but found nothing.'
        return f'Here is what I found for "{query}":\n' + "\n".join(lines[:_SEARCH_SUMMARY_LINES])

    return summarize


def _tool_call(conversation: Conversation, tool: str, arguments: dict[str, Any], thought: str) -> ModelReply:
    call = ReplyToolCall(id=f"call_demo_{conversation.length}", name=tool, arguments=json.dumps(arguments))
    return ModelReply(content=thought, tool_calls=[call])


def _count_words(count: int) -> str:
    return _NUMBER_WORDS[count] if count < len(_NUMBER_WORDS) else str(count)


def _next_calculation_reply(task: CalculationTask, conversation: Conversation) -> ModelReply:
    """The next calculator call of the chain, or the final answer once every step has a result."""
    results: list[float] = []
    for text in conversation.tool_results:
        number = parse_tool_number(text)
        if number is None:
            return ModelReply(content=f"I couldn't read a number in the calculator's answer: {text.strip()}")
        results.append(number)
    done = len(results)
    if done >= len(task.steps):
        return ModelReply(content=f"The result is {format_number(results[-1])}.")
    step = task.steps[done]

    def value(operand: float | StepResult) -> float:
        return results[operand.index] if isinstance(operand, StepResult) else operand

    arguments = {"operation": step.operation, "x": json_number(value(step.x)), "y": json_number(value(step.y))}
    # "it" is the result the user just saw (the previous step's); other operands are spelled out.
    previous = StepResult(done - 1) if done else None
    action = describe_step(step.operation, value(step.x), value(step.y), it_is_x=step.x == previous)
    if done == 0:
        count = len(task.steps)
        thought = (
            f"I need to {action}."
            if count == 1
            else (f"That takes {_count_words(count)} calculations. First, I need to {action}.")
        )
    else:
        thought = f"Got {format_number(results[-1])}. Now I need to {action}."
    return _tool_call(conversation, CALCULATOR, arguments, thought)
