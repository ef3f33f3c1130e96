"""The platform's gRPC services: engine, runs and tools, plus their shared library (common)."""
