"""Authentication (services.common.auth): API keys stored as digests, identities vouched for with the service
token, development mode, and the configuration errors a person gets."""

import re
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from services.common import errors
from services.common.auth import SERVICE, Authenticator, AuthSettings, digest, is_loopback, new_api_key
from services.common.identity import LOCAL_ADMIN, ROLE_KEY, SERVICE_TOKEN_KEY, USER_KEY, Caller
from services.common.rpc.server import check_exposure
from services.common.settings import SettingsError

ALICE_KEY, ADMIN_KEY, TOKEN = new_api_key(), new_api_key(), "service-secret"


def authenticator(**env: object) -> Authenticator:
    values = {
        "AUTH_API_KEYS": f"alice:user:{digest(ALICE_KEY)},root:admin:{digest(ADMIN_KEY)}",
        "PLATFORM_SERVICE_TOKEN": TOKEN,
        **env,
    }
    return Authenticator.from_settings(AuthSettings(_env_file=None, **values))


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_an_api_key_is_its_user_and_role() -> None:
    auth = authenticator()
    assert auth.authenticate(bearer(ALICE_KEY)) == Caller("alice", "user")
    assert auth.authenticate(bearer(ADMIN_KEY)) == Caller("root", "admin")
    assert not auth.open


@pytest.mark.parametrize(
    ("metadata", "message", "reason"),
    [
        ({}, "this call needs credentials: send the header 'authorization: Bearer <API key>'", "missing_credentials"),
        (bearer("apk_not-a-key"), "the API key is not valid: it is unknown or was revoked", "unknown_key"),
        ({"authorization": f"Basic {ALICE_KEY}"}, "must be 'Bearer <API key>'", "malformed_header"),
        ({"authorization": "Bearer "}, "must be 'Bearer <API key>'", "malformed_header"),
        (bearer("eyJhbGciOiJSUzI1NiJ9.e30.sig"), "a JWT is validated by the gateway", "jwt_not_at_gateway"),
        ({SERVICE_TOKEN_KEY: "guessed", USER_KEY: "root", ROLE_KEY: "admin"}, "is not this platform's service token",
         "bad_service_token"),
        # The gateway presents the token on every call it forwards: alone, on a public method, it is nobody.
        ({SERVICE_TOKEN_KEY: TOKEN}, "this call needs credentials", "missing_credentials"),
        # Identity headers without the token are the client's own claim, and ignored.
        ({USER_KEY: "root", ROLE_KEY: "admin"}, "this call needs credentials", "missing_credentials"),
        ({SERVICE_TOKEN_KEY: TOKEN, USER_KEY: " "}, "is empty", "bad_identity_header"),
    ],
    ids=["missing", "unknown-key", "basic", "empty-bearer", "jwt", "wrong-token", "token-alone", "forged",
         "empty-user"],
)
def test_missing_or_bad_credentials_are_unauthenticated_with_a_reason_and_counted(
    metadata: dict[str, str], message: str, reason: str
) -> None:
    def failures() -> float:
        return REGISTRY.get_sample_value("agentplatform_auth_failures_total", {"reason": reason}) or 0.0

    before = failures()
    with pytest.raises(errors.Unauthenticated, match=re.escape(message)):
        authenticator().authenticate(metadata)
    assert failures() == before + 1


def test_the_service_token_vouches_for_an_identity_and_is_the_service_itself_only_on_internal_methods() -> None:
    auth = authenticator()
    vouched = auth.authenticate({SERVICE_TOKEN_KEY: TOKEN, USER_KEY: "bob@example.com", ROLE_KEY: "admin"})
    assert vouched == Caller("bob@example.com", "admin", service=True)
    # An identity provider's role the platform does not know is an ordinary user.
    odd = auth.authenticate({SERVICE_TOKEN_KEY: TOKEN, USER_KEY: "carol", ROLE_KEY: "owner"})
    assert odd.role == "user"
    assert auth.authenticate({SERVICE_TOKEN_KEY: TOKEN}, internal=True) == SERVICE
    # A key's holder calling an internal method is still only that user (the interceptor then refuses it).
    assert auth.authenticate(bearer(ALICE_KEY), internal=True) == Caller("alice", "user")


def test_development_mode_is_the_local_admin_for_everyone() -> None:
    auth = Authenticator.from_settings(AuthSettings(_env_file=None))
    assert auth.open
    assert auth.authenticate({}) == LOCAL_ADMIN
    assert auth.authenticate(bearer("anything")) == LOCAL_ADMIN


def test_keys_come_from_a_file_with_comments(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# the team\n\ndave:admin:{digest('apk_dave')}  # on call\n")
    auth = authenticator(AUTH_API_KEYS="", AUTH_API_KEYS_FILE=str(keys))
    assert auth.authenticate(bearer("apk_dave")) == Caller("dave", "admin")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AUTH_API_KEYS": f"alice:user:{ALICE_KEY}"}, "must be given as its SHA-256 digest"),
        ({"AUTH_API_KEYS": f"alice:root:{digest(ALICE_KEY)}"}, "role 'root' of user 'alice' must be one of user"),
        ({"AUTH_API_KEYS": f"al ice:user:{digest(ALICE_KEY)}"}, "user 'al ice' must be"),
        ({"AUTH_API_KEYS": "alice"}, "an API key entry is user:role:sha256-hex"),
        ({"AUTH_API_KEYS": f"a:user:{digest('k')},b:user:{digest('k')}"}, "the same key is configured twice"),
        ({"AUTH_API_KEYS_FILE": "/nonexistent/keys"}, "AUTH_API_KEYS_FILE: cannot read /nonexistent/keys"),
        ({"PLATFORM_SERVICE_TOKEN": ""}, "PLATFORM_SERVICE_TOKEN is required once API keys or a JWT issuer"),
    ],
    ids=["plain-key", "bad-role", "bad-user", "one-field", "duplicate", "missing-file", "no-token"],
)
def test_a_bad_key_configuration_stops_the_service_with_a_message(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as exc:
        authenticator(**env)
    assert message in str(exc.value)
    assert ALICE_KEY not in str(exc.value)  # a key pasted in by mistake is not echoed into a log


def test_development_mode_refuses_to_listen_beyond_loopback() -> None:
    open_auth = Authenticator.development()
    with pytest.raises(SettingsError, match=r"would listen on 0\.0\.0\.0 with no API keys configured"):
        check_exposure(open_auth, "0.0.0.0", "the runs server")
    check_exposure(open_auth, "127.0.0.1", "the runs server")
    check_exposure(authenticator(), "0.0.0.0", "the runs server")  # with keys, any address
    assert is_loopback("::1") and is_loopback("localhost") and not is_loopback("10.0.0.1")
