"""The ``[mm]`` section: how to reach MachineMetrics and how politely to call it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import SecretStr, field_validator, model_validator

from erpsync.config.section import BackoffSeconds, Range, Seconds, Section, TimeoutSeconds, read_secret_file

_ATTEMPTS = Range(1, 50, "attempts")
_RATE = Range(0.01, 100_000, "calls per second")
_CONCURRENCY = Range(1, 256, "concurrent calls")
_FAILURES = Range(1, 1000, "failures")


class MMPaths(Section):
    """Path of each MachineMetrics operation, relative to ``base_url``.

    The job-dispatch paths are documented; the import path is not public (assumed, see
    docs/machinemetrics.md) and the current-docs paths may differ, so every one is configurable.
    """

    start: str = "/erp/jobdispatch/start"
    stop: str = "/erp/jobdispatch/stop"
    get: str = "/erp/jobdispatch/{erpJobOperationRunId}"
    import_jobs: str = "/erp/jobs/import"


class MMSettings(Section):
    """How to reach MachineMetrics and how politely to call it."""

    base_url: str = "https://api.machinemetrics.com"
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    paths: MMPaths = MMPaths()
    connect_timeout_seconds: TimeoutSeconds = 5
    read_timeout_seconds: TimeoutSeconds = 15
    retry_deadline_seconds: Seconds = 60
    max_attempts: Annotated[int, _ATTEMPTS.before, _ATTEMPTS.after] = 6
    backoff_initial_seconds: BackoffSeconds = 0.5
    backoff_max_seconds: BackoffSeconds = 30
    rate_limit_per_second: Annotated[float, _RATE.before, _RATE.after] = 50
    max_concurrency: Annotated[int, _CONCURRENCY.before, _CONCURRENCY.after] = 16
    breaker_failure_threshold: Annotated[int, _FAILURES.before, _FAILURES.after] = 5
    breaker_reset_seconds: Seconds = 60

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http(s) URL such as https://api.machinemetrics.com")
        if "@" in urlsplit(value).netloc:
            # refused rather than masked: a credential here would travel into logs, audit and
            # action rows with every URL erpsync records
            raise ValueError(
                "must not contain user:password@; put the API key in mm.api_key or mm.api_key_file, "
                "and an authenticating proxy in the HTTPS_PROXY environment variable"
            )
        return value.rstrip("/")

    @model_validator(mode="after")
    def _api_key_from_file(self) -> MMSettings:
        if self.api_key is None and self.api_key_file is not None:
            self.api_key = read_secret_file(self.api_key_file, "mm.api_key_file")
        return self
