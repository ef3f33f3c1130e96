"""The file_io plugin's paths: over-long, unprintable, NUL and unpaired-surrogate paths refused clearly, a
workspace that cannot be used, the walk taking over without openat2, and any path whatever (hypothesis) giving a
result or a domain error without touching the outside."""

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import DomainError, FailedPrecondition, Internal, InvalidArgument
from services.tools.base import ToolContext, ToolOutput
from services.tools.plugins.file_io import OPERATIONS, perform
from services.tools.settings import BUILTIN_WEB_SEARCH_CORPUS
from services.tools.workspaces import beneath
from tests.tools.conftest import RunningTools, execute_request
from tests.tools.file_io_helpers import OPENAT2, SECRET, Box, make_box, outcome_within, refused

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
