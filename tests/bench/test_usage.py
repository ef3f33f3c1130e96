"""What the bench counts as a process's CPU."""

import subprocess
import sys
import time

from bench.stack import cpu_seconds, tree_cpu_seconds


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
