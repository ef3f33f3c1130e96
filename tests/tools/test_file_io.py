"""The file_io plugin: read/write/list inside the workspace, and every way out of it refused."""

from pathlib import Path
from typing import Any

import pytest

from services.common.errors import InvalidArgument, NotFound, ResourceExhausted
from services.tools.base import ToolContext, ToolOutput
from services.tools.plugins.file_io import MAX_FILE_BYTES, FileIOTool


async def file_io(context: ToolContext, **arguments: Any) -> ToolOutput:
    return await FileIOTool().run(arguments, context)


async def test_write_then_read_round_trips_and_creates_folders(context: ToolContext) -> None:
    written = await file_io(context, operation="write", path="notes/today.txt", content="héllo")
    assert written.result == {"path": "notes/today.txt", "bytes_written": 6}
    assert written.text == "Wrote 6 bytes to notes/today.txt"
    assert (context.workspace / "notes" / "today.txt").read_text(encoding="utf-8") == "héllo"

    read = await file_io(context, operation="read", path="notes/today.txt")
    assert read.result == {"path": "notes/today.txt", "content": "héllo"}
    assert read.text == "héllo"


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


async def test_the_workspace_is_created_when_missing(tmp_path: Path) -> None:
    context = ToolContext(workspace=tmp_path / "new" / "ws", web_search_corpus=tmp_path / "unused.json")
    listed = await file_io(context, operation="list", path=".")
    assert listed.result["entries"] == []
    assert (tmp_path / "new" / "ws").is_dir()


@pytest.mark.parametrize("path", ["../etc/passwd", "a/../../secret.txt", "/etc/passwd"])
@pytest.mark.parametrize("operation", ["read", "write", "list"])
async def test_paths_escaping_the_workspace_are_refused(context: ToolContext, operation: str, path: str) -> None:
    with pytest.raises(InvalidArgument, match=r"is outside the tools workspace; use a path relative to it"):
        await file_io(context, operation=operation, path=path, content="x")


async def test_a_symlink_pointing_outside_is_refused(context: ToolContext, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    (context.workspace / "link.txt").symlink_to(secret)
    with pytest.raises(InvalidArgument, match="outside the tools workspace"):
        await file_io(context, operation="read", path="link.txt")
    with pytest.raises(InvalidArgument, match="outside the tools workspace"):
        await file_io(context, operation="write", path="link.txt", content="overwritten")
    assert secret.read_text() == "top secret"
    # Listing does not reveal what the link points at either.
    listed = await file_io(context, operation="list")
    assert listed.result["entries"] == []


async def test_dotdot_that_stays_inside_is_fine(context: ToolContext) -> None:
    (context.workspace / "x.txt").write_text("ok")
    read = await file_io(context, operation="read", path="sub/../x.txt")
    assert read.result == {"path": "x.txt", "content": "ok"}


async def test_missing_file_is_not_found(context: ToolContext) -> None:
    with pytest.raises(NotFound, match=r"file 'nope\.txt' not found"):
        await file_io(context, operation="read", path="nope.txt")


async def test_reading_a_directory_is_refused(context: ToolContext) -> None:
    (context.workspace / "d").mkdir()
    with pytest.raises(InvalidArgument, match="is a directory; use operation 'list'"):
        await file_io(context, operation="read", path="d")


async def test_files_over_one_mebibyte_are_refused(context: ToolContext) -> None:
    (context.workspace / "big.txt").write_bytes(b"a" * (MAX_FILE_BYTES + 1))
    with pytest.raises(ResourceExhausted, match="1 MiB"):
        await file_io(context, operation="read", path="big.txt")
    with pytest.raises(ResourceExhausted, match="1 MiB"):
        await file_io(context, operation="write", path="big2.txt", content="a" * (MAX_FILE_BYTES + 1))
    assert not (context.workspace / "big2.txt").exists()


async def test_undecodable_files_are_refused(context: ToolContext) -> None:
    (context.workspace / "bin.dat").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InvalidArgument, match="not UTF-8 text"):
        await file_io(context, operation="read", path="bin.dat")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"operation": "read"}, "operation 'read' needs 'path'"),
        ({"operation": "write", "path": "a.txt"}, "operation 'write' needs 'content'"),
    ],
)
async def test_missing_path_or_content_is_refused(
    context: ToolContext, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await file_io(context, **arguments)
