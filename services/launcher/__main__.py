"""`python -m services.launcher` (what `make run` runs): the whole platform in the foreground.

Logs of every process are prefixed with its name. Once every service, the demo model and the gateway answer
their health checks (services/launcher/readiness.py), the launcher prints a banner with every address and one
"ready" line; until then it says only what it started. A process that crashes is restarted (and given up after
repeated crashes) while the others keep serving; Ctrl-C (or SIGTERM) stops them in order: gateway, engine, model,
tools and agents, runs (services/launcher/supervisor.py).
"""

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

from services.launcher.private_files import PRIVATE_UMASK
from services.launcher.readiness import service_addresses, stack_checks, wait_ready
from services.launcher.stack import Stack, build_stack
from services.launcher.supervisor import Supervisor

GATEWAY_CONFIG = Path("var/envoy.yaml")
#: The start of the "ready" line, the last line the launcher prints on its way up (tests look for it).
READY = "ready:"


def banner(stack: Stack) -> str:
    """Every address the platform answers on, and a first call to try: printed once all of them answer."""
    chat = '{"message": "What is 5 + 10, then multiply by 3?"}'
    rows = [
        ("gateway", stack.gateway_url, "grpc-web and Connect: the browser app, the TypeScript client"),
        ("rest", f"{stack.gateway_url}/api", "REST/JSON and Server-Sent Events (docs/gateway.md)"),
        ("openapi", f"{stack.gateway_url}/api/openapi.json", "the REST paths' OpenAPI document"),
    ]
    for name, address in service_addresses(stack):
        metrics = stack.metrics_urls.get(name)
        rows.append((name, address, "gRPC, reflection on" + (f"; metrics {metrics}" if metrics else "")))
    if stack.uses_demo_model:
        rows.append(("model", stack.model_base_url, "the offline demo model, not an LLM: set LLM_BASE_URL for one"))
    else:
        rows.append(("model", stack.model_base_url, "the model the engine calls (LLM_BASE_URL)"))
    if len(stack.engine_addresses) > 1:
        rows[0] = (*rows[0][:2], rows[0][2] + f"; it balances over the {len(stack.engine_addresses)} engines")
    name_width = max(len(name) for name, _, _ in rows)
    address_width = max(len(address) for _, address, _ in rows)
    table = "\n".join(
        f"  {name.ljust(name_width)}  {address.ljust(address_width)}  {what}" for name, address, what in rows
    )
    return f"""
Agent platform: every service answers its health check
{table}

Try it from another terminal:
  curl -N -H 'content-type: application/json' -d '{chat}' {stack.gateway_url}/api/chat
  .venv/bin/agentplatform chat "What is 5 + 10, then multiply by 3?"
  npx buf curl --protocol grpc --http2-prior-knowledge -d '{chat}' \\
    http://{stack.engine_address}/agentplatform.engine.v1.AgentService/StreamChat
  npx buf curl --protocol grpcweb --schema protos -d '{chat}' \\
    {stack.gateway_url}/agentplatform.engine.v1.AgentService/StreamChat
Ctrl-C stops everything (in order; press it again to kill at once).
"""


async def announce_when_ready(stack: Stack, supervisor: Supervisor) -> None:
    """The banner and the "ready" line, once everything answers; nothing if a process is given up first."""
    started = time.monotonic()
    if await wait_ready(stack_checks(stack), is_down=supervisor.is_down, say=supervisor.say):
        print(banner(stack), flush=True)
        supervisor.say(f"{READY} the platform answers at {stack.gateway_url} (up in {time.monotonic() - started:.1f}s)")


async def launch(stack: Stack) -> int:
    supervisor = Supervisor(stack.processes)
    announcer = asyncio.create_task(announce_when_ready(stack, supervisor))
    try:
        return await supervisor.run()
    finally:
        announcer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await announcer


def main() -> None:
    # Before anything is created: the launcher's files and everything its children create (databases, sockets,
    # the workspace) are then private to this user (services/launcher/private_files.py).
    os.umask(PRIVATE_UMASK)
    stack = build_stack(GATEWAY_CONFIG)
    sys.exit(asyncio.run(launch(stack)))


if __name__ == "__main__":
    main()
