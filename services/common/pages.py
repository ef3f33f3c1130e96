"""Pages of a listing, as every service's List methods hand them out (AIP-158): the page size a request may ask for,
and opaque page tokens. No gRPC here.

A page token is a position (where the last page ended: a few named strings and integers) signed with HMAC-SHA256
together with the request that made it: the listing's name and its filters (state, owner, name_contains, ...). A
token the server did not issue, or issued for another listing or other filters, or altered in any byte, is refused
before anything in it is parsed; the position's values are then checked again against what the database columns
can hold, so a token can never carry a value that makes a query fail.

The key comes from the settings (PageTokenSettings), so that every replica of a service accepts the others' tokens.
"""

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Self

from pydantic import Field, SecretStr, field_validator

from services.common.auth import AuthSettings
from services.common.errors import InvalidArgument

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: Longer than any token this module makes (the longest position is a 200-character display name); a longer one is
#: refused before it is decoded or hashed.
MAX_PAGE_TOKEN_CHARS = 4096
#: The range of an Integer column on PostgreSQL (and so of every revision and thread turn).
INT32_MAX = 2**31 - 1
#: Shortest PLATFORM_PAGE_TOKEN_KEY accepted: 128 bits of a random key written in hex (more in base64).
MIN_KEY_CHARS = 32

_MAC_BYTES = hashlib.sha256().digest_size
_HKDF_INFO = b"agentplatform page tokens v1"


def checked_page_size(page_size: int) -> int:
    """The page size to use, the same for every list method (AIP-158): DEFAULT_PAGE_SIZE for 0, at most
    MAX_PAGE_SIZE; InvalidArgument when negative."""
    if page_size < 0:
        raise InvalidArgument(f"page_size must be >= 0, got {page_size}")
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


class PageTokenSettings(AuthSettings):
    """The key page tokens are signed with. Every replica of a service must have the same one."""

    #: A random secret of at least 32 characters (`python -c "import secrets; print(secrets.token_hex(32))"`).
    #: Unset, the key is derived from PLATFORM_SERVICE_TOKEN, which every replica shares already; with neither (only
    #: in development mode), each process makes a random key, so tokens do not survive a restart.
    page_token_key: SecretStr = Field(SecretStr(""), alias="PLATFORM_PAGE_TOKEN_KEY")

    @field_validator("page_token_key")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() and len(value.get_secret_value()) < MIN_KEY_CHARS:
            raise ValueError(f"must be at least {MIN_KEY_CHARS} characters of a random secret")
        return value


class PagePosition:
    """The position a verified token names; each read checks the value's type and range, and answers the same
    InvalidArgument as a forged token when it does not fit."""

    def __init__(self, values: dict[str, object], message: str) -> None:
        self._values = values
        self._message = message

    def _get(self, name: str) -> object:
        if name not in self._values:
            raise InvalidArgument(self._message)
        return self._values[name]

    def text(self, name: str, max_chars: int = 1000) -> str:
        value = self._get(name)
        if not isinstance(value, str) or len(value) > max_chars:
            raise InvalidArgument(self._message)
        return value

    def integer(self, name: str, low: int = 0, high: int = INT32_MAX) -> int:
        value = self._get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise InvalidArgument(self._message)
        return value

    def uuid(self, name: str) -> str:
        try:
            return str(uuid.UUID(self.text(name, 36)))
        except ValueError:
            raise InvalidArgument(self._message) from None

    def time(self, name: str) -> datetime:
        """An aware UTC time that exists (years 1 to 9999 in UTC, whatever offset the text had)."""
        try:
            moment = datetime.fromisoformat(self.text(name, 40))
            if moment.tzinfo is None:
                raise ValueError("naive")
            return moment.astimezone(UTC)
        except (ValueError, OverflowError):
            raise InvalidArgument(self._message) from None


class PageTokens:
    """Issues and reads the page tokens of every listing of a service, with one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a page token key must have at least 128 bits")
        self._key = key

    @classmethod
    def from_settings(cls, settings: PageTokenSettings) -> Self:
        """The key the settings name (PLATFORM_PAGE_TOKEN_KEY, else derived from PLATFORM_SERVICE_TOKEN), or one
        of this process's own when neither is set (development mode)."""
        secret = settings.page_token_key.get_secret_value() or settings.service_token.get_secret_value()
        if not secret:
            log.info(
                "page tokens are signed with a key of this process only: a next_page_token does not survive a "
                "restart and other replicas refuse it; set PLATFORM_PAGE_TOKEN_KEY (or PLATFORM_SERVICE_TOKEN)"
            )
            return cls.for_this_process()
        # Imported here, once per process at start-up: the engine imports this module for MAX_PAGE_SIZE alone and
        # never issues page tokens, and cryptography's native library is about 7 MiB of its RSS (issue 22).
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        # HKDF, so that the key is independent of the service token it may come from: a token's MAC tells nothing
        # about the secret that authenticates the platform's services.
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret.encode())
        return cls(key)

    @classmethod
    def for_this_process(cls) -> Self:
        """Tokens no other process accepts (development mode and tests)."""
        return cls(_PROCESS_KEY)

    def issue(self, listing: str, request: Mapping[str, object], position: Mapping[str, str | int]) -> str:
        """The next_page_token of a `listing` (its API name, such as "ListRuns") page made for `request` (its
        filters, by name) whose last item was at `position`."""
        payload = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
        return base64.urlsafe_b64encode(self._mac(listing, request, payload) + payload).decode("ascii")

    def read(self, token: str, listing: str, request: Mapping[str, object]) -> PagePosition:
        """The position `token` names, if this service issued it for `listing` with the same `request`; else
        InvalidArgument saying what to do."""
        message = (
            f"page_token is not valid for this request: it is not a next_page_token that {listing} returned, or it "
            "was altered, or the request's filters differ from those of the request that returned it; send it "
            "unchanged with the same filters, or send no page_token to start again from the first page"
        )
        if len(token) > MAX_PAGE_TOKEN_CHARS:
            raise InvalidArgument(message)
        try:
            raw = base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True)
        except (UnicodeEncodeError, binascii.Error):
            raise InvalidArgument(message) from None
        if base64.urlsafe_b64encode(raw) != token.encode("ascii"):
            raise InvalidArgument(message)  # one spelling per token (no extra padding), as issue() writes it
        mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if len(mac) < _MAC_BYTES or not hmac.compare_digest(mac, self._mac(listing, request, payload)):
            raise InvalidArgument(message)
        # Signed by this service, so a flat object of strings and integers; checked anyway, as cheaply.
        try:
            values = json.loads(payload)
        except ValueError:
            raise InvalidArgument(message) from None
        if not isinstance(values, dict):
            raise InvalidArgument(message)
        return PagePosition(values, message)

    def _mac(self, listing: str, request: Mapping[str, object], payload: bytes) -> bytes:
        # The request goes into the MAC, not the token: a token is bound to its listing and filters without
        # carrying them, and a length prefix keeps the parts from running into each other.
        bound = json.dumps([listing, dict(request)], separators=(",", ":"), sort_keys=True, default=str).encode()
        message = len(bound).to_bytes(4, "big") + bound + payload
        return hmac.new(self._key, message, hashlib.sha256).digest()


_PROCESS_KEY = secrets.token_bytes(32)
