"""Typed settings shared by every service, read from the environment and an optional `.env` file."""

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Settings every service has. Each service subclasses this with its own fields."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", alias="LOG_LEVEL")
    #: json: one object per line, for a log collector; text: readable lines (the launcher's default, `make run`).
    log_format: Literal["json", "text"] = Field("json", alias="LOG_FORMAT")
    #: The host the service listens on; each service names its own setting (RUNS_HOST ...).
    host: str = "127.0.0.1"
    #: The port of the process's /metrics endpoint (services.common.metrics); each service that has one names its
    #: own setting (RUNS_METRICS_PORT ...). None: no endpoint.
    metrics_port: int | None = None
    #: Seconds in-flight RPCs get to finish on SIGTERM. The launcher's SIGKILL comes later (stack.py's stop timeouts).
    grpc_grace_seconds: float = Field(3.0, alias="GRPC_GRACE_SECONDS", gt=0, le=60)


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class SettingsError(SystemExit):
    """A bad setting: exits the process with a message naming the variable and the problem."""


def load_settings(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build `cls` from the environment, turning pydantic's error into one a person can act on. `overrides` are
    field values by name, of whatever type the caller has: pydantic validates them as it does the environment."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "?"
            lines.append(f"  {name}={error.get('input')!r}: {error['msg']}")
        raise SettingsError(f"{cls.__name__}: invalid setting(s):\n" + "\n".join(lines)) from None


def split_commas(value: object) -> object:
    """Accept "a, b" from the environment as well as a list from code; blank items are dropped."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


#: A list setting written in the environment as a comma-separated string. NoDecode: pydantic-settings would
#: otherwise expect JSON.
CommaSeparated = Annotated[list[str], NoDecode, BeforeValidator(split_commas)]
