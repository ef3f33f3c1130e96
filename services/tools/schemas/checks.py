"""The two checks of services.tools.schemas: `check_schema`, once where a schema enters, and `argument_problems`,
on every call's arguments. Both go through one cache of checked schemas and their validators, by the schema's
sorted JSON text."""

import functools
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import referencing.exceptions
from jsonschema import FormatChecker
from jsonschema.exceptions import SchemaError

from services.common.json_values import MAX_JSON_DEPTH, JsonInputError, check_depth
from services.tools.schemas.problems import MAX_ERRORS, MAX_PROBLEMS, SchemaProblem, cut, describe, pointer
from services.tools.schemas.structure import SchemaGraph
from services.tools.schemas.validator import MAX_VALIDATION_STEPS, NO_NETWORK, BoundedValidator, step_budget

#: The most JSON one schema may weigh, and its deepest nesting (JSON levels, keywords and all).
MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 64


def check_schema(schema: Any) -> dict[str, Any]:
    """The schema as plain JSON (a fresh copy), checked as the package's docstring says; SchemaProblem otherwise."""
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
    try:
        with step_budget(MAX_VALIDATION_STEPS):
            found = list(itertools.islice(validator.iter_errors(dict(arguments)), MAX_ERRORS))
    except referencing.exceptions.Unresolvable as exc:  # a schema stored before check_schema refused such refs
        raise SchemaProblem("", f"its $ref {exc} does not resolve inside the schema (nothing is fetched)") from None
    errors = sorted(found, key=lambda error: list(map(str, error.absolute_path)))
    # One problem once: branches of allOf/anyOf can report the same one many times.
    problems = list(dict.fromkeys(describe(error) for error in errors))
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


#: No format is asserted when a schema is checked against the metaschema: its "regex" check would compile patterns
#: with Python's `re`; SchemaGraph compiles them with RE2 instead, naming each one's pointer.
_SCHEMA_FORMATS = FormatChecker(formats=())


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
        raise SchemaProblem(pointer(exc.absolute_path), _schema_error_message(exc)) from None
    except RecursionError:
        raise SchemaProblem("", "it nests too deeply to be checked") from None
    if schema.get("type") != "object":
        raise SchemaProblem("/type", 'it must describe an object ({"type": "object", ...}): arguments are an object')
    SchemaGraph(schema).check()
    return _Compiled(BoundedValidator(schema, registry=NO_NETWORK))


def _schema_error_message(error: SchemaError) -> str:
    return f"not a valid JSON schema (2020-12): {cut(error.message)}"

