"""file_io: read, write and list text files inside the tools workspace folder (TOOLS_WORKSPACE), and nowhere else.

Every path is resolved (following symlinks) against the workspace and refused when it lands outside it, so
"../x", absolute paths and symlinks pointing out of the workspace are all rejected.
"""

import asyncio
from pathlib import Path
from typing import Any, ClassVar

from services.common.errors import InvalidArgument, NotFound, ResourceExhausted
from services.tools.base import BaseTool, ToolContext, ToolOutput

#: Largest file read or written (the text goes into the model's context).
MAX_FILE_BYTES = 1024 * 1024


def resolve_in_workspace(workspace: Path, relative: str) -> Path:
    """The absolute path `relative` names inside `workspace`; InvalidArgument when it escapes the workspace."""
    outside = InvalidArgument(f"path '{relative}' is outside the tools workspace; use a path relative to it")
    if "\x00" in relative:
        raise InvalidArgument("path must not contain NUL characters")
    if Path(relative).is_absolute():
        raise outside
    # resolve() follows symlinks, so a link inside the workspace that points outside is caught here too.
    try:
        resolved = (workspace / relative).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise InvalidArgument(f"path '{relative}' cannot be resolved (a symlink loop?)") from None
    if not resolved.is_relative_to(workspace):
        raise outside
    return resolved


def _read(workspace: Path, path: str) -> ToolOutput:
    target = resolve_in_workspace(workspace, path)
    if not target.exists():
        raise NotFound(f"file '{path}' not found in the tools workspace; use operation 'list' to see the files")
    if target.is_dir():
        raise InvalidArgument(f"path '{path}' is a directory; use operation 'list' to see its entries")
    with target.open("rb") as handle:
        # One byte past the limit tells "too large" without reading a huge file whole.
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ResourceExhausted(f"file '{path}' is larger than file_io's limit of {MAX_FILE_BYTES} bytes (1 MiB)")
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"file '{path}' is not UTF-8 text; file_io reads text files only") from None
    relative = _relative(workspace, target)
    return ToolOutput({"path": relative, "content": content}, content)


def _write(workspace: Path, path: str, content: str | None) -> ToolOutput:
    if content is None:
        raise InvalidArgument("operation 'write' needs 'content', the text to write")
    target = resolve_in_workspace(workspace, path)
    if target.is_dir():
        raise InvalidArgument(f"path '{path}' is a directory; give the path of a file to write")
    try:
        data = content.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument("content cannot be encoded as UTF-8 (it holds unpaired surrogates)") from None
    if len(data) > MAX_FILE_BYTES:
        raise ResourceExhausted(
            f"content is {len(data)} bytes; file_io writes at most {MAX_FILE_BYTES} bytes (1 MiB)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    relative = _relative(workspace, target)
    return ToolOutput({"path": relative, "bytes_written": len(data)}, f"Wrote {len(data)} bytes to {relative}")


def _list(workspace: Path, path: str) -> ToolOutput:
    target = resolve_in_workspace(workspace, path)
    if not target.exists():
        raise NotFound(f"directory '{path}' not found in the tools workspace")
    if not target.is_dir():
        raise InvalidArgument(f"path '{path}' is a file; use operation 'read' to read it")
    entries: list[dict[str, Any]] = []
    for child in sorted(target.iterdir(), key=lambda item: item.name):
        resolved = child.resolve()
        # A symlink to somewhere outside could not be used anyway; listing it would leak what is there.
        if not resolved.is_relative_to(workspace) or not resolved.exists():
            continue
        is_dir = resolved.is_dir()
        entries.append(
            {
                "name": child.name,
                "type": "directory" if is_dir else "file",
                "size": None if is_dir else resolved.stat().st_size,
            }
        )
    relative = _relative(workspace, target)
    names = [entry["name"] + ("/" if entry["type"] == "directory" else "") for entry in entries]
    text = "\n".join(names) if names else f"The directory '{relative}' is empty."
    return ToolOutput({"path": relative, "entries": entries}, text)


def _relative(workspace: Path, target: Path) -> str:
    return target.relative_to(workspace).as_posix() or "."


class FileIOTool(BaseTool):
    """Text file access confined to the workspace folder."""

    name = "file_io"
    display_name = "File I/O"
    description = (
        "Reads, writes and lists text files in the agent's workspace folder. Paths are relative to the "
        "workspace; files are UTF-8 text up to 1 MiB."
    )
    icon = "IconFile"
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "operation": {"type": "string", "enum": ["read", "write", "list"]},
            "path": {"type": "string", "description": "Path relative to the workspace folder"},
            "content": {"type": "string", "description": "Text to write (write only)"},
        },
        "required": ["operation"],
        "additionalProperties": False,
    }

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolOutput:
        """Perform the operation in a worker thread (file system calls block)."""
        return await asyncio.to_thread(perform, context.workspace, arguments)


def perform(workspace: Path, arguments: dict[str, Any]) -> ToolOutput:
    """Run one file_io operation against `workspace` (created when missing)."""
    workspace.mkdir(parents=True, exist_ok=True)
    workspace = workspace.resolve()
    operation = arguments.get("operation")
    path = arguments.get("path")
    if operation == "list":
        return _list(workspace, "." if path is None else path)
    if operation not in ("read", "write"):
        raise InvalidArgument(f"unknown operation {operation!r}; use 'read', 'write' or 'list'")
    if not path:
        raise InvalidArgument(f"operation '{operation}' needs 'path', relative to the workspace folder")
    if operation == "read":
        return _read(workspace, path)
    return _write(workspace, path, arguments.get("content"))
