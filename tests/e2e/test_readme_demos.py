"""The docs' offline demos, run as the docs show them (`buf curl` against the stack `make run` starts, with the demo
model): an agent's instructions reaching the model and a two-agent workflow with a condition and an approval
(docs/agents-and-workflows.md), a run in the background asked "slowly", watched and cancelled while it runs, a
two-turn conversation that uses the first answer and a tool call that waits for approval (docs/runs.md). Each
request body is read from the doc's own `buf curl` command, with the ids the doc writes as placeholders (AGENT_ID,
RUN_ID, ...) filled in, so a demo that breaks in the docs fails here."""

import itertools
import json
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningStack
from tests.e2e.test_platform import BUF, buf_curl

pytestmark = pytest.mark.e2e

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def stack_settings() -> dict[str, str]:
    # The engine reuses its list of tools for ENGINE_TOOLS_CACHE_SECONDS (2 s): a tool marked as requiring
    # approval reaches new runs within that time, as docs/runs.md says. These demos mark one and start a run at once.
    return {"ENGINE_TOOLS_CACHE_SECONDS": "0"}

ENGINE = "agentplatform.engine.v1.AgentService"
RUNS = "agentplatform.runs.v1.RunService"
AGENTS = "agentplatform.agents.v1.AgentRegistryService"
WORKFLOWS = "agentplatform.agents.v1.WorkflowRegistryService"
TOOLS = "agentplatform.tools.v1.ToolService"


def doc_commands(doc: str, method: str) -> list[list[str]]:
    """The doc's `npx buf curl` commands that call `method` ("Service/Method"), as words, in the order the doc
    shows them."""
    text = (DOCS / doc).read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        words = shlex.split(block.replace("\\\n", " "), comments=True)
        starts = [i for i, word in enumerate(words) if word == "npx"] + [len(words)]
        for start, end in itertools.pairwise(starts):
            command = words[start:end]
            if command[-1].endswith(f".{method}"):
                commands.append(command)
    assert commands, f"docs/{doc} shows no buf curl call of {method}"
    return commands


def doc_bodies(doc: str, method: str) -> list[str]:
    """The `-d` bodies of the doc's `npx buf curl` commands that call `method`, in the order the doc shows them."""
    return [command[command.index("-d") + 1] for command in doc_commands(doc, method)]


def run_as_written(stack: RunningStack, command: list[str]) -> dict[str, Any]:
    """A doc's `npx buf curl` command run as it is written, against this stack's addresses (the doc shows
    `make run`'s default ports), from the repository root (where `--schema protos` is)."""
    defaults = {"http://127.0.0.1:8080/": f"{stack.stack.gateway_url}/",
                "http://127.0.0.1:50052/": f"http://{stack.stack.tools_address}/"}
    url = command[-1]
    for default, actual in defaults.items():
        url = url.replace(default, actual)
    assert command[:3] == ["npx", "buf", "curl"], command
    parsed: dict[str, Any] = json.loads(buf_curl(*command[3:-1], url))
    return parsed


def demo(doc: str, method: str, index: int = 0, **ids: str) -> dict[str, Any]:
    """The body of the doc's `index`-th call of `method`, its placeholders (`AGENT_ID=...`) replaced by real ids."""
    body = doc_bodies(doc, method)[index]
    for placeholder, value in ids.items():
        assert f'"{placeholder}"' in body, (placeholder, body)
        body = body.replace(f'"{placeholder}"', json.dumps(value))
    parsed: dict[str, Any] = json.loads(body)
    return parsed


def call(address: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
    """A unary call over direct gRPC, as the docs make it (reflection, no proto files)."""
    out = buf_curl("--protocol", "grpc", "--http2-prior-knowledge", "-d", json.dumps(body), f"http://{address}/{method}")
    return json.loads(out) if out.strip() else {}


def wait_state(stack: RunningStack, run_id: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = call(stack.stack.runs_address, f"{RUNS}/GetRun", {"runId": run_id})
        if run["state"] == state or time.monotonic() > deadline:
            assert run["state"] == state, run
            return run
        time.sleep(0.2)


def create_agent(stack: RunningStack, index: int) -> str:
    """The doc's `index`-th saved agent (0: Ada, 1: Checker), created as docs/agents-and-workflows.md shows."""
    body = demo("agents-and-workflows.md", "AgentRegistryService/CreateAgent", index)
    return str(call(stack.stack.agents_address, f"{AGENTS}/CreateAgent", body)["id"])


def test_an_agents_instructions_reach_the_demo_model(platform_stack: RunningStack) -> None:
    ada = create_agent(platform_stack, 0)
    answer = call(platform_stack.stack.engine_address, f"{ENGINE}/Chat",
                  demo("agents-and-workflows.md", "AgentService/Chat", AGENT_ID=ada))
    assert answer["response"].startswith("I'm Ada, running on the offline demo model")


def test_a_slow_run_is_watched_and_cancelled_while_it_runs(platform_stack: RunningStack) -> None:
    """The doc's StartRun, WatchRun and CancelRun in its order: asked "slowly", the demo model pauses before each
    reply (DEMO_MODEL_SLOW_SECONDS, 10 s), so the cancel lands on a live run, and the watch ends with it."""
    stack = platform_stack.stack
    run = call(stack.engine_address, f"{ENGINE}/StartRun", demo("runs.md", "AgentService/StartRun", 0))
    assert "slowly" in run["userQuery"].lower()
    watch_body = demo("runs.md", "RunService/WatchRun", 0, RUN_ID=run["id"])
    watch = subprocess.Popen(
        [str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "-d", json.dumps(watch_body),
         f"http://{stack.runs_address}/{RUNS}/WatchRun"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # The watch's first event (the run as it is now: buf curl prints it as soon as it comes) says it is
        # attached; a watch that started after the run had ended would be refused for its afterSequence.
        assert watch.stdout is not None
        first = ""
        for line in watch.stdout:  # up to the end of the first (pretty-printed) object, or of the output
            first += line
            if line == "}\n":
                break
        cancel = demo("runs.md", "RunService/CancelRun", RUN_ID=run["id"])
        # A run that had already ended would refuse the cancel (FAILED_PRECONDITION) and fail this call.
        call(stack.runs_address, f"{RUNS}/CancelRun", cancel)
        cancelled_at = time.monotonic()
        out, errors = watch.communicate(timeout=30)
        out = first + out
    finally:
        watch.kill()
    assert watch.returncode == 0, errors
    assert time.monotonic() - cancelled_at < 8, "the cancel ends the run at once, not after the model's pause"
    decoder, events, text = json.JSONDecoder(), [], out.strip()
    while text:
        event, end = decoder.raw_decode(text)
        events.append(event)
        text = text[end:].strip()
    assert events[-1]["run"]["state"] == "RUN_STATE_CANCELLED", events
    # The error step may come before the watch's afterSequence (the cancel lands early): GetRun has every step.
    stored = call(stack.runs_address, f"{RUNS}/GetRun", {"runId": run["id"]})
    assert "error" in stored["steps"][-1] and cancel["reason"] in stored["steps"][-1]["error"]["message"], stored


def test_a_disabled_tool_shows_enabled_false_in_the_docs_commands_and_in_json_through_the_gateway(
    platform_stack: RunningStack,
) -> None:
    """docs/tools.md's "Disable a tool", both commands as written (`--emit-defaults`), and the same call in the
    Connect protocol's JSON through the gateway, which the services encode (services/common/rpc/codec.py): each
    shows `"enabled": false`, which protobuf's JSON mapping leaves out by default."""
    stack = platform_stack.stack
    try:
        for command in doc_commands("tools.md", "ToolService/UpdateTool"):
            tool = run_as_written(platform_stack, command)
            assert tool["id"] == "web_search" and tool["enabled"] is False, (command, tool)
        answer = httpx.post(
            platform_stack.url(f"{TOOLS}/UpdateTool"),
            json={"tool": {"id": "web_search", "enabled": False}, "updateMask": "enabled"},
            headers={"connect-protocol-version": "1"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        tool = answer.json()
        assert tool["enabled"] is False and tool["requiresApproval"] is False, tool
    finally:
        call(stack.tools_address, f"{TOOLS}/UpdateTool",
             {"tool": {"id": "web_search", "enabled": True}, "updateMask": "enabled"})


def test_a_two_turn_conversation_uses_the_first_answer(platform_stack: RunningStack) -> None:
    engine = platform_stack.stack.engine_address
    first = call(engine, f"{ENGINE}/Chat", demo("runs.md", "AgentService/Chat", 0))
    assert first["response"] == "The result is 15."
    second = call(engine, f"{ENGINE}/Chat", demo("runs.md", "AgentService/Chat", 1, THREAD_ID=first["threadId"]))
    assert (second["response"], second["threadId"]) == ("The result is 45.", first["threadId"])
    turns = call(platform_stack.stack.runs_address, f"{RUNS}/ListRuns",
                 demo("runs.md", "RunService/ListRuns", 2, THREAD_ID=first["threadId"]))["runs"]
    assert [run["id"] for run in turns] == [first["runId"], second["runId"]]


def test_a_tool_call_waits_for_approval(platform_stack: RunningStack) -> None:
    stack = platform_stack.stack
    marked = call(stack.tools_address, f"{TOOLS}/UpdateTool", demo("runs.md", "ToolService/UpdateTool"))
    try:
        assert marked["id"] == "file_io" and marked["requiresApproval"] is True
        run = call(stack.engine_address, f"{ENGINE}/StartRun", demo("runs.md", "AgentService/StartRun", 1))
        waiting = wait_state(platform_stack, run["id"], "RUN_STATE_WAITING")
        [request] = [step for step in waiting["steps"] if "approvalRequest" in step]
        assert request["sequence"] == "4" and request["approvalRequest"]["toolName"] == "file_io"
        approve = demo("runs.md", "RunService/ApproveStep", RUN_ID=run["id"])
        assert approve["sequence"] == 4
        call(stack.runs_address, f"{RUNS}/ApproveStep", approve)
        done = wait_state(platform_stack, run["id"], "RUN_STATE_COMPLETED")
        assert "toolResult" in done["steps"][5] and "error" not in done["steps"][5]["toolResult"]
    finally:
        call(stack.tools_address, f"{TOOLS}/UpdateTool",
             {"tool": {"id": "file_io", "requiresApproval": False}, "updateMask": "requiresApproval"})


def test_a_two_agent_workflow_with_a_condition_and_an_approval(platform_stack: RunningStack) -> None:
    stack = platform_stack.stack
    ada = create_agent(platform_stack, 0)
    checker = create_agent(platform_stack, 1)
    doc = "agents-and-workflows.md"
    saved = call(stack.agents_address, f"{WORKFLOWS}/CreateWorkflow",
                 demo(doc, "WorkflowRegistryService/CreateWorkflow", ADA_ID=ada, CHECKER_ID=checker))
    run = call(stack.engine_address, f"{ENGINE}/StartWorkflowRun",
               demo(doc, "AgentService/StartWorkflowRun", WORKFLOW_ID=saved["id"]))
    waiting = wait_state(platform_stack, run["id"], "RUN_STATE_WAITING")
    [request] = [step for step in waiting["steps"] if "approvalRequest" in step]
    assert request["approvalRequest"]["prompt"] == "Send this answer? The result is 15."
    assert request["sequence"] == "9"
    approve = demo(doc, "RunService/ApproveStep", RUN_ID=run["id"])
    assert approve["sequence"] == 9
    call(stack.runs_address, f"{RUNS}/ApproveStep", approve)
    done = wait_state(platform_stack, run["id"], "RUN_STATE_COMPLETED")
    result = json.loads(done["steps"][-1]["agentResponse"]["text"])
    assert result["answer"] == "The result is 15."
    assert result["review"].startswith("I'm Checker, running on the offline demo model")
    outcomes = [step for step in done["steps"] if "nodeOutcome" in step]
    path = [(step["nodeId"], step["nodeOutcome"].get("branch", "")) for step in outcomes]
    assert path == [
        ("start", ""), ("solve", ""), ("sure", "true"), ("approve", "approved"), ("check", ""), ("sent", "")
    ]
