"""The ``[source]`` section: where job operations come from, and each source kind's own keys.

What the keys mean for reading is in the sources themselves: erpsync/adapters/erp/visual_source.py,
generic_source.py and csv_source.py; docs/sources.md walks through them.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import field_validator, model_validator
from sqlalchemy.engine import make_url

from erpsync.adapters.erp.readonly_sql import read_only_select_problem, without_trailing_semicolon
from erpsync.config.database import DatabaseSettings
from erpsync.config.section import Range, Section

SourceKind = Literal["infor-visual", "generic-sql", "infor-visual-csv", "infor-ln-csv"]
SQL_SOURCE_KINDS: frozenset[str] = frozenset({"infor-visual", "generic-sql"})
CSV_SOURCE_KINDS: frozenset[str] = frozenset({"infor-visual-csv", "infor-ln-csv"})
# What a status value means for the run (generic-sql `status_map`, CSV `status_map`).
# ranges of the source's numbers (docs/configuration.md, "Ranges")
_LOOKBACK = Range(1, 8_760, "hours")  # up to a year
_FULL_READ = Range(0, 43_200, "minutes")  # up to 30 days
_ID_MARGIN = Range(0, 1_000_000_000, "ids")
_MARGIN = Range(0, 1_000_000_000, "ids or seconds")
_SETTLE = Range(0, 3_600, "seconds")
_BATCH = Range(100, 100_000, "rows")
_SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

StatusMeaning = Literal["not_started", "setup", "production", "ended", "skip"]


class VisualPresetSettings(Section):
    """The ``infor-visual`` SQL preset.

    Labor tickets are runs by ticket TYPE (setup/run types), site and lookback; the status filters
    choose which work orders and operations are imported as jobs (an operator clocked in is a run
    whatever the statuses say). Rules: erpsync/adapters/erp/visual_source.py.
    """

    schema_name: str | None = None
    work_order_statuses: list[str] = ["R", "F"]
    excluded_operation_statuses: list[str] = ["C", "X"]
    setup_ticket_types: list[str] = ["S"]
    run_ticket_types: list[str] = ["R"]
    site_id: str | None = None
    closed_ticket_lookback_hours: Annotated[int, _LOOKBACK.before, _LOOKBACK.after] = 72
    # Between full reads a cycle reads only new tickets (TRANSACTION_ID above a watermark, less this
    # margin: ids commit out of order) and re-reads the open / recently closed ones by id.
    full_read_interval_minutes: Annotated[int, _FULL_READ.before, _FULL_READ.after] = 1440  # 0: always
    transaction_id_margin: Annotated[int, _ID_MARGIN.before, _ID_MARGIN.after] = 100
    # Extra RUN_TYPE spellings of this site -> a canonical unit, e.g. {"PC/H" = "PCS/HR"}.
    run_type_aliases: dict[str, str] = {}


class GenericMappingSettings(Section):
    """The ``generic-sql`` mapping: a table/view (or a SELECT) and its columns per canonical field."""

    table: str | None = None
    query: str | None = None
    schema_name: str | None = None
    columns: dict[str, str] = {}
    # Unit of the run-time column when no run-unit column is mapped, e.g. "MIN/PC".
    run_time_unit: str | None = None
    setup_time_unit: Literal["hours", "minutes", "seconds"] = "hours"
    # Status value (case-insensitive) -> what it means for the run.
    status_map: dict[str, StatusMeaning] = {}
    # A column that increases whenever a row changes (an increasing id or a last-modified time):
    # between full reads a cycle reads only rows above the last value seen (less the margin: ids
    # for a number, seconds for a time) plus the runs still open, by key. None: every read is full.
    watermark: str | None = None
    watermark_margin: Annotated[float, _MARGIN.before, _MARGIN.after] | None = None  # 100 ids / 300 s
    full_read_interval_minutes: Annotated[int, _FULL_READ.before, _FULL_READ.after] = 1440

    @model_validator(mode="after")
    def _table_or_query(self) -> GenericMappingSettings:
        if self.table and self.query:
            raise ValueError("set source.generic.table or source.generic.query, not both")
        return self


class CsvSettings(Section):
    """CSV exports: one file, or an inbox folder watched for new files.

    ``header_overrides`` maps a canonical field of the preset (e.g. ``seq``, ``order``) to the
    header text in the file, or to a position as ``column:AP`` / ``column:3``.
    """

    path: Path | None = None
    inbox: Path | None = None
    header_overrides: dict[str, str] = {}
    encoding: str | None = None
    delimiter: str | None = None
    date_order: Literal["mdy", "dmy"] = "mdy"
    # None = decide per file: "," when the delimiter is ";" or a tab, else ".".
    decimal_separator: Literal[",", "."] | None = None
    # Units of time columns that carry no unit of their own (e.g. LN production/setup time).
    run_time_unit: str | None = None
    setup_time_unit: Literal["hours", "minutes", "seconds"] | None = None
    # Status text (case-insensitive) -> meaning; extends/overrides the built-in words.
    status_map: dict[str, StatusMeaning] = {}
    # A file is read only once unchanged for this long (it may still be being written).
    settle_seconds: Annotated[float, _SETTLE.before, _SETTLE.after] = 5

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, value: str | None) -> str | None:
        if value is not None and value not in (",", ";", "\t", "|"):
            raise ValueError("expected one of ',', ';', '|' or a tab character")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError("unknown encoding; expected e.g. utf-8, utf-8-sig or cp1252") from None
        return value


class SourceSettings(DatabaseSettings):
    """Where job operations come from."""

    url: str = "sqlite:///erp.db"
    # the source's name is stored in 64-character state columns and starts every MM run id
    name: str = "erp"
    kind: SourceKind = "infor-visual"
    timezone: str = "UTC"
    batch_size: Annotated[int, _BATCH.before, _BATCH.after] = 5000
    visual: VisualPresetSettings = VisualPresetSettings()
    generic: GenericMappingSettings = GenericMappingSettings()
    csv: CsvSettings = CsvSettings()

    @field_validator("name")
    @classmethod
    def _fits_the_state_columns(cls, value: str) -> str:
        if not _SOURCE_NAME.fullmatch(value):
            raise ValueError(
                "expected 1 to 64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit "
                "(the name is stored in 64-character state columns and starts every MM run id)"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _iana_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not an IANA time zone; expected e.g. America/Chicago or UTC") from None
        return value

    @model_validator(mode="after")
    def _query_only_reads(self) -> SourceSettings:
        if self.kind == "generic-sql" and self.generic.query:
            problem = read_only_select_problem(self.generic.query, make_url(self.url).get_backend_name())
            if problem:
                raise ValueError(f"source.generic.query: {problem}")
            self.generic.query = without_trailing_semicolon(self.generic.query)
        return self

    @model_validator(mode="after")
    def _csv_kinds_need_a_file(self) -> SourceSettings:
        if self.kind in CSV_SOURCE_KINDS and self.csv.path is None and self.csv.inbox is None:
            raise ValueError(f"source kind {self.kind!r} needs source.csv.path or source.csv.inbox")
        return self
