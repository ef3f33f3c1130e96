"""When the platform `make run` starts is ready for a person: every service answers the gRPC health protocol
with SERVING, the gateway routes a call to a service, and the demo model (when it runs) answers its /health.
services/launcher/__main__.py waits for that before it prints the banner and its "ready" line, so what the banner
lists answers when it is read.

A check is a blocking probe (a gRPC or HTTP call with a short timeout), run in a thread; `wait_ready` repeats the
failing ones until all pass, says which ones it still waits for when that takes long, and gives up when the
supervisor gave up on one of the processes.
"""

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from services.common.rpc.health_probe import is_serving
from services.launcher.stack import Stack

#: Each service's name in the health protocol: the service a caller of that process uses.
HEALTH_SERVICES = {
    "engine": "agentplatform.engine.v1.AgentService",
    "runs": "agentplatform.runs.v1.RunService",
    "tools": "agentplatform.tools.v1.ToolService",
    "agents": "agentplatform.agents.v1.AgentRegistryService",
}
#: The call the gateway probe sends: an empty ListTools, framed for grpc-web (a flag byte and a zero length).
GATEWAY_PROBE_METHOD = "agentplatform.tools.v1.ToolService/ListTools"
GATEWAY_PROBE_BODY = b"\x00\x00\x00\x00\x00"
#: gRPC statuses that prove the gateway routed the probe to the tools service: OK, or UNAUTHENTICATED when the
#: platform has API keys (the probe has none); anything else (UNAVAILABLE: no healthy upstream yet) does not.
GATEWAY_ROUTED_STATUSES = ("0", "16")
PROBE_TIMEOUT_SECONDS = 1.0
#: Seconds between two rounds of probes.
POLL_SECONDS = 0.25
#: How long a start may take before the launcher names what it still waits for (and again after as long).
REPORT_AFTER_SECONDS = 20.0


@dataclass(frozen=True)
class Check:
    """One thing that must answer: `name` is its process's name (the supervisor's), `address` what a person
    uses to reach it, `probe` a blocking call that says whether it answers now."""

    name: str
    address: str
    probe: Callable[[], bool]


def service_answers(address: str, service: str) -> Callable[[], bool]:
    return lambda: is_serving(address, service, timeout=PROBE_TIMEOUT_SECONDS)


def gateway_routes(gateway_url: str) -> bool:
    """Whether the gateway answers a grpc-web call with the tools service's own status."""
    try:
        response = httpx.post(
            f"{gateway_url}/{GATEWAY_PROBE_METHOD}",
            content=GATEWAY_PROBE_BODY,
            headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
            timeout=PROBE_TIMEOUT_SECONDS,
        )
    except httpx.HTTPError:
        return False
    # A refusal comes trailers-only (the status in the headers); an answer carries it in a trailer frame.
    status = response.headers.get("grpc-status")
    if status is None and b"grpc-status:0" in response.content:
        status = "0"
    return response.status_code == 200 and status in GATEWAY_ROUTED_STATUSES


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=PROBE_TIMEOUT_SECONDS).status_code == 200
    except httpx.HTTPError:
        return False


def service_addresses(stack: Stack) -> list[tuple[str, str]]:
    """(process name, host:port) of every gRPC service process, engines first, in the launcher's names."""
    engines = stack.engine_addresses
    named = [("engine" if len(engines) == 1 else f"engine-{number}", address)
             for number, address in enumerate(engines, start=1)]
    return [*named, ("runs", stack.runs_address), ("tools", stack.tools_address), ("agents", stack.agents_address)]


def stack_checks(stack: Stack) -> list[Check]:
    """What must answer before the stack is ready: each service process, the demo model if it runs, the gateway."""
    checks = [
        Check(name, address, service_answers(address, HEALTH_SERVICES[name.split("-")[0]]))
        for name, address in service_addresses(stack)
    ]
    if stack.uses_demo_model:
        health = f"{stack.model_base_url.removesuffix('/v1')}/health"
        checks.append(Check("model", stack.model_base_url, lambda: http_ok(health)))
    checks.append(Check("gateway", stack.gateway_url, lambda: gateway_routes(stack.gateway_url)))
    return checks


async def wait_ready(
    checks: Sequence[Check],
    *,
    is_down: Callable[[str], bool],
    say: Callable[[str], None],
    poll_seconds: float = POLL_SECONDS,
    report_after: float = REPORT_AFTER_SECONDS,
) -> bool:
    """Probe until every check has passed once (True), or until the supervisor gives up on a process a check
    waits for (False, after saying so). A check that passed is not asked again: what fails later is the
    supervisor's to report (it restarts the process and says so)."""
    waiting = list(checks)
    started = time.monotonic()
    next_report = started + report_after
    while waiting:
        answers = await asyncio.gather(*(asyncio.to_thread(check.probe) for check in waiting))
        waiting = [check for check, answered in zip(waiting, answers, strict=True) if not answered]
        if not waiting:
            return True
        if down := [check.name for check in waiting if is_down(check.name)]:
            say(f"not ready: {', '.join(down)} is down (its lines above say why); the rest keeps serving")
            return False
        if time.monotonic() >= next_report:
            names = ", ".join(f"{check.name} ({check.address})" for check in waiting)
            say(f"still waiting after {time.monotonic() - started:.0f}s for: {names}")
            next_report += report_after
        await asyncio.sleep(poll_seconds)
    return True
