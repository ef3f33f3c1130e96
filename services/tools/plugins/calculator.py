"""calculator: exact arithmetic for the model, on two numbers (the seed's operations) or on a whole expression.

Exactness. Numbers are taken as the decimals they are written as (the argument 0.1 is one tenth, not the double
nearest to it) and computed as exact fractions, so 0.1 + 0.2 = 0.3 and 2^53 + 1 = 9007199254740993. Only what
cannot be exact is approximate: a root that is not rational (sqrt(2), 2^0.5), log, exp, sin, cos, tan, pi and e,
and everything computed from them. Such results are doubles and the text says "(approximate)".

The JSON result is a number when the number, as JSON writes it, is exactly the value: integers up to 2^53 in
magnitude, and decimals whose shortest double form is that same decimal (0.3, 2.5, -5.5). Anything else is a
string holding the exact value: "9007199254740993", "0.12345678901234567", "1/3". The text always shows the exact
value too: "1 / 3 = 0.33333333333333333333… (exactly 1/3)". Approximate results are numbers.

Bounds keep every input cheap: the expression's length and nesting depth, the digits of any number met during the
calculation, and powers, whose size is estimated and refused before they are computed (10^10^10 is refused at once).
Every refusal is an InvalidArgument that says what to change. The arithmetic, its bounds and the expressions are in
services.tools.arithmetic; this file is the tool: its arguments, and how results are presented.
"""

import math
from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal, localcontext
from fractions import Fraction
from typing import Any, ClassVar

from services.common.errors import InvalidArgument
from services.tools.arithmetic.expressions import MAX_EXPRESSION_LENGTH, UNICODE_SIGNS, evaluate_expression
from services.tools.arithmetic.functions import CONSTANTS, FUNCTIONS
from services.tools.arithmetic.operations import (
    MAX_BITS,
    MAX_DIGITS,
    Number,
    Problem,
    add,
    checked_fraction,
    divide,
    multiply,
    power,
    subtract,
)
from services.tools.base import BaseTool, ToolHints, ToolOutput

#: Significant digits shown for a value that has no short exact decimal (1/3 = 0.33333333333333333333…).
SHOWN_DIGITS = 20
#: Integers JSON carries exactly through protobuf's double.
_EXACT_DOUBLE_INTEGER = 2**53


# --- presenting results ---------------------------------------------------------------------------------------------


def _finite_decimal(value: Fraction) -> str | None:
    """`value` as an exact decimal ("0.3", "-5.5", "1E-500") when it has one of at most MAX_DIGITS digits."""
    denominator, twos, fives = value.denominator, 0, 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    if denominator != 1:
        return None  # 1/3: no finite decimal
    places = max(twos, fives)
    scaled = value.numerator * 10**places // value.denominator  # exact: the denominator divides 10**places
    if scaled.bit_length() > MAX_BITS:
        return None
    return str(Decimal(f"{scaled}E-{places}"))


def _approximate_decimal(value: Fraction) -> str:
    """The first SHOWN_DIGITS significant digits of `value`, cut (not rounded), for a value with no short decimal."""
    with localcontext() as context:
        context.prec, context.rounding = SHOWN_DIGITS, ROUND_DOWN
        context.Emax, context.Emin = 10 * MAX_DIGITS, -10 * MAX_DIGITS
        return str(Decimal(value.numerator) / Decimal(value.denominator))


def present(value: Number) -> tuple[int | float | str, str]:
    """The JSON result and the text for `value` (the rule is in the module docstring)."""
    if isinstance(value, float):
        return value, f"{value!r} (approximate)"
    if value.denominator == 1:
        integer = value.numerator
        return (integer if abs(integer) <= _EXACT_DOUBLE_INTEGER else str(integer)), str(integer)
    decimal = _finite_decimal(value)
    if decimal is None:
        exact = f"{value.numerator}/{value.denominator}"
        return exact, f"{_approximate_decimal(value)}… (exactly {exact})"
    double = float(decimal)
    if math.isfinite(double) and Fraction(repr(double)) == value:
        return double, decimal
    return decimal, decimal


def _argument(value: Any, name: str) -> Fraction:
    """A number argument as the decimal it is written as: 0.1 from JSON (a double) is one tenth."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{name} must be a number")
    if isinstance(value, int):
        number = Fraction(value)
    elif not math.isfinite(value):
        raise InvalidArgument("x and y must be finite numbers")
    else:
        number = Fraction(Decimal(repr(value)))
    try:
        return checked_fraction(number)
    except Problem:
        raise InvalidArgument(f"{name} is too large: at most {MAX_DIGITS} digits") from None


def _shown(value: Fraction) -> str:
    """An argument as the text shows it: 5 rather than 5.0, 0.1 rather than 0.1000000000000000055…"""
    return present(value)[1].split("…")[0]


#: The seed's operations: how each is written in the text, and how it is computed.
_OPERATIONS: dict[str, tuple[str, Callable[[Number, Number], Number]]] = {
    "add": ("{x} + {y}", add),
    "subtract": ("{x} - {y}", subtract),
    "multiply": ("{x} * {y}", multiply),
    "divide": ("{x} / {y}", divide),
    "power": ("{x}^{y}", power),
}


class CalculatorTool(BaseTool):
    """Exact arithmetic: the seed's operations on x and y, or a whole expression (rules in the module docstring)."""

    name = "calculator"
    display_name = "Calculator"
    # The seed's description, kept: the tools service's and catalog's tests check it as the default description.
    description = "Performs basic arithmetic operations"
    icon = "IconCalculator"
    hints = ToolHints(read_only=True, destructive=False, idempotent=True, open_world=False)
    parameters: ClassVar[dict[str, Any]] = {
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
                "maxLength": MAX_EXPRESSION_LENGTH,
                "description": (
                    "For operation 'expression' (instead of x and y): arithmetic such as (2 + 3) * 4 - 2^10 / 8. "
                    f"Supports + - * / // % and ^ (or **; {UNICODE_SIGNS} work too), parentheses, unary minus, "
                    f"{', '.join(FUNCTIONS)}, and {' and '.join(CONSTANTS)}. Results are exact (0.1 + 0.2 = 0.3, "
                    "1/3 stays one third); results of sqrt of non-squares, log, exp, sin, cos, tan, pi and e are "
                    "marked approximate. A result that no JSON number holds exactly comes back as a string."
                ),
            },
        },
        # x and y are required for the seed's operations only, which execute checks (expression takes neither).
        "required": ["operation"],
    }

    def execute(
        self, operation: str, x: float | None = None, y: float | None = None, expression: str | None = None
    ) -> ToolOutput:
        """Compute `x <operation> y` ("5 + 10 = 15") or an expression ("(2 + 3) * 4 = 20")."""
        if operation == "expression":
            if expression is None:
                raise InvalidArgument("operation 'expression' needs the argument expression, e.g. '(2 + 3) * 4'")
            if x is not None or y is not None:
                raise InvalidArgument("operation 'expression' takes only expression; put every number in it")
            if not isinstance(expression, str):
                raise InvalidArgument("expression must be a string")
            result, text = present(evaluate_expression(expression))
            return ToolOutput(result, f"{expression.strip()} = {text}")
        if operation not in _OPERATIONS:
            raise InvalidArgument(f"unknown operation {operation!r}; use one of {', '.join(_OPERATIONS)}, expression")
        if x is None or y is None or expression is not None:
            raise InvalidArgument(f"operation {operation!r} takes the numbers x and y (and no expression)")
        template, compute = _OPERATIONS[operation]
        exact_x, exact_y = _argument(x, "x"), _argument(y, "y")
        if operation == "divide" and exact_y == 0:
            raise InvalidArgument("division by zero: y must not be 0")
        base = _shown(exact_x)
        written = template.format(x=f"({base})" if operation == "power" and exact_x < 0 else base, y=_shown(exact_y))
        try:
            value = compute(exact_x, exact_y)
        except Problem as problem:
            # Long operands make an unreadable message; the operation's name says enough then.
            raise InvalidArgument(f"{written if len(written) <= 80 else operation}: {problem}") from None
        result, text = present(value)
        return ToolOutput(result, f"{written} = {text}")
