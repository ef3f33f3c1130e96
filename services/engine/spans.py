"""The engine's spans, named and attributed after the OpenTelemetry GenAI semantic conventions: `invoke_agent
{agent}` (or `invoke_workflow {workflow}`) for a run, `chat {model}` per model call, `execute_tool {tool}` per
tool call, and a span per workflow node.

Used by the scheduler (a run's span), the agent loop (model calls), the tools client (tool calls) and the
workflow runner (nodes). With tracing off (services.common.tracing) every function here returns a context that
does nothing and creates no span. Prompts, answers, tool arguments and results go into spans only with
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true: they may hold personal data. Messages are in the
conventions' structured form (services.engine.genai_content).
"""

import json
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, TraceFlags

from services.common import tracing
from services.engine import genai_content

#: The model endpoints the engine calls speak the OpenAI chat-completions API.
PROVIDER = "openai"

#: A run's id on its span (no GenAI attribute names it; the conversation id is the run's thread).
RUN_ID = "agentplatform.run.id"


def _start(name: str, kind: trace.SpanKind, attributes: dict[str, Any]) -> trace.Span:
    return tracing.tracer().start_span(name, kind=kind, attributes=attributes)


def run_span(
    *,
    agent_id: str,
    thread_id: str,
    model: str,
    workflow_id: str = "",
    resumed_from: str = "",
) -> trace.Span | None:
    """The span of a run executed here, started now (not current: the caller makes it current in the run's task);
    None with tracing off. `resumed_from`: the traceparent the run recorded when it began, for a run resumed
    after its engine stopped or after an approval; the span joins that trace, as a child of that first span, and
    links to it (the interrupted attempt)."""
    if not tracing.enabled():
        return None
    if workflow_id:
        name, operation = f"invoke_workflow {workflow_id}", "invoke_workflow"
    else:
        name, operation = f"invoke_agent {agent_id or 'default'}", "invoke_agent"
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.model": model,
    }
    if workflow_id:
        attributes["gen_ai.workflow.name"] = workflow_id
    else:
        attributes["gen_ai.agent.id"] = agent_id or "default"
        attributes["gen_ai.agent.name"] = agent_id or "default"
    if thread_id:
        attributes["gen_ai.conversation.id"] = thread_id
    earlier = parse_traceparent(resumed_from)
    if earlier is None:
        return _start(name, trace.SpanKind.INTERNAL, attributes)
    parent = trace.set_span_in_context(trace.NonRecordingSpan(earlier))
    return tracing.tracer().start_span(
        name, context=parent, kind=trace.SpanKind.INTERNAL, attributes=attributes,
        links=[Link(earlier, {"agentplatform.link": "interrupted_attempt"})],
    )


def name_run(span: trace.Span | None, run_id: str) -> None:
    """Put the run's id on its span, once the store has given it one."""
    if span is not None:
        span.set_attribute(RUN_ID, run_id)


def current(span: trace.Span | None, *, end: bool) -> AbstractContextManager[object]:
    """`span` as the current span while the block runs (nothing for None); ended after it when `end`."""
    if span is None:
        return nullcontext()
    return trace.use_span(span, end_on_exit=end, record_exception=False, set_status_on_exception=False)


def end(span: trace.Span | None, error_type: str = "") -> None:
    """End `span`, failed with `error_type` when one is given."""
    if span is None:
        return
    if error_type:
        failed(span, error_type)
    span.end()


def traceparent(span: trace.Span | None) -> str:
    """The W3C traceparent of `span` ("" for none, or one the sampler dropped: there is no trace to name): what a
    run records, so a resume continues its trace."""
    if span is None:
        return ""
    context = span.get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def parse_traceparent(text: str) -> SpanContext | None:
    """The span context a recorded traceparent names; None for "" or anything malformed."""
    parts = text.split("-")
    if len(parts) != 4 or parts[0] != "00" or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
    return context if context.is_valid else None


def trace_id(traceparent_text: str) -> str:
    """The trace id (32 hex digits) of a recorded traceparent; "" for none."""
    context = parse_traceparent(traceparent_text)
    return f"{context.trace_id:032x}" if context is not None else ""


class ModelCallSpan:
    """The `chat {model}` span of one model call, while it is current; a no-op with tracing off."""

    def __init__(self, model: str, server: str, messages: list[dict[str, Any]]) -> None:
        self.span: trace.Span | None = None
        if tracing.enabled():
            attributes: dict[str, Any] = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": PROVIDER,
                "gen_ai.request.model": model,
                "server.address": server,
            }
            if tracing.capture_content():
                system, chat = genai_content.input_content(messages)
                attributes["gen_ai.input.messages"] = chat
                if system:
                    attributes["gen_ai.system_instructions"] = system
            self.span = _start(f"chat {model}", trace.SpanKind.CLIENT, attributes)

    def current(self) -> AbstractContextManager[object]:
        return current(self.span, end=True)

    def answered(
        self,
        input_tokens: int,
        output_tokens: int,
        finish_reason: str,
        content: str,
        tool_calls: Iterable[tuple[str, str, str]],
    ) -> None:
        """The model's answer: its usage and finish reason; with content capture on, its text and the tool calls
        (id, name, raw arguments) it asked for."""
        if self.span is None:
            return
        self.span.set_attributes({
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            "gen_ai.response.finish_reasons": [finish_reason] if finish_reason else [],
        })
        if tracing.capture_content():
            self.span.set_attribute(
                "gen_ai.output.messages", genai_content.output_content(content, tool_calls, finish_reason)
            )

    def failed(self, error_type: str) -> None:
        failed(self.span, error_type)


def failed(span: trace.Span | None, error_type: str) -> None:
    """Mark `span` failed with `error_type` (the run's failure code, or the exception's type)."""
    if span is not None:
        span.set_attribute("error.type", error_type)
        span.set_status(trace.StatusCode.ERROR, error_type)


@contextmanager
def tool_call(tool: str, call_id: str, arguments: dict[str, Any]) -> Iterator[trace.Span | None]:
    """The `execute_tool {tool}` span around one tool call, current while it runs (so the tools service's span
    is its child); yields None with tracing off."""
    if not tracing.enabled():
        yield None
        return
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool,
        "gen_ai.tool.type": "function",
    }
    if call_id:
        attributes["gen_ai.tool.call.id"] = call_id
    if tracing.capture_content():
        attributes["gen_ai.tool.call.arguments"] = json.dumps(arguments, ensure_ascii=False)
    with tracing.tracer().start_as_current_span(
        f"execute_tool {tool}", kind=trace.SpanKind.INTERNAL, attributes=attributes, record_exception=False
    ) as span:
        yield span


def tool_result(span: trace.Span | None, error: str, text: str) -> None:
    """What a tool call came to, on its span: an error type when it failed, its text with content capture on."""
    if span is None:
        return
    if error:
        failed(span, "tool_error")
    elif tracing.capture_content():
        span.set_attribute("gen_ai.tool.call.result", text)


@contextmanager
def workflow_node(node_id: str, kind: str) -> Iterator[None]:
    """A span around one workflow node's visit, named `{kind} {node_id}`."""
    if not tracing.enabled():
        yield
        return
    with tracing.tracer().start_as_current_span(
        f"{kind} {node_id}",
        attributes={"agentplatform.workflow.node.id": node_id, "agentplatform.workflow.node.kind": kind},
    ):
        yield
