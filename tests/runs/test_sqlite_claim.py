"""SQLite serves one runs replica: a second runs service on the same database file refuses to start, naming the
setting and what to do, instead of splitting watches, cancel notices and the reaper between two processes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.settings import SettingsError
from services.runs.app import start_runs
from tests.support.platform import runs_settings


async def test_a_second_runs_service_on_one_sqlite_file_refuses_to_start(tmp_path: Path) -> None:
    first = await start_runs(runs_settings(tmp_path))
    try:
        with pytest.raises(SettingsError, match=r"DATABASE_URL: another process already serves the SQLite database "
                                                r".*runs\.db; SQLite serves one replica.*use PostgreSQL"):
            await start_runs(runs_settings(tmp_path))
        other = await start_runs(runs_settings(tmp_path / "elsewhere"))  # a file of its own is fine
        await other.stop()
    finally:
        await first.stop()
    again = await start_runs(runs_settings(tmp_path))  # the claim ends with the service
    await again.stop()


def test_the_claim_is_the_processes_and_ends_with_it(tmp_path: Path) -> None:
    """Two real processes: the second exits at once with the message; the claim of a killed one is gone."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}"
    hold = (
        "import sys, time; from services.common.db.sqlite_claim import claim_sqlite_file; "
        "claim = claim_sqlite_file(sys.argv[1], 'DATABASE_URL'); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        # The test's environment (less the developer's own platform settings), on this database and a free port.
        environment = {name: value for name, value in os.environ.items() if not name.startswith(("PLATFORM_", "AUTH_"))}
        second = subprocess.run(
            [sys.executable, "-m", "services.runs"], env={**environment, "DATABASE_URL": url, "RUNS_PORT": "0"},
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )
        assert second.returncode != 0
        assert "another process already serves the SQLite database" in second.stderr + second.stdout
    finally:
        holder.kill()
        holder.wait()
    replacement = subprocess.run([sys.executable, "-c", hold.replace("time.sleep(60)", "pass"), url],
                                 capture_output=True, text=True, timeout=30)
    assert replacement.stdout.strip() == "held"  # SIGKILL released it
