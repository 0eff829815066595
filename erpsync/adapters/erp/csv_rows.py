"""The rows of one CSV export file: header mapped, each row decoded by the preset, duplicates collapsed.

Duplicate rows (same run key) are collapsed: the FIRST row wins; a later identical row is counted as
`duplicate`, a later different one as `duplicate_conflict` and logged with both line numbers. A row
the preset cannot decode (any bad value: field_error.py) is a BadRecord naming the file, line and
header; its record_key is the row's run key when its key cells can be read (so the reconciler holds
that run rather than seeing it vanish), else `file.csv:17`. A file that breaks off while read ends
the stream with one BadRecord of class `unreadable_file`.
Suspect (`stats.suspect`, the export looks cut or failed): a header-only file, a cut-off last line
(the row is quarantined too), a file that cannot be read or breaks off.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import structlog

from erpsync.adapters.erp.csv_file import FileInfo, HeaderMap, Record, UnreadableFileError, iter_records
from erpsync.adapters.erp.csv_presets import (
    BUILTIN_STATUSES,
    CsvPreset,
    Meaning,
    RowContext,
    RowSkipped,
    status_key,
)
from erpsync.adapters.erp.field_error import FieldError, convert_row
from erpsync.adapters.erp.snapshot import ParsedRow
from erpsync.config import SourceSettings
from erpsync.domain.errors import ConfigError
from erpsync.domain.model import BadRecord, SourceStats
from erpsync.domain.timezones import zone_of
from erpsync.domain.units import RunUnit, TimeUnit, UnitError, parse_run_unit, parse_time_unit

log = structlog.get_logger(__name__)

UNREADABLE = "unreadable_file"


class CsvRowReader:
    """Decodes the files of one CSV source with its preset, header overrides, units and statuses."""

    def __init__(self, settings: SourceSettings, preset: CsvPreset) -> None:
        self.name = settings.name
        self.settings = settings
        self.csv = settings.csv
        self.preset = preset
        unknown = sorted(set(self.csv.header_overrides) - set(preset.aliases))
        if unknown:
            raise ConfigError(
                f"source.csv.header_overrides.{unknown[0]}: unknown field for {settings.kind}; "
                f"expected one of {', '.join(preset.aliases)}"
            )
        self.run_unit: RunUnit | None = None
        self.setup_unit: TimeUnit | None = None
        try:
            if self.csv.run_time_unit:
                self.run_unit = parse_run_unit(self.csv.run_time_unit, settings.visual.run_type_aliases)
            if self.csv.setup_time_unit:
                self.setup_unit = parse_time_unit(self.csv.setup_time_unit)
        except UnitError as exc:
            raise ConfigError(f"source.csv.run_time_unit: {exc}") from None
        self._statuses: dict[str, Meaning] = {
            **BUILTIN_STATUSES,
            **{status_key(k): v for k, v in self.csv.status_map.items()},
        }

    def header_problem(self, info: FileInfo) -> str | None:
        """Why the file's header cannot be mapped, or None when it can."""
        try:
            self._header(info)
        except UnreadableFileError as exc:
            return str(exc)
        except (UnicodeDecodeError, OSError) as exc:
            return _vanished(info, exc)
        return None

    def rows(self, info: FileInfo, stats: SourceStats) -> Iterator[ParsedRow | BadRecord]:
        """Parsed rows of a readable file, duplicates collapsed, bad rows as BadRecords.

        A file that breaks off while read (changed on disk, malformed CSV) ends the stream with
        one BadRecord of class `unreadable_file`.
        """
        try:
            yield from self._parsed_rows(info, stats)
        except UnreadableFileError as exc:
            stats.suspect = str(exc)
            yield self.file_bad(info.path, info.sha256, str(exc))
        except (UnicodeDecodeError, OSError) as exc:
            stats.suspect = _vanished(info, exc)
            yield self.file_bad(info.path, info.sha256, stats.suspect)

    def file_bad(self, path: Path, sha: str, reason: str) -> BadRecord:
        """The one BadRecord of a file that cannot be read (whole or to its end)."""
        log.warning("csv_file_unreadable", file=path.name, reason=reason)
        return BadRecord(
            source=self.name,
            record_key=f"{path.name}@{sha[:12]}",
            reason=reason,
            error_class=UNREADABLE,
            file=path.name,
        )

    def _header(self, info: FileInfo) -> tuple[HeaderMap, Iterator[Record]]:
        records = iter_records(info)
        first = next(records, None)
        if first is None:
            raise UnreadableFileError(f"{info.path.name} has no header row")
        mapping = HeaderMap.build(
            first.cells, self.preset.aliases, self.csv.header_overrides, self.preset.required, info.path.name
        )
        return mapping, records

    def _parsed_rows(self, info: FileInfo, stats: SourceStats) -> Iterator[ParsedRow | BadRecord]:
        mapping, records = self._header(info)
        ctx = RowContext(
            file_name=info.path.name,
            zone=zone_of(self.settings.timezone),
            date_order=self.csv.date_order,
            decimal_separator=info.decimal_separator,
            run_unit=self.run_unit,
            setup_unit=self.setup_unit,
            statuses=self._statuses,
            run_unit_aliases=self.settings.visual.run_type_aliases,
        )
        seen: dict[str, tuple[int, int]] = {}
        for record in records:
            line, cells = record.line, record.cells
            stats.rows_read += 1
            if record.truncated:
                stats.suspect = f"{info.path.name}: export looks cut off: {record.truncated}"
            item = self._row(mapping, record, ctx, stats)
            if record.unterminated and isinstance(item, BadRecord) and not stats.suspect:
                stats.suspect = (
                    f"{info.path.name}: export looks cut off: the last line ({line}) ends without a "
                    f"newline and cannot be read ({item.reason})"
                )
            if not isinstance(item, ParsedRow):
                if item is not None:
                    yield item
                continue
            fingerprint = zlib.crc32("\x1f".join(cells).encode())
            first = seen.get(item.run_key)
            if first is None:
                seen[item.run_key] = (line, fingerprint)
                yield item
            elif first[1] == fingerprint:
                stats.skip("duplicate")
            else:
                stats.skip("duplicate_conflict")
                log.warning(
                    "csv_duplicate_row_ignored",
                    file=info.path.name,
                    run_key=item.run_key,
                    kept_line=first[0],
                    ignored_line=line,
                    rule="first row wins",
                )
        if stats.rows_read == 0:
            stats.suspect = f"{info.path.name} has a header but no rows: the export looks failed or empty"

    def _row(
        self, mapping: HeaderMap, record: Record, ctx: RowContext, stats: SourceStats
    ) -> ParsedRow | BadRecord | None:
        line, cells = record.line, record.cells
        origin = f"{ctx.file_name}:{line}"
        fields = mapping.fields(cells)

        def get(name: str) -> str:
            return fields.get(name, "")

        if record.truncated or record.undecodable:
            problem = FieldError("row", record.undecodable or f"row cut off: {record.truncated}")
        else:
            try:
                parsed = convert_row(lambda: self.preset.parse(get, ctx, origin))
            except RowSkipped as skipped:
                stats.skip(skipped.reason)
                return None
            if not isinstance(parsed, FieldError):
                return parsed
            problem = parsed
        header = mapping.header(problem.field)
        run_key = convert_row(lambda: self.preset.run_key(get))
        log.warning("csv_row_quarantined", file=ctx.file_name, line=line, field=header, reason=str(problem))
        return BadRecord(
            source=self.name,
            record_key=run_key if isinstance(run_key, str) else origin,
            reason=str(problem),
            file=ctx.file_name,
            line=line,
            field=header,
            raw=mapping.raw(cells),
        )


def _vanished(info: FileInfo, exc: UnicodeDecodeError | OSError) -> str:
    return f"{info.path.name} changed or vanished while read: {exc}"
