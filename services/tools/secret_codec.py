"""How the tools service encrypts the secrets it stores (MCP servers' env and headers, HTTP tools' headers):
Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) under the keys in TOOLS_SECRET_KEYS.

Several keys may be configured, comma-separated: the FIRST encrypts, every one decrypts (MultiFernet). Rotation
is: put a new key first, restart, run `python -m services.tools.secrets rotate` (every stored secret is then
encrypted with the new key), remove the old key.

A database is tied to its codec with `use_codec(database, codec)`; the column type in services.tools.tables finds
it from the connection's dialect, so every read and write of a secret column goes through it and nothing else can
write one in plain text.
"""

import json
from collections.abc import Mapping, Sequence
from weakref import WeakKeyDictionary

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy.engine import Dialect

from services.common.db.database import Database
from services.common.settings import SettingsError

#: What every message about a key problem ends with: where keys come from and how to make one.
HOW_TO_CONFIGURE = (
    "set TOOLS_SECRET_KEYS to one or more Fernet keys, comma-separated, the newest first (make one with "
    "`python -m services.tools.secrets new-key`; `make run` keeps one in var/tools-secret-keys)"
)


class SecretsUnreadable(Exception):
    """A stored secret that none of the configured keys decrypts: the key it was encrypted with is not in
    TOOLS_SECRET_KEYS, or the value was altered."""


def new_key() -> str:
    """A new random key for TOOLS_SECRET_KEYS."""
    return Fernet.generate_key().decode()


class SecretCodec:
    """Encrypts a mapping of secret values (a header or environment variable name -> its value) into one opaque
    string, and back. Never logs or shows a value."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise SettingsError(f"the tools service stores secrets encrypted and has no key: {HOW_TO_CONFIGURE}")
        fernets = []
        for number, key in enumerate(keys, 1):
            try:
                fernets.append(Fernet(key.strip()))
            except ValueError:
                # The message never repeats the value: it may be a key with a typo.
                raise SettingsError(
                    f"TOOLS_SECRET_KEYS: key {number} of {len(keys)} is not a Fernet key (32 bytes in url-safe "
                    f"base64, 44 characters); {HOW_TO_CONFIGURE}"
                ) from None
        self._newest = fernets[0]
        self._all = MultiFernet(fernets)

    @classmethod
    def parse(cls, keys: str) -> "SecretCodec":
        """From TOOLS_SECRET_KEYS's text: keys separated by commas (or whitespace)."""
        return cls(keys.replace(",", " ").split())

    def __repr__(self) -> str:
        return "SecretCodec(<keys hidden>)"

    def seal(self, values: Mapping[str, str]) -> str:
        """`values` encrypted with the newest key."""
        return self._all.encrypt(json.dumps(dict(values), sort_keys=True).encode()).decode("ascii")

    def open(self, sealed: str) -> dict[str, str]:
        """The values of a sealed string; SecretsUnreadable when no configured key opens it."""
        try:
            values = json.loads(self._all.decrypt(sealed.encode("ascii")))
        except (InvalidToken, UnicodeEncodeError, ValueError):
            raise SecretsUnreadable(
                "a stored secret cannot be decrypted with any key in TOOLS_SECRET_KEYS: the key it was encrypted "
                "with is not configured (put it back, after the newest), or the stored value was altered"
            ) from None
        if not isinstance(values, dict):
            raise SecretsUnreadable("a stored secret decrypts to something other than a set of named values")
        return {str(name): str(value) for name, value in values.items()}

    def is_newest(self, sealed: str) -> bool:
        """Whether `sealed` was encrypted with the newest key (rotation leaves such values alone)."""
        try:
            self._newest.decrypt(sealed.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            return False
        return True

    def reseal(self, sealed: str) -> str:
        """`sealed` encrypted anew with the newest key; SecretsUnreadable when no configured key opens it."""
        try:
            return self._all.rotate(sealed.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeEncodeError):
            self.open(sealed)  # raises with the explanation
            raise


_codecs: "WeakKeyDictionary[Dialect, SecretCodec]" = WeakKeyDictionary()


def use_codec(database: Database, codec: SecretCodec) -> None:
    """Have every secret column read and written through `database` use `codec`. A database's engine has a
    dialect of its own, which the column type is handed, so two services in one process (tests) keep their keys
    apart."""
    _codecs[database.engine.sync_engine.dialect] = codec


def codec_for(dialect: Dialect) -> SecretCodec:
    """The codec of the database this dialect belongs to."""
    codec = _codecs.get(dialect)
    if codec is None:
        raise RuntimeError("a secret column was used on a database without a codec: call use_codec(database, codec)")
    return codec
