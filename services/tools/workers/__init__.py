"""Where a tool call is bounded: tool code runs in killable worker processes, never in the tools service's own.

The service's side: pool.py (the pool: its queue, slots, per-tool limit and health) and lifecycle.py (one worker's
start from the forkserver, and its end). The worker's side: worker.py (the process that runs the calls, under its
limits) and guardian.py (its guardian, which ends every process a call started). Between them, protocol.py (the
messages and signals).
"""
