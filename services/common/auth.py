"""Authentication: API keys (stored hashed), identities asserted by the platform's own services, and
development mode. One `Authenticator` per service; the server interceptor asks it about every call.

A caller proves who it is in one of three ways, tried in this order:
1. The platform's service token (`x-agentplatform-service-token`), presented by the gateway and by the engine.
   The call then runs as the identity in `x-agentplatform-user` / `x-agentplatform-role` (the gateway puts a
   verified JWT's issuer-qualified subject there, `<iss>#<sub>`, which no API-key user id can equal; the engine
   the owner of the run it works on), or as the service itself.
2. An API key, `authorization: Bearer <key>`, looked up by its SHA-256 digest. Keys are random 256-bit
   secrets, so a fast unsalted hash is enough: nothing can be guessed from the digest, and the configuration
   never holds a usable key.
3. Nothing, in development mode only: with no API key and no JWT issuer configured, every caller is the local
   admin. Servers then refuse to listen on anything but loopback (services.common.rpc.server).

Run `python -m services.common.auth --user alice --role user` to make a key and the line to configure it.
"""

import argparse
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, SecretStr

from services.common import errors, metrics
from services.common.identity import (
    AUTHORIZATION_KEY,
    LOCAL_ADMIN,
    MAX_USER_ID,
    ROLE_KEY,
    ROLES,
    SERVICE_TOKEN_KEY,
    USER_KEY,
    Caller,
    Role,
)
from services.common.settings import CommaSeparated, ServiceSettings, SettingsError

log = logging.getLogger(__name__)

#: Every key this module makes starts with this, so a key is recognisable in a secret scanner, and never looks
#: like a JWT (which the gateway validates itself).
KEY_PREFIX = "apk_"
#: A platform service calling an internal API on its own account (lease renewals, the executor link).
SERVICE = Caller("", "admin", service=True)
_USER_ID = re.compile(rf"^[A-Za-z0-9._@|+-]{{1,{MAX_USER_ID}}}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
HOW_TO_CONFIGURE = (
    "configure API keys: make one with `python -m services.common.auth --user NAME --role admin` and put the "
    "line it prints in AUTH_API_KEYS (comma-separated) or in the file AUTH_API_KEYS_FILE names; see docs/identity.md"
)


class AuthSettings(ServiceSettings):
    """Who may call a service. Every service that serves the platform's APIs reads these."""

    #: API keys as `user:role:sha256-hex-of-the-key` entries, comma-separated.
    api_keys: CommaSeparated = Field([], alias="AUTH_API_KEYS")
    #: A file of the same entries, one per line (blank lines and `#` comments ignored).
    api_keys_file: Path | None = Field(None, alias="AUTH_API_KEYS_FILE")
    #: The OIDC issuer whose JWTs the gateway validates; set, it also ends development mode in the services.
    jwt_issuer: str = Field("", alias="AUTH_JWT_ISSUER")
    #: The platform's own secret: the gateway and the engine present it to the services they call. Required
    #: once keys or an issuer are configured (the launcher makes one for `make run`).
    service_token: SecretStr = Field(SecretStr(""), alias="PLATFORM_SERVICE_TOKEN")


def digest(key: str) -> str:
    """The SHA-256 hex digest an API key is configured and looked up by."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class _Key:
    user: str
    role: Role


def _parse_entry(entry: str, where: str) -> tuple[str, _Key]:
    parts = entry.strip().split(":")
    if len(parts) != 3:
        raise SettingsError(f"{where}: an API key entry is user:role:sha256-hex, got {len(parts)} field(s)")
    user, role, key_digest = (part.strip() for part in parts)
    if not _USER_ID.match(user):
        raise SettingsError(f"{where}: user {user!r} must be 1 to {MAX_USER_ID} of A-Z a-z 0-9 . _ @ | + -")
    if role not in ROLES:
        raise SettingsError(f"{where}: role {role!r} of user {user!r} must be one of {', '.join(ROLES)}")
    if not _DIGEST.match(key_digest):
        raise SettingsError(
            f"{where}: the key of user {user!r} must be given as its SHA-256 digest (64 lowercase hex digits), "
            "never the key itself"
        )
    return key_digest, _Key(user, role)


def _load_keys(settings: AuthSettings) -> dict[str, _Key]:
    entries = [(entry, "AUTH_API_KEYS") for entry in settings.api_keys]
    if settings.api_keys_file is not None:
        try:
            lines = settings.api_keys_file.read_text().splitlines()
        except OSError as exc:
            raise SettingsError(f"AUTH_API_KEYS_FILE: cannot read {settings.api_keys_file}: {exc.strerror}") from None
        for number, line in enumerate(lines, 1):
            line = line.split("#", 1)[0].strip()
            if line:
                entries.append((line, f"AUTH_API_KEYS_FILE line {number}"))
    keys: dict[str, _Key] = {}
    for entry, where in entries:
        key_digest, key = _parse_entry(entry, where)
        if key_digest in keys:
            raise SettingsError(f"{where}: the same key is configured twice (users {keys[key_digest].user!r} and "
                                f"{key.user!r})")
        keys[key_digest] = key
    return keys


class Authenticator:
    """Answers "who is this call from?" for one service."""

    def __init__(self, keys: Mapping[str, _Key], service_token: str, jwt_issuer: str = "") -> None:
        self._keys = dict(keys)
        self._service_token_digest = digest(service_token) if service_token else ""
        self.open = not self._keys and not jwt_issuer
        if not self.open and not service_token:
            raise SettingsError(
                "PLATFORM_SERVICE_TOKEN is required once API keys or a JWT issuer are configured: the gateway and "
                "the engine present it to the other services (set the same random secret in every service)"
            )

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> "Authenticator":
        return cls(_load_keys(settings), settings.service_token.get_secret_value(), settings.jwt_issuer)

    @classmethod
    def development(cls) -> "Authenticator":
        """Development mode: no keys, every caller is the local admin (tests of a single service use it)."""
        return cls({}, "")

    def authenticate(self, metadata: Mapping[str, str | bytes], *, internal: bool = False) -> Caller:
        """The caller of a call with this metadata; Unauthenticated when it cannot be told.

        A valid service token with no identity makes the call the service's own only for an `internal` method:
        the gateway presents the token on every call it forwards, so on a public method it must not stand for
        anything more than "the identity headers are the gateway's, not the client's".
        """
        token = metadata.get(SERVICE_TOKEN_KEY)
        if token is not None and self._service_token_digest:
            if not hmac.compare_digest(digest(_text(token)), self._service_token_digest):
                raise refused("bad_service_token", f"{SERVICE_TOKEN_KEY} is not this platform's service token")
            if USER_KEY in metadata:
                return _asserted_identity(metadata)
            if internal:
                return SERVICE
        if self.open:
            return _asserted_identity(metadata) if USER_KEY in metadata else LOCAL_ADMIN
        authorization = metadata.get(AUTHORIZATION_KEY)
        if authorization is None:
            raise refused(
                "missing_credentials",
                "this call needs credentials: send the header 'authorization: Bearer <API key>' (or a token from "
                "the platform's identity provider, through the gateway)"
            )
        scheme, _, credential = _text(authorization).partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise refused("malformed_header", "the authorization header must be 'Bearer <API key>'")
        key = self._keys.get(digest(credential))
        if key is None:
            if credential.startswith("eyJ"):
                raise refused(
                    "jwt_not_at_gateway",
                    "a JWT is validated by the gateway: send it there; this service takes only API keys directly"
                )
            raise refused("unknown_key", "the API key is not valid: it is unknown or was revoked")
        return Caller(key.user, key.role)


def refused(reason: str, message: str) -> errors.Unauthenticated:
    """The error for a call refused for its credentials, counted by `reason` (agentplatform_auth_failures_total)."""
    metrics.AUTH_FAILURES.labels(reason).inc()
    return errors.Unauthenticated(message)


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _asserted_identity(metadata: Mapping[str, str | bytes]) -> Caller:
    """The identity a platform service vouches for."""
    user = _text(metadata.get(USER_KEY, "")).strip()
    if not user:
        raise refused("bad_identity_header", f"{USER_KEY} is empty")
    if len(user) > MAX_USER_ID:
        raise refused("bad_identity_header", f"{USER_KEY} is longer than {MAX_USER_ID} characters")
    role = _text(metadata.get(ROLE_KEY, "user")).strip() or "user"
    # A role the identity provider has but the platform does not know is an ordinary user.
    return Caller(user, role if role in ROLES else "user", service=True)


def is_loopback(host: str) -> bool:
    """Whether a bind address accepts connections from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.common.auth", description="Make a new API key and the entry that configures it."
    )
    parser.add_argument("--user", required=True, help="the user id the key authenticates as")
    parser.add_argument("--role", choices=ROLES, default="user")
    args = parser.parse_args()
    if not _USER_ID.match(args.user):
        parser.error(f"--user must be 1 to {MAX_USER_ID} of A-Z a-z 0-9 . _ @ | + -")
    key = new_api_key()
    print(f"API key (give it to the user; it is not stored anywhere): {key}")
    print(f"Entry for AUTH_API_KEYS or AUTH_API_KEYS_FILE: {args.user}:{args.role}:{digest(key)}")


if __name__ == "__main__":
    main()
