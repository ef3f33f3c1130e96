"""file_io: read, write, append, list and delete text files inside the caller's workspace, and nowhere else.

Whose workspace: the worker hands each call the folder of the user it runs for (TOOLS_WORKSPACE/users/<user>, one
per user, shared by that user's threads) or, when an admin set TOOLS_WORKSPACE_SHARED, the one shared folder
(services.tools.workspaces.tenancy decides; the tool's arguments cannot name another). A call on no user's behalf
has none.

What it guarantees, and how (this file holds the operations; the workspace's rules are services.tools.workspaces'):

* No way out of the workspace. A path is first checked as text (workspaces.paths: relative, at most 1,024
  characters and 255 bytes a name, no NUL, and no ".." that climbs above the workspace). It is then resolved and
  opened relative to a file descriptor of the workspace, never as a whole path string, following no link
  (workspaces.beneath: openat2 where the kernel has it, else one openat(O_NOFOLLOW) per name), so a link is refused
  whether it was there before or swapped in during the call: there is no gap between a check and the use.
* Regular files and folders only. Files are opened with O_NONBLOCK (so a FIFO cannot block the call) and checked
  with fstat; FIFOs, devices, sockets and files with other hard links (which may live outside) are refused.
* A quota per workspace, so per user (workspaces.quota): a write or append that would pass it is refused before
  anything is written, saying the quota and what the workspace holds; writers hold a lock on the workspace, so two
  concurrent writes cannot both squeeze under the quota.
* Errors name the path as the caller gave it (cut to 100 characters), never the server's folders.
"""

import asyncio
import errno
import logging
import os
import stat
from collections.abc import Sequence
from typing import Any, ClassVar

from services.common.errors import (
    DomainError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from services.tools.base import BaseTool, RepeatSafeCalls, ToolContext, ToolHints, ToolOutput
from services.tools.workspaces.beneath import DIRECTORY_FLAGS, FILE_FLAGS, closing, open_beneath
from services.tools.workspaces.paths import MAX_PATH_CHARS, WorkspacePath, parse_path, shown
from services.tools.workspaces.quota import check_quota, writer_lock

log = logging.getLogger(__name__)

#: Largest file read or written (the text goes into the model's context).
MAX_FILE_BYTES = 1024 * 1024
#: Most entries one list returns (sorted by name; the rest are counted, not shown).
MAX_LIST_ENTRIES = 1000

OPERATIONS = ("read", "write", "append", "list", "delete")


# --- Refusals ------------------------------------------------------------------------------------------------------


def _link_refused(path: WorkspacePath) -> InvalidArgument:
    return InvalidArgument(
        f"path '{path.given}' is or passes through a symbolic link; file_io follows no links, since one could lead "
        "outside the tools workspace"
    )


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _wrong_kind(info: os.stat_result, path: WorkspacePath) -> InvalidArgument:
    """The refusal for something that is not a regular file: a link, a folder, a FIFO, a device or a socket."""
    if stat.S_ISLNK(info.st_mode):
        return _link_refused(path)
    if stat.S_ISDIR(info.st_mode):
        return InvalidArgument(f"path '{path.given}' is a directory; use operation 'list' to see its entries")
    return InvalidArgument(
        f"path '{path.given}' is {_kind(info.st_mode)}; file_io handles only regular text files and folders"
    )


def _require_regular_file(info: os.stat_result, path: WorkspacePath) -> None:
    """Refuse anything but a regular file with a single name (another hard link may be outside the workspace)."""
    if not stat.S_ISREG(info.st_mode):
        raise _wrong_kind(info, path)
    if info.st_nlink > 1:
        raise InvalidArgument(
            f"file '{path.given}' has other hard links, which may be outside the tools workspace; file_io does not "
            "use such files"
        )


def _os_refusal(exc: OSError, operation: str, path: WorkspacePath) -> DomainError:
    """The domain error for an OSError no operation handled itself. Its message holds no server path: only the
    caller's path and the error's description."""
    code = exc.errno
    reason = os.strerror(code) if code else type(exc).__name__
    given = path.given
    if code == errno.ELOOP:
        return _link_refused(path)
    if code == errno.EXDEV:
        return InvalidArgument(f"path '{given}' is outside the tools workspace; use a path relative to it")
    if code == errno.ENOENT:
        return NotFound(f"'{given}' not found in the tools workspace; use operation 'list' to see the files")
    if code == errno.ENOTDIR:
        return InvalidArgument(f"path '{given}' goes through a file as if it were a folder")
    if code == errno.EISDIR:
        return InvalidArgument(f"path '{given}' is a directory, not a file")
    if code == errno.ENXIO:  # opening a FIFO with no reader for writing, or a socket
        return InvalidArgument(f"path '{given}' is not a regular file; file_io handles only text files and folders")
    if code in (errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL):
        return InvalidArgument(f"path '{given}' is not a valid file name here ({reason})")
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return ResourceExhausted(f"could not {operation} '{given}': the tools workspace's disk is full ({reason})")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return FailedPrecondition(f"the tools service may not {operation} '{given}' ({reason})")
    if code in (errno.EAGAIN, errno.EBUSY, errno.EMFILE, errno.ENFILE, errno.ETXTBSY, errno.EINTR):
        return Unavailable(f"could not {operation} '{given}' just now ({reason}); try again")
    log.error("file_io could not %s %r", operation, path.relative, exc_info=exc)
    return Internal(f"file_io could not {operation} '{given}': {reason}")


# --- The operations ------------------------------------------------------------------------------------------------


def _read_file(root_fd: int, path: WorkspacePath) -> ToolOutput:
    try:
        fd = open_beneath(root_fd, path.names, os.O_RDONLY | FILE_FLAGS)
    except FileNotFoundError:
        raise NotFound(
            f"file '{path.given}' not found in the tools workspace; use operation 'list' to see the files"
        ) from None
    with closing(fd):
        _require_regular_file(os.fstat(fd), path)
        # One byte past the limit tells "too large" without reading a huge file whole.
        chunks, remaining = [], MAX_FILE_BYTES + 1
        while remaining and (chunk := os.read(fd, remaining)):
            chunks.append(chunk)
            remaining -= len(chunk)
    data = b"".join(chunks)
    if len(data) > MAX_FILE_BYTES:
        raise ResourceExhausted(f"file '{path.given}' is larger than file_io's limit of {MAX_FILE_BYTES} bytes (1 MiB)")
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"file '{path.given}' is not UTF-8 text; file_io reads text files only") from None
    return ToolOutput({"path": path.relative, "content": content}, content)


def _open_deepest_folder(root_fd: int, names: Sequence[str]) -> tuple[int, list[str]]:
    """The deepest folder of `names` that exists (a new descriptor) and the names below it still missing."""
    try:
        return open_beneath(root_fd, names, DIRECTORY_FLAGS), []
    except FileNotFoundError:
        pass
    fd = open_beneath(root_fd, (), DIRECTORY_FLAGS)
    for index, name in enumerate(names):
        try:
            child = open_beneath(fd, (name,), DIRECTORY_FLAGS)
        except FileNotFoundError:
            return fd, list(names[index:])
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        fd = child
    return fd, []  # made by someone else meanwhile


def _make_folders(fd: int, names: Sequence[str]) -> int:
    """Create `names`, one inside the other, below the folder `fd` (left open); a new descriptor of the deepest."""
    current = fd
    try:
        for name in names:
            try:
                os.mkdir(name, 0o777, dir_fd=current)
            except FileExistsError:
                pass  # made meanwhile: the open below refuses it unless it is a real folder
            child = open_beneath(current, (name,), DIRECTORY_FLAGS)
            if current != fd:
                os.close(current)
            current = child
    except BaseException:
        if current != fd:
            os.close(current)
        raise
    return current


def _write_file(root_fd: int, context: ToolContext, path: WorkspacePath, content: Any, append: bool) -> ToolOutput:
    operation = "append" if append else "write"
    if not isinstance(content, str):
        raise InvalidArgument(f"operation '{operation}' needs 'content', the text to write")
    if not path.names:
        raise InvalidArgument(f"path '{path.given}' is the workspace folder itself; give the path of a file")
    try:
        data = content.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument("content cannot be encoded as UTF-8 (it holds unpaired surrogates)") from None
    if len(data) > MAX_FILE_BYTES:
        raise ResourceExhausted(f"content is {len(data)} bytes; file_io writes at most {MAX_FILE_BYTES} bytes (1 MiB)")
    name = path.names[-1]
    with writer_lock(root_fd):
        folder, missing = _open_deepest_folder(root_fd, path.names[:-1])
        try:
            existing = None
            if not missing:
                try:
                    existing = os.stat(name, dir_fd=folder, follow_symlinks=False)
                except FileNotFoundError:
                    pass
            if existing is not None:
                if stat.S_ISDIR(existing.st_mode):
                    raise InvalidArgument(f"path '{path.given}' is a directory; give the path of a file to write")
                _require_regular_file(existing, path)
            old_size = existing.st_size if existing is not None else 0
            new_size = old_size + len(data) if append else len(data)
            if new_size > MAX_FILE_BYTES:
                raise ResourceExhausted(
                    f"appending would make '{path.given}' {new_size} bytes; file_io files hold at most "
                    f"{MAX_FILE_BYTES} bytes (1 MiB)"
                )
            check_quota(root_fd, context, path, new_size - old_size, len(missing) + (existing is None))
            if missing:
                deepest = _make_folders(folder, missing)
                os.close(folder)
                folder = deepest
            flags = os.O_WRONLY | os.O_CREAT | FILE_FLAGS | (os.O_APPEND if append else 0)
            with closing(os.open(name, flags, 0o666, dir_fd=folder)) as fd:
                # What was opened is what counts: the name may have been swapped since the stat above.
                _require_regular_file(os.fstat(fd), path)
                if not append:
                    os.ftruncate(fd, 0)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
        finally:
            os.close(folder)
    verb = "Appended" if append else "Wrote"
    return ToolOutput(
        {"path": path.relative, "bytes_written": len(data)}, f"{verb} {len(data)} bytes to {path.relative}"
    )


def _list_folder(root_fd: int, path: WorkspacePath) -> ToolOutput:
    try:
        fd = open_beneath(root_fd, path.names, DIRECTORY_FLAGS)
    except FileNotFoundError:
        raise NotFound(f"directory '{path.given}' not found in the tools workspace") from None
    except NotADirectoryError:
        raise InvalidArgument(f"path '{path.given}' is a file, not a folder; use operation 'read' to read it") from None
    entries: list[dict[str, Any]] = []
    with closing(fd), os.scandir(fd) as found:
        for entry in found:
            try:
                entry.name.encode("utf-8")
                info = entry.stat(follow_symlinks=False)
            except UnicodeEncodeError:
                continue  # a name that is not UTF-8 cannot be given back as a path
            except FileNotFoundError:
                continue  # removed meanwhile
            # Only what file_io can use: a symlink is never followed, so what it points at stays unknown.
            if stat.S_ISDIR(info.st_mode):
                entries.append({"name": entry.name, "type": "directory", "size": None})
            elif stat.S_ISREG(info.st_mode):
                entries.append({"name": entry.name, "type": "file", "size": info.st_size})
    entries.sort(key=lambda item: item["name"])
    result: dict[str, Any] = {"path": path.relative, "entries": entries[:MAX_LIST_ENTRIES]}
    names = [entry["name"] + ("/" if entry["type"] == "directory" else "") for entry in result["entries"]]
    if len(entries) > MAX_LIST_ENTRIES:
        result["truncated"] = True
        names.append(f"… and {len(entries) - MAX_LIST_ENTRIES} more (file_io lists the first {MAX_LIST_ENTRIES})")
    text = "\n".join(names) if names else f"The directory '{path.relative}' is empty."
    return ToolOutput(result, text)


def _delete(root_fd: int, path: WorkspacePath) -> ToolOutput:
    if not path.names:
        raise InvalidArgument(f"path '{path.given}' is the workspace folder itself, which cannot be deleted")
    not_found = NotFound(f"'{path.given}' not found in the tools workspace; use operation 'list' to see the files")
    try:
        folder = open_beneath(root_fd, path.names[:-1], DIRECTORY_FLAGS)
    except FileNotFoundError:
        raise not_found from None
    name = path.names[-1]
    with closing(folder):
        try:
            info = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            raise not_found from None
        # unlinkat and rmdir act on the name itself, never on what a link swapped in meanwhile points at.
        if stat.S_ISDIR(info.st_mode):
            try:
                os.rmdir(name, dir_fd=folder)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise InvalidArgument(f"folder '{path.given}' is not empty; delete what it holds first") from None
                raise
            kind = "folder"
        elif stat.S_ISREG(info.st_mode):
            os.unlink(name, dir_fd=folder)  # another hard link elsewhere is not touched: fine to delete
            kind = "file"
        else:
            raise _wrong_kind(info, path)
    return ToolOutput({"path": path.relative, "deleted": kind}, f"Deleted the {kind} {path.relative}")


class FileIOTool(BaseTool):
    """Text file access confined to the workspace folder."""

    name = "file_io"
    display_name = "File I/O"
    description = (
        "Reads, writes, appends to, lists and deletes text files in the user's workspace folder (kept across the "
        "user's conversations). Paths are relative to the workspace; files are UTF-8 text up to 1 MiB; symbolic "
        "links are not followed."
    )
    icon = "IconFile"
    # Writes and deletes files (a write replaces one), inside the workspace only.
    hints = ToolHints(read_only=False, destructive=True, idempotent=False, open_world=False)
    # A call whose outcome is unknown may be run again when reading or listing (nothing changes), or writing (the
    # same content to the same path leaves the same file); not when appending (the text would be there twice) or
    # deleting (the repeat would tell the model the file it deleted was never there).
    repeat_safe_calls = RepeatSafeCalls("operation", frozenset({"read", "list", "write"}))
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "operation": {"type": "string", "enum": list(OPERATIONS)},
            "path": {
                "type": "string",
                "description": f"Path relative to the workspace folder (at most {MAX_PATH_CHARS} characters)",
            },
            "content": {"type": "string", "description": "Text to write or append (write and append only)"},
        },
        "required": ["operation"],
        "additionalProperties": False,
    }

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolOutput:
        """Perform the operation in a worker thread (file system calls block, though never for long)."""
        return await asyncio.to_thread(perform, context, arguments)


def perform(context: ToolContext, arguments: dict[str, Any]) -> ToolOutput:
    """Run one file_io operation in `context.workspace` (created when missing). Raises only domain errors."""
    operation = arguments.get("operation")
    if operation not in OPERATIONS:
        raise InvalidArgument(
            f"unknown operation '{shown(str(operation))}'; use 'read', 'write', 'append', 'list' or 'delete'"
        )
    raw = arguments.get("path")
    if raw is None and operation == "list":
        raw = "."
    if not raw:
        raise InvalidArgument(f"operation '{operation}' needs 'path', relative to the workspace folder")
    if not isinstance(raw, str):
        raise InvalidArgument(f"path must be a string, not {type(raw).__name__}")
    path = parse_path(raw)
    root_fd = _open_workspace(context)
    try:
        if operation == "read":
            return _read_file(root_fd, path)
        if operation in ("write", "append"):
            return _write_file(root_fd, context, path, arguments.get("content"), append=operation == "append")
        if operation == "list":
            return _list_folder(root_fd, path)
        return _delete(root_fd, path)
    except OSError as exc:
        raise _os_refusal(exc, operation, path) from None
    finally:
        os.close(root_fd)


def _open_workspace(context: ToolContext) -> int:
    """A descriptor of the call's workspace folder, created when missing. The workspace itself is the operator's
    choice (TOOLS_WORKSPACE and the folder services.tools.workspaces.tenancy names below it), so a link to it is
    followed; everything below it is not."""
    if context.workspace is None:
        raise PermissionDenied(
            "file_io works in the workspace of the user a call runs for, and this call runs on no user's behalf"
        )
    try:
        context.workspace.mkdir(parents=True, exist_ok=True)
        return os.open(context.workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        log.error("file_io cannot open the tools workspace %s", context.workspace, exc_info=exc)
        reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        raise FailedPrecondition(
            f"the tools workspace folder cannot be used ({reason}); the tools service's log says more"
        ) from None
