"""Names of MCP servers, and the tool ids their tools get.

A tool's id is the function name the model calls, so it must match OpenAI's rule ``^[a-zA-Z0-9_-]{1,64}$``. An MCP
tool's id is::

    mcp__<server>__<tool>

* ``<server>`` is the server's registered name: a lowercase letter, then lowercase letters, digits and single
  underscores, at most 32 characters, not ending with an underscore. With no ``__`` inside it and no ``_`` at its
  end, the first ``__`` after ``mcp__`` always ends the server part: two servers' tools can never share an id.
* ``<tool>`` is the tool's name on its server when that name is valid in a function name and the whole id fits
  in 64 characters: ``mcp__github__create_issue``.
* Otherwise the characters outside ``[a-zA-Z0-9_-]`` are replaced by ``_``, the name is cut so that the id is 64
  characters, and ``_`` plus the first 8 hex digits of the SHA-256 of the tool's original name are appended:
  ``mcp__files__read_file_3f2a9c1e`` for ``read.file``. The hash is of the name alone, so the id is the same on
  every connection and every restart (saved agents and stored runs keep naming it), and two names that map to the
  same characters still get different ids.
* Within one server, two tools whose ids would still be equal (only an adversarial listing can do it: a valid
  name that spells out another one's mapped name and hash) are refused: the second is skipped, and logged.

The ``mcp__`` prefix is reserved for MCP tools: a plugin tool with such a name is skipped. Built-in and plugin
tools keep their own names as ids.
"""

import hashlib
import re

#: OpenAI's function names; the tool id is the function name.
FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
#: What a server name looks like (the namespace of its tools).
SERVER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
#: Every MCP tool id starts with this; plugin tools may not.
MCP_PREFIX = "mcp__"
#: The longest function name.
MAX_ID_LENGTH = 64
_NOT_ALLOWED = re.compile(r"[^a-zA-Z0-9_-]")
_HASH_LENGTH = 8


def server_name_problem(name: str) -> str | None:
    """Why `name` cannot name an MCP server, or None when it can."""
    if not SERVER_NAME.match(name):
        return (
            f"name {name!r} must be a lowercase letter followed by at most 31 lowercase letters, digits or "
            "underscores ([a-z][a-z0-9_]{0,31})"
        )
    if "__" in name or name.endswith("_"):
        return f"name {name!r} must not contain '__' nor end with '_' (tool ids are mcp__<server>__<tool>)"
    return None


def tool_id(server: str, tool_name: str) -> str:
    """The id (and function name) of the tool `tool_name` of the MCP server `server` (see the module's docstring)."""
    prefix = f"{MCP_PREFIX}{server}__"
    plain = prefix + tool_name
    if tool_name and FUNCTION_NAME.match(plain):
        return plain
    digest = hashlib.sha256(tool_name.encode()).hexdigest()[:_HASH_LENGTH]
    room = MAX_ID_LENGTH - len(prefix) - 1 - _HASH_LENGTH
    mapped = _NOT_ALLOWED.sub("_", tool_name)[:room]
    return f"{prefix}{mapped}_{digest}"


def server_of(tool_id_: str) -> str | None:
    """The server name an MCP tool id starts with, or None for an id that is not an MCP tool's."""
    if not tool_id_.startswith(MCP_PREFIX):
        return None
    server, separator, _ = tool_id_[len(MCP_PREFIX):].partition("__")
    return server if separator and server else None
