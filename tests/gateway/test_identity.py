"""Identity at the edge: forged identity headers are stripped, JWTs are validated by Envoy (a key set generated
here), API keys pass through untouched, and the service token is added to every upstream request."""

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from services.common.identity import MAX_USER_ID, jwt_user_id
from services.common.settings import SettingsError, load_settings
from services.launcher.gateway_config import TokenFromEnvironment
from services.launcher.settings import GatewaySettings
from tests.gateway.conftest import GRPC_WEB, Gateway, RecordingUpstream, grpc_web_frame, grpc_web_status

ISSUER = "https://login.example.test/"
AUDIENCE = "agentplatform"
LIST_TOOLS = "/agentplatform.tools.v1.ToolService/ListTools"
SERVICE_TOKEN = "s3rvice-token-%-with-a-percent"
FORGED = {
    "x-agentplatform-user": "admin",
    "x-agentplatform-role": "admin",
    "x-agentplatform-service-token": "forged",
}
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED.value[0]

StartGateway = Callable[..., Gateway]


class Issuer:
    """An OIDC issuer's signing key and its public JWKS, made up for the test."""

    def __init__(self, kid: str = "test-key") -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        public = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "role": "user", "iat": now, "exp": now + 300}
        payload.update(claims)
        payload = {key: value for key, value in payload.items() if value is not None}
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": self.kid})


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
def jwt_gateway(start_gateway: StartGateway, issuer: Issuer, tmp_path: Path) -> Gateway:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks()))
    return start_gateway(
        service_token=SERVICE_TOKEN, jwt_issuer=ISSUER, jwt_audiences=[AUDIENCE], jwt_jwks_file=str(jwks)
    )


def grpc_web_call(gateway: Gateway, headers: dict[str, str]) -> tuple[int | None, str]:
    response = httpx.post(
        gateway.url + LIST_TOOLS, content=grpc_web_frame(), headers={**GRPC_WEB, **headers}, timeout=10
    )
    return grpc_web_status(response)


def grpc_call(gateway: Gateway, headers: dict[str, str]) -> tuple[int, str]:
    with grpc.insecure_channel(gateway.address) as channel:
        try:
            channel.unary_unary(LIST_TOOLS)(b"", timeout=10, metadata=list(headers.items()))
            return 0, ""
        except grpc.RpcError as error:
            return error.code().value[0], error.details() or ""


def identity(metadata: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in metadata.items() if key.startswith("x-agentplatform-")}


def test_a_valid_jwt_becomes_identity_headers_and_is_not_forwarded(
    jwt_gateway: Gateway, upstream: RecordingUpstream, issuer: Issuer
) -> None:
    token = issuer.token(sub="alice", role="admin")
    assert grpc_web_call(jwt_gateway, {"authorization": f"Bearer {token}", **FORGED}) == (0, "")
    assert grpc_call(jwt_gateway, {"authorization": f"Bearer {issuer.token(sub='bob')}"}) == (0, "")
    first, second = upstream.calls
    assert identity(first.metadata) == {
        "x-agentplatform-user": jwt_user_id(ISSUER, "alice"),
        "x-agentplatform-role": "admin",
        "x-agentplatform-service-token": SERVICE_TOKEN,
    }
    assert identity(second.metadata) == {
        "x-agentplatform-user": jwt_user_id(ISSUER, "bob"),
        "x-agentplatform-role": "user",
        "x-agentplatform-service-token": SERVICE_TOKEN,
    }
    for call in upstream.calls:
        assert "authorization" not in call.metadata, "the JWT itself must not travel upstream"


def test_a_token_user_is_qualified_by_its_issuer_so_it_can_never_be_an_api_key_user(
    jwt_gateway: Gateway, upstream: RecordingUpstream, issuer: Issuer
) -> None:
    # Subjects that are valid API-key user ids, or look like an already qualified id: all arrive qualified.
    subjects = ["alice", "local", "root", "https://login.example.test/#alice", "a" * (MAX_USER_ID - len(ISSUER) - 1)]
    for subject in subjects:
        assert grpc_call(jwt_gateway, {"authorization": f"Bearer {issuer.token(sub=subject)}"}) == (0, "")
    assert [call.metadata["x-agentplatform-user"] for call in upstream.calls] == [
        ISSUER + "#" + subject for subject in subjects
    ]


@pytest.mark.parametrize(
    ("subject", "expected_message"),
    [
        (None, "the token has no subject (sub): the platform cannot tell whose calls these are"),
        ("", "the token has no subject (sub): the platform cannot tell whose calls these are"),
        ("ali ce", "the token's subject (sub) must be printable ASCII without spaces"),
        ("alicé", "the token's subject (sub) must be printable ASCII without spaces"),
        ("a" * (MAX_USER_ID - len(ISSUER)),
         f"the token's issuer#subject is longer than the {MAX_USER_ID} characters of a user id"),
    ],
    ids=["no-sub", "empty-sub", "space", "non-ascii", "too-long"],
)
def test_a_token_whose_identity_cannot_be_kept_is_refused_saying_why(
    jwt_gateway: Gateway, upstream: RecordingUpstream, issuer: Issuer, subject: str | None, expected_message: str
) -> None:
    headers = {"authorization": f"Bearer {issuer.token(sub=subject)}", **FORGED}
    for status, message in (grpc_web_call(jwt_gateway, headers), grpc_call(jwt_gateway, headers)):
        assert (status, message) == (UNAUTHENTICATED, expected_message)
    assert upstream.calls == []


def test_forged_identity_headers_never_reach_a_service(jwt_gateway: Gateway, upstream: RecordingUpstream) -> None:
    assert grpc_web_call(jwt_gateway, FORGED) == (0, "")
    assert grpc_call(jwt_gateway, FORGED) == (0, "")
    for call in upstream.calls:
        assert identity(call.metadata) == {"x-agentplatform-service-token": SERVICE_TOKEN}


def test_an_api_key_passes_through_unchanged(jwt_gateway: Gateway, upstream: RecordingUpstream) -> None:
    for key in ("ak_live_0123456789abcdef", "eyZ-not-a-jwt", "e.y.J"):
        assert grpc_web_call(jwt_gateway, {"authorization": f"Bearer {key}", **FORGED}) == (0, "")
        call = upstream.calls[-1]
        assert call.metadata["authorization"] == f"Bearer {key}"
        assert identity(call.metadata) == {"x-agentplatform-service-token": SERVICE_TOKEN}


@pytest.mark.parametrize(
    ("case", "expected_message"),
    [
        ("expired", "Jwt is expired"),
        ("malformed", "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"),
        ("wrongly signed", "Jwt verification fails"),
        ("wrong issuer", "Jwt issuer is not configured"),
        ("wrong audience", "Audiences in Jwt are not allowed"),
        ("unknown key", "Jwks doesn't have key to match kid or alg from Jwt"),
    ],
)
def test_a_bad_jwt_is_unauthenticated_at_the_gateway(
    jwt_gateway: Gateway, upstream: RecordingUpstream, issuer: Issuer, case: str, expected_message: str
) -> None:
    token = {
        "expired": lambda: issuer.token(exp=int(time.time()) - 600, iat=int(time.time()) - 900),
        "malformed": lambda: "eyJhbGciOiJSUzI1NiJ9.not-json",
        "wrongly signed": lambda: Issuer(issuer.kid).token(),
        "wrong issuer": lambda: issuer.token(iss="https://elsewhere.example/"),
        "wrong audience": lambda: issuer.token(aud="someone-else"),
        "unknown key": lambda: Issuer("other-key").token(),
    }[case]()
    headers = {"authorization": f"Bearer {token}", **FORGED}
    for status, message in (grpc_web_call(jwt_gateway, headers), grpc_call(jwt_gateway, headers)):
        assert status == UNAUTHENTICATED, case
        assert message == expected_message
    assert upstream.calls == [], f"a {case} token must not reach a service"


def test_without_an_issuer_a_jwt_is_left_to_the_services(
    start_gateway: StartGateway, upstream: RecordingUpstream, issuer: Issuer
) -> None:
    gateway = start_gateway()
    token = issuer.token()
    assert grpc_web_call(gateway, {"authorization": f"Bearer {token}", **FORGED}) == (0, "")
    (call,) = upstream.calls
    assert call.metadata["authorization"] == f"Bearer {token}"
    assert identity(call.metadata) == {}, "no service token configured: none is sent, and forged ones are stripped"


def test_the_committed_config_reads_the_service_token_from_the_environment(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    # What deploy/gateway/envoy.yaml does: %ENVIRONMENT(PLATFORM_SERVICE_TOKEN)%, resolved by Envoy at start.
    token = TokenFromEnvironment("PLATFORM_SERVICE_TOKEN")
    with_token = start_gateway(service_token=token, env={"PLATFORM_SERVICE_TOKEN": "from-env"})
    assert grpc_web_call(with_token, FORGED) == (0, "")
    assert identity(upstream.calls[-1].metadata) == {"x-agentplatform-service-token": "from-env"}

    empty = start_gateway(service_token=token, env={"PLATFORM_SERVICE_TOKEN": ""})
    assert grpc_web_call(empty, FORGED) == (0, "")
    assert identity(upstream.calls[-1].metadata) == {}, "an empty token adds no header"

    # Unset, Envoy's formatter writes "-" (its mark for a missing value), which never matches a configured
    # token: the services trust no identity header from this gateway, as with no header at all.
    unset = start_gateway(service_token=token)
    assert grpc_web_call(unset, FORGED) == (0, "")
    assert identity(upstream.calls[-1].metadata) == {"x-agentplatform-service-token": "-"}


@pytest.mark.parametrize(
    ("issuer", "expected"),
    [
        ("https://login.example.test/#tenant", "an OIDC issuer has no fragment ('#')"),
        ("https://login.example.test/" + "i" * MAX_USER_ID, f"a user id ('<issuer>#<sub>') is at most {MAX_USER_ID}"),
    ],
    ids=["fragment", "too-long"],
)
def test_an_issuer_that_cannot_qualify_user_ids_stops_the_start(issuer: str, expected: str, tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(Issuer().jwks()))
    with pytest.raises(SettingsError) as refused:
        load_settings(GatewaySettings, _env_file=None, AUTH_JWT_ISSUER=issuer, AUTH_JWT_JWKS_FILE=str(jwks))
    assert "AUTH_JWT_ISSUER" in str(refused.value) and expected in str(refused.value)
