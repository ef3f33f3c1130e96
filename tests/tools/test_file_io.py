"""The file_io plugin: every operation inside the workspace, ordinary mistakes, and the workspace's quota.

The ways out of the workspace are in test_file_io_escapes.py, bad and arbitrary paths in test_file_io_paths.py."""

import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from services.common.errors import InvalidArgument, NotFound, ResourceExhausted
from services.common.settings import load_settings
from services.tools.app import start_tools
from services.tools.base import ToolContext, ToolOutput
from services.tools.plugins.file_io import MAX_FILE_BYTES, MAX_LIST_ENTRIES, perform
from services.tools.settings import ToolsSettings
from tests.support.stubs import tools_stubs
from tests.tools.conftest import SettingsFactory, execute_request
from tests.tools.file_io_helpers import file_io, make_box, refused

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
