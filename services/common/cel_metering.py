"""Metered CEL evaluation: cel-python's evaluator with a cost meter and a clock, and the conversions of a state
into CEL values and of a result back into plain Python. Used by services.common.cel's `evaluate` only.

Why evaluation is bounded by a cost meter, in process (and not by a killable worker, nor by a syntax check alone):
CEL has no loops, but a comprehension repeats its body for every element of a list, comprehensions nest, and the
lists come from the state (a tool's result may hold 100,000 items): `xs.map(a, xs.map(b, xs.map(c, a + b + c)))`
is 10^15 steps on such a list, a bound no syntax check can see, since it depends on the data. So every node the
evaluator visits costs 1, and every new string, bytes, list or map a node produces costs its length, against a
budget (cel.MAX_COST): a runaway expression is stopped within one step of its bound, with the same answer on every
replica and under any load. The length charged is not the size built, though: a list of 600 references to one
100 KB string costs 600 but is 60 MB as JSON (in a step, in the engine's memory once converted), so the meter also
sums the size of every new value, elements and text included, against cel.MAX_VALUE_SIZE. A killable worker
process would bound time too, but costs a process hop and a copy of the state per evaluation (workflows evaluate an
expression per node), and what it stops depends on the machine's load. The meter cannot see inside one step
(`x in xs` is one step whatever the size of xs), so a wall-clock deadline (cel.EVALUATION_TIMEOUT_SECONDS), checked
every CLOCK_EVERY steps, backs it up. The syntax checks (services.common.cel_checks) stay: they refuse early what
could only fail later, and they keep the evaluator's recursion within Python's stack.
"""

import datetime
import time
from collections.abc import Mapping
from typing import Any

import lark
from celpy import celtypes
from celpy.evaluation import Activation, Evaluator

#: The clock is read every this many steps (reading it on every one would cost more than most steps).
CLOCK_EVERY = 64
#: How deeply a state value (nested lists and maps) may nest.
MAX_VALUE_DEPTH = 100

#: What `type(x)` evaluates to, by CEL's names.
_TYPE_NAMES: dict[type, str] = {
    celtypes.BoolType: "bool", celtypes.BytesType: "bytes", celtypes.DoubleType: "double", celtypes.IntType: "int",
    celtypes.ListType: "list", celtypes.MapType: "map", type(None): "null_type", celtypes.StringType: "string",
    celtypes.UintType: "uint", celtypes.TypeType: "type", celtypes.TimestampType: "google.protobuf.Timestamp",
    celtypes.DurationType: "google.protobuf.Duration",
}


class Exhausted(Exception):
    """A bound was hit (the budget, the size of the values built, the clock); the message says which."""


class NotPlain(Exception):
    """A state value CEL cannot read, or a result that is not a plain value; the message says which."""


class Meter:
    """The cost of one evaluation, shared by the evaluator and the sub-evaluators of its comprehensions."""

    def __init__(self, budget: int, timeout: float, max_size: int) -> None:
        self.budget = budget
        self.spent = 0
        self.max_size = max_size
        #: The summed size of the new values so far (see cel.MAX_VALUE_SIZE).
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
            raise Exhausted(f"the expression ran longer than {self.timeout:g} s")

    def charge(self, cost: int) -> None:
        self.spent += cost
        if self.spent > self.budget:
            raise Exhausted(f"the expression used up its budget of {self.budget:,} steps and values")

    def produced(self, value: object) -> None:
        """Charge for a value a node produced, if it is a new string, bytes, list or map."""
        if isinstance(value, (str, bytes, list, dict)) and id(value) not in self.seen:
            self.seen[id(value)] = value
            self.charge(len(value))
            self.built += self._size(value)

    def _size(self, value: str | bytes | list[Any] | dict[Any, Any]) -> int:
        """The size of a new value (see cel.MAX_VALUE_SIZE); raises Exhausted as soon as the sum passes the bound.
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
                raise Exhausted(f"the expression built values larger than {self.max_size:,} (characters of text and "
                                "elements of lists and maps, summed); keep lists and text in a workflow small")
        if isinstance(value, list | dict):
            self.sizes[id(value)] = total
        return total


class MeteredEvaluator(Evaluator):
    """cel-python's tree-walking evaluator, metered: every node it visits goes through `_visit_tree` (lark's
    Interpreter), which charges the meter."""

    def __init__(self, ast: lark.Tree[Any], activation: Activation, meter: Meter) -> None:
        super().__init__(ast, activation)
        self.meter = meter

    def _visit_tree(self, tree: lark.Tree[Any]) -> Any:
        self.meter.step()
        value = super()._visit_tree(tree)
        self.meter.produced(value)
        return value

    def sub_evaluator(self, ast: lark.Tree[Any]) -> Evaluator:
        return MeteredEvaluator(ast, self.activation, self.meter)


def to_cel(value: Any, meter: Meter, path: str, depth: int = 0) -> Any:
    """A plain Python state value as a CEL value (recorded as given, so reading it costs nothing); NotPlain when
    CEL cannot read it."""
    if depth > MAX_VALUE_DEPTH:
        raise NotPlain(f"state value {path} nests more than {MAX_VALUE_DEPTH} levels deep")
    converted: Any
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        try:
            return celtypes.IntType(value)
        except ValueError:
            raise NotPlain(f"state value {path} is out of CEL's 64-bit integer range") from None
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        converted = celtypes.StringType(value)
    elif isinstance(value, bytes):
        converted = celtypes.BytesType(value)
    elif isinstance(value, (list, tuple)):
        converted = celtypes.ListType(
            to_cel(item, meter, f"{path}[{index}]", depth + 1) for index, item in enumerate(value)
        )
    elif isinstance(value, Mapping):
        items = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotPlain(f"state value {path} has a key that is not text: {key!r}"[:200])
            items[celtypes.StringType(key)] = to_cel(item, meter, f"{path}[{key!r}]", depth + 1)
        converted = celtypes.MapType(items)
    else:
        raise NotPlain(f"state value {path} is a {type(value).__name__}, which CEL cannot read")
    meter.seen[id(converted)] = converted
    return converted


def to_python(value: Any, meter: Meter) -> Any:
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
    raise NotPlain(f"the expression produced a {type(item).__name__}, which is not a plain value")
