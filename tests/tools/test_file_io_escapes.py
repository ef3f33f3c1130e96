"""The file_io plugin: every way out of the workspace refused: relative and absolute escapes, symlinks and hard
links, FIFOs, devices and sockets, and a symlink swapped in during the call.

Most cases run twice (the `resolver` fixture): with openat2 (when the kernel has it) and with the per-name
O_NOFOLLOW walk that older kernels get, since both must hold the line on their own."""

import ctypes
import os
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from services.common.errors import DomainError, Internal, InvalidArgument
from services.tools.plugins.file_io import OPERATIONS, perform
from tests.tools.file_io_helpers import SECRET, Box, make_box, refused

# --- Escapes -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["../etc/passwd", "a/../../secret.txt", "./../secret.txt", "../ws/../secret.txt"])
@pytest.mark.parametrize("operation", OPERATIONS)
def test_relative_escapes_are_refused(box: Box, operation: str, path: str) -> None:
    before = box.untouched()
    error = refused(box, operation=operation, path=path, content="x")
    assert isinstance(error, InvalidArgument)
    assert "is outside the tools workspace; use a path relative to it" in str(error)
    assert box.untouched() == before


@pytest.mark.parametrize("path", ["/etc/passwd", "//etc/passwd", "/"])
@pytest.mark.parametrize("operation", OPERATIONS)
def test_absolute_paths_are_refused(box: Box, operation: str, path: str) -> None:
    error = refused(box, operation=operation, path=path, content="x")
    assert isinstance(error, InvalidArgument)
    assert f"path '{path}' is outside the tools workspace" in str(error)


def test_an_absolute_path_into_the_workspace_itself_is_refused_too(box: Box) -> None:
    # Absolute paths mean nothing to the model and would reveal the layout: refused even when they land inside.
    with pytest.raises(InvalidArgument, match="is outside the tools workspace"):
        perform(box.context, {"operation": "write", "path": str(box.workspace / "x.txt"), "content": "x"})
    assert not (box.workspace / "x.txt").exists()


def test_a_folder_sharing_the_workspace_prefix_is_out_of_reach(box: Box, resolver: str) -> None:
    # The classic startswith() bug: /…/ws-evil starts with /…/ws.
    before = box.untouched()
    for operation in OPERATIONS:
        error = refused(box, operation=operation, path="../ws-evil/secret.txt", content="pwned")
        assert "outside the tools workspace" in str(error)
    (box.workspace / "evil").symlink_to("../ws-evil")
    for operation in OPERATIONS:
        for path in ("evil/secret.txt", "evil/new.txt", "evil/sub/new/deeper.txt"):
            error = refused(box, operation=operation, path=path, content="pwned")
            assert "symbolic link" in str(error)
    assert box.untouched() == before


@pytest.mark.parametrize("operation", ["read", "write", "append", "delete"])
def test_a_symlink_to_a_file_outside_is_refused(box: Box, resolver: str, operation: str) -> None:
    (box.workspace / "link.txt").symlink_to(box.root / "secret.txt")
    before = box.untouched()
    error = refused(box, operation=operation, path="link.txt", content="overwritten")
    assert isinstance(error, InvalidArgument)
    assert "is or passes through a symbolic link" in str(error)
    assert "outside the tools workspace" in str(error)
    assert box.untouched() == before
    assert (box.workspace / "link.txt").is_symlink()


@pytest.mark.parametrize(
    ("operation", "path"),
    [
        ("read", "link/secret.txt"),
        ("write", "link/secret.txt"),
        ("write", "link/new.txt"),
        ("write", "link/sub/new/deeper.txt"),
        ("append", "link/secret.txt"),
        ("list", "link"),
        ("list", "link/sub"),
        ("delete", "link/secret.txt"),
        ("delete", "link/sub"),
    ],
)
def test_a_symlink_to_a_folder_outside_is_refused(box: Box, resolver: str, operation: str, path: str) -> None:
    (box.workspace / "link").symlink_to(box.outside, target_is_directory=True)
    before = box.untouched()
    error = refused(box, operation=operation, path=path, content="pwned")
    assert isinstance(error, InvalidArgument)
    assert "symbolic link" in str(error)
    assert box.untouched() == before


def test_a_symlink_inside_the_workspace_is_refused_too(box: Box, resolver: str) -> None:
    # A link is refused wherever it points: following one is never needed and the target can change any time.
    (box.workspace / "real.txt").write_text("real")
    (box.workspace / "alias.txt").symlink_to("real.txt")
    error = refused(box, operation="read", path="alias.txt")
    assert "symbolic link" in str(error)


def test_listing_hides_links_fifos_and_sockets(box: Box) -> None:
    (box.workspace / "link").symlink_to(box.outside)
    (box.workspace / "file.txt").write_text("x")
    os.mkfifo(box.workspace / "fifo")
    listed = perform(box.context, {"operation": "list"})
    assert listed.result["entries"] == [{"name": "file.txt", "type": "file", "size": 1}]


def test_a_hard_link_to_a_file_outside_is_refused(box: Box, resolver: str) -> None:
    os.link(box.outside / "secret.txt", box.workspace / "hard.txt")
    before = box.untouched()
    for operation in ("read", "write", "append"):
        error = refused(box, operation=operation, path="hard.txt", content="pwned")
        assert "has other hard links" in str(error)
    assert box.untouched() == before


# --- FIFOs, devices and sockets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_fifo_is_refused_at_once(box: Box, resolver: str, operation: str) -> None:
    os.mkfifo(box.workspace / "pipe")
    error = refused(box, operation=operation, path="pipe", content="x")  # returns within 5 s, or the test fails
    assert isinstance(error, InvalidArgument)
    assert "pipe" in str(error)
    assert stat.S_ISFIFO((box.workspace / "pipe").lstat().st_mode)


def test_a_fifo_with_a_reader_is_still_not_written(box: Box, resolver: str) -> None:
    fifo = box.workspace / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        for operation in ("write", "append"):
            assert "is a FIFO" in str(refused(box, operation=operation, path="pipe", content="x"))
        assert os.read(reader, 10) == b""  # nothing was written (and no writer is attached)
    finally:
        os.close(reader)


def test_a_socket_is_refused() -> None:
    # AF_UNIX paths are short (108 bytes): this test gets a short folder of its own.
    root = Path(tempfile.mkdtemp(prefix="fio", dir="/tmp"))
    try:
        box = make_box(root)
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(box.workspace / "sock"))
            for operation in ("read", "write", "append"):
                error = refused(box, operation=operation, path="sock", content="x")
                assert "not a regular file" in str(error) or "is a socket" in str(error)
    finally:
        shutil.rmtree(root)


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_a_device_is_refused(box: Box, resolver: str) -> None:
    os.mknod(box.workspace / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
    for operation in ("read", "write", "append", "delete"):
        assert "is a device" in str(refused(box, operation=operation, path="null", content="x"))


# --- A symlink swapped in during the call --------------------------------------------------------------------------


def exchanger() -> Callable[[Path, Path], bool] | None:
    """renameat2(RENAME_EXCHANGE) from glibc: swaps two names atomically, so a name is a folder one instant and a
    link the next with no gap between (the hardest race for the tool). None where libc lacks it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return None
    at_fdcwd, rename_exchange = -100, 2
    return lambda first, second: libc.renameat2(at_fdcwd, bytes(first), at_fdcwd, bytes(second), rename_exchange) == 0


@pytest.mark.parametrize("swap", ["exchange", "replace"])
def test_a_symlink_swapped_in_during_writes_never_leads_outside(box: Box, resolver: str, swap: str) -> None:
    """A thread flips `d` between a real folder and a link to the outside while writes, appends and reads run.

    The seed's resolve-then-open check wrote outside within a few hundred tries of the "exchange" flip."""
    (box.outside / "x.txt").write_text(SECRET)
    before = box.untouched()
    target, spare = box.workspace / "d", box.workspace / "spare"
    exchange = exchanger()
    if swap == "exchange" and exchange is None:
        pytest.skip("libc has no renameat2")
    stop = threading.Event()
    flips = 0

    target.mkdir()
    spare.symlink_to(box.outside, target_is_directory=True)

    gone = box.workspace / "gone"

    def retire() -> None:
        # One name, emptied each time: the workspace stays small, so each write's quota scan stays quick however
        # many flips a slow machine fits into the test.
        os.rename(target, gone)
        shutil.rmtree(gone, ignore_errors=True)

    def flip() -> None:
        nonlocal flips
        while not stop.is_set():
            flips += 1
            if exchange is not None and swap == "exchange":
                exchange(target, spare)  # the folder and the link trade names, atomically
                continue
            for step in (
                lambda: target.mkdir(),
                retire,  # a real folder goes, with its file
                lambda: target.symlink_to(box.outside, target_is_directory=True),
                lambda: os.unlink(target) if target.is_symlink() else None,
            ):
                try:
                    step()
                except OSError:
                    pass  # the writer made `d` meanwhile, or it is already gone

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    outcomes: dict[str, int] = {}
    try:
        for index in range(300):
            operation = ("write", "append", "read")[index % 3]
            try:
                output = perform(box.context, {"operation": operation, "path": "d/x.txt", "content": "pwned"})
            except DomainError as exc:
                assert not isinstance(exc, Internal), exc
                assert str(box.root) not in str(exc)
                outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
            else:
                assert SECRET not in output.text
                outcomes["ok"] = outcomes.get("ok", 0) + 1
    finally:
        stop.set()
        flipper.join(5)
    assert box.untouched() == before, "something outside the workspace changed"
    assert flips > 10 and outcomes.get("ok", 0) > 0, (flips, outcomes)
