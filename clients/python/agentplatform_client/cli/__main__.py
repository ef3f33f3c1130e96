"""`python -m agentplatform_client.cli`: the `agentplatform` command."""

from agentplatform_client.cli.app import main

main()
