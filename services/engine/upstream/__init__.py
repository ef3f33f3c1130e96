"""The engine's clients of the other services, and the only place in the engine, with the servicer, that names
protos: runs_client.py (the run store), executor_link.py (the live link to it: writes and deltas up, cancels down),
tools_client.py (tool listings and calls, where a tool call's deadline is set), agents_client.py (saved agents and
workflows), run_messages.py (the one codec between the journal types and the runs API), step_size.py (a step's
size as the store measures it), calls.py (unary calls, their errors, backoff)."""
