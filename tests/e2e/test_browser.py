"""End to end in a real browser: the typed client (@agentplatform/client, clients/web) against Envoy.

tests/e2e/browser/page.ts is what a React app does with the client, one function per scenario; esbuild bundles
it with the client's TypeScript sources, and a page on an origin the gateway allows loads it in Debian's Chromium.
One Chromium serves the whole module: tests/e2e/browser/driver.mjs (playwright-core) takes commands on stdin,
so every scenario runs in the same tab, and a reload is a real one. The browser itself does the CORS preflight,
enforces the answer and streams the response; the tests read what page code could read: messages in
protobuf's JSON mapping, and errors as ConnectError's code and message.

Each scenario runs over grpc-web and over the Connect protocol. Skips when Chromium, node or the npm packages
are missing, unless REQUIRE_BROWSER=1 (CI sets it).

The browser side (serving the page, driving Chromium, reading what the page saw) is in browser_page.py; the
fixtures stay here, module-scoped: one stack with API keys (stack_settings) and one Chromium for these tests.
"""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentplatform.runs.v1 import runs_pb2
from agentplatform.tools.v1 import tools_pb2
from services.common.rpc.protoconv import dict_from_struct
from tests.conftest import free_port
from tests.e2e.browser_page import (
    ADMIN_KEY,
    ALICE_KEY,
    BOB_KEY,
    PROTOCOLS,
    TOOL_SWITCH_SECONDS,
    UNKNOWN_RUN_ID,
    Browser,
    Pages,
    answer_text,
    api_key_entries,
    bundle_page,
    missing_browser_tools,
    parse,
    run_events,
    serve_page,
    steps_of,
    tool_of,
    wait_for,
)
from tests.e2e.conftest import RunningStack
from tests.support.seed import SEED_CALCULATOR_SCHEMA, SEED_QUESTION, SEED_TIMELINE, timeline

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def browser_tools() -> None:
    """Requested before the stack, so a machine without a browser does not start the stack for nothing."""
    reason = missing_browser_tools()
    if reason is None:
        return
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def page_dir(browser_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("page")
    bundle_page(out)
    return out


@pytest.fixture(scope="module")
def stack_settings() -> dict[str, str]:
    """This module's stack runs with API keys, as a deployment reachable from a browser does."""
    return {"AUTH_API_KEYS": api_key_entries()}


@pytest.fixture(scope="module")
def pages(page_dir: Path, platform_stack: RunningStack) -> Iterator[Pages]:
    """One Chromium for the module, with the app's page open on the origin the gateway allows; the same page
    is also served from an origin it has never heard of, opened by the test that needs it."""
    with serve_page(page_dir, platform_stack.page_port) as allowed, serve_page(page_dir, free_port()) as disallowed:
        browser = Browser()
        try:
            browser.open("app", allowed)
            yield Pages(browser, allowed, disallowed, platform_stack.stack.gateway_url, token=ADMIN_KEY)
        finally:
            browser.close()


# --- Chat -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_streamed_chat_arrives_step_by_step(pages: Pages, protocol: str) -> None:
    events = run_events(pages.call("streamChat", protocol, message=SEED_QUESTION))

    assert events[0][1].WhichOneof("event") == "run"
    assert events[0][1].run.user_query == SEED_QUESTION
    assert events[-1][1].run.state == runs_pb2.RUN_STATE_COMPLETED
    steps = steps_of(events)
    assert [step.sequence for step in steps] == list(range(1, len(steps) + 1))
    assert timeline(steps) == SEED_TIMELINE
    assert "45" in answer_text(steps)

    # Streamed, not buffered: the page had the first step well before the finished run (the demo model takes
    # 30 ms per streamed piece, so the whole run lasts several hundred ms), in many separate arrivals.
    first_step_at = next(at for at, event in events if event.WhichOneof("event") == "step")
    assert events[-1][0] - first_step_at > 100, [at for at, _ in events]
    assert len({at for at, _ in events}) > 10, "the events came in a handful of reads: buffered somewhere"


# --- Inspect Runs -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_inspect_runs_lists_the_newest_run_first_and_shows_its_steps(pages: Pages, protocol: str) -> None:
    chat = pages.call("chat", protocol, message=SEED_QUESTION)
    assert "45" in chat["response"]

    listed = parse(pages.call("listRuns", protocol, pageSize=5), runs_pb2.ListRunsResponse())
    assert listed.runs[0].id == chat["runId"]
    assert listed.runs[0].state == runs_pb2.RUN_STATE_COMPLETED
    assert listed.runs[0].user_query == SEED_QUESTION
    assert not listed.runs[0].steps, "ListRuns returns runs without their steps"

    shown = pages.call("getRun", protocol, runId=chat["runId"])
    run = parse(shown["run"], runs_pb2.Run())
    assert run.state == runs_pb2.RUN_STATE_COMPLETED
    assert timeline(list(run.steps)) == SEED_TIMELINE
    # int64 is a bigint in the page; bigintReplacer makes it JSON-safe (a decimal string).
    assert shown["bigintStepCount"] == "bigint"
    assert shown["stepCount"] == str(len(run.steps)) == str(run.step_count)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_reloaded_page_reattaches_to_its_run_without_losing_a_step(pages: Pages, protocol: str) -> None:
    pages.call("beginChatForReattach", protocol, message=SEED_QUESTION)

    def seen_two_steps() -> dict[str, Any] | None:
        state = pages.browser.call("app", "reattachState")
        if state and "error" in state:
            raise AssertionError(f"the chat failed in the page: {state['error']}")
        return state if state and len(steps_of(run_events(state["events"]))) >= 2 else None

    wait_for("the page to see two steps", seen_two_steps, timeout=10)
    # A real reload: the browser drops the stream mid-run; the run goes on (on_disconnect CONTINUE).
    pages.browser.reload("app")
    reattached = pages.call("reattach", protocol)

    before, after = reattached["before"], run_events(reattached["after"])
    assert not before["ended"], "the run ended before the reload: nothing was left to re-attach to"
    steps_before = steps_of(run_events(before["events"]))
    steps_after = steps_of(after)
    assert str(steps_before[-1].sequence) == before["lastSequence"]
    assert steps_after, "the run had finished before the page re-attached"
    # Together exactly 1..n: nothing lost while the page reloaded, nothing sent twice.
    sequences = [step.sequence for step in steps_before + steps_after]
    assert sequences == list(range(1, len(sequences) + 1)), sequences
    assert timeline(steps_before + steps_after) == SEED_TIMELINE
    assert after[0][1].WhichOneof("event") == "run"
    assert after[-1][1].run.state == runs_pb2.RUN_STATE_COMPLETED
    assert after[-1][1].run.step_count == len(sequences)


# --- Manage Tools -----------------------------------------------------------------------------------------------

def chat_outcome(pages: Pages, protocol: str) -> tuple[list[tuple[Any, ...]], str]:
    """The seed question as a streamed chat: its timeline and the agent's answer."""
    events = run_events(pages.call("streamChat", protocol, message=SEED_QUESTION))
    assert events[-1][1].run.state == runs_pb2.RUN_STATE_COMPLETED
    steps = steps_of(events)
    return timeline(steps), answer_text(steps)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_manage_tools_shows_schemas_and_a_disabled_tool_is_refused(pages: Pages, protocol: str) -> None:
    listed = parse(pages.call("listTools", protocol), tools_pb2.ListToolsResponse())
    by_id = {tool.id: tool for tool in listed.tools}
    assert {"calculator", "file_io", "web_search"} <= set(by_id)
    assert by_id["calculator"].enabled
    assert all(tool.schema.fields for tool in listed.tools)

    calculator = tool_of(pages.call("getTool", protocol, toolId="calculator"))
    assert dict_from_struct(calculator.schema) == SEED_CALCULATOR_SCHEMA

    disabled = tool_of(pages.call("setToolEnabled", protocol, toolId="calculator", enabled=False))
    try:
        assert disabled.id == "calculator" and not disabled.enabled
        listed = parse(pages.call("listTools", protocol), tools_pb2.ListToolsResponse())
        assert not next(tool for tool in listed.tools if tool.id == "calculator").enabled

        # The engine may offer the tool from its cached list for a moment, but a disabled tool never runs:
        # every chat is refused, and once the list is re-read the model is no longer offered the calculator.
        def refused_without_offer() -> bool:
            steps, answer = chat_outcome(pages, protocol)
            assert "45" not in answer and ("tool_result", "calculator", 15) not in steps, (steps, answer)
            return steps == [("user_request",), ("agent_response",)] and "not available" in answer

        wait_for("a chat without the calculator", refused_without_offer, TOOL_SWITCH_SECONDS, interval=0.3)
    finally:
        enabled = tool_of(pages.call("setToolEnabled", protocol, toolId="calculator", enabled=True))
    assert enabled.enabled

    def calculates_again() -> bool:
        steps, answer = chat_outcome(pages, protocol)
        return steps == SEED_TIMELINE and "45" in answer

    wait_for("a chat with the calculator back", calculates_again, TOOL_SWITCH_SECONDS, interval=0.3)


# --- Errors -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_errors_code_and_message_are_readable(pages: Pages, protocol: str) -> None:
    not_found = pages.call_error("getRun", protocol, runId=UNKNOWN_RUN_ID)
    assert not_found["isConnectError"]
    assert not_found["code"] == "NotFound"
    assert "not found" in not_found["rawMessage"].lower()
    assert not_found["message"].startswith("[not_found]")
    assert not_found["retryDelayMs"] is None

    invalid = pages.call_error("listRuns", protocol, pageSize=-1)
    assert invalid["code"] == "InvalidArgument"
    assert "page_size" in invalid["rawMessage"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_page_from_a_disallowed_origin_is_refused_by_the_browser(pages: Pages, protocol: str) -> None:
    pages.browser.open("stranger", pages.disallowed_url)
    blocked = pages.call_error("listTools", protocol, page="stranger")
    # The browser refused the CORS preflight: page code sees a failed fetch, never a gRPC status.
    assert blocked["code"] in {"Unknown", "Unavailable", "Internal"}, blocked
    assert "fetch" in blocked["rawMessage"].lower(), blocked
    # The very same call from the allowed origin goes through: it is the origin that was refused.
    listed = parse(pages.call("listTools", protocol), tools_pb2.ListToolsResponse())
    assert "calculator" in {tool.id for tool in listed.tools}


# --- JSON on the wire, and the gateway's own refusals ------------------------------------------------------------

JSON_CODECS = ["grpc-web-json", "connect-json"]


@pytest.mark.parametrize("protocol", JSON_CODECS)
def test_json_on_the_wire_works_too(pages: Pages, protocol: str) -> None:
    """A page that speaks JSON (grpc-web +json, Connect JSON) gets the same answers: the gateway marks the call and
    the services speak the proto3 JSON mapping."""
    tool = parse(pages.call("getTool", protocol, toolId="calculator"), tools_pb2.Tool())
    assert tool.id == "calculator" and "operation" in tool.parameters["properties"]
    chat = pages.call("chat", protocol, message=SEED_QUESTION)
    run = parse(pages.call("getRun", protocol, runId=chat["runId"])["run"], runs_pb2.Run())
    assert run.state == runs_pb2.RUN_STATE_COMPLETED
    assert timeline(list(run.steps)) == SEED_TIMELINE
    missing = pages.call_error("getRun", protocol, runId=UNKNOWN_RUN_ID)
    assert missing["code"] == "NotFound", missing


def test_the_gateways_own_refusals_are_readable_in_the_page(pages: Pages) -> None:
    """The gateway answers an unknown or internal method, and a GET, itself; a page on an allowed origin can read
    why (with CORS headers), instead of seeing a failed fetch."""
    connection = pages.connection("grpc-web")
    internal = "/agentplatform.runs.internal.v1.ExecutionService/AppendSteps"
    for path in ("/agentplatform.nope.v1.NoService/Call", internal):
        answer = pages.browser.call(
            "app", "gatewayRefusal", connection=connection, path=path, method="POST",
            contentType="application/grpc-web+proto",
        )
        assert "error" not in answer, answer
        assert (answer["result"]["grpcStatus"], answer["result"]["grpcMessage"]) == (
            "12", "no such public gRPC method on this gateway"
        )
    answer = pages.browser.call(
        "app", "gatewayRefusal", connection=connection, path="/", method="GET", contentType=""
    )
    assert answer["result"]["status"] == 405 and "It expects POST" in answer["result"]["text"]


# --- Identity ----------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_unauthenticated_call_is_refused(pages: Pages, protocol: str) -> None:
    missing = pages.call_error("listRuns", protocol, token="", pageSize=5)
    assert missing["code"] == "Unauthenticated", missing
    wrong = pages.call_error("listRuns", protocol, token="not-a-key", pageSize=5)
    assert wrong["code"] == "Unauthenticated", wrong
    assert "not-a-key" not in wrong["rawMessage"], "a refused key must not be echoed back"
    # The same call with a key goes through: it was the missing key that was refused.
    pages.call("listRuns", protocol, token=ALICE_KEY, pageSize=5)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_another_users_run_is_invisible(pages: Pages, protocol: str) -> None:
    chat = pages.call("chat", protocol, token=ALICE_KEY, message=SEED_QUESTION)
    run_id = chat["runId"]
    assert parse(pages.call("getRun", protocol, token=ALICE_KEY, runId=run_id)["run"], runs_pb2.Run()).id == run_id

    # To Bob, Alice's run does not exist: NOT_FOUND (not PERMISSION_DENIED, which would confirm it exists).
    for fn, args in (("getRun", {"runId": run_id}), ("watchRun", {"runId": run_id, "afterSequence": 0})):
        hidden = pages.call_error(fn, protocol, token=BOB_KEY, **args)
        assert hidden["code"] == "NotFound", (fn, hidden)
    bobs = parse(pages.call("listRuns", protocol, token=BOB_KEY, pageSize=100), runs_pb2.ListRunsResponse())
    assert run_id not in {run.id for run in bobs.runs}
    alices = parse(pages.call("listRuns", protocol, token=ALICE_KEY, pageSize=100), runs_pb2.ListRunsResponse())
    assert run_id in {run.id for run in alices.runs}
