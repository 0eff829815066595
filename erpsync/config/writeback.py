"""The ``[writeback]`` section: part counts from MM written into the ERP, and where to."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from erpsync.config.database import DatabaseSettings
from erpsync.config.section import Range, Seconds, Section
from erpsync.domain.plausible_counts import DEFAULT_MAX_PART_COUNT, MAX_PART_COUNT_LIMIT
from erpsync.domain.writeback_rules import SQL_SINK_BINDS, sql_bind_names, unknown_sql_binds

SinkKind = Literal["staging", "visual-labor-ticket", "sql", "csv", "none"]
# the staging table's name goes into DDL and SQL text, so only [schema.]table of plain identifiers
_PLAIN_TABLE_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]{0,127}\.)?[A-Za-z_][A-Za-z0-9_]{0,127}")
_WINDOW = Range(0, 10_080, "minutes")  # up to a week
_BATCH = Range(1, 2000, "rows")
# at most 10^10: every count and the sums the sinks write stay below the ERP's and state's columns
_PARTS = Range(1, MAX_PART_COUNT_LIMIT, "parts")


class WritebackSettings(Section):
    """Part counts from MM written into the ERP."""

    sink: SinkKind = "staging"
    interval_seconds: Seconds = 60
    # a stopped run is read again this long after erpsync stopped it (or last saw its counts change)
    settle_window_minutes: Annotated[int, _WINDOW.before, _WINDOW.after] = 30
    # a stopped run whose final read or write keeps failing is quarantined this long after it stopped
    final_counts_max_hours: int = Field(default=72, ge=1, le=720)
    allow_decrease: bool = False
    # the most parts one MM run can plausibly count: a higher count is quarantined, never written
    max_part_count: Annotated[int, _PARTS.before, _PARTS.after] = DEFAULT_MAX_PART_COUNT
    database: DatabaseSettings | None = None
    staging_table: str = "ERPSYNC_RUN_COUNTS"
    statement: str | None = None
    outbox_dir: Path | None = None
    batch_size: Annotated[int, _BATCH.before, _BATCH.after] = 500

    @field_validator("staging_table")
    @classmethod
    def _plain_identifier(cls, value: str) -> str:
        if not _PLAIN_TABLE_NAME.fullmatch(value):
            raise ValueError(
                "expected a plain table name, optionally schema-qualified, e.g. dbo.ERPSYNC_RUN_COUNTS"
            )
        return value

    @model_validator(mode="after")
    def _sink_needs(self) -> WritebackSettings:
        if self.sink == "sql" and not self.statement:
            raise ValueError("writeback.sink = 'sql' needs writeback.statement")
        if self.sink == "sql" and self.statement:
            unknown = unknown_sql_binds(self.statement)
            if unknown:
                raise ValueError(
                    "writeback.statement uses unknown bind name(s) "
                    + ", ".join(f":{name}" for name in unknown)
                    + "; known: "
                    + ", ".join(f":{name}" for name in sorted(SQL_SINK_BINDS))
                )
            if not sql_bind_names(self.statement):
                raise ValueError("writeback.statement has no :name binds; it could not write any count")
        if self.sink == "csv" and self.outbox_dir is None:
            raise ValueError("writeback.sink = 'csv' needs writeback.outbox_dir")
        return self
