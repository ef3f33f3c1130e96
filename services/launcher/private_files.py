"""The launcher's var dir is private to the user who runs `make run`: it holds the Envoy config, generated keys,
the services' SQLite databases (users' runs and threads) and file_io's workspace. Every directory in it is 0700
and every file 0600, made so at the root rather than file by file:

- the launcher sets the umask PRIVATE_UMASK for itself, and so for every process it starts (services, Envoy, tool
  workers, MCP servers), so whatever they create is private whoever creates it;
- the files the launcher writes itself are created with an explicit mode (`write_private`), which holds even in a
  process with another umask (the tests build the stack in their own process);
- `make_private` takes group and other bits off what an earlier version left in the var dir.
"""

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

#: No permission for group or others on anything created by the launcher or its children.
PRIVATE_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def make_private(folder: Path) -> None:
    """Create `folder` (0700) if needed, and take group and other permissions off it and everything in it.
    Symbolic links are neither followed nor changed (their own mode means nothing on Linux)."""
    folder.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    _tighten(folder)
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in (*dirs, *files):
            _tighten(Path(root) / name)


def _tighten(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:  # gone meanwhile (a service's SQLite journal)
        return
    if stat.S_ISLNK(mode) or not mode & PRIVATE_UMASK:
        return
    try:
        path.chmod(stat.S_IMODE(mode) & ~PRIVATE_UMASK)
    except FileNotFoundError:
        pass


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, which is 0600 from its creation on (an existing file is made 0600 before it is
    written). A symbolic link at `path` is refused rather than followed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        file.write(text)


def private_secrets(path: Path, make: Callable[[], str] = lambda: secrets.token_urlsafe(32)) -> list[str]:
    """The secrets kept in `path` (0600), one per non-blank line: a new one made with `make` and stored on first
    use. For secrets that must outlive a restart of the launcher (keys that data is encrypted with); a person may
    add lines (a key being rotated in)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    except FileExistsError:
        _tighten(path)
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            raise SystemExit(f"{path} is empty: delete it to have a new secret made, or put the secret back") from None
        return lines
    value = make()
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(value + "\n")
    return [value]
