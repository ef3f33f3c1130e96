"""Property-based tests of the secrets and identity boundaries:

- the gateway (the real Envoy) turns ANY token subject either into the user `<iss>#<sub>` or into UNAUTHENTICATED
  with a reason, never a bare or cut subject, never another status;
- the tools' secret codec gives back exactly what it sealed, shows none of it, and answers anything else it is
  handed (garbage, a tampered token, a stored value of any JSON shape) with SecretsUnreadable and nothing else;
- key and issuer settings are refused with SettingsError, which never repeats a key.
"""

import json
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import JSON, DateTime, String, column, insert, table, text

from services.common.db.database import Database, utcnow
from services.common.identity import MAX_USER_ID
from services.common.settings import SettingsError, load_settings
from services.launcher.settings import GatewaySettings
from services.tools.secret_codec import SecretCodec, SecretsUnreadable, new_key, use_codec
from services.tools.secrets import seal_stored_secrets
from services.tools.tool_settings import ToolSettingsStore
from tests.gateway.conftest import ENVOY, Gateway
from tests.gateway.conftest import start_gateway as start_gateway  # the fixture
from tests.gateway.conftest import upstream as upstream  # the fixture
from tests.gateway.test_identity import AUDIENCE, ISSUER, SERVICE_TOKEN, Issuer, grpc_call

KEY, OTHER_KEY = new_key(), new_key()
UNAUTHENTICATED = 16
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
#: Text a JSON encoder can carry (no lone surrogates).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)))


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
def jwt_gateway(start_gateway: Callable[..., Gateway], issuer: Issuer, tmp_path: Path) -> Gateway:
    """One Envoy validating the issuer's tokens, for all the examples of a test."""
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks()))
    return start_gateway(
        service_token=SERVICE_TOKEN, jwt_issuer=ISSUER, jwt_audiences=[AUDIENCE], jwt_jwks_file=str(jwks)
    )


@pytest.mark.skipif(not ENVOY.exists(), reason="no Envoy binary")
@given(
    subject=st.one_of(
        TEXT,
        st.text(string.printable, min_size=1),
        st.text(string.ascii_letters, min_size=150, max_size=4000),
        st.integers(),
        st.lists(st.text(max_size=5), max_size=3),
        st.none(),
    )
)
def test_any_subject_becomes_the_qualified_user_or_is_unauthenticated_saying_why(
    subject: Any, jwt_gateway: Gateway, upstream: Any, issuer: Issuer
) -> None:
    before = len(upstream.calls)
    status, message = grpc_call(jwt_gateway, {"authorization": f"Bearer {issuer.token(sub=subject)}"})
    assert status in (0, UNAUTHENTICATED), (status, message)
    if status == 0:
        (call,) = upstream.calls[before:]
        assert isinstance(subject, str) and call.metadata["x-agentplatform-user"] == f"{ISSUER}#{subject}"
        assert len(call.metadata["x-agentplatform-user"]) <= MAX_USER_ID
    else:
        assert message and upstream.calls[before:] == []


@given(values=st.dictionaries(TEXT, TEXT, max_size=20), big=st.text(min_size=1000, max_size=100_000))
def test_sealed_values_open_to_themselves_and_show_nothing(values: dict[str, str], big: str) -> None:
    codec = SecretCodec([KEY])
    values = {**values, "Big": big}
    sealed = codec.seal(values)
    assert sealed.isascii() and codec.open(sealed) == values
    assert SecretCodec([OTHER_KEY, KEY]).open(sealed) == values  # any configured key decrypts
    for value in values.values():
        if len(value) >= 8:
            assert value not in sealed


@given(stored=st.one_of(TEXT, st.binary().map(lambda raw: raw.decode("latin-1")), st.integers(0, 10**6)))
def test_anything_but_a_sealed_value_is_unreadable_and_a_tampered_one_never_opens_to_other_values(
    stored: Any,
) -> None:
    codec = SecretCodec([KEY])
    values = {"Authorization": "Bearer s3cr3t"}
    sealed = codec.seal(values)
    with pytest.raises(SecretsUnreadable) as refused:
        codec.open(str(stored))
    assert "s3cr3t" not in str(refused.value)
    # Fernet's base64 skips characters outside its alphabet, so some additions decode to the very same token: the
    # promise is that nothing opens to anything but what was sealed.
    for tampered in (sealed[:-2] + str(stored), sealed + str(stored), str(stored) + sealed):
        try:
            assert codec.open(tampered) == values
        except SecretsUnreadable:
            pass
    with pytest.raises(SecretsUnreadable):
        SecretCodec([OTHER_KEY]).open(sealed)


@given(parts=st.lists(st.text(string.ascii_letters + string.digits + "-_=", min_size=12), max_size=4))
def test_keys_that_are_not_keys_are_refused_without_being_repeated(parts: list[str]) -> None:
    try:
        SecretCodec.parse(",".join(parts))
    except SettingsError as refused:
        assert "TOOLS_SECRET_KEYS" in str(refused)
        for part in parts:
            assert part not in str(refused)


@given(issuer=TEXT)
def test_an_issuer_is_accepted_only_if_every_user_id_it_makes_is_qualified(issuer: str, tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{"kty": "oct"}]}))
    try:
        settings = load_settings(GatewaySettings, _env_file=None, AUTH_JWT_ISSUER=issuer, AUTH_JWT_JWKS_FILE=str(jwks))
    except SettingsError as refused:
        assert "AUTH_JWT_ISSUER" in str(refused) or "AUTH_JWT_JWKS_FILE" in str(refused)
        return
    assert "#" not in settings.jwt_issuer and len(settings.jwt_issuer) + 2 <= MAX_USER_ID


@given(stored=JSON_VALUES)
async def test_a_stored_value_of_any_shape_is_sealed_or_named_as_unreadable(stored: Any, tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'tools.db'}")
    codec = SecretCodec([KEY])
    use_codec(database, codec)
    try:
        await ToolSettingsStore(database).migrate()
        http_tools = table(
            "http_tools", column("name", String), column("display_name", String), column("description", String),
            column("parameters", JSON), column("url", String), column("method", String), column("headers", JSON),
            column("created_at", DateTime(timezone=True)),
        )
        async with database.write() as session:
            await session.execute(text("DELETE FROM http_tools"))
            await session.execute(insert(http_tools).values(
                name="odd", display_name="odd", description="odd", parameters={}, url="http://example.test/",
                method="GET", headers=stored, created_at=utcnow(),
            ))
        try:
            await seal_stored_secrets(database, codec)
        except SecretsUnreadable as refused:
            assert "http_tools 'odd' (headers" in str(refused)
            return
        async with database.read() as session:
            (raw,) = (await session.execute(text("SELECT headers FROM http_tools"))).scalars()
        if stored is not None:
            assert codec.open(json.loads(raw)) == {str(key): str(value) for key, value in stored.items()}
    finally:
        await database.dispose()
