"""The bounded Draft 2020-12 validator of tool arguments: every keyword evaluation counts against a budget
(MAX_VALIDATION_STEPS, set per validation with `step_budget`), pattern keywords run on RE2, uniqueItems is linear,
and `$ref`s resolve only inside the schema (NO_NETWORK). Used by services.tools.schemas.checks, which builds one
per checked schema, and by the structure checks (the same no-network registry)."""

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import referencing.exceptions
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from services.tools.schemas.patterns import search
from services.tools.schemas.problems import MAX_PROBLEMS, ValidationTooCostly, quote

#: The most keywords one validation may evaluate (tens of thousands a second): enough for arguments a model writes
#: (an array of a few thousand small objects), and a bound on what any schema and arguments can cost together.
MAX_VALIDATION_STEPS = 50_000


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
    if validator.is_type(instance, "string") and not search(pattern, instance):
        yield ValidationError(f"{quote(instance)} does not match {quote(pattern)}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    extras = [
        key for key in instance if key not in properties and not any(search(pattern, key) for pattern in patterns)
    ]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        shown = ", ".join(quote(extra) for extra in sorted(extras)[:MAX_PROBLEMS])
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
            yield ValidationError(f"{quote(instance)} has non-unique elements")
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



@contextmanager
def step_budget(steps: int = MAX_VALIDATION_STEPS) -> Iterator[None]:
    """Count the keyword evaluations of BoundedValidator validations in this context (thread, task) against
    `steps`; past it, ValidationTooCostly."""
    token = _BUDGET.set(_Budget(steps))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _refuse_retrieval(uri: str) -> Resource[Any]:
    # referencing's classes are attrs classes made by its own `frozen` wrapper, which mypy's attrs plugin does not
    # recognise: the generated __init__ (here `ref`, and `retrieve` below) is unknown to it.
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]


#: Resolves what the schema itself holds, and nothing else: retrieval refuses, so no $ref ever reaches a network.
NO_NETWORK = Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]
