"""The browser side of the e2e browser tests (test_browser.py): the page's tools (Chromium, node, esbuild, the
client package) and why they may be missing, serving the page, driving Chromium through driver.mjs (Browser,
Pages), the API keys of the module's stack, and reading what the page saw as protobuf messages."""

import functools
import hashlib
import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from agentplatform.runs.v1 import runs_pb2
from agentplatform.tools.v1 import tools_pb2
from tests.conftest import REPO_ROOT
from tests.e2e.conftest import local_origin

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
DRIVER = BROWSER_DIR / "driver.mjs"
PAGE_SOURCE = BROWSER_DIR / "page.ts"
CHROMIUM = Path("/usr/bin/chromium")
NODE_MODULES = REPO_ROOT / "node_modules"
ESBUILD = NODE_MODULES / ".bin" / "esbuild"
#: What the page imports: the workspace link to clients/web that `npm ci` makes.
CLIENT_PACKAGE = NODE_MODULES / "@agentplatform" / "client"
#: Bounds every call the page makes, so a protocol the gateway mishandles fails fast instead of hanging.
CALL_TIMEOUT_MS = 15_000
#: The backstop for the driver itself (Chromium hung): longer than any call may take.
DRIVER_TIMEOUT = 30.0
#: The engine reads the tool list at most this often (ENGINE_TOOLS_CACHE_SECONDS, 2 s by default), so a
#: tool switched off is still offered for up to that long; a chat is tried again until then.
TOOL_SWITCH_SECONDS = 8.0
UNKNOWN_RUN_ID = "00000000-0000-4000-8000-000000000000"

#: This module's stack has API keys: every scenario calls as the admin (Manage Tools needs it) unless it passes
#: its own key; the identity scenarios use Alice's and Bob's.
ADMIN_KEY = "apk_browser_test_admin"
ALICE_KEY = "apk_browser_test_alice"
BOB_KEY = "apk_browser_test_bob"


def api_key_entries() -> str:
    """AUTH_API_KEYS for the keys above: `user:role:sha256(key)`, comma-separated (services.common.auth)."""
    users = [("admin", "admin", ADMIN_KEY), ("alice", "user", ALICE_KEY), ("bob", "user", BOB_KEY)]
    return ",".join(f"{user}:{role}:{hashlib.sha256(key.encode()).hexdigest()}" for user, role, key in users)

PROTOCOLS = [
    pytest.param("grpc-web", id="grpc-web"),
    pytest.param("connect", id="connect"),
]


def missing_browser_tools() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    if shutil.which("node") is None:
        return "node is not on PATH"
    for needed in (NODE_MODULES / "playwright-core", ESBUILD, CLIENT_PACKAGE):
        if not needed.exists():
            return f"{needed} is missing (npm ci)"
    return None


class QuietPageHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean: pytest shows failures, not access logs."""


def bundle_page(out: Path) -> None:
    """index.html and page.js (page.ts bundled with the client's TypeScript sources: the `source` export
    condition of clients/web/package.json) in `out`, so the tests need no `make client` build."""
    shutil.copy(BROWSER_DIR / "index.html", out / "index.html")
    subprocess.run(
        [str(ESBUILD), str(PAGE_SOURCE), "--bundle", "--format=esm", "--target=es2022", "--conditions=source",
         "--log-level=warning", f"--outfile={out / 'page.js'}"],
        cwd=REPO_ROOT, check=True, timeout=60,
    )


@contextmanager
def serve_page(directory: Path, port: int) -> Iterator[str]:
    """Serve `directory` on 127.0.0.1:port; yields the page's URL."""
    handler = functools.partial(QuietPageHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{local_origin(port)}/index.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class Browser:
    """Chromium under driver.mjs: named tabs, and calls of page.ts's scenarios in them."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            ["node", str(DRIVER)], cwd=REPO_ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: list[str] = []
        self._next_id = 0
        self._tabs: set[str] = set()
        threading.Thread(target=self._read_answers, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        ready = self._answer()
        if not ready.get("ready"):
            raise RuntimeError(f"the browser driver did not start: {ready}")

    def _read_answers(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._answers.put(json.loads(line))
        self._answers.put(None)

    def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self._stderr.append(line)

    def _answer(self) -> dict[str, Any]:
        try:
            answer = self._answers.get(timeout=DRIVER_TIMEOUT)
        except queue.Empty:
            raise TimeoutError(f"the browser driver did not answer in {DRIVER_TIMEOUT} s{self.log()}") from None
        if answer is None:
            raise RuntimeError(f"the browser driver exited ({self._process.wait()}){self.log()}")
        return answer

    def log(self) -> str:
        return "\n--- driver stderr:\n" + "".join(self._stderr[-50:]) if self._stderr else ""

    def _command(self, op: str, **fields: Any) -> Any:
        assert self._process.stdin is not None
        self._next_id += 1
        self._process.stdin.write(json.dumps({"id": self._next_id, "op": op, **fields}) + "\n")
        self._process.stdin.flush()
        answer = self._answer()
        assert answer["id"] == self._next_id, answer
        if not answer["ok"]:
            raise AssertionError(f"{op} failed in the browser: {answer['error']}{self.log()}")
        return answer["result"]

    def open(self, page: str, url: str) -> None:
        """A tab named `page` at `url`; a tab of that name that is already open is kept."""
        if page not in self._tabs:
            self._command("open", page=page, url=url)
            self._tabs.add(page)

    def reload(self, page: str) -> None:
        self._command("reload", page=page)

    def call(self, page: str, fn: str, **args: Any) -> Any:
        """`window.platformTest[fn](args)` in tab `page`, awaited."""
        return self._command("call", page=page, fn=fn, args=args)

    def close(self) -> None:
        """Close stdin: the driver closes Chromium and exits. SIGTERM if it does not."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.terminate()
            self._process.wait(timeout=10)


@dataclass
class Pages:
    browser: Browser
    allowed_url: str
    disallowed_url: str
    gateway_url: str
    #: The key every scenario sends unless it passes its own `token` ("" for none); None in development mode.
    token: str | None = None

    def connection(self, protocol: str, token: str | None = None) -> dict[str, Any]:
        """The page's way to the gateway (page.ts's `Connection`): "grpc-web" or "connect", protobuf on the
        wire unless the name ends in "-json"; `token` as `authorization: Bearer`, "" for none."""
        token = self.token if token is None else token
        connection: dict[str, Any] = {
            "baseUrl": self.gateway_url,
            "protocol": protocol.removesuffix("-json"),
            "useBinaryFormat": not protocol.endswith("-json"),
            "defaultTimeoutMs": CALL_TIMEOUT_MS,
        }
        if token:
            connection["token"] = token
        return connection

    def call(self, fn: str, protocol: str, *, token: str | None = None, page: str = "app", **args: Any) -> Any:
        """A scenario of page.ts in the app's tab; returns its result, or fails the test with the page's error."""
        answer = self.browser.call(page, fn, connection=self.connection(protocol, token), **args)
        assert "error" not in answer, f"{fn} failed in the page: {answer['error']}"
        return answer["result"]

    def call_error(self, fn: str, protocol: str, *, token: str | None = None, page: str = "app",
                   **args: Any) -> dict[str, Any]:
        """A scenario that must fail: the error as page code sees it (code name, rawMessage, message)."""
        answer = self.browser.call(page, fn, connection=self.connection(protocol, token), **args)
        assert "error" in answer, f"{fn} succeeded but should have failed: {answer.get('result')}"
        return answer["error"]


# --- reading what the page saw ----------------------------------------------------------------------------------

def parse(message_json: Any, message: Message) -> Any:
    """A message from the page (protobuf JSON, as toJson wrote it) as the Python message."""
    return json_format.ParseDict(message_json, message, ignore_unknown_fields=True)


def run_events(timed_events: list[dict[str, Any]]) -> list[tuple[float, runs_pb2.RunEvent]]:
    """(arrival ms, event) of a stream the page read."""
    return [(item["at"], parse(item["event"], runs_pb2.RunEvent())) for item in timed_events]


def steps_of(events: list[tuple[float, runs_pb2.RunEvent]]) -> list[runs_pb2.Step]:
    return [event.step for _, event in events if event.WhichOneof("event") == "step"]


def answer_text(steps: list[runs_pb2.Step]) -> str:
    return " ".join(step.agent_response.text for step in steps if step.WhichOneof("content") == "agent_response")


def tool_of(tool_json: Any) -> tools_pb2.Tool:
    return parse(tool_json, tools_pb2.Tool())


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """Poll `check` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
    return value
