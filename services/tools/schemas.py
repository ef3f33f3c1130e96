"""Tool argument schemas: the one place that checks a JSON schema someone else wrote (an admin's HTTP tool, an MCP
server's inputSchema, a plugin's `parameters`) and validates a model's arguments against it, with bounds.

A schema is checked once, where it enters (CreateTool, an MCP server's tool listing, a plugin's load):

* it is JSON (a dict) of at most MAX_SCHEMA_BYTES, nesting at most MAX_SCHEMA_DEPTH levels, describing an object;
* it is valid JSON Schema 2020-12 (what OpenAI's function calling and MCP use). A `$schema` at the top is accepted
  and set aside; inside, it is refused: jsonschema would switch to that draft's keywords there, this module's
  bounded ones among them;
* every `$ref` resolves inside the document. Nothing is fetched, ever: the registry's retrieval refuses, so a
  `$ref` to a URL is refused at creation, and a schema stored before this check fails its calls, never reaching
  out. `$dynamicRef` is refused (a metaschema's tool, not an argument schema's);
* no loop of `$ref`s and in-place keywords (allOf, anyOf, oneOf, not, if/then/else, dependentSchemas) comes back
  to a schema without descending into the arguments (`{"$ref": "#"}`, A -> B -> A): validation would never end.
  Recursion that descends (a tree's `items` referring to the tree) is fine: the arguments' depth ends it;
* the longest chain of schemas validation can nest through, arguments at most MAX_JSON_DEPTH deep, stays under
  MAX_EVALUATION_DEPTH, so that validating never runs out of Python's stack;
* every `pattern` and `patternProperties` name compiles with RE2 (no backreferences, no lookaround), the
  linear-time engine that also runs them; `unevaluatedProperties` together with `patternProperties` is refused
  (jsonschema evaluates that pair with Python's backtracking `re`).

A problem is a SchemaProblem naming the JSON pointer of the bad part.

Validation (`argument_problems`) uses a Draft 2020-12 validator whose pattern keywords run on RE2, whose
uniqueItems is linear, and which counts the keywords it evaluates: past MAX_VALIDATION_STEPS it stops
(ValidationTooCostly), so that the time of one validation is bounded whatever the schema and the arguments. The
executor runs it off the event loop. `format` stays an annotation, as 2020-12 says by default.
"""

import functools
import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import re2
import referencing.exceptions
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import SchemaError, ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from services.common.json_values import MAX_JSON_DEPTH, JsonInputError, check_depth

#: The most JSON one schema may weigh, and its deepest nesting (JSON levels, keywords and all).
MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 64
#: The longest chain of schemas one validation may nest through (each costs a few Python frames; the default
#: recursion limit is 1000 and validation starts on a fresh thread's stack).
MAX_EVALUATION_DEPTH = 160
#: The most keywords one validation may evaluate (tens of thousands a second): enough for arguments a model writes
#: (an array of a few thousand small objects), and a bound on what any schema and arguments can cost together.
MAX_VALIDATION_STEPS = 50_000
#: The most schemas that may apply to one value in place ($ref, allOf, anyOf, ... counted along every branch): an
#: allOf of two refs to a definition that does the same, 40 times over, would apply 2^40.
MAX_IN_PLACE_SCHEMAS = 2_000
#: How many problems one validation collects at most, how many an answer lists, and how much of a value a problem
#: quotes.
MAX_ERRORS = 1000
MAX_PROBLEMS = 20
MAX_QUOTE_CHARS = 200

#: Keywords whose value is a schema applied to the same value (in place), or to a part of it (descending); and
#: keywords holding schemas that apply only through a $ref.
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_LIST = ("allOf", "anyOf", "oneOf")
_IN_PLACE_MAP = ("dependentSchemas",)
_DESCEND_ONE = ("additionalProperties", "items", "contains", "propertyNames", "unevaluatedItems",
                "unevaluatedProperties")
_DESCEND_LIST = ("prefixItems",)
_DESCEND_MAP = ("properties", "patternProperties")
_HOLDERS = ("$defs", "definitions")


class SchemaProblem(ValueError):
    """A schema that is refused; `pointer` is the JSON pointer of the bad part ("" for the schema itself)."""

    def __init__(self, pointer: str, message: str) -> None:
        super().__init__(f"at {pointer}: {message}" if pointer else message)
        self.pointer = pointer


class ValidationTooCostly(ValueError):
    """Validating the arguments took more than MAX_VALIDATION_STEPS keyword evaluations."""


def check_schema(schema: Any) -> dict[str, Any]:
    """The schema as plain JSON (a fresh copy), checked as the module's docstring says; SchemaProblem otherwise."""
    checked, text = _as_json(schema)
    _compiled(text)
    return checked


def argument_problems(schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> list[str]:
    """Every way (up to MAX_PROBLEMS) the arguments break the schema, each at its place in the arguments; empty
    when they fit. SchemaProblem when the schema is not one check_schema accepts (one stored before it checked),
    ValidationTooCostly past the step budget, JsonInputError when the arguments nest too deeply. Synchronous and
    CPU-bound, bounded in time: run it off the event loop."""
    check_depth(dict(arguments), max_depth=MAX_JSON_DEPTH)
    validator = _compiled(_as_json(schema)[1]).validator
    token = _BUDGET.set(_Budget(MAX_VALIDATION_STEPS))
    try:
        found = list(itertools.islice(validator.iter_errors(dict(arguments)), MAX_ERRORS))
    except referencing.exceptions.Unresolvable as exc:  # a schema stored before check_schema refused such refs
        raise SchemaProblem("", f"its $ref {exc} does not resolve inside the schema (nothing is fetched)") from None
    finally:
        _BUDGET.reset(token)
    errors = sorted(found, key=lambda error: list(map(str, error.absolute_path)))
    # One problem once: branches of allOf/anyOf can report the same one many times.
    problems = list(dict.fromkeys(_describe(error) for error in errors))
    if len(problems) > MAX_PROBLEMS:
        more = f"{len(problems) - MAX_PROBLEMS}{'+' if len(found) == MAX_ERRORS else ''}"
        problems = [*problems[:MAX_PROBLEMS], f"and {more} more"]
    return problems


def _as_json(schema: Any) -> tuple[dict[str, Any], str]:
    """A copy of the schema in its own order, and its JSON text with sorted keys (the validators' cache key);
    SchemaProblem when it is not a JSON object of bounded depth and size."""
    if not isinstance(schema, Mapping):
        raise SchemaProblem("", f"a schema must be a JSON object, not {type(schema).__name__}")
    try:
        check_depth(dict(schema), max_depth=MAX_SCHEMA_DEPTH)
        text = json.dumps(schema, allow_nan=False)
    except JsonInputError:
        raise SchemaProblem("", f"it nests deeper than {MAX_SCHEMA_DEPTH} levels") from None
    except (TypeError, ValueError) as exc:
        raise SchemaProblem("", f"it is not JSON: {exc}") from None
    if len(text.encode()) > MAX_SCHEMA_BYTES:
        raise SchemaProblem("", f"it must be at most {MAX_SCHEMA_BYTES:,} bytes of JSON")
    checked = json.loads(text)  # in the given order: the model reads the properties in it
    return checked, json.dumps(checked, sort_keys=True)


# --- patterns ---------------------------------------------------------------------------------------------------

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is the caller's news, not the log's


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Any:
    """The RE2 program of a schema's pattern; ValueError saying why RE2 refuses it."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(
            f"the pattern {_quote(pattern)} cannot run on RE2, the linear-time engine used for schema patterns "
            f"(backreferences and lookaround are not supported): {reason}"
        ) from None
    except UnicodeError:
        raise ValueError(f"the pattern {_quote(pattern)} is not valid Unicode text") from None


def _search(pattern: str, text: str) -> bool:
    try:
        return compile_pattern(pattern).search(text) is not None
    except UnicodeError:  # a lone surrogate in the text: RE2 reads UTF-8, and such a text matches nothing
        return False


# --- the validator ----------------------------------------------------------------------------------------------


class _Budget:
    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


_BUDGET: ContextVar[_Budget | None] = ContextVar("schema_validation_budget", default=None)

Keyword = Callable[[Any, Any, Any, Mapping[str, Any]], Iterator[ValidationError] | None]


def _counted(keyword: Keyword) -> Keyword:
    """The keyword, counting each evaluation against the validation's budget."""

    def evaluate(validator: Any, value: Any, instance: Any, schema: Mapping[str, Any]) -> Any:
        budget = _BUDGET.get()
        if budget is not None:
            budget.left -= 1
            if budget.left < 0:
                raise ValidationTooCostly(
                    f"checking the arguments against the schema took more than {MAX_VALIDATION_STEPS:,} steps"
                )
        return keyword(validator, value, instance, schema)

    return evaluate


def _pattern(validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{_quote(instance)} does not match {_quote(pattern)}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    extras = [
        key for key in instance if key not in properties and not any(_search(pattern, key) for pattern in patterns)
    ]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        shown = ", ".join(_quote(extra) for extra in sorted(extras)[:MAX_PROBLEMS])
        yield ValidationError(f"Additional properties are not allowed ({shown} {'was' if len(extras) == 1 else 'were'}"
                              " unexpected)")


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    # jsonschema compares unhashable items pairwise (quadratic); a canonical key per item is linear.
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        key = _canonical(item)
        if key in seen:
            yield ValidationError(f"{_quote(instance)} has non-unique elements")
            return
        seen.add(key)


def _canonical(value: Any) -> Any:
    """A hashable key equal for equal JSON values (1 and 1.0 alike, true and 1 not). Recursion as deep as the
    arguments, which are checked against MAX_JSON_DEPTH first."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(_canonical(item) for item in value))
    if isinstance(value, dict):
        return ("object", frozenset((key, _canonical(item)) for key, item in value.items()))
    return ("other", repr(value))


_KEYWORDS = {
    **Draft202012Validator.VALIDATORS,
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "uniqueItems": _unique_items,
}
BoundedValidator = validators.extend(
    Draft202012Validator, validators={name: _counted(keyword) for name, keyword in _KEYWORDS.items()}
)

#: No format is asserted when a schema is checked against the metaschema: its "regex" check would compile patterns
#: with Python's `re`; _Graph compiles them with RE2 instead, naming each one's pointer.
_SCHEMA_FORMATS = FormatChecker(formats=())


def _refuse_retrieval(uri: str) -> Resource[Any]:
    raise referencing.exceptions.NoSuchResource(ref=uri)


#: Resolves what the schema itself holds, and nothing else: retrieval refuses, so no $ref ever reaches a network.
_NO_NETWORK = Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]


@dataclass(frozen=True)
class _Compiled:
    validator: Any


@functools.lru_cache(maxsize=256)
def _compiled(text: str) -> _Compiled:
    """The checks and the validator of a schema (its sorted JSON text: the cache's key)."""
    schema = json.loads(text)
    # Set aside, and read as 2020-12 whatever it names (MCP servers often declare draft-07, whose argument schemas
    # mean the same); left in, jsonschema would switch to that draft's own validator at every `$ref` to the root.
    schema.pop("$schema", None)
    try:
        BoundedValidator.check_schema(schema, format_checker=_SCHEMA_FORMATS)
    except SchemaError as exc:
        raise SchemaProblem(_pointer(exc.absolute_path), _schema_error_message(exc)) from None
    except RecursionError:
        raise SchemaProblem("", "it nests too deeply to be checked") from None
    if schema.get("type") != "object":
        raise SchemaProblem("/type", 'it must describe an object ({"type": "object", ...}): arguments are an object')
    _Graph(schema).check()
    return _Compiled(BoundedValidator(schema, registry=_NO_NETWORK))


def _schema_error_message(error: SchemaError) -> str:
    return f"not a valid JSON schema (2020-12): {_cut(error.message)}"


# --- the static checks: refs, loops, depth, patterns --------------------------------------------------------------


class _Graph:
    """The schemas of one document reachable from its root, and the edges validation can take between them:
    in place (the same value) or descending (a part of it)."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.pointers: dict[int, str] = {}
        self.nodes: dict[int, dict[str, Any]] = {}
        #: node -> [(child, pointer of the keyword leading there)]
        self.in_place: dict[int, list[tuple[int, str]]] = {}
        self.descending: dict[int, list[int]] = {}

    def check(self) -> None:
        self._explore()
        self._refuse_loops()
        order = self._post_order()
        self._refuse_costly_in_place(order)
        self._refuse_deep_evaluation(order)

    def _explore(self) -> None:
        resolver = _NO_NETWORK.resolver_with_root(DRAFT202012.create_resource(self.root))
        stack: list[tuple[Any, str, Any]] = [(self.root, "", resolver)]
        #: The targets of $refs, explored once the document's own structure is (so that they have their pointers).
        targets: list[tuple[Any, str, Any]] = []
        unevaluated: str | None = None
        pattern_properties = False
        while stack or targets:
            if not stack:
                stack, targets = targets, []
            node, pointer, resolver = stack.pop()
            if not isinstance(node, dict) or id(node) in self.nodes:
                continue
            self.nodes[id(node)], self.pointers[id(node)] = node, pointer
            in_place = self.in_place.setdefault(id(node), [])
            descending = self.descending.setdefault(id(node), [])
            if "$schema" in node and node is not self.root:
                raise SchemaProblem(f"{pointer}/$schema", "a $schema inside a schema is not supported (tool "
                                    "schemas are JSON Schema 2020-12 throughout)")
            if "$dynamicRef" in node:
                raise SchemaProblem(f"{pointer}/$dynamicRef", "$dynamicRef is not supported in tool schemas")
            if isinstance(node.get("$id"), str) and node is not self.root:
                resolver = resolver.in_subresource(DRAFT202012.create_resource(node))
            for key, child, edge in _children(node, pointer):
                if not isinstance(child, dict):
                    continue  # true and false apply nothing further
                if edge == "in place":
                    in_place.append((id(child), key))
                elif edge == "descending":
                    descending.append(id(child))
                stack.append((child, key, resolver))
            if isinstance(node.get("$ref"), str):
                where = f"{pointer}/$ref"
                try:
                    resolved = resolver.lookup(node["$ref"])
                except (referencing.exceptions.Unresolvable, LookupError, TypeError, ValueError):
                    # Unresolvable, and what a pointer through a non-container raises (referencing indexes on).
                    raise SchemaProblem(
                        where, f"the $ref {_quote(node['$ref'])} does not resolve inside the schema (references "
                        "are never fetched: put what it refers to under $defs)"
                    ) from None
                if isinstance(resolved.contents, dict):
                    in_place.append((id(resolved.contents), where))
                    targets.append((resolved.contents, f"{where} target", resolved.resolver))
            for pattern_pointer, pattern in _patterns(node, pointer):
                try:
                    compile_pattern(pattern)
                except ValueError as exc:
                    raise SchemaProblem(pattern_pointer, str(exc)) from None
            if "unevaluatedProperties" in node:
                unevaluated = unevaluated or f"{pointer}/unevaluatedProperties"
            pattern_properties = pattern_properties or "patternProperties" in node
        if unevaluated is not None and pattern_properties:
            raise SchemaProblem(unevaluated, "unevaluatedProperties together with patternProperties is not supported "
                                "(its evaluation runs Python's backtracking regular expressions)")

    def _refuse_loops(self) -> None:
        """A cycle of in-place edges: validation would apply the same schemas to the same value forever."""
        state: dict[int, int] = {}  # 1: on the current path, 2: done
        for start in self.nodes:
            if state.get(start):
                continue
            path = [(start, iter(self.in_place[start]))]
            state[start] = 1
            while path:
                node, edges = path[-1]
                for child, where in edges:
                    if state.get(child) == 1:
                        raise SchemaProblem(where, f"it leads back to {self.pointers[child] or 'the root'} without "
                                            "descending into the arguments: validating would never end")
                    if not state.get(child):
                        state[child] = 1
                        path.append((child, iter(self.in_place[child])))
                        break
                else:
                    state[node] = 2
                    path.pop()

    def _refuse_costly_in_place(self, order: list[int]) -> None:
        """How many schemas apply to one value from each node, along every in-place branch (capped, so that the
        numbers stay small)."""
        cost: dict[int, int] = {}
        for node in order:
            cost[node] = min(MAX_IN_PLACE_SCHEMAS + 1, 1 + sum(cost[child] for child, _ in self.in_place[node]))
            if cost[node] > MAX_IN_PLACE_SCHEMAS:
                raise SchemaProblem(self.pointers[node], f"more than {MAX_IN_PLACE_SCHEMAS:,} schemas would apply to "
                                    "one value from here ($ref, allOf, anyOf, ... along every branch)")

    def _refuse_deep_evaluation(self, order: list[int]) -> None:
        """The longest chain of schemas validation may nest through for arguments MAX_JSON_DEPTH deep: `longest`
        for k descents left is 1 + the longest of its in-place children (k) and descending children (k - 1);
        in-place edges form no loop (checked before), so each round is a walk in post-order."""
        previous: dict[int, int] = {}
        for _ in range(MAX_JSON_DEPTH + 2):  # arguments' levels, and the keys propertyNames descends into
            longest: dict[int, int] = {}
            for node in order:
                candidates = [longest[child] for child, _ in self.in_place[node]]
                candidates += [previous.get(child, 0) for child in self.descending[node]]
                longest[node] = 1 + max(candidates, default=0)
            previous = longest
        deepest = previous.get(id(self.root), 0)
        if deepest > MAX_EVALUATION_DEPTH:
            raise SchemaProblem("", f"validation could nest through {deepest} schemas (at most "
                                f"{MAX_EVALUATION_DEPTH}): shorten its chains of $ref, allOf, anyOf, ...")

    def _post_order(self) -> list[int]:
        """Nodes with every in-place child before its parent."""
        order: list[int] = []
        done: set[int] = set()
        for start in self.nodes:
            if start in done:
                continue
            path = [(start, iter(self.in_place[start]))]
            done.add(start)
            while path:
                node, edges = path[-1]
                for child, _ in edges:
                    if child not in done:
                        done.add(child)
                        path.append((child, iter(self.in_place[child])))
                        break
                else:
                    order.append(node)
                    path.pop()
        return order


def _children(node: dict[str, Any], pointer: str) -> Iterator[tuple[str, Any, str]]:
    """(pointer, subschema, "in place" | "descending" | "held") for each subschema under a keyword."""
    for keywords, edge, shape in (
        (_IN_PLACE_ONE, "in place", "one"), (_IN_PLACE_LIST, "in place", "list"), (_IN_PLACE_MAP, "in place", "map"),
        (_DESCEND_ONE, "descending", "one"), (_DESCEND_LIST, "descending", "list"),
        (_DESCEND_MAP, "descending", "map"), (_HOLDERS, "held", "map"),
    ):
        for keyword in keywords:
            value = node.get(keyword)
            base = f"{pointer}/{_escape(keyword)}"
            if shape == "one" and isinstance(value, dict | bool):
                yield base, value, edge
            elif shape == "list" and isinstance(value, list):
                yield from ((f"{base}/{index}", item, edge) for index, item in enumerate(value))
            elif shape == "map" and isinstance(value, dict):
                yield from ((f"{base}/{_escape(key)}", item, edge) for key, item in value.items())


def _patterns(node: dict[str, Any], pointer: str) -> Iterator[tuple[str, str]]:
    if isinstance(node.get("pattern"), str):
        yield f"{pointer}/pattern", node["pattern"]
    if isinstance(node.get("patternProperties"), dict):
        for pattern in node["patternProperties"]:
            yield f"{pointer}/patternProperties/{_escape(pattern)}", pattern


# --- messages ---------------------------------------------------------------------------------------------------


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _pointer(path: Any) -> str:
    return "".join(f"/{_escape(str(part))}" for part in path)


def _cut(text: str, limit: int = MAX_QUOTE_CHARS) -> str:
    """The text, or its start and its end around an ellipsis (a message's end says what is wrong)."""
    if len(text) <= limit:
        return text
    return text[: limit // 2] + "…" + text[-(limit // 2 - 1):]


def _quote(value: Any) -> str:
    return _cut(repr(value))


def _describe(error: ValidationError) -> str:
    """'at x: 'abc' is not of type 'number'' (no location for problems of the arguments object itself)."""
    location = ""
    for part in error.absolute_path:
        location += f"[{part}]" if isinstance(part, int) else (f".{part}" if location else str(part))
    message = _cut(error.message, 2 * MAX_QUOTE_CHARS)
    return f"at {location}: {message}" if location else message
