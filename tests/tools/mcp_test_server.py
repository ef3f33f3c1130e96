"""A small MCP server for the tests of MCP tool sources, written with the official SDK (MCPServer, mcp 2's name
for FastMCP). The tests copy it to tmp_path and run it with sys.executable:

    python mcp_test_server.py stdio
    python mcp_test_server.py http PORT      (streamable HTTP on 127.0.0.1:PORT/mcp)

Its environment says where to report: MCP_TEST_CALLS (a file that gets a JSON line per tool call, and one when a
call is cancelled), MCP_TEST_PID (a file it writes its pid to), MCP_TEST_REFUSE (while this file exists, the
server exits at once, as a server that cannot start would), MCP_TEST_AUTH (http: the Authorization header every
request must carry, else 401).
"""

import asyncio
import json
import os
import sys
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

#: A tool name that is a valid function name but makes the id longer than 64 characters.
LONG_TOOL_NAME = "summarise_the_quarterly_report_of_every_department_in_the_company_v2"
#: A tool name with a character a function name cannot have.
DOTTED_TOOL_NAME = "read.file"

server = MCPServer("agentplatform-test")


def _record(entry: dict[str, Any]) -> None:
    path = os.environ.get("MCP_TEST_CALLS")
    if path:
        with open(path, "a", encoding="utf-8") as calls:
            calls.write(json.dumps(entry) + "\n")


@server.tool(
    title="Add numbers",
    annotations=ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False),
)
def add(x: int, y: int) -> int:
    """Adds two integers."""
    _record({"tool": "add", "arguments": {"x": x, "y": y}})
    return x + y


@server.tool(annotations=ToolAnnotations(readOnlyHint=False, idempotentHint=True))
def stamp(text: str, ctx: Context) -> str:
    """Records the text with the request's _meta (where the platform puts its idempotency key); idempotent."""
    meta = ctx.request_context.meta
    _record({"tool": "stamp", "arguments": {"text": text}, "meta": dict(meta) if meta else None})
    return text


@server.tool()
def echo(text: str) -> str:
    """Says the text back."""
    _record({"tool": "echo", "arguments": {"text": text}})
    return text


@server.tool()
def fail(reason: str) -> str:
    """Always fails, saying why."""
    _record({"tool": "fail", "arguments": {"reason": reason}})
    raise ToolError(f"it failed because {reason}")


@server.tool()
async def slow(seconds: float) -> str:
    """Sleeps, then answers."""
    _record({"tool": "slow", "arguments": {"seconds": seconds}})
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        _record({"tool": "slow", "cancelled": True})
        raise
    return "awake"


@server.tool(name=LONG_TOOL_NAME)
def long_named() -> str:
    """A tool with a long name."""
    return "long"


@server.tool(name=DOTTED_TOOL_NAME)
def dotted(path: str) -> str:
    """A tool whose name has a dot."""
    return f"contents of {path}"


@server.tool()
async def grow(name: str, ctx: Context) -> str:
    """Adds a tool called `name`, and tells the client its tool list changed."""
    server.add_tool(lambda: name, name=name, description=f"The {name} tool, added later.")
    await ctx.session.send_tool_list_changed()
    return f"added {name}"


def _require_auth(app: Any, expected: str) -> Any:
    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization", b"").decode() != expected:
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"unauthorised"})
            return
        await app(scope, receive, send)

    return guarded


def main() -> None:
    refuse = os.environ.get("MCP_TEST_REFUSE")
    if refuse and os.path.exists(refuse):
        sys.exit(3)
    pid_file = os.environ.get("MCP_TEST_PID")
    if pid_file:
        with open(pid_file, "w", encoding="utf-8") as out:
            out.write(str(os.getpid()))
    if sys.argv[1] == "stdio":
        server.run()
        return
    import uvicorn

    app = server.streamable_http_app()
    expected = os.environ.get("MCP_TEST_AUTH")
    if expected:
        app = _require_auth(app, expected)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")


if __name__ == "__main__":
    main()
