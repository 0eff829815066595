"""erpsync's configuration: one TOML file, every key overridable from the environment.

Precedence, highest first: ``ERPSYNC_<SECTION>__<KEY>`` environment variables, the TOML file
(``--config FILE`` or ``ERPSYNC_CONFIG``), then the defaults, which run an embedded SQLite
state database. Secrets (the MM API key, database passwords) may also come from files
(``*_file`` keys, e.g. Docker secrets under ``/run/secrets``) so they never sit in the TOML file.

Each section owns its keys (one module per section here); ``erpsync.example.toml`` documents every
one of them. This module is the package's public API: import from ``erpsync.config``.
"""

from erpsync.config.database import DatabaseSettings, StateSettings
from erpsync.config.loading import CONFIG_ENV_VAR, load_settings
from erpsync.config.mm import MMPaths, MMSettings
from erpsync.config.secrets import REDACTED, register_settings_secrets
from erpsync.config.section import PositiveSeconds, Section, read_secret_file
from erpsync.config.service import LoggingSettings, ServiceSettings
from erpsync.config.settings import Settings
from erpsync.config.source import (
    CSV_SOURCE_KINDS,
    SQL_SOURCE_KINDS,
    CsvSettings,
    GenericMappingSettings,
    SourceKind,
    SourceSettings,
    VisualPresetSettings,
)
from erpsync.config.sync import ImportSettings, MachineSettings, SyncSettings
from erpsync.config.writeback import SinkKind, WritebackSettings

__all__ = [
    "CONFIG_ENV_VAR",
    "CSV_SOURCE_KINDS",
    "REDACTED",
    "SQL_SOURCE_KINDS",
    "CsvSettings",
    "DatabaseSettings",
    "GenericMappingSettings",
    "ImportSettings",
    "LoggingSettings",
    "MMPaths",
    "MMSettings",
    "MachineSettings",
    "PositiveSeconds",
    "Section",
    "ServiceSettings",
    "Settings",
    "SinkKind",
    "SourceKind",
    "SourceSettings",
    "StateSettings",
    "SyncSettings",
    "VisualPresetSettings",
    "WritebackSettings",
    "load_settings",
    "read_secret_file",
    "register_settings_secrets",
]
