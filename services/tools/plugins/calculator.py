"""calculator: the seed's arithmetic tool (add, subtract, multiply, divide, power on two numbers)."""

import math
from collections.abc import Callable
from typing import Any, ClassVar

from services.common.errors import InvalidArgument
from services.tools.base import BaseTool, ToolOutput

#: Each operation: how it is written in the text, and how it is computed.
_OPERATIONS: dict[str, tuple[str, Callable[[float, float], Any]]] = {
    "add": ("{x} + {y}", lambda x, y: x + y),
    "subtract": ("{x} - {y}", lambda x, y: x - y),
    "multiply": ("{x} * {y}", lambda x, y: x * y),
    "divide": ("{x} / {y}", lambda x, y: x / y),
    "power": ("{x}^{y}", lambda x, y: x**y),
}

#: Floats represent every integer exactly only up to 2**53; past that an integral-looking float is shown as is.
_EXACT_INTEGER_LIMIT = 2**53


def format_number(value: float) -> str:
    """A number as a person writes it: 15 rather than 15.0, 2.5 as 2.5."""
    return str(as_json_number(value))


def as_json_number(value: float) -> int | float:
    """Integral values as int (arguments arrive from protobuf as floats: 5.0 means 5)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_INTEGER_LIMIT:
        return int(value)
    return value


def _too_large(expression: str) -> InvalidArgument:
    return InvalidArgument(f"the result of {expression} is too large to represent; use smaller numbers")


class CalculatorTool(BaseTool):
    """Basic arithmetic on two numbers."""

    name = "calculator"
    display_name = "Calculator"
    description = "Performs basic arithmetic operations"
    icon = "IconCalculator"
    parameters: ClassVar[dict[str, Any]] = {
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
    }

    def execute(self, operation: str, x: float, y: float) -> ToolOutput:
        """Compute `x <operation> y`; the result is the number, the text e.g. "5 + 10 = 15"."""
        if operation not in _OPERATIONS:
            raise InvalidArgument(f"unknown operation {operation!r}; use one of {', '.join(_OPERATIONS)}")
        template, compute = _OPERATIONS[operation]
        x, y = float(x), float(y)
        if not (math.isfinite(x) and math.isfinite(y)):
            raise InvalidArgument("x and y must be finite numbers")
        if operation == "divide" and y == 0:
            raise InvalidArgument("division by zero: y must not be 0")
        expression = template.format(x=format_number(x), y=format_number(y))
        try:
            result = compute(x, y)
        except OverflowError:
            raise _too_large(expression) from None
        except ZeroDivisionError:
            # 0 ** negative
            raise InvalidArgument(f"{expression} is undefined: 0 cannot be raised to a negative power") from None
        if isinstance(result, complex):
            raise InvalidArgument(f"{expression} is not a real number (a negative base needs an integer exponent)")
        if not math.isfinite(result):
            raise _too_large(expression)
        return ToolOutput(as_json_number(result), f"{expression} = {format_number(result)}")
