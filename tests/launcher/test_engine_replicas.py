"""`make run` with ENGINE_REPLICAS=2 (`python -m services.launcher` as a real process): two engine processes
start on ports of their own, the banner names both, and chats sent through Envoy are answered by both."""

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest

from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from services.common.rpc.health_probe import is_serving
from services.launcher.__main__ import READY
from tests.conftest import two_free_ports
from tests.e2e.conftest import stack_environment
from tests.launcher.children import launched, wait_until

pytestmark = pytest.mark.e2e

STARTUP_TIMEOUT = 90.0
CHATS = 16
ENGINE = "agentplatform.engine.v1.AgentService"


def envoy_sees_healthy(admin_socket: Path, addresses: list[str]) -> bool:
    """Whether Envoy's engine cluster has passed a health check on every one of `addresses`."""
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(admin_socket)), timeout=2) as client:
            clusters = client.get("http://envoy/clusters").text
    except httpx.HTTPError:
        return False
    return all(f"engine::{address}::health_flags::healthy" in clusters for address in addresses)


def test_two_engines_start_and_chats_through_the_gateway_reach_both(tmp_path: Path) -> None:
    port = two_free_ports()
    env = stack_environment(tmp_path, ENGINE_REPLICAS="2", ENGINE_PORT=str(port))
    engines = [f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"]
    gateway = f"127.0.0.1:{env['GATEWAY_PORT']}"
    with launched(tmp_path, env) as launcher:
        try:
            wait_until(
                lambda: launcher.process.poll() is None
                and all(is_serving(address, ENGINE) for address in engines)
                and is_serving(f"127.0.0.1:{env['TOOLS_PORT']}", "agentplatform.tools.v1.ToolService"),
                STARTUP_TIMEOUT,
                "both engines",
            )
            # Envoy balances over the engines that passed its health check (every second until they do).
            admin = tmp_path / "var" / "envoy-admin.sock"
            wait_until(lambda: envoy_sees_healthy(admin, engines), STARTUP_TIMEOUT, "Envoy to see both engines")
            launcher.note_children()
            wait_until(lambda: f"launcher | {READY}" in launcher.log_path.read_text(), STARTUP_TIMEOUT, "ready")
            log = launcher.log_path.read_text()
            for number, address in enumerate(engines, start=1):
                assert re.search(rf"\n  engine-{number} +{address} ", log), log[-3000:]

            with grpc.insecure_channel(gateway) as channel:
                chat = engine_pb2_grpc.AgentServiceStub(channel).Chat

                def ask(number: int) -> engine_pb2.ChatResponse:
                    # Envoy may not have seen both engines pass a health check yet: a refused call is retried.
                    request = engine_pb2.ChatRequest(message=f"What is {number} + 10?")
                    return chat(request, timeout=60, wait_for_ready=True)

                # One after another, then at once: in some tries here a first burst into a gateway that had sent
                # the engines no call yet all went to one engine (Envoy had no connection to either).
                answers = [ask(number) for number in range(CHATS)]
                with ThreadPoolExecutor(CHATS) as pool:
                    answers += list(pool.map(ask, range(CHATS)))
            assert all(str(number % CHATS + 10) in answer.response for number, answer in enumerate(answers)), answers

            # Which engine started each run: the supervisor prefixes each engine's lines with its name.
            log = launcher.log_path.read_text()
            started = dict(
                (match["run"], match["engine"])
                for match in re.finditer(r" (?P<engine>engine-[12]) \| .*run (?P<run>[0-9a-f-]{36}) started", log)
            )
            ran_by = [started.get(answer.run_id) for answer in answers]
            assert None not in ran_by, (ran_by, log[-3000:])
            assert set(ran_by) == {"engine-1", "engine-2"}, ran_by
        except (TimeoutError, AssertionError) as exc:
            raise AssertionError(f"{exc}; launcher log:\n{launcher.log_tail()}") from None
