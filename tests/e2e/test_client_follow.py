"""The typed client follows a run across broken streams (issue 18), against the real stack with Envoy: a Node
program (tests/e2e/node/follow.ts, bundled with the client's TypeScript sources) iterates followChat or
followRun through the gateway while the test SIGKILLs the process its stream goes through. What a stack cannot
stage on demand runs against a scripted server in tests/e2e/node/follow_cases.ts (node:test, no stack).

- followChat, over grpc-web and Connect: the engine the chat streams from is killed mid-run and started again;
  the client re-attaches with WatchRun from the last step it yielded while the restarted engine resumes the run,
  and the program yields every step 1..n exactly once (the seed timeline plus the `resumed` marker) and the final
  run; the same with two engines (ENGINE_REPLICAS=2), the one executing the chat killed for good and the other
  resuming the run;
- followRun, over the Connect protocol: the runs service the watch streams from is killed mid-run and started
  again on its port; the watch re-attaches and yields the rest of the run, each step once;
- a chat whose engine is killed before StreamChat sent its first event (the runs service held with SIGSTOP, so
  the run cannot be created yet) is started again with the request id the client gave it: one run, not two;
- an unknown run is NOT_FOUND at once, thrown as it is, without a re-attach;
- a follow left after its re-attach (its AbortSignal) cancels the run, as leaving its StreamChat would have;
- followChat in Chromium (the browser page of test_browser.py), its engine killed mid-run: one continuous run.

The tests with one engine share one stack (started once for the module: a start costs more than most tests),
made whole again before each (every process running, no run left live); the one with two engines starts its own.

Skips when node or the npm packages are missing, unless REQUIRE_BROWSER=1 (CI sets it).
"""

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from tests.conftest import REPO_ROOT, free_port, two_free_ports
from tests.e2e.browser_page import (
    CLIENT_PACKAGE,
    ESBUILD,
    PROTOCOLS,
    UNKNOWN_RUN_ID,
    Browser,
    Pages,
    bundle_page,
    missing_browser_tools,
    serve_page,
)
from tests.e2e.conftest import (
    RunningStack,
    wait_ready,
)
from tests.e2e.faults import (
    FINAL,
    assert_numbered,
    engine_names,
    gateway_stack,
    kill,
    logs,
    made_whole,
    wait_for,
)
from tests.support.seed import SEED_QUESTION, SEED_TIMELINE, timeline

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

NODE_DIR = Path(__file__).resolve().parent / "node"
#: Long enough for a kill to land mid-run; short enough for a run of four model turns to finish soon.
MODEL_LATENCY = 1.0
#: A bound on the whole follow, kills, lease expiry and resume included.
FOLLOW_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/e2e/node bundled for node, with the client's TypeScript sources (the `source` export condition)."""
    if shutil.which("node") is None or not ESBUILD.exists() or not CLIENT_PACKAGE.exists():
        reason = "node, esbuild or the client package (npm ci) is missing"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("node")
    subprocess.run(
        [str(ESBUILD), str(NODE_DIR / "follow.ts"), str(NODE_DIR / "follow_cases.ts"), "--bundle", "--platform=node",
         "--format=esm", "--target=node20", "--conditions=source", "--log-level=warning", "--out-extension:.js=.mjs",
         f"--outdir={out}"],
        cwd=REPO_ROOT, check=True, timeout=60,
    )
    return out


@pytest.fixture(scope="module")
def program(bundled: Path) -> Path:
    return bundled / "follow.mjs"


def test_follow_against_a_scripted_server(bundled: Path) -> None:
    """The cases a real stack cannot stage on demand (follow_cases.ts: a gap, a clean end before the run's, which
    statuses are breaks, the attempt bound, the request id kept across a retried start, cancelling on leave)."""
    result = subprocess.run(["node", str(bundled / "follow_cases.mjs")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    cases = (NODE_DIR / "follow_cases.ts").read_text().count("\ntest(")
    assert f"# pass {cases}\n" in result.stdout and "# fail 0\n" in result.stdout, result.stdout


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """One stack for the tests that need a single engine: starting one takes longer than most of them."""
    with gateway_stack(
        tmp_path_factory.mktemp("stack"), page_port=free_port(), DEMO_MODEL_LATENCY_SECONDS=str(MODEL_LATENCY)
    ) as stack:
        yield stack


@pytest.fixture
def stack(shared_stack: RunningStack) -> RunningStack:
    """The shared stack, whole again after the test before (its engine or runs service killed, or stopped)."""
    made_whole(shared_stack, [spec.name for spec in shared_stack.stack.processes])
    return shared_stack


def engine_holding(stack: RunningStack, run_id: str) -> str:
    """The name of the engine process that executes the run now (each engine logs its executor id at start)."""
    executor_id = wait_for("an engine to hold the run", 10, lambda: stored_run(stack, run_id).executor_id)
    return next(name for name in engine_names(stack) if f"engine {executor_id} listening" in stack.log(name))


def restart(stack: RunningStack, name: str) -> None:
    """SIGKILL a process of the stack and start it again, on the same port, with the same database."""
    kill(stack, name)
    stack.start(stack.spec(name))
    wait_ready(stack, [name])


class Follower:
    """The Node program as it runs: its output lines, read as they come."""

    def __init__(self, program: Path, stack: RunningStack, **args: Any) -> None:
        self._process = subprocess.Popen(
            ["node", str(program), json.dumps({"baseUrl": stack.stack.gateway_url, **args})],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self._lines: queue.Queue[tuple[float, dict[str, Any]] | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        #: When each line of `seen` arrived (time.monotonic()).
        self.arrived: list[float] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put((time.monotonic(), json.loads(line)))
        self._lines.put(None)

    def next(self, deadline: float) -> dict[str, Any] | None:
        """The next line (None once the program has printed everything); TimeoutError after `deadline`."""
        try:
            item = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"the program printed nothing more; so far: {self.seen}") from None
        if item is None:
            return None
        self.arrived.append(item[0])
        self.seen.append(item[1])
        return item[1]

    def until_step(self, sequence: int, deadline: float) -> None:
        """Read until the program has yielded step `sequence`."""
        while (line := self.next(deadline)) is not None:
            if line.get("event", {}).get("step", {}).get("sequence") == str(sequence):
                return
        raise AssertionError(f"the program ended before step {sequence}: {self.seen}")

    def finish(self, deadline: float) -> list[dict[str, Any]]:
        """Every line, once the program has ended."""
        while self.next(deadline) is not None:
            pass
        self._process.wait(timeout=max(1.0, deadline - time.monotonic()))
        return self.seen

    def stop(self) -> str:
        """Kill the program if it still runs; its stderr."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        assert self._process.stderr is not None
        return self._process.stderr.read()


@contextmanager
def following(program: Path, stack: RunningStack, **args: Any) -> Iterator[Follower]:
    """The program running; a failure inside comes with its stderr and the stack's logs."""
    follower = Follower(program, stack, **args)
    try:
        yield follower
    except (AssertionError, TimeoutError) as exc:
        raise AssertionError(f"{exc}\n--- program stderr\n{follower.stop()}\n{logs(stack)}") from exc
    finally:
        follower.stop()


def describe_gap(follower: Follower, killed_at: float) -> str:
    """How long after the kill the program re-attached, and yielded its next step (the run resumed elsewhere)."""
    after = [(at - killed_at, line) for at, line in zip(follower.arrived, follower.seen, strict=True) if at > killed_at]
    reattached = next(at for at, line in after if "reattach" in line)
    next_step = next(at for at, line in after if "step" in line.get("event", {}))
    return f"re-attached {reattached:.2f}s after the kill, next step {next_step:.2f}s after it"


def events_of(lines: list[dict[str, Any]]) -> list[runs_pb2.RunEvent]:
    return [json_format.ParseDict(line["event"], runs_pb2.RunEvent()) for line in lines if "event" in line]


def steps_of(events: list[runs_pb2.RunEvent]) -> list[runs_pb2.Step]:
    return [event.step for event in events if event.WhichOneof("event") == "step"]


def reattaches(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line["reattach"] for line in lines if "reattach" in line]


def stored_run(stack: RunningStack, run_id: str) -> runs_pb2.Run:
    with grpc.insecure_channel(stack.stack.runs_address) as channel:
        return runs_pb2_grpc.RunServiceStub(channel).GetRun(runs_pb2.GetRunRequest(run_id=run_id), timeout=5)


def list_runs(stack: RunningStack) -> list[runs_pb2.Run]:
    with grpc.insecure_channel(stack.stack.runs_address) as channel:
        return list(runs_pb2_grpc.RunServiceStub(channel).ListRuns(runs_pb2.ListRunsRequest(), timeout=5).runs)


def final_resumes(lines: list[dict[str, Any]]) -> int:
    """How many times the followed run was resumed, as its final event says."""
    return int(events_of(lines)[-1].run.attempts)


def assert_one_continuous_run(stack: RunningStack, lines: list[dict[str, Any]], resumes: int) -> runs_pb2.Run:
    """The program ended normally after yielding the run's stored steps, each exactly once and in order, and
    the run last, COMPLETED with the seed's answer; `resumes` resume markers among the steps."""
    assert lines[-1] == {"end": True}, lines[-3:]
    events = events_of(lines)
    assert events[0].WhichOneof("event") == "run" and events[-1].WhichOneof("event") == "run"
    final = events[-1].run
    assert final.state == runs_pb2.RUN_STATE_COMPLETED, (final.state, final.error_message)
    stored = stored_run(stack, final.id)
    assert_numbered(stored)
    steps = steps_of(events)
    assert [step.sequence for step in steps] == list(range(1, stored.step_count + 1)), [s.sequence for s in steps]
    assert steps == list(stored.steps)
    assert timeline([step for step in steps if step.WhichOneof("content") != "resumed"]) == SEED_TIMELINE
    assert [step.WhichOneof("content") for step in steps].count("resumed") == resumes
    assert "45" in steps[-1].agent_response.text
    return final


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_follow_chat_re_attaches_when_its_engine_is_killed_and_sees_one_continuous_run(
    program: Path, stack: RunningStack, protocol: str
) -> None:
    with following(program, stack, protocol=protocol, mode="chat", message=SEED_QUESTION) as follower:
        deadline = time.monotonic() + FOLLOW_TIMEOUT
        # Step 3 is the first tool call: the engine dies with the run mid-way, its chat stream cut off.
        follower.until_step(3, deadline)
        killed_at = time.monotonic()
        restart(stack, "engine")
        lines = follower.finish(deadline)

        final = assert_one_continuous_run(stack, lines, resumes=1)
        assert final.attempts == 1
        print(f"{protocol}: {describe_gap(follower, killed_at)}")
        found = reattaches(lines)
        assert found, "the stream never broke: the engine was not the one streaming"
        # Re-attached to the run it had, from the last step it had yielded (3, or a later one that was already on
        # its way when the engine died), never before it.
        assert found[0]["runId"] == final.id and int(found[0]["afterSequence"]) >= 3, found
        # Deltas of steps already yielded are dropped: none arrives for a step at or below the cursor.
        cursor = 0
        for event in events_of(lines):
            if event.WhichOneof("event") == "step":
                cursor = event.step.sequence
            elif event.WhichOneof("event") == "delta":
                assert event.delta.sequence > cursor, (event.delta.sequence, cursor)


def test_follow_run_re_attaches_when_the_runs_service_restarts_mid_watch(program: Path, stack: RunningStack) -> None:
    with grpc.insecure_channel(stack.stack.engine_address) as channel:
        run = engine_pb2_grpc.AgentServiceStub(channel).StartRun(
            engine_pb2.StartRunRequest(message=SEED_QUESTION), timeout=10
        )
    with following(program, stack, protocol="connect", mode="run", runId=run.id, afterSequence="0") as follower:
        deadline = time.monotonic() + FOLLOW_TIMEOUT
        follower.until_step(3, deadline)
        restart(stack, "runs")
        lines = follower.finish(deadline)

        assert_one_continuous_run(stack, lines, resumes=0)
        found = reattaches(lines)
        assert found and all(reattach["runId"] == run.id for reattach in found), found
        assert int(found[0]["afterSequence"]) >= 3, found

    # Not a break: an unknown run is thrown as it is, at once.
    with following(program, stack, protocol="connect", mode="run", runId=UNKNOWN_RUN_ID) as follower:
        lines = follower.finish(time.monotonic() + 15)
        assert lines == [{"error": {"code": "NotFound", "message": lines[0]["error"]["message"]}}], lines


def test_a_follow_chat_left_after_its_re_attach_cancels_the_run_as_its_stream_chat_would(
    program: Path, stack: RunningStack
) -> None:
    # on_disconnect CANCEL (the default): leaving a StreamChat cancels its run. Once the follow has re-attached
    # through WatchRun, which cancels nothing by itself, the follow sends CancelRun.
    with following(program, stack, protocol="grpc-web", mode="chat", message=SEED_QUESTION,
                   abortAfterReattach=True) as follower:
        deadline = time.monotonic() + FOLLOW_TIMEOUT
        follower.until_step(3, deadline)
        restart(stack, "engine")
        lines = follower.finish(deadline)

        assert reattaches(lines), lines
        assert lines[-1] == {"error": {"code": "Canceled", "message": lines[-1]["error"]["message"]}}, lines[-3:]
        run_id = events_of(lines)[0].run.id

        def ended() -> runs_pb2.Run | None:
            run = stored_run(stack, run_id)
            return run if run.state in FINAL else None

        run = wait_for("the run to end", 20, ended)
        assert (run.state, run.error_code) == (runs_pb2.RUN_STATE_CANCELLED, "cancelled"), run.error_message
        assert_numbered(run)


def test_a_chat_broken_before_its_first_event_is_started_again_as_the_same_run(
    program: Path, stack: RunningStack
) -> None:
    # The runs service is stopped (SIGSTOP), so the engine cannot create the run: StreamChat has sent nothing when
    # its engine is killed. The run id is unknown, so the follow retries the start, with the request id it gave it,
    # against the restarted engine: whether or not the dead engine's create reached the store, there is one run.
    before = {run.id for run in list_runs(stack)}  # the runs of the tests before on this stack
    runs = stack.processes["runs"]
    os.kill(runs.pid, signal.SIGSTOP)
    try:
        with following(program, stack, protocol="grpc-web", mode="chat", message=SEED_QUESTION) as follower:
            time.sleep(1.5)
            kill(stack, "engine")
            os.kill(runs.pid, signal.SIGCONT)
            stack.start(stack.spec("engine"))
            wait_ready(stack, ["engine"])
            lines = follower.finish(time.monotonic() + FOLLOW_TIMEOUT)

            assert not events_of(lines[:1]), "StreamChat sent an event before the kill: the start was not cut off"
            found = reattaches(lines)
            assert found and found[0]["runId"] == "" and found[0]["afterSequence"] == "0", found
            final = assert_one_continuous_run(stack, lines, resumes=final_resumes(lines))
            assert [run.id for run in list_runs(stack) if run.id not in before] == [final.id]
    finally:
        os.kill(runs.pid, signal.SIGCONT)


def test_follow_chat_goes_on_when_a_second_engine_resumes_the_run_of_the_killed_one(
    program: Path, tmp_path: Path
) -> None:
    # Two engines behind Envoy; the one executing the chat is killed and stays dead: the other takes the run over
    # once its lease runs out, and the follow, re-attached to the runs service, sees it go on there.
    with gateway_stack(
        tmp_path, ENGINE_REPLICAS="2", ENGINE_PORT=str(two_free_ports()), DEMO_MODEL_LATENCY_SECONDS=str(MODEL_LATENCY)
    ) as stack, \
            following(program, stack, protocol="grpc-web", mode="chat", message=SEED_QUESTION) as follower:
        deadline = time.monotonic() + FOLLOW_TIMEOUT
        follower.until_step(3, deadline)
        run_id = events_of(follower.seen)[0].run.id
        killed = engine_holding(stack, run_id)
        kill(stack, killed)
        lines = follower.finish(deadline)

        final = assert_one_continuous_run(stack, lines, resumes=1)
        assert reattaches(lines) and final.attempts == 1
        (marker,) = [step.resumed for step in steps_of(events_of(lines)) if step.WhichOneof("content") == "resumed"]
        (survivor,) = [name for name in engine_names(stack) if name != killed]
        assert f"engine {marker.executor_id} listening" in stack.log(survivor), marker


def test_follow_chat_in_chromium_re_attaches_when_its_engine_is_killed(tmp_path: Path, stack: RunningStack) -> None:
    # The same as the Node program, in the client's real home: Chromium's fetch, whose cut-off stream is not
    # undici's. The page (tests/e2e/browser/page.ts) follows the chat in the background and keeps what it saw.
    reason = missing_browser_tools()
    if reason is not None:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    page_dir = tmp_path / "page"
    page_dir.mkdir()
    bundle_page(page_dir)
    with serve_page(page_dir, stack.page_port) as url:
        browser = Browser()
        try:
            browser.open("app", url)
            pages = Pages(browser, url, url, stack.stack.gateway_url)
            pages.call("beginFollowChat", "grpc-web", message=SEED_QUESTION)

            def follow_state() -> dict[str, Any]:
                state: dict[str, Any] | None = browser.call("app", "followState")
                assert state is not None
                return state

            def has_step_3() -> bool:
                return any(event["event"].get("step", {}).get("sequence") == "3" for event in follow_state()["events"])

            wait_for("the page to have step 3", FOLLOW_TIMEOUT, has_step_3)
            restart(stack, "engine")

            def finished() -> dict[str, Any] | None:
                state = follow_state()
                return state if state["ended"] or "error" in state else None

            state = wait_for("the follow to end", FOLLOW_TIMEOUT, finished)
        finally:
            browser.close()

        assert "error" not in state, state.get("error")
        assert state["reattaches"] and int(state["reattaches"][0]["afterSequence"]) >= 3, state["reattaches"]
        lines = [{"event": event["event"]} for event in state["events"]] + [{"end": True}]
        assert_one_continuous_run(stack, lines, resumes=1)
