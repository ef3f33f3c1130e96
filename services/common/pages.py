"""Pages of a listing, as every service's List methods hand them out (AIP-158): the page size a request may ask for,
and opaque page tokens (URL-safe base64 of a small JSON object naming where the last page ended). No gRPC here."""

import base64
import json
from typing import Any

from services.common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
INVALID_PAGE_TOKEN = "page_token is not valid for this request; start again without a page_token"


def checked_page_size(page_size: int) -> int:
    """The page size to use: the default for 0, at most MAX_PAGE_SIZE; InvalidArgument when negative."""
    if page_size < 0:
        raise InvalidArgument(f"page_size must be >= 0, got {page_size}")
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode("ascii")


def decode_token(token: str) -> dict[str, Any]:
    """The payload of a token `encode_token` made; InvalidArgument for anything else."""
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except ValueError:  # binascii.Error, UnicodeError and JSONDecodeError are ValueErrors
        raise InvalidArgument(INVALID_PAGE_TOKEN) from None
    if not isinstance(payload, dict):
        raise InvalidArgument(INVALID_PAGE_TOKEN)
    return payload
