"""Tenancy of tools through the real tools service: each user's file_io workspace is their own (and per-user
quota), an admin can make it shared, and a tool learns who it runs for from the authenticated call, never from its
arguments."""

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format

from services.common.identity import Caller, as_service, on_behalf_of
from services.tools.app import ToolsApp, start_tools
from services.tools.workspaces.tenancy import folder_name
from tests.support.keys import ALICE, AUTH, SERVICE_TOKEN, as_
from tests.support.stubs import tools_stubs
from tests.tools.conftest import SettingsFactory, execute_request, write_plugin
from tests.tools.file_io_helpers import snapshot

Call = Callable[..., Any]


def for_user(user: str, role: str = "user") -> tuple[tuple[str, str], ...]:
    """What the engine sends when it runs a tool for a run of `user` (an API-key user's runs)."""
    return on_behalf_of(Caller(user, role), SERVICE_TOKEN)  # type: ignore[arg-type]


class Tenants:
    """A started tools service with the test users' keys, and calls as each user."""

    def __init__(self, app: ToolsApp, channel: grpc.aio.Channel, workspace: Path) -> None:
        self.app, self.stub, self.workspace = app, tools_stubs(channel), workspace

    async def file_io(self, user: str, **arguments: Any) -> Any:
        response = await self.stub.ExecuteTool(execute_request("file_io", **arguments), metadata=for_user(user))
        return json_format.MessageToDict(response.result)

    async def refused(self, user: str, **arguments: Any) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await self.file_io(user, **arguments)
        return exc.value


@pytest_asyncio.fixture
async def start(make_settings: SettingsFactory, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start tools services with the test users' keys (keyword overrides by env name); stopped afterwards."""
    started: list[tuple[ToolsApp, grpc.aio.Channel]] = []

    async def build(**overrides: Any) -> Tenants:
        app = await start_tools(make_settings(**AUTH, **overrides))
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
        started.append((app, channel))
        return Tenants(app, channel, tmp_path / "workspace")

    yield build
    for app, channel in started:
        await channel.close()
        await app.stop()


@pytest_asyncio.fixture
async def tenants(start: Callable[..., Any]) -> Tenants:
    return await start()


async def test_bob_can_neither_read_list_nor_overwrite_alices_files(tenants: Tenants) -> None:
    await tenants.file_io("alice", operation="write", path="notes/plan.txt", content="alice's plan")
    assert (await tenants.refused("bob", operation="read", path="notes/plan.txt")).code() == grpc.StatusCode.NOT_FOUND
    assert (await tenants.refused("bob", operation="list", path="notes")).code() == grpc.StatusCode.NOT_FOUND
    assert (await tenants.file_io("bob", operation="list"))["entries"] == []
    for escape in ("../alice/notes/plan.txt", "../../users/alice/notes/plan.txt", "/notes/plan.txt"):
        refusal = await tenants.refused("bob", operation="read", path=escape)
        assert refusal.code() == grpc.StatusCode.INVALID_ARGUMENT, escape
    # Bob's file of the same name is his own: writing it leaves alice's alone, and each reads their own.
    await tenants.file_io("bob", operation="write", path="notes/plan.txt", content="bob's plan")
    assert (await tenants.file_io("alice", operation="read", path="notes/plan.txt"))["content"] == "alice's plan"
    assert (await tenants.file_io("bob", operation="read", path="notes/plan.txt"))["content"] == "bob's plan"
    await tenants.file_io("bob", operation="delete", path="notes/plan.txt")
    assert (await tenants.file_io("alice", operation="read", path="notes/plan.txt"))["content"] == "alice's plan"
    users = tenants.workspace / "users"
    assert sorted(path.name for path in users.iterdir()) == ["alice", "bob"]
    assert (users / "alice" / "notes" / "plan.txt").read_text() == "alice's plan"
    assert sorted(path.name for path in tenants.workspace.iterdir()) == ["users"]  # nothing at the top, no shared/


@pytest.mark.parametrize("user", ["..", ".", "...", "a/../../b", "../alice", "a b|c+d@e.f", "users", "%2E%2E", "-rf"])
async def test_odd_user_ids_get_a_folder_of_their_own_and_reach_nobody_elses(tenants: Tenants, user: str) -> None:
    await tenants.file_io("alice", operation="write", path="mine.txt", content="alice's")
    before = snapshot(tenants.workspace / "users" / "alice")
    await tenants.file_io(user, operation="write", path="mine.txt", content="odd")
    assert (await tenants.file_io(user, operation="read", path="mine.txt"))["content"] == "odd"
    assert snapshot(tenants.workspace / "users" / "alice") == before
    own = tenants.workspace / "users" / folder_name(user)
    assert own.parent == tenants.workspace / "users" and (own / "mine.txt").read_text() == "odd"
    assert sorted(path.name for path in tenants.workspace.iterdir()) == ["users"]


async def test_the_quota_is_per_user_and_a_refused_write_changes_nothing(start: Callable[..., Any]) -> None:
    tenants = await start(TOOLS_WORKSPACE_MAX_BYTES=16)
    await tenants.file_io("alice", operation="write", path="a.txt", content="0123456789")
    before = snapshot(tenants.workspace)
    refusal = await tenants.refused("alice", operation="write", path="b.txt", content="0123456789")
    assert refusal.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refusal.details() == (
        "writing 'b.txt' would bring the workspace to 20 bytes, over its quota of 16 bytes (it holds 10 bytes); "
        "delete files to make room"
    )
    refusal = await tenants.refused("alice", operation="append", path="a.txt", content="0123456789")
    assert refusal.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert snapshot(tenants.workspace) == before
    await tenants.file_io("bob", operation="write", path="b.txt", content="0123456789")  # bob's quota is his own


async def test_a_shared_workspace_is_shared_when_an_admin_says_so(start: Callable[..., Any]) -> None:
    tenants = await start(TOOLS_WORKSPACE_SHARED="true")
    await tenants.file_io("alice", operation="write", path="team.txt", content="for everyone")
    assert (await tenants.file_io("bob", operation="read", path="team.txt"))["content"] == "for everyone"
    await tenants.file_io("bob", operation="append", path="team.txt", content=", bob too")
    assert (await tenants.file_io("alice", operation="read", path="team.txt"))["content"] == "for everyone, bob too"
    assert sorted(path.name for path in tenants.workspace.iterdir()) == ["shared"]


async def test_a_call_on_no_users_behalf_has_no_workspace(tenants: Tenants) -> None:
    await tenants.file_io("alice", operation="write", path="a.txt", content="x")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await tenants.stub.ExecuteTool(execute_request("file_io", operation="list"), metadata=as_service(SERVICE_TOKEN))
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "runs on no user's behalf" in (exc.value.details() or "")
    calculator = await tenants.stub.ExecuteTool(
        execute_request("calculator", operation="add", x=1, y=2), metadata=as_service(SERVICE_TOKEN)
    )
    assert calculator.text == "1 + 2 = 3"
    # A user's own API key does not reach the internal API at all.
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await tenants.stub.ExecuteTool(execute_request("file_io", operation="list"), metadata=as_(ALICE))
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_tool_learns_who_it_runs_for_from_the_call_not_its_arguments(
    start: Callable[..., Any], plugin_dir: Path
) -> None:
    write_plugin(
        plugin_dir,
        "whoami.py",
        """
        from services.tools.base import BaseTool

        class WhoAmI(BaseTool):
            name = "whoami"
            display_name = "Who am I"
            description = "Says who the call runs for"
            parameters = {"type": "object", "properties": {"user": {"type": "string"}}}

            async def run(self, arguments, context):
                return {"user": context.caller.user, "workspace": context.workspace.name}
        """,
    )
    tenants = await start()
    response = await tenants.stub.ExecuteTool(execute_request("whoami", user="alice"), metadata=for_user("bob"))
    seen = json_format.MessageToDict(response.result)
    assert seen == {"user": "bob", "workspace": "bob"}
