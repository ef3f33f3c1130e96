"""`python -m bench --smoke` (what `make bench` runs, with a handful of runs): it starts the stack as users do,
prints a row per case, and verifies every run. No timing is asserted: the figures depend on the machine."""

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The smoke bench takes ~40 s here (four stack starts, one with two engines); this is ample on a busy machine.
BENCH_TIMEOUT_SECONDS = 200
#: After Ctrl-C the bench stops its stack (the launcher's ordered stop takes up to ~25 s).
STOP_TIMEOUT_SECONDS = 60
#: The row of each case starts with its letter.
CASE_PREFIXES = ("a. bare stream", "b. ", "c. ", "d. ", "e. step delivery", "d2. ", "f. engine SIGKILLed")


def run_smoke_bench() -> subprocess.CompletedProcess[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", "--smoke"], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
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
