"""A caller's path in a workspace, checked as text before anything is opened: relative, at most MAX_PATH_CHARS
characters and MAX_NAME_BYTES bytes a name, no NUL, and no ".." that climbs above the workspace; and how a path is
repeated in messages (`shown`: never the server's folders). Used by the file_io plugin; opening the checked names is
services.tools.workspaces.beneath's."""

from dataclasses import dataclass

from services.common.errors import InvalidArgument

#: Longest path accepted, in characters, and longest name in it, in UTF-8 bytes (Linux's NAME_MAX).
MAX_PATH_CHARS = 1024
MAX_NAME_BYTES = 255
#: How much of a caller's path an error message repeats.
SHOWN_PATH_CHARS = 100


def shown(text: str) -> str:
    """`text` fit for an error message: unprintable characters escaped, cut to about SHOWN_PATH_CHARS."""
    parts: list[str] = []
    size = 0
    for char in text:
        if size >= SHOWN_PATH_CHARS:
            return "".join(parts) + "…"
        part = char if char.isprintable() else ascii(char)[1:-1]
        parts.append(part)
        size += len(part)
    return "".join(parts)


@dataclass(frozen=True)
class WorkspacePath:
    """A caller's path, checked as text: the names below the workspace it leads to ("." dropped, ".." applied)."""

    #: The path as the caller gave it, ready for messages (see `shown`).
    given: str
    names: tuple[str, ...]

    @property
    def relative(self) -> str:
        """The normalised path relative to the workspace ("." for the workspace itself)."""
        return "/".join(self.names) or "."


def parse_path(path: str) -> WorkspacePath:
    """Check `path` as text and split it into names; InvalidArgument saying what is wrong with it."""
    given = shown(path)
    if "\x00" in path:
        raise InvalidArgument(f"path '{given}' must not contain NUL characters")
    if len(path) > MAX_PATH_CHARS:
        raise InvalidArgument(
            f"path '{given}' is {len(path)} characters long; file_io takes paths of at most {MAX_PATH_CHARS}"
        )
    outside = InvalidArgument(f"path '{given}' is outside the tools workspace; use a path relative to it")
    if path.startswith("/"):
        raise outside
    names: list[str] = []
    for name in path.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if not names:
                raise outside
            names.pop()
            continue
        try:
            size = len(name.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidArgument(f"path '{given}' is not valid text (it holds unpaired surrogates)") from None
        if size > MAX_NAME_BYTES:
            raise InvalidArgument(
                f"a name in path '{given}' is {size} bytes long; names may be at most {MAX_NAME_BYTES} bytes (UTF-8)"
            )
        names.append(name)
    return WorkspacePath(given, tuple(names))
