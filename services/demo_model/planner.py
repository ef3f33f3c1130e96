"""The demo model's deterministic brain (first cut: a plain answer only)."""

from typing import Any

from services.demo_model.openai_wire import ModelReply


def plan_reply(body: dict[str, Any]) -> ModelReply:
    """Answer a chat-completions request."""
    return ModelReply(content="I am the offline demo model.")
