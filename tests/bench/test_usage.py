"""What the bench counts as a process's CPU, and its engines' memory per 1,000 live runs."""

import os
import subprocess
import sys
import time

from bench.results import CaseResult, goal_lines
from bench.stack import UsageMeter, cpu_seconds, tree_cpu_seconds


def test_a_services_cpu_includes_the_processes_under_it() -> None:
    # A parent that waits while its child burns CPU: the parent's own time stays near zero, its tree's does not.
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}]); input()"
    parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while (tree := tree_cpu_seconds(parent.pid) or 0.0) < 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)
        own = cpu_seconds(parent.pid) or 0.0
        assert tree >= 0.25 > own + 0.1, (tree, own)
    finally:
        parent.kill()
        parent.wait()


def test_a_burst_reports_engine_memory_per_thousand_live_runs() -> None:
    mib = 1024 * 1024
    two_engines = CaseResult(
        key="burst2", name="d2", runs=500, errors=0, wall_s=1.0,
        peak_rss={"engine": 100 * mib, "engine#2": 90 * mib, "runs": 500 * mib},
        start_rss={"engine": 80 * mib, "engine#2": 70 * mib, "runs": 100 * mib},
    )
    # 500 live runs: (100 + 90) MiB of engines, 40 MiB of it grown under load, each doubled to 1,000 runs.
    assert two_engines.engine_rss_per_thousand() == (380.0, 80.0)
    line = next(line for line in goal_lines([two_engines]) if "RSS" in line)
    assert "380 MiB" in line and "[MISSED]" in line
    assert CaseResult(key="burst", name="d", runs=10, errors=0, wall_s=1.0).engine_rss_per_thousand() is None


def test_the_meter_takes_each_processs_rss_at_the_start() -> None:
    meter = UsageMeter({"client": os.getpid()})
    meter.start()
    usage = meter.stop()
    assert 0 < usage.start_rss["client"] <= usage.peak_rss["client"]
