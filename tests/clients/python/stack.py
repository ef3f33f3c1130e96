"""The stack the SDK and CLI tests run against: every process `make run` starts (Envoy included, reached as the
SDK's users reach it, through the gateway), with the test users' API keys, on free ports; plus restarting one
of its processes with a real SIGKILL."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.conftest import RunningStack, wait_ready
from tests.e2e.faults import gateway_stack, kill
from tests.support.keys import AUTH


@contextmanager
def keyed_gateway_stack(workdir: Path, **settings: str) -> Iterator[RunningStack]:
    """The whole stack (tests/e2e/faults.gateway_stack) with API keys for alice, bob and root
    (tests/support/keys.py) and `settings`."""
    with gateway_stack(workdir, **{**AUTH, **settings}) as running:
        yield running


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
