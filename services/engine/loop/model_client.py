"""The model endpoint: one streamed chat-completions call per agent turn, with the async openai SDK.

Works with any OpenAI-compatible endpoint. The SDK retries connection errors, timeouts, 408/409/429 and 5xx
with exponential backoff and jitter, honouring Retry-After (LLM_MAX_RETRIES); what still fails becomes a
RunFailure with a stable code (rate_limited, model_unavailable, model_timeout, bad_model_response …) and a
message that says what to check. Cancelling the caller's task aborts the HTTP request.
"""

import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import openai

from services.common import errors
from services.common.usage import Usage
from services.engine import metrics
from services.engine.failures import RunFailure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSampling:
    """How a saved agent wants the model to sample; None leaves the endpoint's default."""

    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None

    def body(self) -> dict[str, Any]:
        """The chat-completions fields (max_tokens: what OpenAI-compatible servers all accept)."""
        fields = {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_output_tokens}
        return {name: value for name, value in fields.items() if value is not None}


@dataclass(frozen=True)
class RequestedToolCall:
    """A tool call as the model wrote it; `arguments` is the raw string, which may not be valid JSON."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolCallChunk:
    """A piece of the tool call at `index` of the turn, as the model streams it."""

    index: int
    id: str
    name: str
    arguments: str


@dataclass
class ModelTurn:
    """Everything the model said in one call, and how long it took."""

    content: str = ""
    tool_calls: list[RequestedToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    time_to_first_token: float | None = None
    latency: float = 0.0
    #: Why the model stopped ("stop", "tool_calls", "length" ...), as its last chunk said; "" if it did not say.
    finish_reason: str = ""
    #: Of the prompt tokens, how many the endpoint served from its prompt cache (priced lower).
    cached_prompt_tokens: int = 0


@dataclass
class _PartialToolCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


#: The most tokens one model call may report (far above any model's window; the store keeps 64-bit counts).
MAX_TOKEN_COUNT = 2**40


def _is_chunk(chunk: object) -> TypeGuard[dict[str, Any]]:
    """Whether `chunk` has the shape of a chat completion chunk, as far as the loop reads it."""
    if not isinstance(chunk, dict):
        return False
    usage, choices = chunk.get("usage"), chunk.get("choices")
    if (usage is not None and not isinstance(usage, dict)) or (choices is not None and not isinstance(choices, list)):
        return False
    # Token counts become 64-bit integers in steps: NaN, 1e999, negatives or 10^30 from a server are not counts.
    for key in ("prompt_tokens", "completion_tokens"):
        count = (usage or {}).get(key)
        if count is not None and (type(count) is not int or not 0 <= count <= MAX_TOKEN_COUNT):
            return False
    for choice in choices or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if delta is None:
            if not isinstance(choice, dict):
                return False
            continue
        if not isinstance(delta, dict) or not isinstance(delta.get("content") or "", str):
            return False
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict) or not isinstance(call.get("index") or 0, int):
                return False
            function = call.get("function") or {}
            if not isinstance(function, dict):
                return False
            if not all(isinstance(function.get(key) or "", str) for key in ("name", "arguments")):
                return False
    return True


def _model_error(exc: openai.OpenAIError, base_url: str, model: str) -> RunFailure:
    if isinstance(exc, openai.APITimeoutError):
        return RunFailure(
            "model_timeout",
            errors.DeadlineExceeded(f"the model endpoint {base_url} did not answer in time; check it or raise "
                                    "LLM_TIMEOUT_SECONDS"),
        )
    if isinstance(exc, openai.APIConnectionError):
        return RunFailure(
            "model_unavailable",
            errors.Unavailable(f"the model endpoint {base_url} could not be reached ({exc}); check LLM_BASE_URL "
                               "and that the server is running"),
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = f"the model endpoint {base_url} answered HTTP {status}: {_error_message(exc)}"
        if status in (401, 403):
            return RunFailure("model_auth", errors.FailedPrecondition(f"{detail}; check LLM_API_KEY"))
        if status == 404:
            return RunFailure("model_not_found", errors.FailedPrecondition(f"{detail}; is model '{model}' served "
                                                                          "there? check LLM_MODEL"))
        if status == 429:
            return RunFailure("rate_limited", errors.ResourceExhausted(f"{detail}; try again later"))
        if status in (400, 413, 422):
            return RunFailure("model_rejected_request", errors.InvalidArgument(detail))
        return RunFailure("model_unavailable", errors.Unavailable(detail))
    return RunFailure("bad_model_response", errors.Unavailable(f"the model endpoint {base_url} sent a response "
                                                               f"that could not be read: {exc}"))


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return exc.message


def _cached_tokens(usage: dict[str, Any]) -> int:
    """The input tokens the endpoint served from its prompt cache (OpenAI's usage.prompt_tokens_details)."""
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) and 0 <= cached <= MAX_TOKEN_COUNT else 0


def _observe(model: str, outcome: str, seconds: float, turn: ModelTurn, cached_tokens: int) -> None:
    """Count one model call in the engine's metrics (services/engine/metrics.py)."""
    metrics.MODEL_CALLS.labels(model, outcome).inc()
    metrics.MODEL_CALL_DURATION.labels(model, outcome).observe(seconds)
    if turn.time_to_first_token is not None:
        metrics.MODEL_TIME_TO_FIRST_TOKEN.labels(model).observe(turn.time_to_first_token)
    for kind, count in (("input", turn.usage.prompt_tokens), ("output", turn.usage.completion_tokens),
                        ("cached_input", cached_tokens)):
        if count:
            metrics.MODEL_TOKENS.labels(model, kind).inc(count)


class ModelClient:
    """Streams chat completions from one OpenAI-compatible endpoint."""

    def __init__(self, clients: list[openai.AsyncOpenAI]) -> None:
        """`clients`: one or more clients of the same endpoint; calls take them in turn (see app.py)."""
        self._clients = clients
        self._turns = itertools.cycle(clients)

    @property
    def base_url(self) -> str:
        return str(self._clients[0].base_url)

    async def stream_turn(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        sampling: "ModelSampling | None" = None,
    ) -> AsyncIterator[str | ToolCallChunk | ModelTurn]:
        """Yield text deltas and tool-call pieces as the model writes them, then the complete ModelTurn last."""
        turn = ModelTurn()
        text: list[str] = []
        partial_calls: dict[int, _PartialToolCall] = {}
        started = time.perf_counter()
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            body["tools"] = tools
        if sampling is not None:
            body |= sampling.body()
        # What the call's metrics say it came to: "cancelled" unless it ends otherwise (the run stopped meanwhile).
        outcome, cached_tokens = "cancelled", 0
        try:
            # The SDK's own request path (auth, retries with backoff, errors as openai exceptions), given the body
            # as JSON-ready dicts and reading chunks as dicts: chat.completions.create would walk the whole
            # conversation through its type-driven transform on every call and build a pydantic model per
            # chunk, which together were most of the engine's CPU.
            stream = await next(self._turns).post(
                "/chat/completions", body=body, cast_to=object, stream=True, stream_cls=openai.AsyncStream[object]
            )
            async with stream:
                async for chunk in stream:
                    if not _is_chunk(chunk):
                        raise RunFailure(
                            "bad_model_response",
                            errors.Unavailable(f"the model endpoint {self.base_url} sent a chunk that is not a chat "
                                               f"completion chunk: {str(chunk)[:200]}"),
                        )
                    usage = chunk.get("usage")
                    if usage:
                        turn.usage = Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
                        cached_tokens = turn.cached_prompt_tokens = min(_cached_tokens(usage), turn.usage.prompt_tokens)
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if choice.get("finish_reason"):
                            turn.finish_reason = str(choice["finish_reason"])
                        content = delta.get("content")
                        calls = delta.get("tool_calls")
                        if turn.time_to_first_token is None and (content or calls):
                            turn.time_to_first_token = time.perf_counter() - started
                        if content:
                            text.append(content)
                            yield content
                        for call in calls or ():
                            index = call.get("index") or 0
                            function = call.get("function") or {}
                            name = function.get("name") or ""
                            arguments = function.get("arguments") or ""
                            partial = partial_calls.setdefault(index, _PartialToolCall())
                            if call.get("id"):
                                partial.id = call["id"]
                            partial.name += name
                            partial.arguments.append(arguments)
                            yield ToolCallChunk(index, call.get("id") or "", name, arguments)
            turn.latency = time.perf_counter() - started
            turn.content = "".join(text)
            turn.tool_calls = [
                # Some servers omit ids; the conversation needs one to pair each call with its result.
                RequestedToolCall(p.id or f"call_{index}", p.name, "".join(p.arguments))
                for index, p in sorted(partial_calls.items())
            ]
            if any(not call.name for call in turn.tool_calls):
                raise RunFailure(
                    "bad_model_response",
                    errors.Unavailable(f"the model endpoint {self.base_url} sent a tool call without a tool name"),
                )
            outcome = "ok"
        except openai.OpenAIError as exc:
            log.warning("model call failed: %s", exc)
            failure = _model_error(exc, self.base_url, model)
            outcome = failure.code
            raise failure from exc
        except RunFailure as failure:
            outcome = failure.code
            raise
        finally:
            _observe(model, outcome, time.perf_counter() - started, turn, cached_tokens)
        yield turn

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
