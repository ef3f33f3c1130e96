"""`python -m services.launcher` (what `make run` runs): the whole platform in the foreground.

Logs of every process are prefixed with its name. A process that crashes is restarted (and given up after
repeated crashes) while the others keep serving; Ctrl-C (or SIGTERM) stops them in order: gateway, engine, model
and tools, runs (services/launcher/supervisor.py).
"""

import asyncio
import os
import sys
from pathlib import Path

from services.launcher.private_files import PRIVATE_UMASK
from services.launcher.stack import Stack, build_stack
from services.launcher.supervisor import Supervisor

GATEWAY_CONFIG = Path("var/envoy.yaml")


def banner(stack: Stack) -> str:
    model = (
        f"offline demo model at {stack.model_base_url} (a deterministic demo, not an LLM: set LLM_BASE_URL to use one)"
        if stack.uses_demo_model
        else stack.model_base_url
    )
    chat = '{"message": "What is 5 + 10, then multiply by 3?"}'
    engines = f"; {len(stack.engine_addresses)} engines, the gateway balances over them" if len(
        stack.engine_addresses
    ) > 1 else ""
    return f"""
Agent platform
  gateway (grpc-web, for the browser app): {stack.gateway_url}
  engine {" ".join(stack.engine_addresses)} | runs {stack.runs_address} | tools {stack.tools_address}
    (gRPC, reflection on{engines})
  model: {model}
  metrics (Prometheus): {" | ".join(f"{name} {url}" for name, url in stack.metrics_urls.items()) or "off"}

Try it from another terminal:
  npx buf curl --protocol grpc --http2-prior-knowledge -d '{chat}' \\
    http://{stack.engine_address}/agentplatform.engine.v1.AgentService/StreamChat
  npx buf curl --protocol grpcweb --schema protos -d '{chat}' \\
    {stack.gateway_url}/agentplatform.engine.v1.AgentService/StreamChat
Ctrl-C stops everything (in order; press it again to kill at once).
"""


def main() -> None:
    # Before anything is created: the launcher's files and everything its children create (databases, sockets,
    # the workspace) are then private to this user (services/launcher/private_files.py).
    os.umask(PRIVATE_UMASK)
    stack = build_stack(GATEWAY_CONFIG)
    print(banner(stack), flush=True)
    sys.exit(asyncio.run(Supervisor(stack.processes).run()))


if __name__ == "__main__":
    main()
