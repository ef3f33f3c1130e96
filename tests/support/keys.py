"""Test users with API keys: alice and bob (users) and root (an admin); the settings that make every service of a
test know them (and the platform's service token); the metadata of a call made as one of them."""

from services.common.auth import digest, new_api_key
from services.tools.secret_codec import new_key

ALICE, BOB, ADMIN = new_api_key(), new_api_key(), new_api_key()
SERVICE_TOKEN = "test-service-secret"
#: The settings every service of a test shares.
AUTH = {
    "AUTH_API_KEYS": f"alice:user:{digest(ALICE)},bob:user:{digest(BOB)},root:admin:{digest(ADMIN)}",
    "PLATFORM_SERVICE_TOKEN": SERVICE_TOKEN,
}


def as_(key: str) -> tuple[tuple[str, str], ...]:
    """The metadata of a call made with an API key."""
    return (("authorization", f"Bearer {key}"),)


#: The tools service's encryption key in tests (TOOLS_SECRET_KEYS): one per test session.
TOOLS_SECRET_KEY = new_key()
