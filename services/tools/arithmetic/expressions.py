"""Calculator expressions: parsed with Python's own parser after checking every character, and evaluated over a
whitelist of node types (numbers, + - * / // % ^, unary signs, calls of the known functions, the constants).

Bounds: the expression's length (MAX_EXPRESSION_LENGTH) and nesting depth (MAX_DEPTH), measured before the
evaluator, which recurses, sees the tree; the digits of every number are bounded by services.tools.arithmetic's
operations. Every refusal is an InvalidArgument that says what to change and where ("at position 7", in the text
the caller wrote). Used by the calculator tool (operation "expression").
"""

import ast
import warnings
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from services.common.errors import InvalidArgument
from services.tools.arithmetic.functions import CONSTANTS, FUNCTIONS
from services.tools.arithmetic.operations import (
    MAX_BITS,
    MAX_DIGITS,
    Number,
    Problem,
    add,
    checked,
    divide,
    floor_divide,
    modulo,
    multiply,
    power,
    subtract,
)

# Python's parser warns (SyntaxWarning, on stderr) about literals such as "1e" or "0x" before it refuses or
# accepts them; for an expression a model wrote, the refusal or the answer is all that matters. Silenced around each
# parse (see `_parse`): a filter set once at import does not survive code that restores the warning filters after
# the import (pytest does, per test). warnings.catch_warnings is not thread-safe, and need not be: a synchronous
# tool runs alone in its worker process's main thread (services.tools.workers.worker).
_LITERAL_WARNINGS = r"invalid (decimal|hexadecimal|octal|binary) literal"

#: Longest expression accepted, in characters: enough for any calculation a person writes, and it bounds the parse.
MAX_EXPRESSION_LENGTH = 1000
#: Deepest nesting of the parsed expression (parentheses, unary signs, calls, right operands). The evaluator
#: recurses once per level, so this keeps it far from Python's recursion limit. A left-to-right chain such as
#: 1 + 2 + ... + 300 is walked in a loop and counts as one level.
MAX_DEPTH = 100

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
UNICODE_SIGNS = "\N{MULTIPLICATION SIGN} \N{DIVISION SIGN} \N{MINUS SIGN}"
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
                    f"use numbers, + - * / ^ (or {UNICODE_SIGNS}), parentheses, and functions such as sqrt(...)"
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
            same_chain = isinstance(node, ast.BinOp) and child is _chained_left(node)
            pending.append((child, depth if same_chain else depth + 1))
    return tree.body, source


def _chained_left(node: ast.BinOp) -> ast.BinOp | None:
    """The left operand of `node` when the two are one left-to-right chain (1 + 2 - 3 * 4 …, not powers, which
    group from the right), evaluated in a loop rather than by recursion; None otherwise."""
    left = node.left
    if (
        not isinstance(node.op, ast.Pow)
        and isinstance(left, ast.BinOp)
        and type(left.op) in _BINARY_OPERATORS
        and not isinstance(left.op, ast.Pow)
    ):
        return left
    return None


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
        """A binary operation, or a whole left-to-right chain of them in a loop (see _chained_left)."""
        chain = [node]
        while (left := _chained_left(chain[-1])) is not None:
            chain.append(left)
        value = self.evaluate(chain[-1].left)
        for link in reversed(chain):
            right = self.evaluate(link.right)
            try:
                value = _BINARY_OPERATORS[type(link.op)](value, right)
            except Problem as problem:
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
            return checked(function(*arguments))
        except Problem as problem:
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
