"""The stack the SDK and CLI tests run against: every process `make run` starts (Envoy included, reached as the
SDK's users reach it, through the gateway), with the test users' API keys, on free ports; plus restarting one
of its processes with a real SIGKILL."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.conftest import RunningStack, build_stack_in, wait_ready
from tests.e2e.faults import LEASE, REAPER_INTERVAL, kill, stack_env
from tests.support.keys import AUTH


@contextmanager
def gateway_stack(workdir: Path, **settings: str) -> Iterator[RunningStack]:
    """The whole stack with API keys for alice, bob and root (tests/support/keys.py), short leases, and
    `settings`; every process killed on the way out."""
    env = stack_env(workdir, {
        **AUTH,
        "ENGINE_LEASE_SECONDS": str(LEASE),
        "RUNS_REAPER_INTERVAL_SECONDS": str(REAPER_INTERVAL),
        **settings,
    })
    stack = build_stack_in(workdir, env)
    running = RunningStack(stack, workdir, env, page_port=0)
    try:
        for spec in stack.processes:
            running.start(spec)
        wait_ready(running, [spec.name for spec in stack.processes])
        yield running
    finally:
        for name in list(running.processes):
            kill(running, name)


def restart(stack: RunningStack, name: str) -> float:
    """SIGKILL a process of the stack and start it again on its port, with its database; when it was killed."""
    kill(stack, name)
    killed_at = time.monotonic()
    stack.start(stack.spec(name))
    wait_ready(stack, [name])
    return killed_at


def gateway_address(stack: RunningStack) -> str:
    """The gateway as the SDK takes it (host:port)."""
    return stack.stack.gateway_url.removeprefix("http://")
