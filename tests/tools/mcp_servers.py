"""The MCP test servers (mcp_test_server.py) as the tools tests run them: the files a server reports through, an
HTTP server process, the secrets it is given, and polling for what it does. Used by the MCP sources' tests
(mcp_sources/), the untrusted input tests (http_tools/), test_secrets_at_rest.py and the `http_server` and
`stdio_files` fixtures of conftest.py."""

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port

SERVER_SCRIPT = Path(__file__).with_name("mcp_test_server.py")
#: Secrets given at registration: they reach the server, and never a response.
ENV_SECRET = "env-secret-0d6f1c2b9e"
HEADER_SECRET = "Bearer header-secret-7a3e55"


#: How long a test waits for a connection state to be reached.
WAIT_SECONDS = 20.0


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = WAIT_SECONDS) -> Any:
    """Poll `check` until it returns something truthy; fail saying `what` did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:g} s")
        await asyncio.sleep(0.1)


@dataclass
class ServerFiles:
    """What a test server reports through (see mcp_test_server.py)."""

    folder: Path
    script: Path
    calls: Path
    pid: Path
    refuse: Path

    def env(self) -> dict[str, str]:
        return {
            "MCP_TEST_CALLS": str(self.calls),
            "MCP_TEST_PID": str(self.pid),
            "MCP_TEST_REFUSE": str(self.refuse),
            "MCP_TEST_SECRET": ENV_SECRET,
        }

    def seen(self) -> list[dict[str, Any]]:
        """The tool calls the server received, in order."""
        if not self.calls.exists():
            return []
        return [json.loads(line) for line in self.calls.read_text().splitlines()]


def server_files(folder: Path) -> ServerFiles:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "mcp_test_server.py"
    shutil.copy(SERVER_SCRIPT, script)
    return ServerFiles(folder, script, folder / "calls.jsonl", folder / "pid", folder / "refuse")


@dataclass
class HttpServer:
    """A streamable HTTP MCP server process the test starts, stops and starts again on the same port."""

    files: ServerFiles
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        env = {**os.environ, **self.files.env(), "MCP_TEST_AUTH": HEADER_SECRET}
        self.process = subprocess.Popen([sys.executable, str(self.files.script), "http", str(self.port)], env=env)
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the HTTP MCP server did not start (exit code {self.process.poll()})") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None
