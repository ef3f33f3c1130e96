"""One process per SQLite database file: SQLite is the single-node default, and a second replica of a service on
the same file would split what only one process may hold (the runs service's live watches, cancel notices and
lease reaper live in its memory). A service claims its file at start with an exclusive lock on `<file>.lock`
(flock: released by the kernel when the process ends, however it ends), and a second claim fails at once with a
message naming the setting. Several replicas need PostgreSQL."""

import fcntl
import os
from pathlib import Path

from sqlalchemy.engine import make_url

from services.common.settings import SettingsError


class SqliteClaim:
    """The exclusive claim of a SQLite database file; `release` (or the process ending) gives it up."""

    def __init__(self, descriptor: int) -> None:
        self._descriptor: int | None = descriptor

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing the descriptor drops its flock
            self._descriptor = None


def claim_sqlite_file(url: str, setting: str) -> SqliteClaim | None:
    """Claim the SQLite database file `url` names (None for PostgreSQL or an in-memory database); SettingsError
    naming `setting` when another process holds it."""
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise SettingsError(
            f"{setting}: another process already serves the SQLite database {path}; SQLite serves one replica. "
            "Stop the other one, give this one its own file, or use PostgreSQL (postgresql+asyncpg://...) for "
            "several replicas"
        ) from None
    return SqliteClaim(descriptor)
