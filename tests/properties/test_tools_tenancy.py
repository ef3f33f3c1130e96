"""Properties of the tools' tenancy boundary: whatever a user id holds, its workspace is one folder of its own below
TOOLS_WORKSPACE/users, which the file system accepts, no two ids share one, and a call through the worker's own
path never touches another user's files."""

import os
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from services.common.errors import Internal, PermissionDenied
from services.common.identity import MAX_USER_ID, Caller
from services.tools.base import ToolContext
from services.tools.registry import ToolRegistry
from services.tools.settings import BUILTIN_WEB_SEARCH_CORPUS
from services.tools.workers.protocol import ToolCall, WorkerConfig
from services.tools.workers.worker import run_call
from services.tools.workspaces.tenancy import USERS_FOLDER, call_context, folder_name

#: Ids as API keys allow them, ids with the pieces that climb, and anything a JWT's subject might hold.
PIECES = [".", "..", "/", "%", "%2E", "@", "|", "+", "-", "\x00", "\\", "é", "\ud800", " ", "users", "a" * 60]
user_ids = st.one_of(
    st.from_regex(r"\A[A-Za-z0-9._@|+-]{1,200}\Z"),
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=12).map("".join),
    st.text(alphabet=st.characters(codec=None, categories=None), min_size=1, max_size=MAX_USER_ID),
).filter(lambda user: 0 < len(user) <= MAX_USER_ID)

ROOT = Path("/srv/workspace")


def context() -> ToolContext:
    return ToolContext(workspace=ROOT, web_search_corpus=BUILTIN_WEB_SEARCH_CORPUS)


@given(user_ids)
def test_a_user_ids_folder_is_one_plain_name_below_users(user: str) -> None:
    name = folder_name(user)
    assert name not in ("", ".", "..") and not name.startswith(".")
    assert "/" not in name and "\x00" not in name
    assert len(name.encode("utf-8")) <= 255
    workspace = call_context(context(), Caller(user)).workspace
    assert workspace is not None
    assert workspace.parent == ROOT / USERS_FOLDER
    assert os.path.normpath(workspace) == str(workspace)


@given(user_ids, user_ids)
def test_different_ids_never_share_a_folder(first: str, second: str) -> None:
    assume(first != second)
    assert folder_name(first) != folder_name(second)


@given(st.lists(user_ids, min_size=1, max_size=5, unique=True))
def test_the_file_system_takes_every_folder_and_keeps_them_apart(
    tmp_path_factory: pytest.TempPathFactory, users: list[str]
) -> None:
    users_folder = tmp_path_factory.mktemp("users")
    for user in users:
        (users_folder / folder_name(user)).mkdir()
    assert len(list(users_folder.iterdir())) == len(users)


@pytest.mark.parametrize("user", ["", "x" * (MAX_USER_ID + 1)])
def test_what_is_not_a_user_id_names_no_folder(user: str) -> None:
    with pytest.raises(ValueError, match="a user id is 1 to"):
        folder_name(user)


def test_an_identity_too_long_for_a_user_id_is_refused_not_a_crash() -> None:
    with pytest.raises(PermissionDenied, match="names no workspace"):
        call_context(context(), Caller("x" * (MAX_USER_ID + 1)))


def test_a_call_on_no_users_behalf_has_a_workspace_only_when_shared() -> None:
    service = Caller("", "admin", service=True)
    assert call_context(context(), service).workspace is None
    assert call_context(context(), None).workspace is None
    shared = ToolContext(workspace=ROOT, web_search_corpus=BUILTIN_WEB_SEARCH_CORPUS, workspace_shared=True)
    assert call_context(shared, service).workspace == ROOT / "shared"
    assert call_context(shared, Caller("alice")).workspace == ROOT / "shared"


#: Paths a model might try, to climb out of its folder or into another user's.
paths = st.one_of(
    st.lists(st.sampled_from(["..", ".", "users", "alice", "shared", "x.txt", "", "%2E%2E"]), max_size=6).map("/".join),
    st.text(max_size=30),
)


@pytest.fixture(scope="module")
def worker_registry() -> ToolRegistry:
    registry = ToolRegistry()
    registry.refresh()
    return registry


@given(user_ids, paths, st.sampled_from(["write", "read", "list", "delete", "append"]))
def test_a_call_through_the_worker_touches_only_its_users_folder(
    tmp_path_factory: pytest.TempPathFactory, worker_registry: ToolRegistry, user: str, path: str, operation: str
) -> None:
    """The worker's own path from a ToolCall to file_io (run_call, in this process): whatever the user id and the
    path, the answer is an output or a domain error other than Internal, and nothing changes outside the user's
    folder (alice's file stays as it was)."""
    root = tmp_path_factory.mktemp("ws")
    alice = root / USERS_FOLDER / "alice"
    alice.mkdir(parents=True)
    (alice / "x.txt").write_text("alice's")
    context = ToolContext(workspace=root, web_search_corpus=BUILTIN_WEB_SEARCH_CORPUS)
    config = WorkerConfig((), context, 65536, None, None)
    arguments = {"operation": operation, "path": path, "content": "odd"}
    if operation in ("read", "list", "delete"):
        del arguments["content"]
    reply = run_call(worker_registry, config, ToolCall("file_io", arguments, Caller(user)))
    assert reply.output is not None or (reply.error is not None and not isinstance(reply.error, Internal)), reply
    own = root / USERS_FOLDER / folder_name(user)
    changed = {
        str(entry.relative_to(root))
        for entry in root.rglob("*")
        if not entry.is_relative_to(own) and entry not in (root / USERS_FOLDER, alice, alice / "x.txt")
    }
    if user != "alice":
        assert (alice / "x.txt").read_text() == "alice's"
        assert changed == set()
