"""`python -m bench --smoke` (what `make bench` runs, with a handful of runs): it starts the stack as users do,
prints a row per case, and verifies every run; with `--database postgres`, on a server of its own that it stops.
No timing is asserted: the figures depend on the machine."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.results import HEADERS
from tests.support.postgres import pid_alive, skip_without_postgres

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The smoke bench takes ~40 s here (four stack starts, one with two engines); this is ample on a busy machine.
BENCH_TIMEOUT_SECONDS = 200
#: After Ctrl-C the bench stops its stack (the launcher's ordered stop takes up to ~25 s).
STOP_TIMEOUT_SECONDS = 60
#: The row of each case starts with its letter.
CASE_PREFIXES = ("a. bare stream", "b. ", "c. ", "d. ", "e. step delivery", "d2. ", "f. engine SIGKILLed")


def run_smoke_bench(*args: str) -> subprocess.CompletedProcess[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", "--smoke", *args], cwd=REPO_ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=BENCH_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        # Ctrl-C, not SIGKILL: the bench then stops the stack it started instead of leaving it running.
        process.send_signal(signal.SIGINT)
        try:
            stdout, stderr = process.communicate(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        pytest.fail(f"the smoke bench took over {BENCH_TIMEOUT_SECONDS}s; stderr:\n{stderr[-4000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def table_rows(stdout: str) -> list[list[str]]:
    """The table's body rows, as cells (a Markdown table: the header and its separator come first)."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


@pytest.mark.timeout(BENCH_TIMEOUT_SECONDS + STOP_TIMEOUT_SECONDS + 30)
def test_smoke_bench_prints_a_row_per_case_and_verifies_every_run() -> None:
    result = run_smoke_bench()
    assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"

    rows = table_rows(result.stdout)
    names = [row[0] for row in rows]
    for prefix in CASE_PREFIXES:
        assert sum(name.startswith(prefix) for name in names) == 1, f"no single row for {prefix!r} in {names}"
    assert all(row[2] == "0" for row in rows), f"errors in {rows}"

    verified = re.search(r"^verified (\d+)/(\d+) runs$", result.stdout, re.MULTILINE)
    assert verified is not None, result.stdout[-2000:]
    stack_runs = sum(int(row[1].replace(",", "")) for row in rows if not row[0].startswith("a. "))
    assert int(verified[1]) == int(verified[2]) == stack_runs > 0


#: How long the PostgreSQL server may take to exit once its folder is deleted.
SERVER_EXIT_SECONDS = 10
#: `--database postgres`: two stacks (0 ms and slow model), so the databases are made and dropped twice.
POSTGRES_CASES = ("c. ", "d. ")


@pytest.mark.postgres
@pytest.mark.timeout(BENCH_TIMEOUT_SECONDS + STOP_TIMEOUT_SECONDS + 30)
def test_smoke_bench_on_postgres_gives_each_service_a_database_and_stops_its_server() -> None:
    skip_without_postgres()
    result = run_smoke_bench("--database", "postgres", "--cases", "concurrent,burst")
    assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"

    rows = table_rows(result.stdout)
    assert [row[0][:3] for row in rows] == list(POSTGRES_CASES), rows
    assert all(row[0].endswith(", postgresql") and row[2] == "0" for row in rows), rows
    # PostgreSQL's processes are measured with the stack's.
    pg = HEADERS.index("CPU pg")
    assert all(float(row[pg]) > 0 for row in rows), rows
    verified = re.search(r"^verified (\d+)/(\d+) runs$", result.stdout, re.MULTILINE)
    assert verified is not None and int(verified[1]) == int(verified[2]) == sum(int(row[1]) for row in rows) > 0

    made = re.findall(r"postgresql: databases (\S+), (\S+), (\S+)$", result.stderr, re.MULTILINE)
    dropped = re.findall(r"postgresql: dropped (.+)$", result.stderr, re.MULTILINE)
    assert len(made) == len(rows) and len({name for names in made for name in names}) == 3 * len(rows), made
    assert all(runs.startswith("bench_runs_") and tools.startswith("bench_tools_") and agents.startswith(
        "bench_agents_") for runs, tools, agents in made), made
    assert dropped == [", ".join(names) for names in made]
    server = re.search(r"postgresql: server ready, postmaster (\d+), data in (\S+)$", result.stderr, re.MULTILINE)
    assert server is not None, result.stderr[-2000:]
    assert not Path(server[2]).parent.exists(), "the server's folder was left behind"
    # `pg_ctl stop -w` returns once the postmaster has removed its pid file, moments before it exits.
    deadline = time.monotonic() + SERVER_EXIT_SECONDS
    while pid_alive(int(server[1])) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(int(server[1])), "the server is still running"
