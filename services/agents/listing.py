"""Listing helpers the agents service's stores share (agents, workflows): page sizes, opaque page tokens, and the
lower-cased name listings sort and search by (no gRPC here)."""

from services.common.pages import (  # noqa: F401 (the agents stores read them from here)
    DEFAULT_PAGE_SIZE,
    INVALID_PAGE_TOKEN,
    MAX_PAGE_SIZE,
    checked_page_size,
    decode_token,
    encode_token,
)

#: A page ends early rather than grow past this (gRPC's default message limit is 4 MiB, and one agent's
#: instructions alone may take 128 KB).
MAX_PAGE_BYTES = 1024 * 1024


def name_key(display_name: str) -> str:
    """What listings sort and search by: the name in lower case, folded here rather than by the database, whose
    lower() differs (SQLite folds ASCII only)."""
    return display_name.lower()
