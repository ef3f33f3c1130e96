"""Saved workflows as runs: runner.py walks a workflow's nodes along its edges, the state in CEL, every node's
work recorded as steps tagged with its id, so any engine can resume the run from its steps."""
