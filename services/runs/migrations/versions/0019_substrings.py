"""Substring search (issue 21): each database's trigram index of the user query and the final answer
(services/runs/full_text.py), filled from the runs already stored.

Revision ID: 0019
Revises: 0018
"""

from alembic import op

from services.runs.full_text import drop_substrings, install_substrings

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    install_substrings(op.get_bind())


def downgrade() -> None:
    drop_substrings(op.get_bind())
