"""The ``[service]`` and ``[logging]`` sections: how the long-running process behaves and speaks."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from erpsync.config.section import PositiveSeconds, Section


class ServiceSettings(Section):
    """The long-running service: leader lease, health endpoint, retention."""

    instance_name: str | None = None
    health_host: str = "127.0.0.1"
    health_port: int = Field(default=9108, ge=0, le=65535)
    lease_ttl_seconds: PositiveSeconds = 15
    lease_renew_seconds: PositiveSeconds = 5
    lease_retry_seconds: PositiveSeconds = 2
    job_timeout_seconds: PositiveSeconds = 300
    max_cycle_age_seconds: PositiveSeconds = 600
    audit_retention_days: int = Field(default=395, ge=1)
    # finished run bindings, settled actions, cycles, closed quarantine entries, silent heartbeats
    history_retention_days: int = Field(default=395, ge=1)
    purge_batch_size: int = Field(default=1000, ge=1)
    purge_interval_seconds: PositiveSeconds = 3600
    # On SIGTERM: how long running jobs get to finish before they are abandoned. Keep it below the
    # container's stop timeout (docker stop: 10 s; compose stop_grace_period) so the lease is released.
    stop_grace_seconds: float = Field(default=7, gt=0, le=300)

    @model_validator(mode="after")
    def _renew_before_expiry(self) -> ServiceSettings:
        if self.lease_renew_seconds >= self.lease_ttl_seconds:
            raise ValueError("service.lease_renew_seconds must be smaller than service.lease_ttl_seconds")
        return self


class LoggingSettings(Section):
    """Log level and format: JSON for machines, readable console output on a terminal."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value
