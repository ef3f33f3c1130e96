"""`python -m services.launcher` (what `make run` runs): the whole platform in the foreground.

Logs of every process are prefixed with its name; Ctrl-C (or SIGTERM) stops them all, and if any one process
dies the others are stopped too (honcho's behaviour), so a broken stack never half-runs.
"""

import os
import shlex
import sys
from pathlib import Path

from honcho.manager import Manager

from services.launcher.stack import Stack, build_stack

GATEWAY_CONFIG = Path("var/envoy.yaml")


def banner(stack: Stack) -> str:
    model = (
        f"offline demo model at {stack.model_base_url} (a deterministic demo, not an LLM: set LLM_BASE_URL to use one)"
        if stack.uses_demo_model
        else stack.model_base_url
    )
    chat = '{"message": "What is 5 + 10, then multiply by 3?"}'
    return f"""
Agent platform
  gateway (grpc-web, for the browser app): {stack.gateway_url}
  engine {stack.engine_address} | runs {stack.runs_address} | tools {stack.tools_address}   (gRPC, reflection on)
  model: {model}

Try it from another terminal:
  npx buf curl --protocol grpc --http2-prior-knowledge -d '{chat}' \\
    http://{stack.engine_address}/agentplatform.engine.v1.AgentService/StreamChat
  npx buf curl --protocol grpcweb --schema protos -d '{chat}' \\
    {stack.gateway_url}/agentplatform.engine.v1.AgentService/StreamChat
Ctrl-C stops everything.
"""


def main() -> None:
    stack = build_stack(GATEWAY_CONFIG)
    print(banner(stack), flush=True)
    manager = Manager()
    for process in stack.processes:
        # exec: the service itself, not a wrapping shell, gets the signal and reports its exit code.
        manager.add_process(process.name, "exec " + shlex.join(process.argv), env={**os.environ, **process.env})
    manager.loop()
    sys.exit(manager.returncode)


if __name__ == "__main__":
    main()
