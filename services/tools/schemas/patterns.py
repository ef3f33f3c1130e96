"""Schema patterns on RE2, the linear-time engine: `pattern` and `patternProperties` someone else wrote are
compiled (once, cached) and run with it, never with Python's backtracking `re`. Used by the bounded validator
(services.tools.schemas.validator) and by the structure checks, which refuse a pattern RE2 cannot run."""

import functools
from typing import Any

import re2

from services.tools.schemas.problems import quote

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
            f"the pattern {quote(pattern)} cannot run on RE2, the linear-time engine used for schema patterns "
            f"(backreferences and lookaround are not supported): {reason}"
        ) from None
    except UnicodeError:
        raise ValueError(f"the pattern {quote(pattern)} is not valid Unicode text") from None


def search(pattern: str, text: str) -> bool:
    """Whether `pattern` matches somewhere in `text`."""
    try:
        return compile_pattern(pattern).search(text) is not None
    except UnicodeError:  # a lone surrogate in the text: RE2 reads UTF-8, and such a text matches nothing
        return False
