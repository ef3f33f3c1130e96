"""A throwaway PostgreSQL server for the tests: initdb into a temporary folder, start on a free loopback port,
stop and delete on exit.

PostgreSQL refuses to run as root, so as root the server runs as the unprivileged `postgres` user that
Debian's package creates. `.ci/run` installs the package; on a machine without it the PostgreSQL tests skip,
unless REQUIRE_POSTGRES=1 (set by CI), which makes a missing server a failure.
"""

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import free_port

DATABASE = "agentplatform_test"
PREFIX = "agentplatform-pg-"


def find_postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL server binaries (newest version), if installed."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


def skip_without_postgres() -> None:
    """Skip the calling test when PostgreSQL is not installed; under REQUIRE_POSTGRES=1 (CI), fail it instead."""
    if find_postgres_bin() is None:
        reason = "PostgreSQL is not installed (apt-get install postgresql)"
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def pid_alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, killed but not yet waited for, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def reap_orphaned_servers(bin_dir: Path) -> None:
    """Stop and delete the servers of test sessions that were killed before they could clean up."""
    for owner_file in Path(tempfile.gettempdir()).glob(f"{PREFIX}*/owner.pid"):
        root = owner_file.parent
        if pid_alive(int(owner_file.read_text() or 0)):
            continue
        subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate",
                                        "-w", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a SQLAlchemy URL (postgresql+asyncpg://…) of a fresh, empty database on a new server."""
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL is not installed (apt-get install postgresql)")
    reap_orphaned_servers(bin_dir)
    root = Path(tempfile.mkdtemp(prefix=PREFIX))
    # Which test session owns this server, so a later session can reap it if this one is killed.
    (root / "owner.pid").write_text(str(os.getpid()))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    port = free_port()
    run = lambda argv: subprocess.run(_as_server_user(argv), check=True, capture_output=True)  # noqa: E731
    try:
        run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        run([
            str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "start",
            "-o", f"-h 127.0.0.1 -p {port} -k {sockets} -c fsync=off -c full_page_writes=off",
        ])
        run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", DATABASE])
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{DATABASE}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                           capture_output=True)
        time.sleep(0.1)
        shutil.rmtree(root, ignore_errors=True)
