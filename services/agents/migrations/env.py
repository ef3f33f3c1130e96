"""Alembic environment of the agents service's schema. Run by `services.common.db.database.migrate`, which hands
over an open connection; `alembic` on the command line is not needed to use the service.

The agents tables may live in the runs service's PostgreSQL database, so this schema keeps its version in a
table of its own (`agents_alembic_version`; the runs schema uses Alembic's default `alembic_version`), and
autogenerate looks at this schema's tables only, never proposing to drop another service's.
"""

from typing import Any

from alembic import context

from services.agents.models import VERSION_TABLE, Base


def _ours(name: str | None, type_: str, parent_names: Any) -> bool:
    return type_ != "table" or name in Base.metadata.tables


connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    include_name=_ours,
    # SQLite alters tables by copying them; batch mode does that for every operation.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
