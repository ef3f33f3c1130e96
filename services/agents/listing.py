"""Listing helpers the agents service's stores share (agents, workflows): page sizes, opaque page tokens, and the
lower-cased name listings sort and search by (no gRPC here)."""

import base64
import json
from typing import Any

from services.common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: A page ends early rather than grow past this (gRPC's default message limit is 4 MiB, and one agent's
#: instructions alone may take 128 KB).
MAX_PAGE_BYTES = 1024 * 1024
INVALID_PAGE_TOKEN = "page_token is not valid for this request; start again without a page_token"


def name_key(display_name: str) -> str:
    """What listings sort and search by: the name in lower case, folded here rather than by the database, whose
    lower() differs (SQLite folds ASCII only)."""
    return display_name.lower()


def checked_page_size(page_size: int) -> int:
    if page_size < 0:
        raise InvalidArgument(f"page_size must be >= 0, got {page_size}")
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode("ascii")


def decode_token(token: str) -> dict[str, Any]:
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except ValueError:  # binascii.Error, UnicodeError and JSONDecodeError are ValueErrors
        raise InvalidArgument(INVALID_PAGE_TOKEN) from None
    if not isinstance(payload, dict):
        raise InvalidArgument(INVALID_PAGE_TOKEN)
    return payload
