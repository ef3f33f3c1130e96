"""calculator: exact arithmetic for the model, on two numbers (the seed's operations) or on a whole expression.

Exactness. Numbers are taken as the decimals they are written as (the argument 0.1 is one tenth, not the double
nearest to it) and computed as exact fractions, so 0.1 + 0.2 = 0.3 and 2^53 + 1 = 9007199254740993. Only what
cannot be exact is approximate: a root that is not rational (sqrt(2), 2^0.5), log, exp, sin, cos, tan, pi and e,
and everything computed from them. Such results are doubles and the text says "(approximate)".

The JSON result is a number when the number, as JSON writes it, is exactly the value: integers up to 2^53 in
magnitude, and decimals whose shortest double form is that same decimal (0.3, 2.5, -5.5). Anything else is a
string holding the exact value: "9007199254740993", "0.12345678901234567", "1/3". The text always shows the exact
value too: "1 / 3 = 0.33333333333333333333… (exactly 1/3)". Approximate results are numbers.

Bounds. The module constants below keep every input cheap: the expression's length and nesting depth, the digits
of any number met during the calculation, and powers, whose size is estimated and refused before they are computed
(10^10^10 is refused at once). Every refusal is an InvalidArgument that says what to change.
"""

import ast
import math
import warnings
from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal, InvalidOperation, localcontext
from fractions import Fraction
from typing import Any, ClassVar

from services.common.errors import InvalidArgument
from services.tools.base import BaseTool, ToolHints, ToolOutput

# Python's parser warns (SyntaxWarning, on stderr) about literals such as "1e" or "0x" before it refuses or
# accepts them; for an expression a model wrote, the refusal or the answer is all that matters. Silenced around each
# parse (see `_parse`): a filter set once at import does not survive code that restores the warning filters after
# the import (pytest does, per test). warnings.catch_warnings is not thread-safe, and need not be: a synchronous
# tool runs alone in its worker process's main thread (services.tools.worker).
_LITERAL_WARNINGS = r"invalid (decimal|hexadecimal|octal|binary) literal"

#: Longest expression accepted, in characters: enough for any calculation a person writes, and it bounds the parse.
MAX_EXPRESSION_LENGTH = 1000
#: Deepest nesting of the parsed expression (parentheses, unary signs, calls, right operands). The evaluator
#: recurses once per level, so this keeps it far from Python's recursion limit. A left-to-right chain such as
#: 1 + 2 + ... + 300 is walked in a loop and counts as one level.
MAX_DEPTH = 100
#: Most decimal digits of any number met in a calculation (numerator and denominator each), results and
#: intermediates alike. It bounds memory and the cost of each operation; Python's own limit on converting an int
#: to text is 4300 digits, well above what formatting a result of this size needs.
MAX_DIGITS = 1000
#: MAX_DIGITS in bits, the unit the checks use (int.bit_length is free; counting digits is not).
MAX_BITS = math.ceil(MAX_DIGITS * math.log2(10))
#: Significant digits shown for a value that has no short exact decimal (1/3 = 0.33333333333333333333…).
SHOWN_DIGITS = 20
#: Integers JSON carries exactly through protobuf's double.
_EXACT_DOUBLE_INTEGER = 2**53

#: A value during a calculation: an exact Fraction, or a float once something approximate took part.
Number = Fraction | float


class _Problem(Exception):
    """An arithmetic problem (division by zero, too large, ...) found while computing; the message says which."""


# --- exact and approximate arithmetic -------------------------------------------------------------------------------


def _too_large() -> _Problem:
    return _Problem(f"the number is too large: it would need more than {MAX_DIGITS} digits")


def _checked(value: Number) -> Number:
    """`value` if it is within the bounds: a finite float, or a fraction of at most MAX_DIGITS digits each side."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _too_large()
        return value + 0.0  # -0.0 becomes 0.0
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_BITS:
        raise _too_large()
    return value


def _float(value: Number) -> float:
    """`value` as a double, for the approximate functions; a fraction beyond the double range is too large."""
    try:
        return float(value)
    except OverflowError:
        raise _too_large() from None


def _approximately(compute: Callable[[], float]) -> float:
    """Run an approximate (float) computation, turning Python's overflow into the calculator's message."""
    try:
        return _checked(compute())  # type: ignore[return-value]
    except OverflowError:
        raise _too_large() from None
    except ZeroDivisionError:
        raise _Problem("division by zero") from None


def add(a: Number, b: Number) -> Number:
    """a + b."""
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return _checked(a + b)
    return _approximately(lambda: _float(a) + _float(b))


def subtract(a: Number, b: Number) -> Number:
    """a - b."""
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return _checked(a - b)
    return _approximately(lambda: _float(a) - _float(b))


def multiply(a: Number, b: Number) -> Number:
    """a times b. Both factors are bounded, so the product (twice the bound at most) is cheap, then checked."""
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return _checked(a * b)
    return _approximately(lambda: _float(a) * _float(b))


def divide(a: Number, b: Number) -> Number:
    """a ÷ b, exact: 1 / 3 is one third."""
    if b == 0:
        raise _Problem("division by zero")
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return _checked(a / b)
    return _approximately(lambda: _float(a) / _float(b))


def floor_divide(a: Number, b: Number) -> Number:
    """a // b: the largest integer not above a ÷ b."""
    if b == 0:
        raise _Problem("division by zero")
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return _checked(Fraction(a // b))
    return _approximately(lambda: float(_float(a) // _float(b)))


def modulo(a: Number, b: Number) -> Number:
    """a % b, with the sign of b (as Python does)."""
    if b == 0:
        raise _Problem("division by zero")
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return _checked(a % b)
    return _approximately(lambda: _float(a) % _float(b))


def _integer_root(n: int, k: int) -> int | None:
    """The integer r with r**k == n (n >= 0, k >= 2), or None when there is none."""
    if n < 2:
        return n
    if k >= n.bit_length():  # 2**k > n, so only 0 and 1 have an integer k-th root
        return None
    x = 1 << -(-n.bit_length() // k)  # above the root; Newton's steps then decrease to it
    while True:
        y = ((k - 1) * x + n // x ** (k - 1)) // k
        if y >= x:
            return x if x**k == n else None
        x = y


def _integer_power(base: Fraction, exponent: int) -> Fraction:
    """base ** exponent exactly, refused before computing when the result could not fit the bounds."""
    if base == 0:
        if exponent < 0:
            raise _Problem("0 cannot be raised to a negative power (division by zero)")
        return Fraction(1 if exponent == 0 else 0)
    if base in (1, -1):
        return Fraction(1 if base == 1 or exponent % 2 == 0 else -1)
    # A lower bound on the result's size in bits: |exponent| times floor(log2) of the larger side of the fraction
    # (at least 1, since |base| is neither 0 nor 1). Past the bound, refuse without computing: 10^10^10 is instant.
    log2_floor = max(base.numerator.bit_length(), base.denominator.bit_length()) - 1
    if abs(exponent) * max(log2_floor, 1) > MAX_BITS:
        raise _too_large()
    return _checked(base**exponent)


def power(a: Number, b: Number) -> Number:
    """a ^ b: exact for integer exponents and for rational roots that are rational (4^0.5, (-8)^(1/3)); else float."""
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        if b.denominator == 1:
            return _integer_power(a, b.numerator)
        p, q = b.numerator, b.denominator
        if a < 0 and q % 2 == 0:
            raise _Problem("not a real number: a negative base needs an integer exponent or an odd root")
        if a == 0:
            if p < 0:
                raise _Problem("0 cannot be raised to a negative power (division by zero)")
            return Fraction(0)
        numerator_root = _integer_root(abs(a.numerator), q)
        denominator_root = _integer_root(a.denominator, q)
        if numerator_root is not None and denominator_root is not None:
            root = Fraction(numerator_root, denominator_root) * (1 if a > 0 else -1)
            return _integer_power(root, p)
        sign = -1.0 if a < 0 and p % 2 == 1 else 1.0
        magnitude = abs(a)
        try:
            as_double = float(magnitude)
        except OverflowError:
            as_double = math.inf
        if 0 < as_double < math.inf:
            return _approximately(lambda: sign * as_double ** float(b))  # correctly rounded for sqrt(2)
        # A base beyond the double range, via logarithms: (10^500)^0.5 is within it.
        log_magnitude = math.log(magnitude.numerator) - math.log(magnitude.denominator)
        return _approximately(lambda: sign * math.exp(float(b) * log_magnitude))
    x, y = _float(a), _float(b)
    if x == 0 and y < 0:
        raise _Problem("0 cannot be raised to a negative power (division by zero)")
    if x < 0 and not y.is_integer():
        raise _Problem("not a real number: a negative base needs an integer exponent or an odd root")
    return _approximately(lambda: x**y)


# --- functions and names in expressions -----------------------------------------------------------------------------


def _round_half_away(value: Fraction) -> Fraction:
    """The nearest integer, halves away from zero (2.5 -> 3, -2.5 -> -3), as people round."""
    magnitude = math.floor(abs(value) + Fraction(1, 2))
    return Fraction(magnitude if value >= 0 else -magnitude)


def _round(value: Number, digits: Number = Fraction(0)) -> Number:
    """round(x) or round(x, digits): half away from zero; digits may be negative (round(1234, -2) = 1200)."""
    if not (isinstance(digits, Fraction) and digits.denominator == 1):
        raise _Problem("round's second argument (the number of decimals) must be an exact integer")
    if abs(digits) > MAX_DIGITS:
        raise _Problem(f"round's number of decimals must be between -{MAX_DIGITS} and {MAX_DIGITS}")
    scale = Fraction(10) ** int(digits)
    if isinstance(value, Fraction):
        return _checked(_round_half_away(value * scale) / scale)
    exact = Fraction(Decimal(repr(value)))
    return _approximately(lambda: float(_round_half_away(exact * scale) / scale))


def _sqrt(value: Number) -> Number:
    if value < 0:
        raise _Problem("not a real number: sqrt of a negative number")
    return power(value, Fraction(1, 2))


def _floor(value: Number) -> Number:
    return Fraction(math.floor(value)) if isinstance(value, Fraction) else float(math.floor(value))


def _ceil(value: Number) -> Number:
    return Fraction(math.ceil(value)) if isinstance(value, Fraction) else float(math.ceil(value))


def _natural_log(value: Number) -> float:
    """ln(value), also for fractions beyond the double range (ints of any size have a logarithm in Python)."""
    if value <= 0:
        raise _Problem("log is defined only for positive numbers")
    if isinstance(value, float):
        return math.log(value)
    return math.log(value.numerator) - math.log(value.denominator)


def _log(value: Number, base: Number | None = None) -> float:
    if base is None:
        return _natural_log(value)
    if base <= 0 or base == 1:
        raise _Problem("the base of log must be positive and not 1")
    return _approximately(lambda: _natural_log(value) / _natural_log(base))


def _log_with(log: Callable[[float], float]) -> Callable[[Number], float]:
    """log10 or log2 of a value, exact-integer parts taken separately (math.log10(1000) is exactly 3.0)."""

    def compute(value: Number) -> float:
        if value <= 0:
            raise _Problem("log is defined only for positive numbers")
        if isinstance(value, float):
            return log(value)
        return log(value.numerator) - log(value.denominator)

    return compute


def _approximate(function: Callable[[float], float]) -> Callable[[Number], float]:
    """A math function on one double; its result is approximate."""
    return lambda value: _approximately(lambda: function(_float(value)))


def _min(*values: Number) -> Number:
    return min(values)


def _max(*values: Number) -> Number:
    return max(values)


#: Functions an expression may call: name -> (fewest arguments, most arguments or None for any, function).
FUNCTIONS: dict[str, tuple[int, int | None, Callable[..., Number]]] = {
    "sqrt": (1, 1, _sqrt),
    "abs": (1, 1, abs),
    "round": (1, 2, _round),
    "floor": (1, 1, _floor),
    "ceil": (1, 1, _ceil),
    "min": (1, None, _min),
    "max": (1, None, _max),
    "log": (1, 2, _log),
    "ln": (1, 1, _natural_log),
    "log10": (1, 1, _log_with(math.log10)),
    "log2": (1, 1, _log_with(math.log2)),
    "exp": (1, 1, _approximate(math.exp)),
    "sin": (1, 1, _approximate(math.sin)),
    "cos": (1, 1, _approximate(math.cos)),
    "tan": (1, 1, _approximate(math.tan)),
}
#: Names an expression may use; both are irrational, so approximate.
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}

_BINARY_OPERATORS: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: add,
    ast.Sub: subtract,
    ast.Mult: multiply,
    ast.Div: divide,
    ast.FloorDiv: floor_divide,
    ast.Mod: modulo,
    ast.Pow: power,
}
#: How each operator is written in the (normalised) source, to point at it in an error.
_OPERATOR_TEXT = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
                  ast.Pow: "**"}  # fmt: skip

# --- parsing --------------------------------------------------------------------------------------------------------

#: Signs people and models write, mapped to Python's; each maps one character to one (or "^" to two).
_SIGNS = {
    "\N{MULTIPLICATION SIGN}": "*", "\N{MIDDLE DOT}": "*", "\N{DOT OPERATOR}": "*", "\N{BULLET OPERATOR}": "*",
    "\N{ASTERISK OPERATOR}": "*",
    "\N{DIVISION SIGN}": "/", "\N{DIVISION SLASH}": "/",
    "\N{MINUS SIGN}": "-", "\N{EN DASH}": "-", "\N{FIGURE DASH}": "-", "\N{FULLWIDTH PLUS SIGN}": "+",
    "^": "**",
    "\t": " ", "\n": " ", "\r": " ", "\u00a0": " ",
}  # fmt: skip
#: The Unicode signs named in messages (written as escapes: linters rightly flag look-alike characters).
_UNICODE_SIGNS = "\N{MULTIPLICATION SIGN} \N{DIVISION SIGN} \N{MINUS SIGN}"
#: Every other character allowed: ASCII digits, letters (names), the operators, parentheses and commas.
_ALLOWED = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_. +-*/%(),")


class _Source:
    """An expression normalised for Python's parser (ASCII signs, "^" as "**"), remembering where each
    character came from so errors point into the text the caller wrote."""

    def __init__(self, expression: str) -> None:
        chars: list[str] = []
        origin: list[int] = []
        for index, char in enumerate(expression):
            replacement = _SIGNS.get(char, char)
            if replacement == char and char not in _ALLOWED:
                raise InvalidArgument(
                    f"unexpected character {char!r} at position {index + 1}; "
                    f"use numbers, + - * / ^ (or {_UNICODE_SIGNS}), parentheses, and functions such as sqrt(...)"
                )
            chars.extend(replacement)
            origin.extend([index] * len(replacement))
        # Python's parser refuses leading spaces (an "indent"); strip them and keep the map in step.
        start = 0
        while start < len(chars) and chars[start] == " ":
            start += 1
        self.text = "".join(chars[start:])
        self._origin = origin[start:]
        self._length = len(expression)

    def position(self, offset: int) -> int:
        """The 1-based position in the caller's expression of `offset` (0-based) in the normalised text."""
        if offset < len(self._origin):
            return self._origin[offset] + 1
        return self._length + 1  # just past the end: "unexpected end"

    def operator_position(self, node: ast.BinOp) -> int:
        """Where the operator of `node` is written: the first sign between its two operands."""
        gap_start = node.left.end_col_offset or node.col_offset
        gap = self.text[gap_start : node.right.col_offset]
        index = gap.find(_OPERATOR_TEXT.get(type(node.op), "?"))
        return self.position(gap_start + max(index, 0))


def _parse(expression: str) -> tuple[ast.expr, _Source]:
    """The expression's syntax tree, checked against the length and depth bounds."""
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise InvalidArgument(f"the expression is too long: at most {MAX_EXPRESSION_LENGTH} characters")
    source = _Source(expression)
    if not source.text.strip():
        raise InvalidArgument("the expression is empty; write a calculation such as (2 + 3) * 4")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_LITERAL_WARNINGS, category=SyntaxWarning)
            tree = ast.parse(source.text, mode="eval")
    except SyntaxError as exc:
        if not exc.offset:  # Python reports an expression that stops short ("1 +") at offset 0
            message = f"syntax error at the end ({exc.msg}); is a part of the expression missing?"
            raise InvalidArgument(message) from None
        raise InvalidArgument(f"syntax error at position {source.position(exc.offset - 1)}: {exc.msg}") from None
    except (MemoryError, RecursionError):  # the parser's own stack, on pathological nesting
        raise InvalidArgument(f"the expression is nested too deeply: at most {MAX_DEPTH} levels") from None
    # Measured without recursion, before the evaluator (which recurses) sees the tree.
    pending: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise InvalidArgument(f"the expression is nested too deeply: at most {MAX_DEPTH} levels")
        for child in ast.iter_child_nodes(node):
            same_chain = isinstance(node, ast.BinOp) and child is node.left and _continues_chain(node)
            pending.append((child, depth if same_chain else depth + 1))
    return tree.body, source


def _continues_chain(node: ast.BinOp) -> bool:
    """True when `node` and its left operand are one left-to-right chain (1 + 2 - 3 * 4 …, not powers, which
    group from the right), evaluated in a loop rather than by recursion."""
    left = node.left
    return (
        not isinstance(node.op, ast.Pow)
        and isinstance(left, ast.BinOp)
        and type(left.op) in _BINARY_OPERATORS
        and not isinstance(left.op, ast.Pow)
    )


def _literal(node: ast.Constant, source: _Source) -> Fraction:
    """A number literal as the exact decimal it is written as (Python's float for "0.1" is not one tenth)."""
    value = node.value
    where = f"at position {source.position(node.col_offset)}"
    if isinstance(value, bool) or not isinstance(value, int | float | complex):
        raise InvalidArgument(f"only numbers are allowed {where}, not {value!r}")
    if isinstance(value, complex):
        raise InvalidArgument(f"imaginary numbers are not supported ({where})")
    if isinstance(value, int):
        if value.bit_length() > MAX_BITS:
            raise InvalidArgument(f"the number {where} is too large: at most {MAX_DIGITS} digits")
        return Fraction(value)
    text = ast.get_source_segment(source.text, node) or repr(value)
    try:
        decimal = Decimal(text)
    except InvalidOperation:
        raise InvalidArgument(f"cannot read the number {text!r} {where}") from None
    # Checked before the conversion: Fraction(Decimal("1e999999999")) would build a billion-digit integer.
    if abs(decimal.adjusted()) > MAX_DIGITS or len(decimal.as_tuple().digits) > MAX_DIGITS:
        raise InvalidArgument(f"the number {text} {where} is too large: it would need more than {MAX_DIGITS} digits")
    return Fraction(decimal)


class _Evaluator:
    """Evaluates a parsed expression over the whitelisted node types only; anything else is refused."""

    def __init__(self, source: _Source) -> None:
        self.source = source

    def where(self, node: ast.expr) -> str:
        return f"at position {self.source.position(node.col_offset)}"

    def evaluate(self, node: ast.expr) -> Number:
        if isinstance(node, ast.Constant):
            return _literal(node, self.source)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            operand = self.evaluate(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPERATORS:
            return self.binary(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            if node.id in FUNCTIONS:
                raise InvalidArgument(f"{node.id} is a function {self.where(node)}: call it as {node.id}(...)")
            raise InvalidArgument(f"unknown name {node.id!r} {self.where(node)}; {_KNOWN_NAMES}")
        raise InvalidArgument(f"unsupported syntax {self.where(node)}: {_describe(node)}; only arithmetic is allowed")

    def binary(self, node: ast.BinOp) -> Number:
        """A binary operation, or a whole left-to-right chain of them in a loop (see _continues_chain)."""
        chain = [node]
        while _continues_chain(chain[-1]):
            chain.append(chain[-1].left)  # type: ignore[arg-type]
        value = self.evaluate(chain[-1].left)
        for link in reversed(chain):
            right = self.evaluate(link.right)
            try:
                value = _BINARY_OPERATORS[type(link.op)](value, right)
            except _Problem as problem:
                raise InvalidArgument(f"{problem} (at position {self.source.operator_position(link)})") from None
        return value

    def call(self, node: ast.Call) -> Number:
        if not isinstance(node.func, ast.Name):
            raise InvalidArgument(f"only named functions can be called ({self.where(node)}); {_KNOWN_NAMES}")
        name = node.func.id
        if name not in FUNCTIONS:
            raise InvalidArgument(f"unknown function {name!r} {self.where(node)}; {_KNOWN_NAMES}")
        if node.keywords or any(isinstance(argument, ast.Starred) for argument in node.args):
            raise InvalidArgument(f"{name} takes plain arguments, as in {name}(2) ({self.where(node)})")
        fewest, most, function = FUNCTIONS[name]
        if len(node.args) < fewest or (most is not None and len(node.args) > most):
            wanted = f"{fewest}" if fewest == most else f"{fewest} or more" if most is None else f"{fewest} to {most}"
            raise InvalidArgument(f"{name} takes {wanted} argument(s), got {len(node.args)} ({self.where(node)})")
        arguments = [self.evaluate(argument) for argument in node.args]
        try:
            return _checked(function(*arguments))
        except _Problem as problem:
            raise InvalidArgument(f"{problem} (in {name} {self.where(node)})") from None


_KNOWN_NAMES = f"known functions: {', '.join(FUNCTIONS)}; constants: {', '.join(CONSTANTS)}"


def _describe(node: ast.AST) -> str:
    """A short name for a construct the calculator does not evaluate."""
    names = {ast.Tuple: "a list of values (use one expression)", ast.Compare: "a comparison",
             ast.BoolOp: "and/or", ast.IfExp: "if/else", ast.Attribute: "an attribute (.)"}  # fmt: skip
    return names.get(type(node), type(node).__name__)


def evaluate_expression(expression: str) -> Number:
    """The value of `expression`: a Fraction when exact, a float when approximate. Raises InvalidArgument."""
    node, source = _parse(expression)
    return _Evaluator(source).evaluate(node)


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
        return _checked(number)  # type: ignore[return-value]
    except _Problem:
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
                    f"Supports + - * / // % and ^ (or **; {_UNICODE_SIGNS} work too), parentheses, unary minus, "
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
        except _Problem as problem:
            # Long operands make an unreadable message; the operation's name says enough then.
            raise InvalidArgument(f"{written if len(written) <= 80 else operation}: {problem}") from None
        result, text = present(value)
        return ToolOutput(result, f"{written} = {text}")
