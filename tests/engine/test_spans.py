"""The engine's span helpers that are pure: a run's recorded trace context, read back for a resume, and nothing
at all made with tracing off."""

from opentelemetry.trace import TraceFlags

from services.common import tracing
from services.engine import spans
from services.engine.upstream.run_messages import trace_ids_of, traceparent_of

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_recorded_traceparent_is_read_back_as_the_span_a_resume_continues() -> None:
    context = spans.parse_traceparent(TRACEPARENT)
    assert context is not None
    assert (f"{context.trace_id:032x}", f"{context.span_id:016x}") == trace_ids_of(TRACEPARENT)
    assert context.trace_flags == TraceFlags.SAMPLED and context.is_remote
    assert spans.trace_id(TRACEPARENT) == "4bf92f3577b34da6a3ce929d0e0e4736"
    # The store keeps the two ids; the engine puts them together again.
    assert traceparent_of(*trace_ids_of(TRACEPARENT)) == TRACEPARENT
    assert traceparent_of("", "") == "" and trace_ids_of("") == ("", "")


def test_anything_else_is_no_trace() -> None:
    for text in ("", "00-xyz", f"01-{'a' * 32}-{'b' * 16}-01", f"00-{'0' * 32}-{'b' * 16}-01",
                 f"00-{'g' * 32}-{'b' * 16}-01", f"00-{'a' * 32}-{'b' * 15}-01"):
        assert spans.parse_traceparent(text) is None, text
        assert spans.trace_id(text) == ""


def test_with_tracing_off_no_span_is_made() -> None:
    assert not tracing.enabled()
    assert spans.run_span(agent_id="", thread_id="", model="m", resumed_from=TRACEPARENT) is None
    assert spans.traceparent(None) == ""
    call = spans.ModelCallSpan("m", "http://model", [{"role": "user", "content": "secret"}])
    assert call.span is None
    with spans.tool_call("calculator", "call_1", {"x": 1}) as span:
        assert span is None
