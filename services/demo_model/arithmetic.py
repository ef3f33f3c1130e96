"""Arithmetic in plain English, as the demo model understands it: a message becomes a chain of calculator steps.

"What is 5 + 10, then multiply by 3?" -> add(5, 10), then multiply(<that result>, 3). Clauses are separated by
"then", commas or semicolons, or start with a verb ("add", "multiply" ...); "it"/"that" and a clause starting with
an operator mean the previous result (in the first clause: the number of the conversation's previous answer).
Within a clause the usual precedence holds (2 + 3 * 4 is 14), so a step may use the result of any earlier step,
which the planner reads back from the calculator's tool messages.
"""

import re
from dataclasses import dataclass

ADD, SUBTRACT, MULTIPLY, DIVIDE, POWER = "add", "subtract", "multiply", "divide", "power"


@dataclass(frozen=True)
class StepResult:
    """The result of an earlier step (by position in the chain), known once the calculator has answered it."""

    index: int


Operand = float | StepResult


@dataclass(frozen=True)
class CalculationStep:
    """One calculator call: `operation` on x and y."""

    operation: str
    x: Operand
    y: Operand


# Operator words and symbols between two operands. Longest phrases first so "multiplied by" wins over "by".
_INFIX = [
    (r"(?:raised\s+)?to\s+the\s+power\s+of|\*\*|\^", POWER),
    (r"multiplied\s+by|times|\*|\u00d7|(?<![a-z])x(?![a-z])", MULTIPLY),  # \u00d7: the multiplication sign
    (r"divided\s+by|/|÷", DIVIDE),
    (r"plus|\+", ADD),
    (r"minus|-", SUBTRACT),
]
# Verbs that start a clause: "add 2 and 3", "multiply it by 3", "the sum of 2 and 3".
_VERBS = {"add": ADD, "sum": ADD, "subtract": SUBTRACT, "multiply": MULTIPLY, "product": MULTIPLY, "divide": DIVIDE}
_CONNECTORS = {"and", "to", "from", "by", "with"}
_REFERENCES = {"it", "that", "this", "result", "answer"}
_PRECEDENCE = {ADD: 1, SUBTRACT: 1, MULTIPLY: 2, DIVIDE: 2, POWER: 3}

_TOKEN = re.compile(
    "|".join(
        [
            r"(?P<num>-?(?:\d+(?:\.\d+)?|\.\d+))",
            *(f"(?P<op{i}>{pattern})" for i, (pattern, _) in enumerate(_INFIX)),
            r"(?P<then>\bthen\b|[,;])",
            r"(?P<word>[a-z]+)",
        ]
    )
)
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?", re.I)


@dataclass(frozen=True)
class _Token:
    kind: str  # "num", "op", "verb", "then", "conn", "ref"
    number: float = 0.0
    operation: str = ""
    word: str = ""


class _NotArithmetic(Exception):
    """The message does not read as a calculation the demo model can do."""


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    for match in _TOKEN.finditer(text.lower()):
        group = match.lastgroup or ""
        value = match.group()
        if group == "num":
            if value.startswith("-") and tokens and tokens[-1].kind == "num":
                # "10-3" and "5 -3" are subtractions, not 10 followed by -3.
                tokens.append(_Token("op", operation=SUBTRACT))
                value = value[1:]
            tokens.append(_Token("num", number=float(value)))
        elif group.startswith("op"):
            tokens.append(_Token("op", operation=_INFIX[int(group[2:])][1]))
        elif group == "then":
            tokens.append(_Token("then"))
        elif value in _VERBS:
            tokens.append(_Token("verb", operation=_VERBS[value]))
        elif value in _CONNECTORS:
            tokens.append(_Token("conn", word=value))
        elif value in _REFERENCES:
            tokens.append(_Token("ref"))
        # Other words ("what", "is", "please") carry no arithmetic.
    return tokens


def _clauses(tokens: list[_Token]) -> list[list[_Token]]:
    """Split at "then"/punctuation and before each verb; drop clauses with nothing in them."""
    clauses: list[list[_Token]] = [[]]
    for token in tokens:
        if token.kind == "then" or (token.kind == "verb" and clauses[-1]):
            clauses.append([])
        if token.kind != "then":
            clauses[-1].append(token)
    return [clause for clause in clauses if any(t.kind in ("num", "op", "verb", "ref") for t in clause)]


class _ChainBuilder:
    """Turns clauses into steps, remembering the previous clause's value for "it" and leading operators."""

    def __init__(self, previous: float | None = None) -> None:
        self.steps: list[CalculationStep] = []
        self.previous: Operand | None = previous

    def emit(self, operation: str, x: Operand, y: Operand) -> StepResult:
        self.steps.append(CalculationStep(operation, x, y))
        return StepResult(len(self.steps) - 1)

    def previous_value(self) -> Operand:
        if self.previous is None:
            raise _NotArithmetic("'it' or a leading operator with nothing before it")
        return self.previous

    def clause(self, tokens: list[_Token]) -> None:
        self.previous = self.verb_clause(tokens) if tokens[0].kind == "verb" else self.expression(tokens)

    def verb_clause(self, tokens: list[_Token]) -> Operand:
        """ "add 2 and 3", "subtract 3 from 10", "multiply it by 3", "divide by 2"."""
        operation = tokens[0].operation
        parts: list[list[_Token]] = [[]]
        for token in tokens[1:]:
            if token.kind == "conn":
                parts.append([])
            else:
                parts[-1].append(token)
        operands = [self.expression(part) for part in parts if part]
        if not operands:
            raise _NotArithmetic(f"{operation} with no numbers")
        if len(operands) == 1:
            operands.insert(0, self.previous_value())
        elif any(t.kind == "conn" and t.word == "from" for t in tokens):
            operands.reverse()  # "subtract 3 from 10" is 10 - 3
        result = operands[0]
        for operand in operands[1:]:
            result = self.emit(operation, result, operand)
        return result

    def expression(self, tokens: list[_Token]) -> Operand:
        """Infix with precedence; a leading operator applies to the previous result ("times 3")."""
        items: list[_Token] = [t for t in tokens if t.kind in ("num", "op", "ref")]
        if not items:
            raise _NotArithmetic("an empty expression")
        values: list[Operand] = []
        operations: list[str] = []
        if items[0].kind == "op":
            values.append(self.previous_value())
        for token in items:
            expects_value = len(values) == len(operations)
            if expects_value != (token.kind != "op"):
                raise _NotArithmetic("operators and numbers do not alternate")
            if token.kind == "op":
                operations.append(token.operation)
            else:
                values.append(token.number if token.kind == "num" else self.previous_value())
        if len(values) == len(operations):
            raise _NotArithmetic("an operator with nothing after it")
        return self._climb(values, operations)

    def _climb(self, values: list[Operand], operations: list[str]) -> Operand:
        position = 0

        def parse(min_precedence: int) -> Operand:
            nonlocal position
            left = values[position]
            while position < len(operations) and _PRECEDENCE[operations[position]] >= min_precedence:
                operation = operations[position]
                position += 1
                # Power is right-associative (2 ^ 3 ^ 2 = 2 ^ 9); the others left-associative.
                next_min = _PRECEDENCE[operation] + (0 if operation == POWER else 1)
                right = parse(next_min)
                left = self.emit(operation, left, right)
            return left

        return parse(0)


def parse_calculation(text: str, earlier: float | None = None) -> list[CalculationStep]:
    """The calculator steps `text` asks for, in order; empty when it is not a calculation. `earlier` is the
    number of the conversation's previous answer: what "it" or a leading operator means in a first clause
    ("multiply that by 3" after "The result is 15.")."""
    builder = _ChainBuilder(earlier)
    try:
        for clause in _clauses(_tokenize(text)):
            builder.clause(clause)
    except _NotArithmetic:
        return []
    return builder.steps


def parse_tool_number(text: str) -> float | None:
    """The number in a calculator answer: the one after the last "=" ("5 + 10 = 15"), or the whole text."""
    if "=" in text:
        match = _NUMBER.search(text.rsplit("=", 1)[1])
    else:
        match = _NUMBER.fullmatch(text.strip())
    return float(match.group()) if match else None


def last_number(text: str) -> float | None:
    """The last number in a text ("The result is 15." -> 15), or None."""
    numbers = _NUMBER.findall(text)
    return float(numbers[-1]) if numbers else None


def json_number(value: float) -> int | float:
    """`value` for JSON arguments: 5, not 5.0, when it is whole."""
    return int(value) if float(value).is_integer() else value


def format_number(value: float) -> str:
    """`value` for people: "45", "2.5", "0.333333333333"."""
    return str(int(value)) if float(value).is_integer() else f"{value:.12g}"


def describe_step(operation: str, x: float, y: float, *, it_is_x: bool = False) -> str:
    """The step in words ("add 5 and 10", "multiply it by 3"); `it_is_x` says x is the result just reported."""
    left, right = ("it" if it_is_x else format_number(x)), format_number(y)
    if operation == ADD:
        return f"add {right} to it" if it_is_x else f"add {left} and {right}"
    if operation == SUBTRACT:
        return f"subtract {right} from {left}"
    if operation == MULTIPLY:
        return f"multiply {left} by {right}"
    if operation == DIVIDE:
        return f"divide {left} by {right}"
    return f"raise {left} to the power of {right}"
