"""Names of HTTP tools, and their ids.

An HTTP tool's id is the function name the model calls: ``http__<name>``, where ``<name>`` is a lowercase letter,
then lowercase letters, digits and single underscores, at most 32 characters, not ending with an underscore (the
rule of MCP server names). The id is then at most 38 characters of ``[a-z0-9_]``: a valid OpenAI function name.
The ``http__`` prefix is reserved for HTTP tools: a plugin tool with such a name is skipped.
"""

import re

#: What an HTTP tool's name looks like.
NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
#: Every HTTP tool id starts with this; plugin tools may not.
HTTP_PREFIX = "http__"


def name_problem(name: str) -> str | None:
    """Why `name` cannot name an HTTP tool, or None when it can."""
    if not NAME.match(name):
        return (
            f"name {name!r} must be a lowercase letter followed by at most 31 lowercase letters, digits or "
            "underscores ([a-z][a-z0-9_]{0,31})"
        )
    if "__" in name or name.endswith("_"):
        return f"name {name!r} must not contain '__' nor end with '_'"
    return None


def tool_id(name: str) -> str:
    """The id (and function name) of the HTTP tool `name`."""
    return HTTP_PREFIX + name


def name_of(tool_id_: str) -> str | None:
    """The name an HTTP tool id carries, or None for an id that is not an HTTP tool's."""
    if not tool_id_.startswith(HTTP_PREFIX):
        return None
    return tool_id_[len(HTTP_PREFIX):] or None
