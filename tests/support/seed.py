"""Facts of the seed design (shared/design/architecture-seed.md) that tests check the code against.

Written out here, not imported from the code, so a test fails if the implementation drifts from the seed.
"""

from typing import Any

from agentplatform.runs.v1 import runs_pb2
from services.common.rpc.protoconv import dict_from_struct, python_from_value

#: The seed's worked example: two calculator calls, 5 + 10 = 15 then 15 * 3 = 45.
SEED_QUESTION = "What is 5 + 10, then multiply by 3?"

#: The calculator's function schema as the CalculatorTool sends it to the model: the seed's, plus (issue 9) the
#: "expression" operation and its property; x and y are no longer required, since an expression takes neither
#: (the tool itself asks for them with the seed's operations). Every seed call still validates as before.
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
                    "enum": ["add", "multiply", "subtract", "divide", "power", "expression"],
                    "description": "The arithmetic operation to perform",
                },
                "x": {"type": "number", "description": "First number"},
                "y": {"type": "number", "description": "Second number"},
                "expression": {
                    "type": "string",
                    "maxLength": 1000,
                    "description": (
                        "For operation 'expression' (instead of x and y): arithmetic such as (2 + 3) * 4 - 2^10 / 8. "
                        "Supports + - * / // % and ^ (or **; \N{MULTIPLICATION SIGN} \N{DIVISION SIGN} "
                        "\N{MINUS SIGN} work too), parentheses, unary minus, sqrt, abs, round, floor, ceil, min, max, "
                        "log, ln, log10, log2, exp, sin, cos, tan, and pi and e. Results are exact (0.1 + 0.2 = 0.3, "
                        "1/3 stays one third); results of sqrt of non-squares, log, exp, sin, cos, tan, pi and e are "
                        "marked approximate. A result that no JSON number holds exactly comes back as a string."
                    ),
                },
            },
            "required": ["operation"],
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
