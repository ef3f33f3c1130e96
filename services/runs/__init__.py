"""The runs service: stores agent runs and their ordered steps, and streams new steps to watchers."""
