"""Checks of what callers send that every store applies the same way: text fields, free-form labels, UUID ids.
Each refusal is InvalidArgument naming the field, so the caller knows what to fix (no gRPC here)."""

import uuid

from services.common.errors import InvalidArgument

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512


def check_text(field: str, value: str, max_chars: int, *, required: bool = False) -> None:
    """A text field: not blank when required, at most `max_chars` characters, no NUL characters (which
    PostgreSQL cannot store, so SQLite must not either)."""
    if required and not value.strip():
        raise InvalidArgument(f"{field} is required and must not be blank")
    if len(value) > max_chars:
        raise InvalidArgument(f"{field} is {len(value)} characters long; the limit is {max_chars}")
    if "\x00" in value:
        raise InvalidArgument(f"{field} contains a NUL character (\\x00), which cannot be stored")


def check_metadata(metadata: dict[str, str], field: str = "metadata") -> None:
    """Free-form labels: at most 16 pairs, keys of 1 to 64 characters, values of at most 512."""
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidArgument(f"{field} has {len(metadata)} pairs; at most {MAX_METADATA_PAIRS}")
    for key, value in metadata.items():
        if not key:
            raise InvalidArgument(f"{field} keys must not be empty")
        check_text(f"{field} key {key[:64]!r}", key, MAX_METADATA_KEY_CHARS)
        check_text(f"{field}[{key!r}]", value, MAX_METADATA_VALUE_CHARS)


def parse_uuid(value: str, field: str, kind: str) -> str:
    """The canonical form of a `kind` id (a UUID, e.g. kind "run"); InvalidArgument when empty or not a UUID."""
    if not value:
        raise InvalidArgument(f"{field} is required")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument(f"{field} {value[:100]!r} is not a valid {kind} id (a UUID)") from None
