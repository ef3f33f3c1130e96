"""A conversation's earlier turns as the model's context: rebuilt from the stored steps, cut to a budget
(it reads the runs the store returned, as the engine's journal types).

Rebuilt faithfully: each earlier turn gives the messages the model was given and gave in that run, in order:
the user's message, each assistant message with the tool calls it asked for (their arguments exactly as the
model wrote them), each tool's answer exactly as the model read it ("Error: ..." for a failed call), and the
final answer. What the model never saw is left out: `error` steps, the placeholder text the engine shows for
a tool-calling turn without text (AgentThought.placeholder). A turn that did not complete (failed, cancelled,
interrupted) keeps what it got through; a tool call whose result was never recorded is dropped with it, since a
model API refuses a tool call without its answer.

The budget policy (ENGINE_CONTEXT_BUDGET_TOKENS): the agent's instructions and the new message are always sent.
Then whole earlier turns are added from the most recent back, as long as the estimate stays within the budget;
older turns are left out whole, never cut in the middle (a cut turn could keep a tool call without its
answer). Tokens are estimated at about four characters each (OpenAI's rule of thumb for English text) plus a
few per message: the engine has no tokenizer for every model it may serve, so keep the budget well under the
model's window. The user-request step records how many turns were sent and left out.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.engine.journal import AgentResponse, AgentThought, Run, Step, ToolCall, ToolResult, UserRequest

Message = dict[str, Any]

#: The estimate's characters per token, and what each message costs beyond its text (role, separators).
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


@dataclass(frozen=True)
class ThreadContext:
    """The earlier turns the model sees, as messages oldest first; how many turns they are, and how many
    earlier ones were left out (by the store's bound or the budget)."""

    messages: list[Message] = field(default_factory=list)
    turns: int = 0
    omitted: int = 0


NO_CONTEXT = ThreadContext()


def turn_messages(run: Run) -> list[Message]:
    """The messages of one earlier run, rebuilt from its steps."""
    return messages_from_steps(run.steps)


def messages_from_steps(steps: Sequence[Step], *, keep_pending: bool = False) -> list[Message]:
    """The messages a run's steps record, in order. Tool calls without a recorded result are dropped, unless
    `keep_pending`: then those of the last assistant message stay (a run resuming after an approval executes
    them next)."""
    messages: list[Message] = []
    answered: set[str] = set()
    for step in steps:
        match step.content:
            case UserRequest(text=text):
                messages.append({"role": "user", "content": text})
            case AgentThought(text=text, placeholder=placeholder):
                messages.append({"role": "assistant", "content": None if placeholder else text, "tool_calls": []})
            case ToolCall() as call if messages and messages[-1].get("tool_calls") is not None:
                messages[-1]["tool_calls"].append({
                    "id": call.tool_call_id,
                    "type": "function",
                    "function": {"name": call.tool_name, "arguments": call.raw_arguments},
                })
            case ToolResult() as result:
                answered.add(result.tool_call_id)
                text = f"Error: {result.error}" if result.error else result.text
                messages.append({"role": "tool", "tool_call_id": result.tool_call_id, "content": text})
            case AgentResponse(text=text):
                messages.append({"role": "assistant", "content": text})
    if keep_pending:
        for message in reversed(messages):
            if message.get("tool_calls") is not None:
                answered.update(call["id"] for call in message["tool_calls"])
                break
    return _without_unanswered_calls(messages, answered)


def _without_unanswered_calls(messages: list[Message], answered: set[str]) -> list[Message]:
    kept: list[Message] = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls is None:
            kept.append(message)
            continue
        calls = [call for call in calls if call["id"] in answered]
        if calls:
            kept.append({**message, "tool_calls": calls})
        elif message["content"]:
            kept.append({"role": "assistant", "content": message["content"]})
    return kept


def estimate_tokens(messages: Sequence[Message]) -> int:
    """About how many tokens `messages` take in a prompt (see the module's docstring)."""
    characters = 0
    for message in messages:
        characters += len(message.get("content") or "")
        for call in message.get("tool_calls", ()):
            characters += len(call["function"]["name"]) + len(call["function"]["arguments"])
    return math.ceil(characters / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages)


def fit_context(turns: Sequence[Run], omitted: int, budget_tokens: int, fixed_tokens: int) -> ThreadContext:
    """The most recent of `turns` (oldest first) whose messages fit in `budget_tokens` beside the `fixed_tokens`
    always sent (instructions, new message, tool schemas); `omitted` earlier turns were left out already."""
    room = budget_tokens - fixed_tokens
    kept: list[list[Message]] = []
    for run in reversed(turns):
        messages = turn_messages(run)
        cost = estimate_tokens(messages)
        if cost > room:
            break
        room -= cost
        kept.append(messages)
    kept.reverse()
    return ThreadContext(
        messages=[message for messages in kept for message in messages],
        turns=len(kept),
        omitted=omitted + len(turns) - len(kept),
    )
