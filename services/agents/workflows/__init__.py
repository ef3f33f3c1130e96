"""Workflows: saved, versioned graphs of nodes and edges (agentplatform.agents.v1.WorkflowRegistryService), kept
by the agents service next to the agents their nodes run.

records.py   the domain types (no gRPC, no ORM)
checks.py    what a workflow may be: fields, graph shape, CEL expressions (services.common.cel)
document.py  the stored form of a workflow's graph: a JSON document of this module's own shape, versioned
store.py     workflows and their immutable revisions in the agents database (SQLite, PostgreSQL)
registry.py  the domain layer: checks, the agents and tools nodes name, pinning agent revisions, the store
convert.py   protos <-> records, at the edge
servicer.py  the thin gRPC face
"""
