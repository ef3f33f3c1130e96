"""The engine: the agent's LLM tool-calling loop, recording through runs and executing through tools."""
