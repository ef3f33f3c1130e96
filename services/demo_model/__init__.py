"""The offline demo model: a small deterministic OpenAI-compatible chat-completions server."""
