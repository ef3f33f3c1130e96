"""Facts of the seed design (shared/design/architecture-seed.md) that tests check the code against.

Written out here, not imported from the code, so a test fails if the implementation drifts from the seed.
"""

from typing import Any

from agentplatform.runs.v1 import runs_pb2
from services.common.protoconv import dict_from_struct, python_from_value

#: The seed's worked example: two calculator calls, 5 + 10 = 15 then 15 * 3 = 45.
SEED_QUESTION = "What is 5 + 10, then multiply by 3?"

#: The calculator's function schema exactly as the seed's CalculatorTool sends it to the model.
SEED_CALCULATOR_SCHEMA = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Performs basic arithmetic operations",
        "parameters": {
            "type": "object",
            "properties": {
                "operation": {
                    "type": "string",
                    "enum": ["add", "multiply", "subtract", "divide", "power"],
                    "description": "The arithmetic operation to perform",
                },
                "x": {"type": "number", "description": "First number"},
                "y": {"type": "number", "description": "Second number"},
            },
            "required": ["operation", "x", "y"],
        },
    },
}


#: The seed example's timeline as (type, essentials), agent thoughts left out (their wording is the model's).
SEED_TIMELINE = [
    ("user_request",),
    ("tool_call", "calculator", "add", 5, 10),
    ("tool_result", "calculator", 15),
    ("tool_call", "calculator", "multiply", 15, 3),
    ("tool_result", "calculator", 45),
    ("agent_response",),
]


def describe(step: runs_pb2.Step) -> tuple[Any, ...]:
    """A step as (type, essentials), for comparing a run's timeline with the seed's."""
    kind = step.WhichOneof("content")
    if kind == "tool_call":
        params = dict_from_struct(step.tool_call.params)
        return kind, step.tool_call.tool_name, params["operation"], params["x"], params["y"]
    if kind == "tool_result":
        return kind, step.tool_result.tool_name, python_from_value(step.tool_result.result)
    return (kind,)


def timeline(steps: list[runs_pb2.Step]) -> list[tuple[Any, ...]]:
    """The steps described, without agent thoughts: compare with SEED_TIMELINE."""
    return [describe(step) for step in steps if step.WhichOneof("content") != "agent_thought"]
