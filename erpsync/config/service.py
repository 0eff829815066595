"""The ``[service]`` and ``[logging]`` sections: how the long-running process behaves and speaks."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from erpsync.config.section import Range, Seconds, Section

_PORT = Range(0, 65535, "port number")
_DAYS = Range(1, 36_500, "days")
_ROWS = Range(1, 100_000, "rows")
_GRACE = Range(0.1, 300, "seconds")


class ServiceSettings(Section):
    """The long-running service: leader lease, health endpoint, retention."""

    # stored in the heartbeat and leader tables (255-character columns)
    instance_name: str | None = Field(default=None, min_length=1, max_length=128)
    health_host: str = "127.0.0.1"
    health_port: Annotated[int, _PORT.before, _PORT.after] = 9108
    lease_ttl_seconds: Seconds = 15
    lease_renew_seconds: Seconds = 5
    lease_retry_seconds: Seconds = 2
    job_timeout_seconds: Seconds = 300
    max_cycle_age_seconds: Seconds = 600
    audit_retention_days: Annotated[int, _DAYS.before, _DAYS.after] = 395
    # finished run bindings, settled actions, cycles, closed quarantine entries, silent heartbeats
    history_retention_days: Annotated[int, _DAYS.before, _DAYS.after] = 395
    purge_batch_size: Annotated[int, _ROWS.before, _ROWS.after] = 1000
    purge_interval_seconds: Seconds = 3600
    # On SIGTERM: how long running jobs get to finish before they are abandoned. Keep it below the
    # container's stop timeout (docker stop: 10 s; compose stop_grace_period) so the lease is released.
    stop_grace_seconds: Annotated[float, _GRACE.before, _GRACE.after] = 7

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
