"""The agent loop: agent_loop.py (model turns and tool calls over one run), steps.py (where a step is numbered
and appended: StepRecorder; how a run ended: RunOutcome), approvals.py (which tool calls wait for a person),
model_client.py (where the model is called: the openai SDK, streamed), thread_context.py (a thread's earlier turns
as context, within a budget), run_progress.py (a paused run read back from its steps). No protos here."""
