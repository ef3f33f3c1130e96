"""CEL, the Common Expression Language of workflows: compile an expression once, evaluate it many times, bounded.

`compile(expression, known_variables)` parses an expression (with cel-python, `celpy`, a pure-Python CEL on a
lark LALR parser) and checks it before anything runs: its length, how deeply it nests, how deeply its
comprehensions (`map`, `filter`, `all`, `exists`, `exists_one`) nest, that it calls only CEL's standard functions,
and that every variable it reads is one of `known_variables`. Any problem is `InvalidArgument` naming its position
("line 1, column 7"), and nothing else ever escapes `compile`, whatever the input (a property-based test holds it
to that). `evaluate(program, state)` runs a compiled program on a state (a dict of plain Python values) and
returns a plain Python value.

Why evaluation is bounded by a cost meter, in process (and not by a killable worker, nor by a syntax check alone):
CEL has no loops, but a comprehension repeats its body for every element of a list, comprehensions nest, and the
lists come from the state (a tool's result may hold 100,000 items): `xs.map(a, xs.map(b, xs.map(c, a + b + c)))`
is 10^15 steps on such a list, a bound no syntax check can see, since it depends on the data. So every node the
evaluator visits costs 1, and every new string, bytes, list or map a node produces costs its length, against a
budget (MAX_COST): a runaway expression is stopped within one step of its bound, with the same answer on every
replica and under any load. The length charged is not the size built, though: a list of 600 references to one
100 KB string costs 600 but is 60 MB as JSON (in a step, in the engine's memory once converted), so the meter also
sums the size of every new value, elements and text included, against MAX_VALUE_SIZE. A killable worker process
would bound time too, but costs a process hop and a copy of the state per evaluation (workflows evaluate an
expression per node), and what it stops depends on the machine's load. The meter cannot see inside one step
(`x in xs` is one step whatever the size of xs), so a wall-clock deadline (EVALUATION_TIMEOUT_SECONDS), checked
every few steps, backs it up. The syntax checks stay: they refuse early what could only fail later (comprehensions
nested past MAX_COMPREHENSION_DEPTH, cel-python's `reduce` extension, which feeds a value back into itself and so
doubles a string per element), and they keep the evaluator's recursion within Python's stack.

`evaluate` is synchronous and CPU-bound; call it with `asyncio.to_thread` from async code (the GIL switches
threads every few milliseconds, so the event loop stays responsive while an expression uses its budget).

Values: the state's None, bool, int (64-bit), float, str, bytes, list and dict (with str keys) become CEL's null,
bool, int, double, string, bytes, list and map; results come back as None, bool, int, float, str, list and dict,
with bytes as `bytes`, a timestamp as RFC 3339 text, a duration as CEL's text ("1.5s") and a type as its name.
"""

import datetime
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import lark
from celpy import celtypes
from celpy.celparser import CELParser
from celpy.evaluation import Activation, CELEvalError, CELSyntaxError, CELUnsupportedError, Evaluator, base_functions

from services.common.errors import InvalidArgument

#: The longest expression `compile` accepts, in characters.
MAX_EXPRESSION_CHARS = 2_000
#: How deeply the parse tree may nest. A parenthesis or a comprehension adds 10 levels, an operand of a chain like
#: `a + b + c` 2, and cel-python's evaluator recurses about 5.5 Python frames per level: this keeps evaluation
#: (about 700 frames at worst) within Python's default recursion limit of 1,000, which this module leaves alone.
MAX_TREE_DEPTH = 120
#: How many comprehensions may nest inside one another (`xs.map(a, ys.filter(b, ...))` nests 2).
MAX_COMPREHENSION_DEPTH = 2
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
#: The default wall-clock bound of one evaluation, checked every CLOCK_EVERY steps.
EVALUATION_TIMEOUT_SECONDS = 2.0
CLOCK_EVERY = 64
#: How deeply a state value (nested lists and maps) may nest.
MAX_VALUE_DEPTH = 100

#: The standard comprehension macros; each takes a variable name and an expression.
MACROS = frozenset({"all", "exists", "exists_one", "filter", "map"})
#: cel-python's extensions that are not CEL: `reduce` feeds a value back into itself (a string doubling per
#: element), and neither is portable to another CEL implementation.
NON_STANDARD = frozenset({"reduce", "min"})
#: Functions and methods an expression may call: CEL's standard ones (as cel-python implements them), and the
#: `has()` and `dyn()` macros. Operators (`_+_`) are not names.
FUNCTIONS = frozenset(name for name in base_functions if name.isidentifier()) - NON_STANDARD | {"has", "dyn"}
#: Identifiers that are CEL's type names, usable in expressions like `type(x) == int`.
TYPE_NAMES = frozenset({"bool", "bytes", "double", "int", "list", "map", "null_type", "string", "type", "uint"})
#: Names a state variable may not take: CEL's literals and reserved words, and the type names (an expression could
#: not read such a variable).
RESERVED_NAMES = TYPE_NAMES | frozenset({
    "true", "false", "null", "in",
    "as", "break", "const", "continue", "else", "for", "function", "if", "import", "let", "loop", "package",
    "namespace", "return", "var", "void", "while",
})

#: cel-python's lark parser (LALR, with positions), built once; called directly rather than through
#: CELParser.parse, whose errors keep only a caret drawing, not what was unexpected.
_LARK = CELParser().CEL_PARSER
assert _LARK is not None


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
    tree: lark.Tree


def _at(line: int | None, column: int | None) -> str:
    return f"line {line or 1}, column {column or 1}"


def _token_at(token: lark.Token) -> str:
    return _at(token.line, token.column)


def _tree_at(tree: lark.Tree) -> str:
    meta = tree.meta
    return _at(getattr(meta, "line", None), getattr(meta, "column", None))


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
        raise InvalidArgument(f"syntax error at {_at(exc.line, exc.column)}: {_reason(exc)}") from None
    except RecursionError:  # pragma: no cover - lark's LALR parser is iterative; kept as a guarantee
        raise InvalidArgument("the expression nests too deeply") from None
    except Exception as exc:  # the guarantee: nothing but InvalidArgument leaves compile
        raise InvalidArgument(f"the expression cannot be parsed: {type(exc).__name__}") from None
    variables = _check(tree, frozenset(known_variables))
    return Program(expression, variables, tree)


def _reason(exc: lark.exceptions.UnexpectedInput) -> str:
    """What went wrong, in a few words."""
    if isinstance(exc, lark.exceptions.UnexpectedToken):
        if exc.token.type == "$END":
            return "the expression ends too early"
        return f"unexpected {str(exc.token)[:40]!r}"
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        return f"unexpected character {exc.char!r}"
    return "the expression ends too early"


def _bare_identifier(tree: lark.Tree) -> lark.Token | None:
    """The identifier `tree` consists of, if it is nothing else (`x`, not `x.y` or `(x)`)."""
    node: Any = tree
    while isinstance(node, lark.Tree):
        if node.data == "ident":
            return node.children[0]
        if len(node.children) != 1 or node.data in ("paren_expr", "unary_not", "unary_neg"):
            return None
        node = node.children[0]
    return None


def _is_field_selection(tree: lark.Tree) -> bool:
    """Whether `tree` is `e.f` (the one argument `has()` takes)."""
    node: Any = tree
    while isinstance(node, lark.Tree) and len(node.children) == 1:
        node = node.children[0]
    return isinstance(node, lark.Tree) and node.data == "member_dot"


def _check(tree: lark.Tree, known: frozenset[str]) -> frozenset[str]:
    """Walk the tree (iteratively: its depth is what is being checked) and return the state variables it reads.
    Children are visited left to right, so the first problem in the text is the one reported.

    Scopes: a comprehension's variable is visible in its body only (`xs.map(x, x + 1)`), and shadows a state
    variable of the same name there, as in CEL."""
    used: set[str] = set()
    # (node, comprehension variables in scope, comprehension depth, tree depth)
    stack: list[tuple[Any, frozenset[str], int, int]] = [(tree, frozenset(), 0, 1)]
    while stack:
        node, scope, comprehensions, depth = stack.pop()
        if not isinstance(node, lark.Tree):
            continue
        if depth > MAX_TREE_DEPTH:
            raise InvalidArgument(f"the expression nests too deeply at {_tree_at(node)} (more than "
                                  f"{MAX_TREE_DEPTH} levels); split it across nodes")
        kind = node.data
        if kind == "ident" or kind == "dot_ident":
            token = node.children[0]
            name = token.value
            if kind == "ident" and name in scope:
                continue
            if name in known:
                used.add(name)
            elif name not in TYPE_NAMES:
                shown = ", ".join(sorted(known)[:20]) or "none"
                raise InvalidArgument(f"unknown variable '{name}' at {_token_at(token)} (known variables: {shown})")
            continue
        if kind in ("ident_arg", "dot_ident_arg"):
            token = node.children[0]
            _check_function(token)
            arguments = node.children[1] if len(node.children) > 1 else None
            if token.value == "has" and (
                not isinstance(arguments, lark.Tree) or len(arguments.children) != 1
                or not _is_field_selection(arguments.children[0])
            ):
                raise InvalidArgument(f"has() at {_token_at(token)} takes one field selection, like has(m.f)")
            stack.extend((child, scope, comprehensions, depth + 1) for child in reversed(node.children[1:]))
            continue
        if kind == "member_object":
            raise InvalidArgument(f"message construction at {_tree_at(node)} is not supported; build a map")
        if kind == "member_dot_arg":
            target, method = node.children[0], node.children[1]
            arguments = node.children[2] if len(node.children) > 2 else None
            if method.value in MACROS:
                arguments_list = arguments.children if isinstance(arguments, lark.Tree) else []
                if len(arguments_list) != 2:
                    raise InvalidArgument(f"{method.value}() at {_token_at(method)} takes a variable name and an "
                                          f"expression, like xs.{method.value}(x, x > 0)")
                variable = _bare_identifier(arguments_list[0])
                if variable is None:
                    raise InvalidArgument(f"{method.value}() at {_token_at(method)}: its first argument must be a "
                                          "variable name")
                if comprehensions + 1 > MAX_COMPREHENSION_DEPTH:
                    raise InvalidArgument(f"{method.value}() at {_token_at(method)} nests comprehensions more than "
                                          f"{MAX_COMPREHENSION_DEPTH} deep")
                stack.append((arguments_list[1], scope | {variable.value}, comprehensions + 1, depth + 2))
                stack.append((target, scope, comprehensions, depth + 1))
                continue
            _check_function(method)
            if arguments is not None:
                stack.append((arguments, scope, comprehensions, depth + 1))
            stack.append((target, scope, comprehensions, depth + 1))
            continue
        stack.extend((child, scope, comprehensions, depth + 1) for child in reversed(node.children))
    return frozenset(used)


def _check_function(token: lark.Token) -> None:
    name = token.value
    if name in NON_STANDARD:
        raise InvalidArgument(f"{name}() at {_token_at(token)} is not standard CEL")
    if name not in FUNCTIONS and name not in MACROS:
        raise InvalidArgument(f"unknown function '{name}' at {_token_at(token)}")


# --- evaluation --------------------------------------------------------------------------------------------------


#: What `type(x)` evaluates to, by CEL's names.
_TYPE_NAMES: dict[type, str] = {
    celtypes.BoolType: "bool", celtypes.BytesType: "bytes", celtypes.DoubleType: "double", celtypes.IntType: "int",
    celtypes.ListType: "list", celtypes.MapType: "map", type(None): "null_type", celtypes.StringType: "string",
    celtypes.UintType: "uint", celtypes.TypeType: "type", celtypes.TimestampType: "google.protobuf.Timestamp",
    celtypes.DurationType: "google.protobuf.Duration",
}


class _Exhausted(Exception):
    """Raised inside the evaluator when a bound is hit; `evaluate` turns it into EvaluationLimitExceeded."""


class _Meter:
    """The cost of one evaluation, shared by the evaluator and the sub-evaluators of its comprehensions."""

    def __init__(self, budget: int, timeout: float, max_size: int = MAX_VALUE_SIZE) -> None:
        self.budget = budget
        self.spent = 0
        self.max_size = max_size
        #: The summed size of the new values so far (see MAX_VALUE_SIZE).
        self.built = 0
        #: The size of each new list and map, by id (held alive in `seen`), so a value holding it need not walk it.
        self.sizes: dict[int, int] = {}
        self.steps = 0
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        #: Values already charged for, or given in the state, by id; holding them keeps their ids from being
        #: reused, and what it holds is bounded by the budget.
        self.seen: dict[int, object] = {}

    def step(self) -> None:
        self.steps += 1
        self.charge(1)
        if self.steps % CLOCK_EVERY == 0 and time.monotonic() > self.deadline:
            raise _Exhausted(f"the expression ran longer than {self.timeout:g} s")

    def charge(self, cost: int) -> None:
        self.spent += cost
        if self.spent > self.budget:
            raise _Exhausted(f"the expression used up its budget of {self.budget:,} steps and values")

    def produced(self, value: object) -> None:
        """Charge for a value a node produced, if it is a new string, bytes, list or map."""
        if isinstance(value, (str, bytes, list, dict)) and id(value) not in self.seen:
            self.seen[id(value)] = value
            self.charge(len(value))
            self.built += self._size(value)

    def _size(self, value: str | bytes | list[Any] | dict[Any, Any]) -> int:
        """The size of a new value (see MAX_VALUE_SIZE); raises _Exhausted as soon as the sum passes the bound.
        Every item walked adds at least 1, so the walk itself costs no more than the bound allows."""
        room = self.max_size - self.built
        total = 0
        stack: list[Any] = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str | bytes):
                total += len(item) + 1
            elif isinstance(item, list | dict):
                known = self.sizes.get(id(item)) if item is not value else None
                if known is not None:
                    total += known
                else:
                    total += 1
                    if isinstance(item, list):
                        stack.extend(item)
                    else:
                        stack.extend(part for pair in item.items() for part in pair)
            else:
                total += 1
            if total > room:
                raise _Exhausted(f"the expression built values larger than {self.max_size:,} (characters of text and "
                                 "elements of lists and maps, summed); keep lists and text in a workflow small")
        if isinstance(value, list | dict):
            self.sizes[id(value)] = total
        return total


class _BoundedEvaluator(Evaluator):
    """cel-python's tree-walking evaluator, metered: every node it visits goes through `_visit_tree` (lark's
    Interpreter), which charges the meter."""

    def __init__(self, ast: lark.Tree, activation: Activation, meter: _Meter) -> None:
        super().__init__(ast, activation)
        self.meter = meter

    def _visit_tree(self, tree: lark.Tree) -> Any:
        self.meter.step()
        value = super()._visit_tree(tree)
        self.meter.produced(value)
        return value

    def sub_evaluator(self, ast: lark.Tree) -> Evaluator:
        return _BoundedEvaluator(ast, self.activation, self.meter)


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
    meter = _Meter(max_cost, timeout, max_size)
    values: dict[str, Any] = {}
    for name in sorted(program.variables):
        if name not in state:
            raise EvaluationError(f"variable '{name}' has no value yet")
        values[name] = _to_cel(state[name], meter, name, 0)
    activation = Activation(vars=values)
    try:
        result = _BoundedEvaluator(program.tree, activation, meter).evaluate()
        return _to_python(result, meter)
    except _Exhausted as exc:
        raise EvaluationLimitExceeded(str(exc)) from None
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


def _to_cel(value: Any, meter: _Meter, path: str, depth: int) -> Any:
    """A plain Python state value as a CEL value (recorded as given, so reading it costs nothing)."""
    if depth > MAX_VALUE_DEPTH:
        raise EvaluationError(f"state value {path} nests more than {MAX_VALUE_DEPTH} levels deep")
    converted: Any
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        try:
            return celtypes.IntType(value)
        except ValueError:
            raise EvaluationError(f"state value {path} is out of CEL's 64-bit integer range") from None
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        converted = celtypes.StringType(value)
    elif isinstance(value, bytes):
        converted = celtypes.BytesType(value)
    elif isinstance(value, (list, tuple)):
        converted = celtypes.ListType(
            _to_cel(item, meter, f"{path}[{index}]", depth + 1) for index, item in enumerate(value)
        )
    elif isinstance(value, Mapping):
        items = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise EvaluationError(f"state value {path} has a key that is not text: {key!r}"[:200])
            items[celtypes.StringType(key)] = _to_cel(item, meter, f"{path}[{key!r}]", depth + 1)
        converted = celtypes.MapType(items)
    else:
        raise EvaluationError(f"state value {path} is a {type(value).__name__}, which CEL cannot read")
    meter.seen[id(converted)] = converted
    return converted


def _to_python(value: Any, meter: _Meter) -> Any:
    """A CEL result as plain Python; iterative, and metered like evaluation (a result may be large)."""
    root: list[Any] = [None]
    # (value, container, key): convert value and store it as container[key]
    work: list[tuple[Any, Any, Any]] = [(value, root, 0)]
    while work:
        item, container, key = work.pop()
        meter.step()
        container[key] = _scalar_or_shell(item, work)
    return root[0]


def _scalar_or_shell(item: Any, work: list[tuple[Any, Any, Any]]) -> Any:
    """A scalar converted, or an empty list/dict whose items are queued on `work`."""
    if item is None or isinstance(item, celtypes.BoolType | bool):
        return None if item is None else bool(item)
    if isinstance(item, celtypes.TimestampType):
        return item.isoformat().replace("+00:00", "Z")
    if isinstance(item, celtypes.DurationType):
        return str(item)
    if isinstance(item, int):
        return int(item)
    if isinstance(item, float):
        return float(item)
    if isinstance(item, str):
        return str(item)
    if isinstance(item, bytes):
        return bytes(item)
    if isinstance(item, list):
        shell: list[Any] = [None] * len(item)
        work.extend((element, shell, index) for index, element in enumerate(item))
        return shell
    if isinstance(item, dict):
        mapping: dict[Any, Any] = {}
        for map_key, element in item.items():
            plain_key = _scalar_or_shell(map_key, work)
            mapping[plain_key] = None
            work.append((element, mapping, plain_key))
        return mapping
    if isinstance(item, type):
        return _TYPE_NAMES.get(item, item.__name__)
    if isinstance(item, datetime.datetime | datetime.timedelta):  # pragma: no cover - CEL types above
        return str(item)
    raise EvaluationError(f"the expression produced a {type(item).__name__}, which is not a plain value")

