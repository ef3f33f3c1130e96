"""The refusals of tool schemas and arguments, and how their messages point and quote: the JSON pointer of a
schema's bad part, a value cut to a readable length. Used by every module of services.tools.schemas."""

from typing import Any

from jsonschema.exceptions import ValidationError

#: How many problems one validation collects at most, how many an answer lists, and how much of a value a problem
#: quotes.
MAX_ERRORS = 1000
MAX_PROBLEMS = 20
MAX_QUOTE_CHARS = 200


class SchemaProblem(ValueError):
    """A schema that is refused; `pointer` is the JSON pointer of the bad part ("" for the schema itself)."""

    def __init__(self, pointer: str, message: str) -> None:
        super().__init__(f"at {pointer}: {message}" if pointer else message)
        self.pointer = pointer


class ValidationTooCostly(ValueError):
    """Validating the arguments took more than validator.MAX_VALIDATION_STEPS keyword evaluations."""


def escape(key: str) -> str:
    """A key as one JSON pointer segment."""
    return key.replace("~", "~0").replace("/", "~1")


def pointer(path: Any) -> str:
    """The JSON pointer of a path of keys and indexes."""
    return "".join(f"/{escape(str(part))}" for part in path)


def cut(text: str, limit: int = MAX_QUOTE_CHARS) -> str:
    """The text, or its start and its end around an ellipsis (a message's end says what is wrong)."""
    if len(text) <= limit:
        return text
    return text[: limit // 2] + "…" + text[-(limit // 2 - 1):]


def quote(value: Any) -> str:
    """A value as a message quotes it: its repr, cut."""
    return cut(repr(value))


def describe(error: ValidationError) -> str:
    """'at x: 'abc' is not of type 'number'' (no location for problems of the arguments object itself)."""
    location = ""
    for part in error.absolute_path:
        location += f"[{part}]" if isinstance(part, int) else (f".{part}" if location else str(part))
    message = cut(error.message, 2 * MAX_QUOTE_CHARS)
    return f"at {location}: {message}" if location else message
