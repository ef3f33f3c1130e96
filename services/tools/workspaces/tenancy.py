"""Whose workspace a tool call uses: each user has a folder of their own below TOOLS_WORKSPACE, shared by all that
user's threads and runs, and seen by nobody else; an admin may choose one workspace for everyone instead
(TOOLS_WORKSPACE_SHARED).

    TOOLS_WORKSPACE/users/<folder_name(user)>/   a user's own workspace (the default)
    TOOLS_WORKSPACE/shared/                      everyone's, with TOOLS_WORKSPACE_SHARED=true

The two never overlap, so turning sharing on or off exposes nobody's files: the shared folder is not above the
users' ones. Files that an older version left directly in TOOLS_WORKSPACE are in neither (move them by hand).

The identity comes from the service, never from a tool's arguments: the executor passes the RPC's authenticated
caller (services.common.identity) to the worker pool beside the arguments, and the worker builds each call's
ToolContext with `call_context` before the tool runs. A call made on no user's behalf (a platform service's own
account) gets no workspace (None) unless it is shared.

User ids are not path components. An API key's user may hold '.', '@', '|', '+' and '-' ('..' alone is a valid
id), and an identity a platform service asserts (a JWT's subject) may hold anything up to MAX_USER_ID characters.
`folder_name` maps every id to a single safe name, and different ids to different names.
"""

import dataclasses
import hashlib

from services.common.errors import PermissionDenied
from services.common.identity import MAX_USER_ID, Caller
from services.tools.base import ToolContext

USERS_FOLDER = "users"
SHARED_FOLDER = "shared"
#: Characters a folder name keeps as they are; every other byte of the id's UTF-8 is written %XX (so '%' too).
_KEPT = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._@+-")
#: Linux's NAME_MAX: a longer encoding is replaced by the id's digest.
_MAX_NAME_BYTES = 255
#: Starts a digest name. Never the start of an encoded name: there '%' is followed by two upper-case hex digits.
_DIGEST_PREFIX = "%sha256-"


def folder_name(user: str) -> str:
    """The folder name of `user`'s workspace: one path component, never '.', '..' or hidden (a leading '.' is
    encoded), no '/' or NUL, at most 255 bytes; different ids give different names (percent-encoding is reversible;
    an id whose encoding is too long is named by its SHA-256). ValueError for an id that is not a user id."""
    if not isinstance(user, str) or not user or len(user) > MAX_USER_ID:
        raise ValueError(f"a user id is 1 to {MAX_USER_ID} characters, got {user!r:.50}")
    data = user.encode("utf-8", "surrogatepass")  # every str has a distinct encoding this way
    name = "".join(
        chr(byte) if byte in _KEPT and (index or byte != ord(".")) else f"%{byte:02X}"
        for index, byte in enumerate(data)
    )
    if len(name) > _MAX_NAME_BYTES:
        return _DIGEST_PREFIX + hashlib.sha256(data).hexdigest()
    return name


def call_context(context: ToolContext, caller: Caller | None, idempotency_key: str = "") -> ToolContext:
    """The context one call runs with: the service's `context` (whose workspace is TOOLS_WORKSPACE itself) with the
    caller, the workspace that caller may use and the call's idempotency key; PermissionDenied for an identity that
    is not a user id."""
    root = context.workspace
    if root is None:
        workspace = None
    elif context.workspace_shared:
        workspace = root / SHARED_FOLDER
    elif caller is None or not caller.user:
        workspace = None
    else:
        try:
            workspace = root / USERS_FOLDER / folder_name(caller.user)
        except ValueError as exc:  # not a user id the platform issues (the authenticator bounds them)
            raise PermissionDenied(f"this call's identity names no workspace: {exc}") from None
    return dataclasses.replace(context, workspace=workspace, caller=caller, idempotency_key=idempotency_key)
