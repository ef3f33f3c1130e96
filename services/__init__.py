"""The platform's gRPC services: engine, runs, tools and agents, plus their shared library (common), the offline
demo model, the launcher `make run` runs and the schema migration (migrate)."""
