"""The `agentplatform` command (agentplatform_client.cli) against the whole stack behind Envoy: a chat's live
timeline and its JSON events, `runs ls --json`, tools disabled and enabled, the exit codes of errors, the
installed entry point reading its address and key from the environment, and Ctrl-C on a chat cancelling the run
(or, with --on-interrupt detach, leaving it running), and approvals listed, approved and rejected."""

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agentplatform_client import Client
from agentplatform_client.cli.app import app
from agentplatform_client.cli.output import EXIT_INTERRUPTED
from agentplatform_client.types import RunState
from tests.clients.python.stack import gateway_address, keyed_gateway_stack
from tests.e2e.conftest import RunningStack
from tests.e2e.faults import FINAL, wait_for
from tests.support.keys import ADMIN, ALICE
from tests.support.seed import SEED_QUESTION, SEED_TIMELINE, timeline

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

AGENTPLATFORM = Path(sys.executable).with_name("agentplatform")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    # A model slow enough (0.5 s a turn) for a chat to be interrupted mid-run; the engine reads a tool's
    # requires_approval afresh for every run.
    with keyed_gateway_stack(tmp_path_factory.mktemp("cli"), DEMO_MODEL_LATENCY_SECONDS="0.5",
                       ENGINE_TOOLS_CACHE_SECONDS="0") as running:
        yield running


def cli(stack: RunningStack, *args: str, key: str = ALICE) -> Any:
    """`agentplatform --address <gateway> --api-key <key> args...` in process (Typer's CliRunner)."""
    return CliRunner().invoke(app, ["--address", gateway_address(stack), "--api-key", key, *args])


def test_chat_shows_the_timeline_and_its_json_events_are_the_stored_run(stack: RunningStack) -> None:
    shown = cli(stack, "chat", SEED_QUESTION)
    assert shown.exit_code == 0, shown.output
    for expected in ("tool call: calculator", "result: calculator", "COMPLETED", "45"):
        assert expected in shown.output, shown.output

    streamed = cli(stack, "chat", SEED_QUESTION, "--json")
    assert streamed.exit_code == 0, streamed.output
    events = [json.loads(line) for line in streamed.output.splitlines()]
    assert events[-1]["run"]["state"] == "RUN_STATE_COMPLETED", events[-1]
    steps = [event["step"] for event in events if "step" in event]
    assert [int(step["sequence"]) for step in steps] == list(range(1, len(steps) + 1))
    with Client(gateway_address(stack), api_key=ALICE) as client:
        stored = client.get_run(events[-1]["run"]["id"])
    assert len(stored.steps) == len(steps) and timeline(list(stored.steps)) == SEED_TIMELINE

    listed = cli(stack, "runs", "ls", "--json", "--limit", "2")
    assert listed.exit_code == 0, listed.output
    runs = json.loads(listed.output)
    assert (runs[0]["id"], len(runs)) == (stored.id, 2), runs

    exported = cli(stack, "runs", "export", stored.id)
    assert exported.exit_code == 0 and len(json.loads(exported.output)["steps"]) == len(steps)
    # A substring of the seed's question ("... then multiply by 3?") finds it; one it does not have, nothing.
    for contains, found in (("ULTIPLY BY", True), ("multiply by 4", False)):
        searched = cli(stack, "runs", "export", "--contains", contains)
        assert searched.exit_code == 0, searched.output
        ids = [json.loads(line)["run"]["id"] for line in searched.output.splitlines() if line.startswith("{")]
        assert (stored.id in ids) is found, (contains, ids)


def test_every_run_exported_as_json_lines_imports_back_the_same(stack: RunningStack, tmp_path: Path) -> None:
    with Client(gateway_address(stack), api_key=ALICE) as client:
        asked = client.chat("What is 2 + 3?").run
    dump = tmp_path / "runs.jsonl"
    exported = cli(stack, "runs", "export", "--state", "completed", "--output", str(dump))
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in dump.read_text().splitlines()]
    assert asked.id in [line["run"]["id"] for line in lines] and all(line["cursor"] for line in lines)
    assert f"exported {len(lines)} run(s)" in exported.output
    with Client(gateway_address(stack), api_key=ALICE) as client:
        before = {line["run"]["id"]: client.get_run(line["run"]["id"]) for line in lines}
        for run_id in before:
            client.delete_run(run_id)
    assert cli(stack, "runs", "import", str(dump)).exit_code == 17  # PERMISSION_DENIED: admins import
    imported = cli(stack, "runs", "import", str(dump), key=ADMIN)
    assert imported.exit_code == 0 and f"imported {len(lines)} run(s)" in imported.output, imported.output
    with Client(gateway_address(stack), api_key=ALICE) as client:
        assert {run_id: client.get_run(run_id) for run_id in before} == before
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    assert cli(stack, "runs", "import", str(tmp_path / "bad.jsonl"), key=ADMIN).exit_code == 2


def test_tools_disable_and_enable_and_the_exit_codes_of_errors(stack: RunningStack) -> None:
    disabled = cli(stack, "tools", "disable", "calculator", "--json", key=ADMIN)
    assert disabled.exit_code == 0, disabled.output
    # "enabled": false is printed, not left out as proto3 JSON does by default.
    assert json.loads(disabled.output)["enabled"] is False
    listed = json.loads(cli(stack, "tools", "ls", "--json", "--enabled-only").output)
    assert "calculator" not in [tool["id"] for tool in listed]
    enabled = cli(stack, "tools", "enable", "calculator", "--json", key=ADMIN)
    assert enabled.exit_code == 0 and json.loads(enabled.output)["enabled"] is True

    # 10 + the gRPC status code: PERMISSION_DENIED (7), NOT_FOUND (5), INVALID_ARGUMENT (3), UNAUTHENTICATED (16).
    denied = cli(stack, "tools", "disable", "calculator")
    assert (denied.exit_code, "PERMISSION_DENIED" in denied.output) == (17, True), denied.output
    assert cli(stack, "runs", "show", "00000000-0000-0000-0000-000000000000").exit_code == 15
    assert cli(stack, "runs", "show", "not-a-run-id").exit_code == 13  # INVALID_ARGUMENT (3)
    assert cli(stack, "runs", "ls", key="apk_wrong").exit_code == 26


def test_the_installed_command_reads_its_address_and_key_from_the_environment(stack: RunningStack) -> None:
    env = {**os.environ, "AGENTPLATFORM_ADDRESS": gateway_address(stack), "AGENTPLATFORM_API_KEY": ALICE}
    result = subprocess.run([str(AGENTPLATFORM), "tools", "ls", "--json"], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert "calculator" in [tool["id"] for tool in json.loads(result.stdout)]


@pytest.mark.parametrize(
    ("on_interrupt", "ends"), [("cancel", "RUN_STATE_CANCELLED"), ("detach", "RUN_STATE_COMPLETED")]
)
def test_ctrl_c_on_a_chat_cancels_its_run_or_detaches(stack: RunningStack, on_interrupt: str, ends: str) -> None:
    env = {**os.environ, "AGENTPLATFORM_ADDRESS": gateway_address(stack), "AGENTPLATFORM_API_KEY": ALICE}
    process = subprocess.Popen(
        [str(AGENTPLATFORM), "chat", SEED_QUESTION, "--json", "--on-interrupt", on_interrupt],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        run_id = ""
        for line in process.stdout:
            event = json.loads(line)
            run_id = run_id or event.get("run", {}).get("id", "")
            if event.get("step", {}).get("sequence") == "2":
                break
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == EXIT_INTERRUPTED, process.stderr.read() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    with Client(gateway_address(stack), api_key=ALICE) as client:
        final = wait_for("the run to end", 30, lambda: (run := client.get_run(run_id)).state in FINAL and run)
    assert (RunState.Name(final.state), final.step_count > 2) == (ends, True), final


def test_approvals_are_listed_approved_and_rejected(stack: RunningStack) -> None:
    with Client(gateway_address(stack), api_key=ADMIN) as admin, \
            Client(gateway_address(stack), api_key=ALICE) as alice:
        admin.update_tool("calculator", requires_approval=True)
        try:
            run_id = alice.start_run(SEED_QUESTION).id
            decided = []
            for decide in ("approve", "reject"):
                def pending() -> list[dict[str, Any]] | None:
                    listed = json.loads(cli(stack, "approvals", "ls", "--json").output)["approvals"]
                    return [item for item in listed if item["runId"] == run_id] or None

                (item,) = wait_for(f"an approval request to {decide}", 30, pending)
                assert item["request"]["toolName"] == "calculator", item
                result = cli(stack, "approvals", decide, run_id, item["sequence"], "--comment", decide, "--json")
                assert result.exit_code == 0, result.output
                decided.append(int(item["sequence"]))
            final = wait_for("the run to end", 30, lambda: (run := alice.get_run(run_id)).state in FINAL and run)
        finally:
            admin.update_tool("calculator", requires_approval=False)
    decisions = [step for step in final.steps if step.HasField("approval_decision")]
    assert [step.approval_decision.comment for step in decisions] == ["approve", "reject"], final
    assert [step.approval_decision.request_sequence for step in decisions] == decided
