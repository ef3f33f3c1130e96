"""Who is calling: the identity every RPC runs as, and how it travels between the platform's services.

The server interceptor (services.common.rpc.interceptor) authenticates each call (services.common.auth) and sets
the caller for the handler's task; domain code asks `current_caller()`. A platform service acting on behalf of a
user (the engine writing a run, executing a tool) sends `on_behalf_of(caller)` with its calls, and the service
it calls checks the service token before trusting the identity headers.
"""

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

Role = Literal["user", "admin"]
ROLES: tuple[Role, ...] = ("user", "admin")

#: Metadata keys. The gateway strips all three from what comes in from outside; only a platform component that
#: presents the service token may set the identity ones.
USER_KEY = "x-agentplatform-user"
ROLE_KEY = "x-agentplatform-role"
SERVICE_TOKEN_KEY = "x-agentplatform-service-token"
AUTHORIZATION_KEY = "authorization"

#: The user every caller is in development mode (no keys configured): one local admin.
LOCAL_USER = "local"
#: Longest user id accepted (the run store's owner column). A JWT's user id (`jwt_user_id`) longer than this is
#: refused at the gateway, saying so.
MAX_USER_ID = 200
#: What separates a JWT's issuer from its subject in the user id. API-key user ids never contain it (their
#: characters are A-Z a-z 0-9 . _ @ | + -), and an OIDC issuer has no fragment, so the two sources never collide.
JWT_SUBJECT_SEPARATOR = "#"


def jwt_user_id(issuer: str, subject: str) -> str:
    """The user id of a token's caller: its subject qualified by its issuer, `https://login.example/#alice`.
    The gateway makes it (gateway/envoy.template.yaml, jwt_identity); this is its definition for Python."""
    return f"{issuer}{JWT_SUBJECT_SEPARATOR}{subject}"


@dataclass(frozen=True)
class Caller:
    """The identity an RPC runs as.

    `user` is the user's id (an API key's user, or `<iss>#<sub>` for a token, see `jwt_user_id`); empty when a
    platform service calls on its own account (lease renewals, the executor link). `service` is true when the
    call came from one of the platform's own services (it presented the service token): only those may use the
    internal APIs.
    """

    user: str
    role: Role = "user"
    service: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


#: Development mode's caller: everyone is the one local admin.
LOCAL_ADMIN = Caller(LOCAL_USER, "admin")

_current: ContextVar[Caller | None] = ContextVar("caller", default=None)


def current_caller() -> Caller:
    """The caller of the RPC being handled. Outside an RPC (a background task of the service itself) there is
    none: that is a bug in the caller of this function, not a permission question."""
    caller = _current.get()
    if caller is None:
        raise RuntimeError("no caller: current_caller() is only meaningful while handling an RPC")
    return caller


def set_caller(caller: Caller) -> None:
    """Set the caller for the current task (grpc.aio runs every RPC in its own task, so it stays with it)."""
    _current.set(caller)


def on_behalf_of(caller: Caller, service_token: str) -> tuple[tuple[str, str], ...]:
    """The metadata a platform service sends to act for `caller`: its own token, which makes the identity
    trusted, and the identity. Without a token (development mode) the identity is all there is to send."""
    metadata = ((USER_KEY, caller.user), (ROLE_KEY, caller.role))
    return ((SERVICE_TOKEN_KEY, service_token), *metadata) if service_token else metadata


def as_service(service_token: str) -> tuple[tuple[str, str], ...]:
    """The metadata of a call a platform service makes on its own account."""
    return ((SERVICE_TOKEN_KEY, service_token),) if service_token else ()
