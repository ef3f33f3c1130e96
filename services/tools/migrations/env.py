"""Alembic environment of the tools service's schema (per-tool settings, MCP servers). Run by
`services.common.db.database.migrate`, which hands over an open connection.

The tools tables may share a database with another service's, so this schema keeps its version in a table of its
own (`tools_alembic_version`), and autogenerate looks at this schema's tables only.
"""

from typing import Any

from alembic import context

from services.tools.tables import SCHEMA, VERSION_TABLE


def _ours(name: str | None, type_: str, parent_names: Any) -> bool:
    return type_ != "table" or name in SCHEMA.tables


connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SCHEMA,
    version_table=VERSION_TABLE,
    include_name=_ours,
    # SQLite alters tables by copying them; batch mode does that for every operation.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
