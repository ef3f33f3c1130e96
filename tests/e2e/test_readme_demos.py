"""The README's offline demos, run as the README shows them (`buf curl` against the stack `make run` starts, with
the demo model): an agent's instructions reaching the model, a two-turn conversation that uses the first answer, a
tool call that waits for approval, and a two-agent workflow with a condition and an approval."""

import json
import time
from typing import Any

import pytest

from tests.e2e.conftest import RunningStack
from tests.e2e.test_platform import buf_curl

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack_settings() -> dict[str, str]:
    # The engine reuses its list of tools for ENGINE_TOOLS_CACHE_SECONDS (2 s): a tool marked as requiring
    # approval reaches new runs within that time, as the README says. These demos mark one and start a run at once.
    return {"ENGINE_TOOLS_CACHE_SECONDS": "0"}

ENGINE = "agentplatform.engine.v1.AgentService"
RUNS = "agentplatform.runs.v1.RunService"
AGENTS = "agentplatform.agents.v1.AgentRegistryService"
WORKFLOWS = "agentplatform.agents.v1.WorkflowRegistryService"
TOOLS = "agentplatform.tools.v1.ToolService"


def call(address: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
    """A unary call over direct gRPC, as the README makes it (reflection, no proto files)."""
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


def create_agent(stack: RunningStack, name: str, instructions: str, tools: list[str]) -> str:
    agent = {"displayName": name, "instructions": instructions, "model": "demo", "tools": tools}
    return str(call(stack.stack.agents_address, f"{AGENTS}/CreateAgent", {"agent": agent})["id"])


def test_an_agents_instructions_reach_the_demo_model(platform_stack: RunningStack) -> None:
    ada = create_agent(platform_stack, "Math tutor", "You are Ada, a patient math tutor.", ["calculator"])
    answer = call(platform_stack.stack.engine_address, f"{ENGINE}/Chat", {"message": "hello", "agentId": ada})
    assert answer["response"].startswith("I'm Ada, running on the offline demo model")


def test_a_two_turn_conversation_uses_the_first_answer(platform_stack: RunningStack) -> None:
    engine = platform_stack.stack.engine_address
    first = call(engine, f"{ENGINE}/Chat", {"message": "What is 5 + 10?"})
    assert first["response"] == "The result is 15."
    second = call(engine, f"{ENGINE}/Chat", {"message": "Multiply that by 3", "threadId": first["threadId"]})
    assert (second["response"], second["threadId"]) == ("The result is 45.", first["threadId"])
    turns = call(platform_stack.stack.runs_address, f"{RUNS}/ListRuns", {"threadId": first["threadId"]})["runs"]
    assert [run["id"] for run in turns] == [first["runId"], second["runId"]]


def test_a_tool_call_waits_for_approval(platform_stack: RunningStack) -> None:
    stack = platform_stack.stack
    marked = call(stack.tools_address, f"{TOOLS}/UpdateTool",
                  {"tool": {"id": "file_io", "requiresApproval": True}, "updateMask": "requiresApproval"})
    try:
        assert marked["requiresApproval"] is True
        run = call(stack.engine_address, f"{ENGINE}/StartRun", {"message": "write hello to notes.txt"})
        waiting = wait_state(platform_stack, run["id"], "RUN_STATE_WAITING")
        [request] = [step for step in waiting["steps"] if "approvalRequest" in step]
        assert request["sequence"] == "4" and request["approvalRequest"]["toolName"] == "file_io"
        call(stack.runs_address, f"{RUNS}/ApproveStep", {"runId": run["id"], "sequence": 4, "comment": "ok"})
        done = wait_state(platform_stack, run["id"], "RUN_STATE_COMPLETED")
        assert "toolResult" in done["steps"][5] and "error" not in done["steps"][5]["toolResult"]
    finally:
        call(stack.tools_address, f"{TOOLS}/UpdateTool",
             {"tool": {"id": "file_io", "requiresApproval": False}, "updateMask": "requiresApproval"})


def test_a_two_agent_workflow_with_a_condition_and_an_approval(platform_stack: RunningStack) -> None:
    stack = platform_stack.stack
    ada = create_agent(platform_stack, "Math tutor", "You are Ada, a patient math tutor.", ["calculator"])
    checker = create_agent(platform_stack, "Checker", "You are Checker; you read answers back.", [])
    workflow = {
        "displayName": "Checked sum",
        "inputs": [{"name": "question", "required": True}],
        "nodes": [
            {"id": "start", "start": {}},
            {"id": "solve", "agent": {"agentId": ada, "input": "question", "output": "answer"}},
            {"id": "sure", "ifElse": {"condition": 'answer.startsWith("The result is")'}},
            {"id": "approve", "approval": {"prompt": '"Send this answer? " + answer', "timeout": "3600s"}},
            {"id": "check", "agent": {"agentId": checker, "input": "answer", "output": "review"}},
            {"id": "sent", "end": {"output": '{"answer": answer, "review": review}'}},
            {"id": "held", "end": {"output": '{"answer": answer, "sent": false}'}},
        ],
        "edges": [
            {"fromNode": "start", "toNode": "solve"},
            {"fromNode": "solve", "toNode": "sure"},
            {"fromNode": "sure", "toNode": "approve", "branch": "true"},
            {"fromNode": "sure", "toNode": "held", "branch": "false"},
            {"fromNode": "approve", "toNode": "check", "branch": "approved"},
            {"fromNode": "approve", "toNode": "held", "branch": "rejected"},
            {"fromNode": "approve", "toNode": "held", "branch": "timeout"},
            {"fromNode": "check", "toNode": "sent"},
        ],
    }
    saved = call(stack.agents_address, f"{WORKFLOWS}/CreateWorkflow", {"workflow": workflow})
    run = call(stack.engine_address, f"{ENGINE}/StartWorkflowRun",
               {"workflowId": saved["id"], "inputs": {"question": "What is 5 + 10?"}})
    waiting = wait_state(platform_stack, run["id"], "RUN_STATE_WAITING")
    [request] = [step for step in waiting["steps"] if "approvalRequest" in step]
    assert request["approvalRequest"]["prompt"] == "Send this answer? The result is 15."
    assert request["sequence"] == "9"
    call(stack.runs_address, f"{RUNS}/ApproveStep", {"runId": run["id"], "sequence": 9})
    done = wait_state(platform_stack, run["id"], "RUN_STATE_COMPLETED")
    result = json.loads(done["steps"][-1]["agentResponse"]["text"])
    assert result["answer"] == "The result is 15."
    assert result["review"].startswith("I'm Checker, running on the offline demo model")
    outcomes = [step for step in done["steps"] if "nodeOutcome" in step]
    path = [(step["nodeId"], step["nodeOutcome"].get("branch", "")) for step in outcomes]
    assert path == [
        ("start", ""), ("solve", ""), ("sure", "true"), ("approve", "approved"), ("check", ""), ("sent", "")
    ]
