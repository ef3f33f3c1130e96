"""Traces as an operator sees them (issue 19): the stack's processes export to an OTLP receiver in the test, and
the seed chat is ONE trace across engine, runs and tools, with the GenAI conventions' spans and attributes, joined
to the caller's own traceparent; GetRun names that trace; message content only with the setting."""

import json
from pathlib import Path

import pytest

from agentplatform.engine.v1 import engine_pb2
from agentplatform.runs.v1 import runs_pb2
from tests.e2e.faults import clients, ended, explained, fault_stack, get_runs, kill, wait_for
from tests.e2e.resumes import ORPHANED_WITHIN, kinds, restart_engine, resume_stack
from tests.support.otlp import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support.seed import SEED_QUESTION

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
SPAN_KIND_SERVER = 2


def _tracing(receiver: OtlpReceiver, **settings: str) -> dict[str, str]:
    # A short batch delay, so the spans arrive while the test waits, not at the processes' exit.
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100", **settings}


def _seed_chat(tmp_path: Path, **settings: str) -> tuple[runs_pb2.Run, list[ReceivedSpan]]:
    """The seed chat, sent with the caller's own traceparent, on a stack that exports its spans; the run as
    GetRun answers it, and the spans of the caller's trace once the run's and the tool calls' are in."""
    with otlp_receiver() as receiver, fault_stack(tmp_path, **_tracing(receiver, **settings)) as stack, \
            explained(stack), clients(stack) as (engine, runs):
        reply = engine.Chat(
            engine_pb2.ChatRequest(message=SEED_QUESTION),
            metadata=(("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01"),),
            timeout=60,
        )
        run = runs.GetRun(runs_pb2.GetRunRequest(run_id=reply.run_id))

        def complete(spans: list[ReceivedSpan]) -> bool:
            names = [span.name for span in spans if span.trace_id == TRACE_ID]
            return (
                "invoke_agent default" in names
                and names.count("agentplatform.tools.internal.v1.ToolExecutionService/ExecuteTool") == 2
            )

        spans = receiver.wait_for(complete)
    return run, [span for span in spans if span.trace_id == TRACE_ID]


def _one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, (name, [span.name for span in spans])
    return found[0]


def test_the_seed_chat_is_one_trace_across_the_services_in_the_genai_conventions(tmp_path: Path) -> None:
    run, spans = _seed_chat(tmp_path)
    assert run.state == runs_pb2.RUN_STATE_COMPLETED
    assert {span.service for span in spans} >= {"engine", "runs", "tools"}

    # The caller's traceparent is joined: the engine's Chat span is the child of the caller's span.
    chat_rpc = _one(spans, "agentplatform.engine.v1.AgentService/Chat")
    assert chat_rpc.service == "engine" and chat_rpc.kind == SPAN_KIND_SERVER
    assert chat_rpc.parent_id == CALLER_SPAN
    assert chat_rpc.attributes == {
        "rpc.system": "grpc", "rpc.service": "agentplatform.engine.v1.AgentService", "rpc.method": "Chat",
        "rpc.grpc.status_code": 0,
    }

    agent = _one(spans, "invoke_agent default")
    assert agent.parent_id == chat_rpc.span_id
    assert agent.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert agent.attributes["gen_ai.agent.name"] == "default"
    assert agent.attributes["agentplatform.run.id"] == run.id
    # GetRun names the trace, and the run's span in it.
    assert run.trace_id == TRACE_ID
    assert run.trace_span_id == agent.span_id

    # The run's creation on the runs service is in the run's span.
    create = _one(spans, "agentplatform.runs.internal.v1.ExecutionService/CreateRun")
    assert create.service == "runs" and create.parent_id == agent.span_id

    # Three model calls (two tool-call turns, then the answer), the run's children, with its tokens.
    model_calls = [span for span in spans if span.name.startswith("chat ")]
    assert len(model_calls) == 3
    for call in model_calls:
        assert call.parent_id == agent.span_id
        assert call.attributes["gen_ai.operation.name"] == "chat"
        assert call.attributes["gen_ai.request.model"] == run.model
        assert call.name == f"chat {run.model}"
    assert sum(call.attributes["gen_ai.usage.input_tokens"] for call in model_calls) == run.usage.prompt_tokens
    assert sum(call.attributes["gen_ai.usage.output_tokens"] for call in model_calls) == run.usage.completion_tokens
    assert sorted(call.attributes["gen_ai.response.finish_reasons"][0] for call in model_calls) == [
        "stop", "tool_calls", "tool_calls",
    ]

    # Two calculator calls, each the parent of the tools service's ExecuteTool span.
    tool_calls = [span for span in spans if span.name == "execute_tool calculator"]
    assert len(tool_calls) == 2
    executions = [s for s in spans if s.name == "agentplatform.tools.internal.v1.ToolExecutionService/ExecuteTool"]
    assert {s.parent_id for s in executions} == {call.span_id for call in tool_calls}
    assert {s.service for s in executions} == {"tools"}
    for call in tool_calls:
        assert call.parent_id == agent.span_id
        assert call.attributes["gen_ai.tool.name"] == "calculator"
        assert call.attributes["gen_ai.tool.call.id"]

    # No message content without OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: not the question, not the
    # calculator's arguments, on any span.
    for span in spans:
        assert SEED_QUESTION not in json.dumps(span.attributes), span
        assert not {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.call.arguments"} & set(
            span.attributes
        ), span


def test_message_content_only_with_the_setting(tmp_path: Path) -> None:
    run, spans = _seed_chat(tmp_path, OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true")
    assert run.state == runs_pb2.RUN_STATE_COMPLETED
    model_calls = sorted((span for span in spans if span.name.startswith("chat ")), key=lambda span: span.start)
    # In the conventions' structured form: the question a user text part of every call; the first answer asks
    # for the calculator as tool_call parts, which come back as tool_call_response parts of the next call.
    inputs = [json.loads(call.attributes["gen_ai.input.messages"]) for call in model_calls]
    outputs = [json.loads(call.attributes["gen_ai.output.messages"]) for call in model_calls]
    for messages in inputs:
        assert {"type": "text", "content": SEED_QUESTION} in messages[0]["parts"] and messages[0]["role"] == "user"
    asked = [part for part in outputs[0][0]["parts"] if part["type"] == "tool_call"]
    assert outputs[0][0]["role"] == "assistant" and outputs[0][0]["finish_reason"] == "tool_call"
    assert {part["name"] for part in asked} == {"calculator"} and asked[0]["arguments"]["operation"]
    answered = [part for message in inputs[1] for part in message["parts"] if part["type"] == "tool_call_response"]
    assert {part["id"] for part in answered} == {part["id"] for part in asked}
    assert outputs[-1][0]["finish_reason"] == "stop" and outputs[-1][0]["parts"][0]["type"] == "text"
    arguments = sorted(
        json.loads(span.attributes["gen_ai.tool.call.arguments"])["operation"]
        for span in spans if span.name == "execute_tool calculator"
    )
    assert arguments == ["add", "multiply"]


def test_a_run_resumed_by_another_engine_continues_its_trace_linked_to_the_interrupted_attempt(
    tmp_path: Path,
) -> None:
    with otlp_receiver() as receiver, \
            resume_stack(tmp_path, DEMO_MODEL_LATENCY_SECONDS=1.0, **_tracing(receiver)) as stack, \
            explained(stack), clients(stack) as (engine, runs):
        run_id = engine.StartRun(
            engine_pb2.StartRunRequest(message=SEED_QUESTION),
            metadata=(("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01"),),
            timeout=10,
        ).id
        wait_for("the run to have a tool result", 15, lambda: "tool_result" in kinds(get_runs(runs, [run_id])[0]))
        # Its first model call's span exported (batched every 100 ms) before the kill.
        receiver.wait_for(lambda spans: any(span.name.startswith("chat ") for span in spans))
        kill(stack, "engine")  # its run's span is never ended, so never exported: the run recorded its id
        wait_for("the run to be orphaned", ORPHANED_WITHIN, lambda: get_runs(runs, [run_id])[0].attempts == 1)
        restart_engine(stack)
        (run,) = wait_for("the resumed run to end", 30, lambda: ended(runs, [run_id]))
        assert run.state == runs_pb2.RUN_STATE_COMPLETED
        assert run.trace_id == TRACE_ID and run.trace_span_id

        def resumed_span(spans: list[ReceivedSpan]) -> bool:
            return any(span.name == "invoke_agent default" for span in spans)

        spans = [span for span in receiver.wait_for(resumed_span) if span.trace_id == TRACE_ID]
    resumed = _one(spans, "invoke_agent default")
    assert resumed.attributes["agentplatform.run.id"] == run.id
    # In the run's trace, under its first attempt's span, and linked to it.
    assert resumed.parent_id == run.trace_span_id
    assert resumed.links == ((TRACE_ID, run.trace_span_id),)
    # The resumed attempt's model calls are its children; the first attempt's were its own span's.
    parents = {span.parent_id for span in spans if span.name.startswith("chat ")}
    assert parents == {resumed.span_id, run.trace_span_id}
