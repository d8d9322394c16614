"""Service settings read from ``TAILOR_*`` environment variables, validated once at start.

A service that starts with a bad configuration must stop at once with a message that names
the variable, not fail later in the middle of a request.
"""

from __future__ import annotations

import os
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_NAMES = ("consent", "ingest", "profile", "segment", "recommend")

#: gRPC and metrics ports used when the environment does not set them.
DEFAULT_PORTS: dict[str, tuple[int, int]] = {
    "consent": (50051, 9101),
    "ingest": (50052, 9102),
    "profile": (50053, 9103),
    "segment": (50054, 9104),
    "recommend": (50055, 9105),
}

LogLevel = Literal["debug", "info", "warning", "error"]


class SettingsError(Exception):
    """The environment does not describe a valid configuration; the message names each variable."""


class ServiceSettings(BaseSettings):
    """What every service needs. Services subclass it to add their own ``TAILOR_*`` fields."""

    model_config = SettingsConfigDict(env_prefix="TAILOR_", extra="ignore", frozen=True)

    service: str = Field(description="service name; set by the entrypoint, not the environment")
    pg_dsn: SecretStr = Field(description="Postgres DSN this service connects with")
    pg_schema: str = Field(default="", pattern=r"^([a-z_][a-z0-9_]{0,62})?$")
    pg_pool_max: int = Field(default=10, ge=1, le=200)
    nats_url: str = "nats://127.0.0.1:4222"
    namespace: str = Field(default="", pattern=r"^([a-z][a-z0-9_]{0,30})?$")
    grpc_host: str = "0.0.0.0"
    grpc_port: int = Field(default=0, ge=0, le=65535)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    token_secret: SecretStr
    partitions: int = Field(default=16, ge=1, le=1024)
    #: JetStream replicas of the platform's streams (3 on a production NATS cluster).
    stream_replicas: int = Field(default=1, ge=1, le=5)
    log_level: LogLevel = "info"
    shutdown_grace_seconds: float = Field(default=10.0, gt=0, le=300)
    consent_addr: str = "127.0.0.1:50051"

    @field_validator("token_secret")
    @classmethod
    def _secret_long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (a random secret shared by services)")
        return value

    @property
    def db_schema(self) -> str:
        """The Postgres schema this service owns (defaults to the service name)."""
        return self.pg_schema or self.service


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def load_settings(service: str, cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Read the settings of ``service`` from the environment (``overrides`` win).

    Raises :class:`SettingsError` listing every invalid or missing variable.
    """
    grpc_port, metrics_port = DEFAULT_PORTS.get(service, (0, 0))
    defaults: dict[str, Any] = {
        key: value
        for key, value in (("grpc_port", grpc_port), ("metrics_port", metrics_port))
        if f"TAILOR_{key.upper()}" not in os.environ
    }
    try:
        return cls(service=service, **{**defaults, **overrides})
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        variable = f"TAILOR_{field.upper()}"
        message = "is required but not set" if error["type"] == "missing" else error["msg"]
        lines.append(f"  {variable}: {message}")
    return "\n".join(lines)
