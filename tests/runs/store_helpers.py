"""Helpers of the RunStore tests (test_store, test_appends, test_queries): steps as the store takes them."""

from services.runs.records import ModelCallStats, NewStep


def thought(text: str, sequence: int = 0, model_call: ModelCallStats | None = None) -> NewStep:
    return NewStep("agent-thought", {"text": text}, sequence, model_call=model_call)
