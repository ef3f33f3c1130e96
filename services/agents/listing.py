"""Listing helpers the agents service's stores share (agents, workflows): the page byte limit and the lower-cased
name listings sort and search by (no gRPC here). Page sizes and page tokens are services/common/pages.py's."""

from services.common.pages import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE  # noqa: F401 (importable from here, as before)

#: A page ends early rather than grow past this (gRPC's default message limit is 4 MiB, and one agent's
#: instructions alone may take 128 KB).
MAX_PAGE_BYTES = 1024 * 1024


def name_key(display_name: str) -> str:
    """What listings sort and search by: the name in lower case, folded here rather than by the database, whose
    lower() differs (SQLite folds ASCII only)."""
    return display_name.lower()
