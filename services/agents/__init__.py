"""The agents service: saved, versioned agents (agentplatform.agents.v1.AgentRegistryService)."""
