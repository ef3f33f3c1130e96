"""`python -m services.migrate`: bring every service's schema (runs, tools, agents) to its newest Alembic revision
and exit. The deployment runs it before the services start (deploy/: the migration Job and each Deployment's
initContainer); the services still migrate at start, which finds the schemas at head and changes nothing."""
