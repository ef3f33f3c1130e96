"""A workspace's quota (ToolContext.workspace_max_bytes and workspace_max_files, files and folders counted
together) and the lock its writers hold: a write or append that would pass the quota is refused before anything is
written, saying the quota and what the workspace holds, and writers hold an flock on the workspace folder, so two
concurrent writes cannot both squeeze under it. Used by the file_io plugin."""

import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager

from services.common.errors import ResourceExhausted, Unavailable
from services.tools.base import ToolContext
from services.tools.workspaces.beneath import DIRECTORY_FLAGS
from services.tools.workspaces.paths import WorkspacePath

#: How long a write waits for another write to the same workspace before giving up.
LOCK_WAIT_SECONDS = 5.0


def workspace_usage(root_fd: int) -> tuple[int, int]:
    """(bytes in regular files, entries) below the folder `root_fd`, following no symlink.

    Walks depth first holding one descriptor per level (not per pending folder), so a wide tree cannot run out of
    descriptors and a deep one cannot exhaust Python's recursion.
    """
    used_bytes = used_entries = 0

    def scan(fd: int) -> Iterator[str]:
        nonlocal used_bytes, used_entries
        folders = []
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed meanwhile
                used_entries += 1
                if stat.S_ISREG(info.st_mode):
                    used_bytes += info.st_size
                elif stat.S_ISDIR(info.st_mode):
                    folders.append(entry.name)
        return iter(folders)

    first = os.open(".", DIRECTORY_FLAGS, dir_fd=root_fd)
    stack: list[tuple[int, Iterator[str]]] = []
    try:
        stack.append((first, scan(first)))
        while stack:
            fd, folders = stack[-1]
            name = next(folders, None)
            if name is None:
                os.close(fd)
                stack.pop()
                continue
            try:
                child = os.open(name, DIRECTORY_FLAGS, dir_fd=fd)
            except OSError:
                continue  # removed or swapped for something else meanwhile: nothing of ours to count
            stack.append((child, iter(())))  # on the stack before scanning, so it is closed if scanning fails
            stack[-1] = (child, scan(child))
    finally:
        for fd, _ in stack:
            os.close(fd)
    return used_bytes, used_entries


def check_quota(root_fd: int, context: ToolContext, path: WorkspacePath, added_bytes: int, added_entries: int) -> None:
    """ResourceExhausted when adding this much would pass the workspace's quota. Shrinking is always allowed."""
    if added_bytes <= 0 and added_entries <= 0:
        return
    used_bytes, used_entries = workspace_usage(root_fd)
    if added_entries > 0 and used_entries + added_entries > context.workspace_max_files:
        raise ResourceExhausted(
            f"writing '{path.given}' would bring the workspace to {used_entries + added_entries} files and folders, "
            f"over its quota of {context.workspace_max_files} (it holds {used_entries}); delete some first"
        )
    if added_bytes > 0 and used_bytes + added_bytes > context.workspace_max_bytes:
        raise ResourceExhausted(
            f"writing '{path.given}' would bring the workspace to {used_bytes + added_bytes} bytes, over its quota of "
            f"{context.workspace_max_bytes} bytes (it holds {used_bytes} bytes); delete files to make room"
        )


@contextmanager
def writer_lock(root_fd: int) -> Iterator[None]:
    """Hold an exclusive flock on the workspace (each call opens its own descriptor, so threads exclude each other
    as processes do). Polls rather than blocks, so a stuck holder costs a clear error, not a thread."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(root_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise Unavailable("the tools workspace is busy with other writes; try again") from None
            time.sleep(0.005)
    try:
        yield
    finally:
        fcntl.flock(root_fd, fcntl.LOCK_UN)
