"""The launcher's var dir is private: `python -m services.launcher` as a real process, with API keys configured,
leaves no file or directory under var/ that group or others may use (the Envoy config, its admin socket, the
tools' key, the SQLite databases with users' runs, file_io's workspace, and what an earlier version left loose),
its children create files with umask 077, and no secret is in a file anyone else can read."""

import os
import stat
import time
from pathlib import Path

import grpc
import pytest

from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from services.common.rpc.health_probe import is_serving
from services.launcher.private_files import make_private, private_secrets, write_private
from services.launcher.process_tree import children_of
from services.launcher.stack import TOOLS_SECRET_KEYS_FILE
from tests.conftest import free_port
from tests.launcher.children import launched, wait_until
from tests.launcher.test_launcher_e2e import SETTING_PREFIXES, STARTUP_TIMEOUT
from tests.support.keys import ADMIN, AUTH, SERVICE_TOKEN, as_
from tests.support.processes import METRICS_ON_FREE_PORTS

SERVICES = {
    "RUNS": "agentplatform.runs.v1.RunService",
    "TOOLS": "agentplatform.tools.v1.ToolService",
    "AGENTS": "agentplatform.agents.v1.AgentRegistryService",
    "ENGINE": "agentplatform.engine.v1.AgentService",
}


def loose(path: Path) -> int:
    """The group and other permission bits of `path` itself (a symbolic link is not followed)."""
    return stat.S_IMODE(path.lstat().st_mode) & 0o077


def every_entry(folder: Path) -> list[Path]:
    return [folder, *(Path(root) / name for root, dirs, files in os.walk(folder) for name in (*dirs, *files))]


def umask_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise AssertionError(f"no Umask line for {pid}")


def chat_through_gateway(port: int) -> engine_pb2.ChatResponse:
    """One chat as the admin, retried while Envoy still finds no healthy engine (its first health checks)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        while True:
            try:
                return engine_pb2_grpc.AgentServiceStub(channel).Chat(
                    engine_pb2.ChatRequest(message="What is 5 + 10?"), metadata=as_(ADMIN), timeout=60
                )
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


@pytest.mark.e2e
def test_everything_under_var_is_private_and_no_file_others_can_read_holds_a_secret(tmp_path: Path) -> None:
    ports = {name: free_port() for name in (*SERVICES, "DEMO_MODEL", "GATEWAY")}
    env = {key: value for key, value in os.environ.items() if not key.startswith(SETTING_PREFIXES)}
    # Every path left at its default: var/ holds the databases and the workspace, as with `make run`.
    env |= {f"{name}_PORT": str(port) for name, port in ports.items()} | AUTH | METRICS_ON_FREE_PORTS
    # What an earlier version left: a var dir and a workspace file anyone could read.
    var = tmp_path / "var"
    (var / "workspace").mkdir(parents=True)
    var.chmod(0o755)
    (var / "workspace").chmod(0o755)
    (var / "workspace" / "notes.txt").write_text("a user's file")
    (var / "workspace" / "notes.txt").chmod(0o644)

    with launched(tmp_path, env) as launcher:

        def up() -> bool:
            assert launcher.process.poll() is None, f"the launcher exited with code {launcher.process.returncode}"
            return all(is_serving(f"127.0.0.1:{ports[name]}", service) for name, service in SERVICES.items())

        try:
            wait_until(up, STARTUP_TIMEOUT, "every service")
            # Users' data in the databases: a run, through the gateway, as a user would make it.
            assert "15" in chat_through_gateway(ports["GATEWAY"]).response
            launcher.note_children()
            children = children_of(launcher.process.pid)
            assert len(children) == 6, children
            assert {pid: umask_of(pid) for pid in children} == {pid: 0o077 for pid in children}
            assert umask_of(launcher.process.pid) == 0o077
        except (TimeoutError, AssertionError) as exc:
            raise AssertionError(f"{exc}; launcher log:\n{launcher.log_tail()}") from None

        entries = every_entry(var)
        names = {path.relative_to(var).as_posix() for path in entries}
        # What the stack keeps there (so that the check below is not passing over an empty folder).
        assert {"envoy.yaml", "envoy-admin.sock", TOOLS_SECRET_KEYS_FILE, "runs.db", "tools.db", "agents.db",
                "workspace/notes.txt"} <= names, names
        assert {path.relative_to(tmp_path).as_posix(): oct(loose(path)) for path in entries if loose(path)} == {}
        assert stat.S_IMODE(var.stat().st_mode) == 0o700
        assert stat.S_IMODE((var / TOOLS_SECRET_KEYS_FILE).stat().st_mode) == 0o600

        # The secrets: the service token (configured) and the tools' key (made by the launcher). The Envoy config
        # holds neither: Envoy reads the token from its environment.
        (tools_key,) = (var / TOOLS_SECRET_KEYS_FILE).read_text().split()
        assert SERVICE_TOKEN not in (var / "envoy.yaml").read_text()
        for path in every_entry(tmp_path):
            if path.is_file() and not path.is_symlink() and path.name != TOOLS_SECRET_KEYS_FILE:
                content = path.read_bytes()
                where = path.relative_to(tmp_path)
                assert SERVICE_TOKEN.encode() not in content or not loose(path), where
                assert tools_key.encode() not in content, where


def test_private_files_are_made_0600_and_loose_ones_tightened(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    old.write_text("before")
    old.chmod(0o644)
    write_private(old, "after")
    write_private(tmp_path / "new.yaml", "new")
    assert (old.read_text(), stat.S_IMODE(old.stat().st_mode)) == ("after", 0o600)
    assert stat.S_IMODE((tmp_path / "new.yaml").stat().st_mode) == 0o600

    # A symbolic link planted where a private file goes is refused, not followed.
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    (tmp_path / "link.yaml").symlink_to(target)
    with pytest.raises(OSError):
        write_private(tmp_path / "link.yaml", "secret")
    assert target.read_text() == "untouched"

    folder = tmp_path / "var"
    (folder / "deep").mkdir(parents=True)
    (folder / "deep" / "file").write_text("x")
    for path in (folder, folder / "deep", folder / "deep" / "file"):
        path.chmod(0o777)
    make_private(folder)
    assert [oct(stat.S_IMODE(p.stat().st_mode)) for p in (folder, folder / "deep", folder / "deep" / "file")] == [
        "0o700", "0o700", "0o700"
    ]


def test_a_kept_secret_is_made_once_then_read_back(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    first = private_secrets(path, lambda: "made-1")
    assert first == ["made-1"] and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("newer\nmade-1\n")
    path.chmod(0o644)
    assert private_secrets(path, lambda: "made-2") == ["newer", "made-1"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
