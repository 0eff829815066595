"""The whole configuration: every section, where values come from, and rules across sections."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from erpsync.config.database import StateSettings
from erpsync.config.mm import MMSettings
from erpsync.config.secrets import redact
from erpsync.config.service import LoggingSettings, ServiceSettings
from erpsync.config.source import SourceSettings
from erpsync.config.sync import MachineSettings, SyncSettings
from erpsync.config.writeback import WritebackSettings


class Settings(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="ERPSYNC_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    state: StateSettings = StateSettings()
    mm: MMSettings = MMSettings()
    source: SourceSettings | None = None
    machines: MachineSettings = MachineSettings()
    sync: SyncSettings = SyncSettings()
    writeback: WritebackSettings = WritebackSettings()
    service: ServiceSettings = ServiceSettings()
    logging: LoggingSettings = LoggingSettings()

    toml_file: ClassVar[Path | None] = None
    # False: the given values only, no ERPSYNC_* variables nor config file (the demo's service)
    read_environment: ClassVar[bool] = True

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if not cls.read_environment:
            return (init_settings,)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls.toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls.toml_file))
        return tuple(sources)

    @model_validator(mode="after")
    def _history_outlives_the_lookback(self) -> Settings:
        # a binding purged while its closed ticket is still read would make that run look new
        if self.source is not None and self.source.kind == "infor-visual":
            lookback = self.source.visual.closed_ticket_lookback_hours
            if self.service.history_retention_days * 24 <= lookback:
                raise ValueError(
                    f"service.history_retention_days ({self.service.history_retention_days}) must be "
                    f"longer than source.visual.closed_ticket_lookback_hours ({lookback} h): finished "
                    "runs still read from the ERP keep their bindings"
                )
        return self

    def missing_for_service(self) -> list[str]:
        """Keys the sync service cannot run without, each as a one-line ``key: fix`` message."""
        problems = []
        if self.mm.api_key is None or not self.mm.api_key.get_secret_value():
            problems.append(
                "mm.api_key: required; set it in the config file, as ERPSYNC_MM__API_KEY, "
                "or point mm.api_key_file at a secret file"
            )
        if self.source is None:
            problems.append("source: required; add a [source] section (see erpsync.example.toml)")
        return problems

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as plain data, secrets masked, safe to print."""
        data = self.model_dump(mode="json")
        redacted: dict[str, Any] = redact(data, self)
        return redacted
