"""The agents service: saved, versioned agents (agentplatform.agents.v1.AgentRegistryService) and workflows, graphs
whose nodes run those agents (WorkflowRegistryService, in services.agents.workflows), on one server."""
