"""End to end in a real browser: the React frontend's transport (grpc-web over fetch) against Envoy.

Debian's Chromium, driven by playwright-core (tests/e2e/browser/grpc_web_fetch.mjs), loads a page from an origin
and fetch()es a grpc-web call from it, so the browser itself does the CORS preflight, enforces the answer, and
streams the response body. Protobuf stays here, in Python: the browser only moves the bytes, as grpc-web does.
Skips when Chromium, node or playwright-core is missing, unless REQUIRE_BROWSER=1 (CI sets it).
"""

import base64
import functools
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from google.protobuf.message import Message

from agentplatform.engine.v1 import engine_pb2
from agentplatform.runs.v1 import runs_pb2
from agentplatform.tools.v1 import tools_pb2
from tests.conftest import REPO_ROOT, free_port
from tests.e2e.conftest import RunningStack, local_origin
from tests.e2e.test_platform import GET_RUN, STREAM_CHAT
from tests.support.grpc_web import frame, parse_trailers
from tests.support.seed import SEED_QUESTION, SEED_TIMELINE, timeline

pytestmark = pytest.mark.e2e

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
SCRIPT = BROWSER_DIR / "grpc_web_fetch.mjs"
CHROMIUM = Path("/usr/bin/chromium")
PLAYWRIGHT = REPO_ROOT / "node_modules" / "playwright-core"
# The script stops itself after 60 s; this is only the backstop if node itself hangs.
SCRIPT_TIMEOUT = 90
LIST_TOOLS = "agentplatform.tools.v1.ToolService/ListTools"
TRAILER_FLAG = 0x80


@dataclass
class Frame:
    """One grpc-web frame as the page's stream reader saw it."""

    flag: int
    payload: bytes
    #: Milliseconds from the start of the fetch to the read that completed this frame.
    at: float


@dataclass
class BrowserCall:
    """What page JavaScript could see of one grpc-web call."""

    status: int | None
    #: From the response headers: readable by scripts only if the gateway exposes them via CORS.
    grpc_status: str | None
    grpc_message: str | None
    frames: list[Frame]
    #: The fetch exception's message (a CORS refusal), else None.
    error: str | None


def missing_browser_tools() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not PLAYWRIGHT.is_dir():
        return f"{PLAYWRIGHT} is missing (npm ci)"
    return None


@pytest.fixture(scope="module")
def browser_tools() -> None:
    """Requested before the stack, so a machine without a browser does not start the stack for nothing."""
    reason = missing_browser_tools()
    if reason is None:
        return
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


class QuietPageHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean: pytest shows failures, not access logs."""


@contextmanager
def serve_page(port: int) -> Iterator[str]:
    """Serve tests/e2e/browser/ on 127.0.0.1:port; yields the page's URL."""
    handler = functools.partial(QuietPageHandler, directory=str(BROWSER_DIR))
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{local_origin(port)}/index.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass
class Pages:
    allowed: str
    disallowed: str


@pytest.fixture(scope="module")
def pages(browser_tools: None, platform_stack: RunningStack) -> Iterator[Pages]:
    """The same page from two origins: the one the gateway allows, and one it has never heard of."""
    with serve_page(platform_stack.page_port) as allowed, serve_page(free_port()) as disallowed:
        yield Pages(allowed, disallowed)


def fetch_in_browser(page_url: str, method_url: str, request: Message) -> BrowserCall:
    """Make one grpc-web call from a page at page_url in Chromium."""
    body = base64.b64encode(frame(request)).decode()
    process = subprocess.Popen(
        ["node", str(SCRIPT), page_url, method_url, body],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        out, err = process.communicate(timeout=SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired:
        # SIGTERM, not SIGKILL: playwright then closes the browser it launched.
        process.terminate()
        process.communicate(timeout=10)
        raise
    assert process.returncode == 0, f"the browser script failed:\n{err}"
    result = json.loads(out)
    frames = [Frame(f["flag"], base64.b64decode(f["payload"]), f["at"]) for f in result["frames"]]
    return BrowserCall(result["status"], result["grpcStatus"], result["grpcMessage"], frames, result["error"])


def test_browser_streams_the_seed_chat_through_envoy(pages: Pages, platform_stack: RunningStack) -> None:
    call = fetch_in_browser(pages.allowed, platform_stack.url(STREAM_CHAT),
                            engine_pb2.StreamChatRequest(message=SEED_QUESTION))
    assert call.error is None
    assert call.status == 200
    *data, trailer = call.frames
    assert [f.flag for f in data] == [0] * len(data)
    assert trailer.flag == TRAILER_FLAG
    assert parse_trailers(trailer.payload)["grpc-status"] == "0"

    events = [(f.at, runs_pb2.RunEvent.FromString(f.payload)) for f in data]
    assert events[0][1].run.state == runs_pb2.RUN_STATE_RUNNING
    assert events[-1][1].run.state == runs_pb2.RUN_STATE_COMPLETED
    steps = [event.step for _, event in events if event.WhichOneof("event") == "step"]
    assert timeline(steps) == SEED_TIMELINE
    assert "45" in steps[-1].agent_response.text

    # Streamed, not buffered: the page read the first step well before the finished run (the demo model
    # takes 30 ms per streamed piece, so the whole run lasts several hundred ms).
    first_step_at = next(at for at, event in events if event.WhichOneof("event") == "step")
    final_run_at = events[-1][0]
    assert final_run_at - first_step_at > 100, [f.at for f in call.frames]
    assert len({f.at for f in call.frames}) > 10, "the frames came in a handful of reads: buffered somewhere"


def test_browser_sees_the_grpc_status_of_a_failed_call(pages: Pages, platform_stack: RunningStack) -> None:
    call = fetch_in_browser(pages.allowed, platform_stack.url(GET_RUN),
                            runs_pb2.GetRunRequest(run_id="00000000-0000-4000-8000-000000000000"))
    assert call.error is None
    assert call.status == 200
    trailers = {}
    if call.frames:
        assert [f.flag for f in call.frames] == [TRAILER_FLAG]
        trailers = parse_trailers(call.frames[0].payload)
    # Envoy's grpc_web filter sends a trailers-only answer as a trailer frame in the body; had it stayed in the
    # response headers, scripts could read it only because Envoy exposes grpc-status via CORS. Either way the
    # page must see NOT_FOUND and the message.
    assert (call.grpc_status or trailers.get("grpc-status")) == "5"
    assert "not found" in (call.grpc_message or trailers.get("grpc-message", ""))


def test_browser_blocks_a_page_from_a_disallowed_origin(pages: Pages, platform_stack: RunningStack) -> None:
    blocked = fetch_in_browser(pages.disallowed, platform_stack.url(LIST_TOOLS), tools_pb2.ListToolsRequest())
    assert blocked.error is not None and "fetch" in blocked.error.lower()
    assert blocked.status is None
    assert blocked.frames == []
    # The very same call from the allowed origin goes through: it is the origin that was refused.
    allowed = fetch_in_browser(pages.allowed, platform_stack.url(LIST_TOOLS), tools_pb2.ListToolsRequest())
    assert allowed.error is None
    tools = tools_pb2.ListToolsResponse.FromString(allowed.frames[0].payload).tools
    assert "calculator" in {tool.id for tool in tools}
