"""Alembic environment of the runs service's schema. Run by `services.common.db.database.migrate`, which hands
over an open connection; `alembic` on the command line is not needed to use the service."""

from alembic import context

from services.runs.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite alters tables by copying them; batch mode does that for every operation.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
