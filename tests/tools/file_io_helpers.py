"""Helpers of the file_io plugin's tests (test_file_io, test_file_io_escapes, test_file_io_paths): a workspace
next to things it must never reach (Box), snapshots of what is outside it, and refusals awaited with a time
limit. The `box` and `resolver` fixtures built on them are in conftest.py."""

import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.errors import DomainError, Internal
from services.tools.base import ToolContext, ToolOutput
from services.tools.plugins.file_io import FileIOTool, perform
from services.tools.settings import BUILTIN_WEB_SEARCH_CORPUS
from services.tools.workspaces import beneath

SECRET = "top secret"


async def file_io(context: ToolContext, **arguments: Any) -> ToolOutput:
    return await FileIOTool().run(arguments, context)


def openat2_works() -> bool:
    previous = beneath.use_openat2
    try:
        beneath.use_openat2 = None
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            return beneath._openat2_usable(fd)
        finally:
            os.close(fd)
    finally:
        beneath.use_openat2 = previous


OPENAT2 = openat2_works()


def snapshot(folder: Path, skip: Path | None = None) -> dict[str, tuple[int, bytes | str | None]]:
    """Every entry below `folder` (links not followed; `skip` left out): its mode and its content or target."""
    seen: dict[str, tuple[int, bytes | str | None]] = {}
    for current, folders, files in os.walk(folder):
        if skip is not None:
            folders[:] = [name for name in folders if Path(current, name) != skip]
        for name in folders + files:
            path = Path(current, name)
            if path == skip:
                continue
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                content: bytes | str | None = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                content = path.read_bytes()
            else:
                content = None
            seen[str(path.relative_to(folder))] = (info.st_mode, content)
    return seen


@dataclass
class Box:
    """A workspace `ws` next to things it must never reach: `ws-evil` (sharing its prefix) and `secret.txt`."""

    root: Path
    context: ToolContext
    outside: Path

    @property
    def workspace(self) -> Path:
        return self.context.workspace

    def untouched(self) -> dict[str, tuple[int, bytes | str | None]]:
        return snapshot(self.root, skip=self.workspace)


def make_box(root: Path, **quota: int) -> Box:
    workspace, outside = root / "ws", root / "ws-evil"
    workspace.mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (outside / "sub").mkdir()
    (root / "secret.txt").write_text(SECRET)
    context = ToolContext(workspace=workspace.resolve(), web_search_corpus=BUILTIN_WEB_SEARCH_CORPUS, **quota)
    return Box(root.resolve(), context, outside.resolve())


def outcome_within(function: Callable[[], Any], seconds: float = 5.0) -> Any:
    """Run `function` in a daemon thread; fail if it has not returned within `seconds`. Its result or exception."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as exc:
            outcome["value"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the call was still running after {seconds} s"
    return outcome["value"]


def refused(box: Box, **arguments: Any) -> DomainError:
    """The domain error `perform` raises (within 5 s); its message never shows where the box is."""
    result = outcome_within(lambda: perform(box.context, arguments))
    assert isinstance(result, DomainError), f"expected a refusal, got {result!r}"
    assert not isinstance(result, Internal), result
    assert str(box.root) not in str(result)
    return result
