"""The file_io plugin: every operation inside the workspace, and every way out of it refused.

Most adversarial cases run twice: with openat2 (when the kernel has it) and with the per-name O_NOFOLLOW walk
that older kernels get, since both must hold the line on their own.
"""

import ctypes
import errno
import os
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import (
    DomainError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from services.common.settings import load_settings
from services.tools.app import start_tools
from services.tools.base import ToolContext, ToolOutput
from services.tools.plugins.file_io import MAX_FILE_BYTES, MAX_LIST_ENTRIES, OPERATIONS, FileIOTool, perform
from services.tools.settings import BUILTIN_WEB_SEARCH_CORPUS, ToolsSettings
from services.tools.workspaces import beneath
from tests.support.stubs import tools_stubs
from tests.tools.conftest import RunningTools, SettingsFactory, execute_request

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


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with openat2, then with the O_NOFOLLOW walk."""
    if request.param == "openat2" and not OPENAT2:
        pytest.skip("this kernel has no openat2")
    monkeypatch.setattr(beneath, "use_openat2", request.param == "openat2")
    return str(request.param)


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


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return make_box(tmp_path / "box")


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


# --- Each operation's happy path -----------------------------------------------------------------------------------


async def test_write_then_read_round_trips_and_creates_folders(context: ToolContext) -> None:
    written = await file_io(context, operation="write", path="notes/today.txt", content="héllo")
    assert written.result == {"path": "notes/today.txt", "bytes_written": 6}
    assert written.text == "Wrote 6 bytes to notes/today.txt"
    assert (context.workspace / "notes" / "today.txt").read_text(encoding="utf-8") == "héllo"

    read = await file_io(context, operation="read", path="notes/today.txt")
    assert read.result == {"path": "notes/today.txt", "content": "héllo"}
    assert read.text == "héllo"


async def test_write_replaces_the_whole_file(context: ToolContext) -> None:
    await file_io(context, operation="write", path="a.txt", content="a long first version")
    await file_io(context, operation="write", path="a.txt", content="short")
    assert (context.workspace / "a.txt").read_text() == "short"


async def test_append_creates_then_extends(context: ToolContext) -> None:
    first = await file_io(context, operation="append", path="log/day.txt", content="one\n")
    second = await file_io(context, operation="append", path="log/day.txt", content="two\n")
    assert first.result == {"path": "log/day.txt", "bytes_written": 4}
    assert second.text == "Appended 4 bytes to log/day.txt"
    assert (context.workspace / "log" / "day.txt").read_text() == "one\ntwo\n"


async def test_list_shows_files_and_folders(context: ToolContext) -> None:
    (context.workspace / "b.txt").write_text("1234")
    (context.workspace / "a_dir").mkdir()
    listed = await file_io(context, operation="list")
    assert listed.result == {
        "path": ".",
        "entries": [
            {"name": "a_dir", "type": "directory", "size": None},
            {"name": "b.txt", "type": "file", "size": 4},
        ],
    }
    assert listed.text == "a_dir/\nb.txt"


async def test_list_of_a_subfolder_and_of_an_empty_one(context: ToolContext) -> None:
    (context.workspace / "d" / "e").mkdir(parents=True)
    (context.workspace / "d" / "f.txt").write_text("x")
    listed = await file_io(context, operation="list", path="d/")
    assert [entry["name"] for entry in listed.result["entries"]] == ["e", "f.txt"]
    empty = await file_io(context, operation="list", path="d/e")
    assert empty.result == {"path": "d/e", "entries": []}
    assert empty.text == "The directory 'd/e' is empty."


async def test_a_huge_folder_is_listed_in_part_and_says_so(context: ToolContext) -> None:
    for index in range(MAX_LIST_ENTRIES + 5):
        (context.workspace / f"f{index:05}").touch()
    listed = await file_io(context, operation="list")
    assert len(listed.result["entries"]) == MAX_LIST_ENTRIES
    assert listed.result["truncated"] is True
    assert listed.text.endswith(f"… and 5 more (file_io lists the first {MAX_LIST_ENTRIES})")


async def test_delete_removes_a_file_and_an_empty_folder(context: ToolContext) -> None:
    (context.workspace / "d").mkdir()
    (context.workspace / "d" / "x.txt").write_text("x")
    deleted = await file_io(context, operation="delete", path="d/x.txt")
    assert deleted.result == {"path": "d/x.txt", "deleted": "file"}
    assert deleted.text == "Deleted the file d/x.txt"
    assert (await file_io(context, operation="delete", path="d")).result == {"path": "d", "deleted": "folder"}
    assert list(context.workspace.iterdir()) == []


async def test_delete_refuses_a_folder_with_files_and_the_workspace_itself(context: ToolContext) -> None:
    (context.workspace / "d").mkdir()
    (context.workspace / "d" / "x.txt").write_text("x")
    with pytest.raises(InvalidArgument, match="folder 'd' is not empty; delete what it holds first"):
        await file_io(context, operation="delete", path="d")
    with pytest.raises(InvalidArgument, match="is the workspace folder itself, which cannot be deleted"):
        await file_io(context, operation="delete", path="d/..")
    with pytest.raises(NotFound, match="'nope' not found in the tools workspace"):
        await file_io(context, operation="delete", path="nope")
    assert (context.workspace / "d" / "x.txt").exists()


async def test_the_workspace_is_created_when_missing(tmp_path: Path) -> None:
    context = ToolContext(workspace=tmp_path / "new" / "ws", web_search_corpus=tmp_path / "unused.json")
    listed = await file_io(context, operation="list", path=".")
    assert listed.result["entries"] == []
    assert (tmp_path / "new" / "ws").is_dir()


async def test_dotdot_that_stays_inside_is_fine(context: ToolContext) -> None:
    (context.workspace / "x.txt").write_text("ok")
    read = await file_io(context, operation="read", path="sub/../x.txt")
    assert read.result == {"path": "x.txt", "content": "ok"}


# --- Ordinary mistakes ---------------------------------------------------------------------------------------------


async def test_missing_file_is_not_found(context: ToolContext) -> None:
    with pytest.raises(NotFound, match=r"file 'nope\.txt' not found"):
        await file_io(context, operation="read", path="nope.txt")
    with pytest.raises(NotFound, match=r"directory 'nope' not found"):
        await file_io(context, operation="list", path="nope")


async def test_reading_a_directory_and_listing_a_file_are_refused(context: ToolContext) -> None:
    (context.workspace / "d").mkdir()
    (context.workspace / "f.txt").write_text("x")
    with pytest.raises(InvalidArgument, match="is a directory; use operation 'list'"):
        await file_io(context, operation="read", path="d")
    with pytest.raises(InvalidArgument, match="is a directory; give the path of a file to write"):
        await file_io(context, operation="write", path="d", content="x")
    with pytest.raises(InvalidArgument, match="is a file, not a folder; use operation 'read'"):
        await file_io(context, operation="list", path="f.txt")
    with pytest.raises(InvalidArgument, match="goes through a file as if it were a folder"):
        await file_io(context, operation="write", path="f.txt/x.txt", content="x")


async def test_files_over_one_mebibyte_are_refused(context: ToolContext) -> None:
    (context.workspace / "big.txt").write_bytes(b"a" * (MAX_FILE_BYTES + 1))
    with pytest.raises(ResourceExhausted, match="1 MiB"):
        await file_io(context, operation="read", path="big.txt")
    with pytest.raises(ResourceExhausted, match="1 MiB"):
        await file_io(context, operation="write", path="big2.txt", content="a" * (MAX_FILE_BYTES + 1))
    assert not (context.workspace / "big2.txt").exists()


async def test_an_append_past_one_mebibyte_is_refused_and_leaves_the_file_alone(context: ToolContext) -> None:
    (context.workspace / "log.txt").write_bytes(b"a" * MAX_FILE_BYTES)
    with pytest.raises(ResourceExhausted, match=r"appending would make 'log\.txt' 1048577 bytes"):
        await file_io(context, operation="append", path="log.txt", content="b")
    assert (context.workspace / "log.txt").stat().st_size == MAX_FILE_BYTES


async def test_undecodable_files_are_refused(context: ToolContext) -> None:
    (context.workspace / "bin.dat").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InvalidArgument, match="not UTF-8 text"):
        await file_io(context, operation="read", path="bin.dat")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"operation": "read"}, "operation 'read' needs 'path'"),
        ({"operation": "delete", "path": ""}, "operation 'delete' needs 'path'"),
        ({"operation": "write", "path": "a.txt"}, "operation 'write' needs 'content'"),
        ({"operation": "append", "path": "a.txt"}, "operation 'append' needs 'content'"),
        ({"operation": "write", "path": ".", "content": "x"}, "is the workspace folder itself"),
        ({"operation": "move", "path": "a.txt"}, "unknown operation 'move'"),
    ],
)
async def test_missing_or_wrong_arguments_are_refused(
    context: ToolContext, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await file_io(context, **arguments)


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


# --- Bad paths -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_path_of_5000_characters_is_refused_clearly(box: Box, operation: str) -> None:
    error = refused(box, operation=operation, path="a/" * 2500, content="x")
    assert isinstance(error, InvalidArgument)
    assert "is 5000 characters long; file_io takes paths of at most 1024" in str(error)
    assert len(str(error)) < 250  # the path is cut, not repeated whole


async def test_a_path_of_5000_characters_is_invalid_argument_over_grpc(service: RunningTools, tmp_path: Path) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await service.stub.ExecuteTool(execute_request("file_io", operation="read", path="x" * 5000))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = exc.value.details() or ""
    assert "is 5000 characters long" in details
    assert str(tmp_path) not in details and "workspace/" not in details


def test_unprintable_characters_are_escaped_and_the_path_cut(box: Box) -> None:
    error = refused(box, operation="read", path="\x01" * 1000)
    assert "path '\\x01\\x01" in str(error) and "…' is 1000 bytes long" in str(error)
    assert "\x01" not in str(error) and len(str(error)) < 250


def test_a_name_longer_than_255_bytes_is_refused(box: Box) -> None:
    error = refused(box, operation="write", path="d/" + "é" * 128, content="x")  # 256 bytes in UTF-8
    assert "a name in path 'd/éé" in str(error) and "is 256 bytes long" in str(error)
    assert perform(box.context, {"operation": "write", "path": "n" * 255, "content": "x"}).result["bytes_written"] == 1


@pytest.mark.parametrize("path", ["a\x00b.txt", "\x00", "d/\x00/../x"])
@pytest.mark.parametrize("operation", OPERATIONS)
def test_nul_bytes_are_refused(box: Box, operation: str, path: str) -> None:
    error = refused(box, operation=operation, path=path, content="x")
    assert isinstance(error, InvalidArgument)
    assert "must not contain NUL characters" in str(error)
    assert "\x00" not in str(error)  # shown escaped
    assert list(box.workspace.iterdir()) == []


def test_unpaired_surrogates_are_refused(box: Box) -> None:
    error = refused(box, operation="write", path="a\udc80.txt", content="x")
    assert "not valid text" in str(error) and "\\udc80" in str(error)
    error = refused(box, operation="write", path="a.txt", content="\ud800")
    assert "cannot be encoded as UTF-8" in str(error)


def test_a_workspace_that_cannot_be_used_does_not_reveal_where_it_is(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("x")
    context = ToolContext(workspace=tmp_path / "not-a-folder", web_search_corpus=BUILTIN_WEB_SEARCH_CORPUS)
    with pytest.raises(FailedPrecondition, match="the tools workspace folder cannot be used") as exc:
        perform(context, {"operation": "list"})
    assert str(tmp_path) not in str(exc.value)


def test_without_openat2_the_walk_takes_over(box: Box, monkeypatch: pytest.MonkeyPatch) -> None:
    def enosys(*_: Any) -> int:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(beneath, "use_openat2", None)
    monkeypatch.setattr(beneath, "_openat2", enosys)
    perform(box.context, {"operation": "write", "path": "a/b.txt", "content": "hi"})
    assert beneath.use_openat2 is False
    assert perform(box.context, {"operation": "read", "path": "a/b.txt"}).text == "hi"


# --- The quota -----------------------------------------------------------------------------------------------------


def test_the_byte_quota_refuses_a_write_whole(tmp_path: Path) -> None:
    box = make_box(tmp_path, workspace_max_bytes=10)
    perform(box.context, {"operation": "write", "path": "a.txt", "content": "12345678"})
    error = refused(box, operation="write", path="b.txt", content="123")
    assert isinstance(error, ResourceExhausted)
    assert str(error) == (
        "writing 'b.txt' would bring the workspace to 11 bytes, over its quota of 10 bytes (it holds 8 bytes); "
        "delete files to make room"
    )
    assert not (box.workspace / "b.txt").exists()
    assert isinstance(refused(box, operation="append", path="a.txt", content="123"), ResourceExhausted)
    assert (box.workspace / "a.txt").read_text() == "12345678"
    # Replacing a file counts only the difference, and shrinking is always allowed.
    perform(box.context, {"operation": "write", "path": "a.txt", "content": "1234567890"})
    perform(box.context, {"operation": "write", "path": "a.txt", "content": "1"})
    perform(box.context, {"operation": "write", "path": "b.txt", "content": "123456789"})


def test_the_file_quota_counts_files_and_folders_and_creates_nothing_when_refused(tmp_path: Path) -> None:
    box = make_box(tmp_path, workspace_max_files=4)
    perform(box.context, {"operation": "write", "path": "a/b/c.txt", "content": "x"})  # 3 entries
    error = refused(box, operation="write", path="d/e.txt", content="x")  # 2 more: over
    assert isinstance(error, ResourceExhausted)
    assert "to 5 files and folders, over its quota of 4" in str(error)
    assert sorted(path.name for path in box.workspace.iterdir()) == ["a"]
    perform(box.context, {"operation": "write", "path": "a/b/c.txt", "content": "rewritten"})  # no new entry
    perform(box.context, {"operation": "write", "path": "a/d.txt", "content": "x"})  # the 4th
    perform(box.context, {"operation": "delete", "path": "a/d.txt"})
    perform(box.context, {"operation": "append", "path": "a/e.txt", "content": "x"})


def test_concurrent_writes_cannot_all_squeeze_under_the_quota(tmp_path: Path) -> None:
    box = make_box(tmp_path, workspace_max_bytes=10 * 1024)
    results: list[Any] = []

    def write(index: int) -> None:
        try:
            results.append(perform(box.context, {"operation": "write", "path": f"f{index}", "content": "x" * 1024}))
        except ResourceExhausted as exc:
            results.append(exc)

    threads = [threading.Thread(target=write, args=(index,)) for index in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sum(isinstance(result, ToolOutput) for result in results) == 10
    assert sum(path.stat().st_size for path in box.workspace.iterdir()) == 10 * 1024


def test_the_quota_settings_have_defaults_and_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings(ToolsSettings, _env_file=None)
    assert (defaults.workspace_max_bytes, defaults.workspace_max_files) == (100 * 1024 * 1024, 10_000)
    monkeypatch.setenv("TOOLS_WORKSPACE_MAX_BYTES", "2048")
    monkeypatch.setenv("TOOLS_WORKSPACE_MAX_FILES", "7")
    chosen = load_settings(ToolsSettings, _env_file=None)
    assert (chosen.workspace_max_bytes, chosen.workspace_max_files) == (2048, 7)


async def test_the_quota_reaches_file_io_through_the_service(make_settings: SettingsFactory) -> None:
    app = await start_tools(make_settings(TOOLS_WORKSPACE_MAX_FILES=1))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    try:
        stub = tools_stubs(channel)
        response = await stub.ExecuteTool(execute_request("file_io", operation="write", path="a.txt", content="x"))
        assert json_format.MessageToDict(response.result)["path"] == "a.txt"
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.ExecuteTool(execute_request("file_io", operation="write", path="b.txt", content="x"))
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "over its quota of 1" in (exc.value.details() or "")
    finally:
        await channel.close()
        await app.stop()


# --- Whatever the input --------------------------------------------------------------------------------------------

#: Pieces that make interesting paths: escapes, the traps the arena sets, odd characters, over-long names.
PIECES = ["", ".", "..", "a", "b.txt", "link-file", "link-dir", "abs-link", "fifo", "ws-evil", "sub", "é", "\x00",
          "\\..", "n" * 256, " ", "\n"]  # fmt: skip
paths = st.one_of(st.text(max_size=40), st.lists(st.sampled_from(PIECES), max_size=8).map("/".join))


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    """One box for all the examples (hypothesis runs a test body many times with the same fixtures)."""
    box = make_box(tmp_path_factory.mktemp("arena"), workspace_max_bytes=64 * 1024, workspace_max_files=200)
    yield box


def set_traps(box: Box) -> None:
    """Links out and a FIFO in the workspace, again if an example deleted one."""
    traps: dict[str, Callable[[Path], None]] = {
        "link-file": lambda path: path.symlink_to("../secret.txt"),
        "link-dir": lambda path: path.symlink_to("../ws-evil"),
        "abs-link": lambda path: path.symlink_to(box.outside),
        "fifo": os.mkfifo,
    }
    for name, make in traps.items():
        if not os.path.lexists(box.workspace / name):
            make(box.workspace / name)


@pytest.mark.parametrize("use_openat2", [True, False], ids=["openat2", "walk"])
@settings(max_examples=150, deadline=None)
@given(operation=st.sampled_from(OPERATIONS), path=paths, content=st.text(max_size=50))
def test_any_path_gives_a_result_or_a_domain_error_and_never_touches_the_outside(
    arena: Box, use_openat2: bool, operation: str, path: str, content: str
) -> None:
    if use_openat2 and not OPENAT2:
        pytest.skip("this kernel has no openat2")
    set_traps(arena)
    before = arena.untouched()
    previous, beneath.use_openat2 = beneath.use_openat2, use_openat2
    try:
        result = outcome_within(
            lambda: perform(arena.context, {"operation": operation, "path": path, "content": content})
        )
    finally:
        beneath.use_openat2 = previous
    if isinstance(result, BaseException):
        assert isinstance(result, DomainError), repr(result)
        assert not isinstance(result, Internal), result
        assert str(arena.root) not in str(result)
        assert len(str(result)) < 400
    else:
        assert isinstance(result, ToolOutput)
        assert SECRET not in result.text
    assert arena.untouched() == before
