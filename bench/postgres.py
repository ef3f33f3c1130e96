"""The stack on PostgreSQL, for `python -m bench --database postgres`: one throwaway server for the whole bench,
started as the tests and `python -m bench.store` start theirs (tests/support/postgres.py), and for each stack a
new database per service (runs, tools, agents), dropped when that stack has stopped.

The server's processes (postmaster, its background processes and a backend per connection) do the database's
work that SQLite does inside the services, so their CPU counts as the stack's: `PostgresServer.pid` is the
postmaster, measured with every process under it (bench/stack.py `tree_cpu_seconds`).
"""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from bench.results import progress
from bench.store.databases import create_postgres_database, drop_postgres_database
from services.common.db.database import asyncpg_dsn

#: Each service's database setting, and the name its databases start with.
SERVICE_DATABASES = {
    "DATABASE_URL": "bench_runs",
    "TOOLS_DATABASE_URL": "bench_tools",
    "AGENTS_DATABASE_URL": "bench_agents",
}


@dataclass(frozen=True)
class PostgresServer:
    #: A database on the server (postgresql+asyncpg://...); the services' own databases are made beside it.
    url: str
    #: The postmaster's pid: the server's other processes are its children.
    pid: int
    data_directory: Path

    @contextmanager
    def service_databases(self) -> Iterator[dict[str, str]]:
        """The services' database settings, each naming a new, empty database; the databases are dropped with
        the block (whoever is still connected)."""
        settings: dict[str, str] = {}
        try:
            for setting, prefix in SERVICE_DATABASES.items():
                settings[setting] = asyncio.run(create_postgres_database(self.url, prefix))
            progress(f"postgresql: databases {_names(settings)}")
            yield settings
        finally:
            for url in settings.values():
                asyncio.run(drop_postgres_database(url))
            progress(f"postgresql: dropped {_names(settings)}")


@contextmanager
def throwaway_server() -> Iterator[PostgresServer]:
    """A new PostgreSQL server on a free loopback port (fsync off, as for the tests), stopped and deleted with
    the block. RuntimeError when PostgreSQL is not installed."""
    from tests.support.postgres import find_postgres_bin, postgres_server

    if find_postgres_bin() is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql); or run with --database sqlite")
    progress("postgresql: starting a throwaway server")
    with postgres_server() as url:
        data_directory = Path(asyncio.run(_setting(url, "data_directory")))
        pid = int((data_directory / "postmaster.pid").read_text().split()[0])
        progress(f"postgresql: server ready, postmaster {pid}, data in {data_directory}")
        yield PostgresServer(url, pid, data_directory)
    progress(f"postgresql: server {pid} stopped and its data deleted")


def _names(settings: dict[str, str]) -> str:
    return ", ".join(str(make_url(url).database) for url in settings.values())


async def _setting(url: str, name: str) -> str:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await connection.fetchval("SELECT current_setting($1)", name)
    finally:
        await connection.close()
