"""The database every stateful service shares: the SQLAlchemy engine, sessions and Alembic set-up (database) and
the single writer that batches commits (group_commit)."""
