"""Build the JobSource a configuration asks for; the one place that knows every source kind."""

from __future__ import annotations

from erpsync.adapters.erp.csv_source import CsvSource
from erpsync.adapters.erp.generic_source import GenericSqlSource
from erpsync.adapters.erp.port import JobSource
from erpsync.adapters.erp.visual_source import VisualSource
from erpsync.adapters.state.store import StateStore
from erpsync.config import CSV_SOURCE_KINDS, SourceSettings
from erpsync.domain.errors import ConfigError


def open_source(settings: SourceSettings, store: StateStore | None = None) -> JobSource:
    """The source for `settings.kind`; CSV sources use `store` for their file checkpoints.

    Configuration mistakes raise ConfigError here or on the first read (a generic-sql mapping is
    checked against the live table). SQL sources connect lazily, on the first read.
    """
    if settings.kind == "infor-visual":
        return VisualSource(settings)
    if settings.kind == "generic-sql":
        return GenericSqlSource(settings)
    if settings.kind in CSV_SOURCE_KINDS:
        return CsvSource(settings, store)
    raise ConfigError(f"source.kind: unknown kind {settings.kind!r}")
