"""CEL, the Common Expression Language of workflows: compile an expression once, evaluate it many times, bounded.

`compile(expression, known_variables)` parses an expression (with cel-python, `celpy`, a pure-Python CEL on a
lark LALR parser) and checks it before anything runs (services.common.cel_checks: its length, how deeply it nests,
how deeply its comprehensions nest, that it calls only CEL's standard functions, and that every variable it reads is
one of `known_variables`). Any problem is `InvalidArgument` naming its position ("line 1, column 7"), and nothing
else ever escapes `compile`, whatever the input (a property-based test holds it to that). `evaluate(program, state)`
runs a compiled program on a state (a dict of plain Python values) and returns a plain Python value, within a cost
budget, a bound on the size of what it builds and a deadline (services.common.cel_metering says why these).

`evaluate` is synchronous and CPU-bound; call it with `asyncio.to_thread` from async code (the GIL switches
threads every few milliseconds, so the event loop stays responsive while an expression uses its budget).

Values: the state's None, bool, int (64-bit), float, str, bytes, list and dict (with str keys) become CEL's null,
bool, int, double, string, bytes, list and map; results come back as None, bool, int, float, str, list and dict,
with bytes as `bytes`, a timestamp as RFC 3339 text, a duration as CEL's text ("1.5s") and a type as its name.

Used by the agents service (checking a workflow when it is saved) and the engine (running it).
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import lark
from celpy.celparser import CELParser
from celpy.evaluation import Activation, CELEvalError, CELSyntaxError, CELUnsupportedError

from services.common.cel_checks import TYPE_NAMES, at, check_tree, syntax_error_reason
from services.common.cel_metering import Exhausted, Meter, MeteredEvaluator, NotPlain, to_cel, to_python
from services.common.errors import InvalidArgument

#: The longest expression `compile` accepts, in characters.
MAX_EXPRESSION_CHARS = 2_000
#: The default budget of one evaluation: 1 per node of the parse tree visited, plus the length of every new
#: string, bytes, list or map. cel-python visits about 100,000 nodes a second, so this is about a second at worst;
#: a workflow's expressions typically cost tens to a few thousand (a map over 1,000 items with a small body: ~20,000).
MAX_COST = 100_000
#: The default bound on the size of the values one evaluation builds, summed over every new string, bytes, list
#: and map: 1 per character (or byte) of text, 1 per element, key and scalar, and a list or map holding values the
#: evaluation already has counts their sizes again (as its JSON would repeat them). A workflow's values go into its
#: steps, which the run store takes up to 1 MiB each; 600 references to one 100 KB string are one list of 600
#: elements to the cost budget, and 60 MB to the store (and to the engine's memory, once converted).
MAX_VALUE_SIZE = 2_000_000
#: The default wall-clock bound of one evaluation, checked every cel_metering.CLOCK_EVERY steps.
EVALUATION_TIMEOUT_SECONDS = 2.0

#: Names a state variable may not take: CEL's literals and reserved words, and the type names (an expression could
#: not read such a variable).
RESERVED_NAMES = TYPE_NAMES | frozenset({
    "true", "false", "null", "in",
    "as", "break", "const", "continue", "else", "for", "function", "if", "import", "let", "loop", "package",
    "namespace", "return", "var", "void", "while",
})


def _parser() -> lark.Lark:
    """cel-python's lark parser (LALR, with positions), called directly rather than through CELParser.parse, whose
    errors keep only a caret drawing, not what was unexpected."""
    parser = CELParser().CEL_PARSER
    if parser is None:  # a class attribute, None until the first CELParser() builds it
        raise RuntimeError("cel-python did not build its parser")
    return parser


#: Built once, at import.
_LARK = _parser()


class EvaluationError(InvalidArgument):
    """An expression failed on a state: a variable without a value, a missing map key, a division by zero, an
    operator applied to the wrong types. The message says which."""


class EvaluationLimitExceeded(EvaluationError):
    """An expression used up its cost budget or its time before it finished."""


@dataclass(frozen=True)
class Program:
    """A compiled, checked expression, ready to evaluate any number of times (immutable, safe to share)."""

    source: str
    #: The state variables the expression reads (comprehension variables excluded).
    variables: frozenset[str]
    tree: lark.Tree[Any]


def compile(expression: str, known_variables: Collection[str]) -> Program:
    """Parse and check `expression`; InvalidArgument with the position of the first problem (a syntax error, an
    unknown variable or function, nesting past the bounds). `known_variables` are the state variables it may
    read."""
    if not isinstance(expression, str):
        raise InvalidArgument(f"an expression must be text, got {type(expression).__name__}")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise InvalidArgument(f"the expression is {len(expression)} characters long; the limit is "
                              f"{MAX_EXPRESSION_CHARS}")
    if not expression.strip():
        raise InvalidArgument("the expression is empty")
    try:
        tree = _LARK.parse(expression)
    except lark.exceptions.UnexpectedInput as exc:
        raise InvalidArgument(f"syntax error at {at(exc.line, exc.column)}: {syntax_error_reason(exc)}") from None
    except RecursionError:  # pragma: no cover - lark's LALR parser is iterative; kept as a guarantee
        raise InvalidArgument("the expression nests too deeply") from None
    except Exception as exc:  # the guarantee: nothing but InvalidArgument leaves compile
        raise InvalidArgument(f"the expression cannot be parsed: {type(exc).__name__}") from None
    variables = check_tree(tree, frozenset(known_variables))
    return Program(expression, variables, tree)


def evaluate(
    program: Program,
    state: Mapping[str, Any],
    *,
    max_cost: int = MAX_COST,
    timeout: float = EVALUATION_TIMEOUT_SECONDS,
    max_size: int = MAX_VALUE_SIZE,
) -> Any:
    """The value of `program` on `state` (variable name -> plain Python value), as a plain Python value.

    EvaluationError when the expression fails on this state (a variable it reads has no value in `state`, a
    missing key, a division by zero, wrong types); EvaluationLimitExceeded when it would cost more than
    `max_cost`, build values larger than `max_size` (MAX_VALUE_SIZE) or run longer than `timeout` seconds."""
    meter = Meter(max_cost, timeout, max_size)
    values: dict[str, Any] = {}
    for name in sorted(program.variables):
        if name not in state:
            raise EvaluationError(f"variable '{name}' has no value yet")
        try:
            values[name] = to_cel(state[name], meter, name)
        except NotPlain as exc:
            raise EvaluationError(str(exc)) from None
    activation = Activation(vars=values)
    try:
        result = MeteredEvaluator(program.tree, activation, meter).evaluate()
        return to_python(result, meter)
    except Exhausted as exc:
        raise EvaluationLimitExceeded(str(exc)) from None
    except NotPlain as exc:
        raise EvaluationError(str(exc)) from None
    except CELEvalError as exc:
        raise EvaluationError(_eval_message(exc)) from None
    except RecursionError:
        raise EvaluationLimitExceeded("the expression nests too deeply to evaluate") from None
    except (CELSyntaxError, CELUnsupportedError, ArithmeticError, TypeError, ValueError, LookupError,
            AttributeError) as exc:
        # cel-python reports some failures as Python exceptions rather than CEL errors.
        raise EvaluationError(f"the expression failed: {type(exc).__name__}: {str(exc)[:200]}") from None


def _eval_message(exc: CELEvalError) -> str:
    """A CEL error in a sentence, without cel-python's dump of the activation."""
    text = str(exc.args[0]) if exc.args else "evaluation failed"
    if text.startswith("undeclared reference to "):
        text = text.split(" (in activation", 1)[0]
    if "found no matching overload" in text or text == "no such overload":
        text = "no such overload: an operator or function was applied to values of the wrong types"
    return text[:300]
