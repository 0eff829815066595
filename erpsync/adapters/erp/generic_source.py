"""The `generic-sql` source: any table, view or SELECT, its columns mapped to canonical fields.

Configuration (`[source.generic]`): `table` (optionally `schema_name`) or `query`, and `columns`
mapping a canonical field to a column name. Fields:
- required: `job`, `operation`, `machine`
- optional: `run_key`, `part`, `lot`, `description`, `quantity`, `setup_time` (unit:
  `setup_time_unit`), `run_time` (unit: a `run_unit` column or `run_time_unit`), `due_at`, `start_at`,
  `end_at`, `in_setup` (yes/no), `status` (meaning from `status_map`).
How the mapping becomes SQL: generic_mapping.py; what a row means: generic_rows.py.

Load: without `watermark` every read is a full read of the mapped table/view (its whole cost, every
sync cycle). With `watermark` naming a column that grows on every change of a row (an increasing
id, or a last-modified time the ERP sets), a full read is the first read of the process and then
runs every `full_read_interval_minutes`; between them a read takes the rows whose watermark is
above the highest value seen less `watermark_margin` (ids, or seconds for a time: late commits),
plus the runs still open at the last read, re-read by key. Ended runs that did not change are then
absent from the snapshot: erpsync already ended them (the service looks up any run MM still has
open that a read did not return). Rows with no watermark value, and a change that did not move it,
are seen at the next full read.

Duplicate run keys (rows come ordered by run key, so they are adjacent): a repeat of the same
row is skipped (`duplicate`, a join fan-out); rows of one run key that differ (another machine,
another state...) are ALL quarantined (`duplicate_run_key`, naming their machines), so no row is
picked by chance of order and a run MM has keeps its binding (the key is held, not vanished).
A key that turns up again after other keys (trimmed ids sort apart) is quarantined there.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Any

import structlog
from sqlalchemy import RowMapping, Select

from erpsync.adapters.erp.field_error import FieldError, convert_row
from erpsync.adapters.erp.generic_mapping import WATERMARK, GenericStatements, check_mapping, query_rows
from erpsync.adapters.erp.generic_rows import GenericRowDecoder
from erpsync.adapters.erp.read_window import ReadWindow, WindowedSqlSource
from erpsync.adapters.erp.row_streams import operations_of, runs_of
from erpsync.adapters.erp.snapshot import ParsedRow, StreamSnapshot, count_items
from erpsync.adapters.erp.sql_engine import stream_rows
from erpsync.config import GenericMappingSettings
from erpsync.domain.errors import ConfigError, RecordError
from erpsync.domain.model import BadRecord, JobOperation, JobOperationRun, SourceStats

KIND = "generic-sql"
LOOKUP_BATCH = 500
DEFAULT_ID_MARGIN = 100
DEFAULT_TIME_MARGIN_SECONDS = 300

log = structlog.get_logger(__name__)


class _HighMark:
    """The highest watermark value among the rows read."""

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def see(self, value: Any) -> None:
        """A value that cannot be ordered (a NaN in a numeric column) is not a watermark: ignored."""
        try:
            if value is None or value != value:  # noqa: PLR0124 - only NaN differs from itself
                return
            if self.value is None or value > self.value:
                self.value = value
        except ArithmeticError:  # Decimal('sNaN') refuses any comparison
            return


class GenericSqlSource(WindowedSqlSource):
    """Reads a user-mapped table, view or SELECT through a read-only engine."""

    generic: GenericMappingSettings
    decoder: GenericRowDecoder

    def _configure(self) -> tuple[Hashable, ...]:
        """Refuse a mapping that could never read a run, before any connection is made."""
        g = self.generic = self.settings.generic
        check_mapping(g)
        self.decoder = GenericRowDecoder(self.settings)
        return (g.table, g.query, g.watermark, tuple(sorted(g.columns.items())))

    @cached_property
    def sql(self) -> GenericStatements:
        """The mapping's statements on this source's engine (they reflect the table once)."""
        return GenericStatements(self.generic, self.engine)

    # -- JobSource -------------------------------------------------------------------------------

    def statements(self) -> dict[str, Select[Any]]:
        """Every statement this source runs, by name (`erpsync sources sql`); reflects the table."""
        found = {"rows": self.sql.statement()}
        if self.sql.has_watermark:
            found["changed_rows"] = self.sql.changed_statement()
        found["lookup"] = self.sql.lookup_statement()[0]
        return found

    def read_runs(self) -> StreamSnapshot:
        """Every row that is a run (open or ended): a full read, or with `watermark` set the rows
        changed since the last read plus the open runs (module docstring)."""
        statement = self.sql.statement()
        if not self.sql.has_watermark:

            def produce(stats: SourceStats) -> Iterator[JobOperationRun | BadRecord]:
                return runs_of(self._items(statement, {}, stats))  # no next read to plan

            return StreamSnapshot(produce, complete=True, kind=KIND)
        now = self._clock()
        window = self._windows.get(self._window_key)
        if (
            window is None
            or window.watermark is None
            or window.full_read_due(now, self.generic.full_read_interval_minutes)
        ):
            return StreamSnapshot(lambda stats: self._full_read(stats, now), complete=True, kind=KIND)
        return StreamSnapshot(lambda stats: self._changed_read(stats, window), complete=True, kind=KIND)

    def lookup_runs(self, run_keys: Collection[str]) -> Iterator[JobOperationRun | BadRecord]:
        """Specific runs in batches of bound keys (by run_key column, else by job)."""
        for item in self._lookup_items(run_keys, SourceStats()):
            if isinstance(item, ParsedRow):
                yield item.run()

    def read_operations(self) -> Iterator[JobOperation | BadRecord]:
        """Rows that are not ended and not skipped, as operations to import."""
        self.operation_stats = SourceStats()
        statement = self.sql.statement()
        items = operations_of(self._items(statement, {}, self.operation_stats))
        return count_items(items, self.operation_stats, KIND)

    def acknowledge(self, snapshot: object) -> None:
        """Nothing to advance: every read is a full snapshot."""

    # -- reads with a watermark -----------------------------------------------------------------

    def _full_read(self, stats: SourceStats, now: datetime) -> Iterator[JobOperationRun | BadRecord]:
        mark = _HighMark()
        open_runs: set[str] = set()
        yield from runs_of(self._items(self.sql.statement(), {}, stats, mark), open_runs)
        self._windows.put(self._window_key, ReadWindow(frozenset(open_runs), mark.value, now))
        log.debug("generic_rows_read", mode="full", rows=stats.rows_read, watermark=str(mark.value))

    def _changed_read(self, stats: SourceStats, window: ReadWindow) -> Iterator[JobOperationRun | BadRecord]:
        mark = _HighMark(window.watermark)
        after = self._below(window.watermark)
        found: dict[str, ParsedRow | BadRecord] = {}
        for item in self._items(self.sql.changed_statement(), {"after": after}, stats, mark):
            found.setdefault(_key_of(item), item)
        for item in self._lookup_items(window.known, stats):
            found.setdefault(_key_of(item), item)
        open_runs: set[str] = set()
        yield from runs_of((found[key] for key in sorted(found)), open_runs)
        self._windows.put(self._window_key, ReadWindow(frozenset(open_runs), mark.value, window.full_read_at))
        log.debug("generic_rows_read", mode="changed", rows=stats.rows_read, watermark=str(mark.value))

    def _below(self, value: Any) -> Any:
        """The watermark less the margin: ids for a number, seconds for a time."""
        margin = self.generic.watermark_margin
        if isinstance(value, datetime):
            return value - timedelta(seconds=DEFAULT_TIME_MARGIN_SECONDS if margin is None else margin)
        step = DEFAULT_ID_MARGIN if margin is None else margin
        if isinstance(value, Decimal):
            return value - Decimal(str(step))
        if isinstance(value, int | float):
            return value - step
        raise ConfigError(
            f"source.generic.watermark: column {self.generic.watermark!r} holds "
            f"{type(value).__name__} values; it must hold increasing numbers or times"
        )

    def _lookup_items(self, run_keys: Collection[str], stats: SourceStats) -> Iterator[ParsedRow | BadRecord]:
        """Rows of specific runs (bad rows of them too), in batches of bound keys."""
        keys = sorted(set(run_keys))
        statement, by_run_key = self.sql.lookup_statement()
        values = keys if by_run_key else sorted({k.rpartition("|")[0] for k in keys if "|" in k})
        wanted = set(keys)
        for start in range(0, len(values), LOOKUP_BATCH):
            params = {"keys": values[start : start + LOOKUP_BATCH]}
            for item in self._items(statement, params, stats):
                if isinstance(item, BadRecord) or (item.state is not None and item.run_key in wanted):
                    yield item

    # -- rows ------------------------------------------------------------------------------------

    def _items(
        self,
        statement: Select[Any],
        params: dict[str, Any],
        stats: SourceStats,
        mark: _HighMark | None = None,
    ) -> Iterator[ParsedRow | BadRecord]:
        rows = stream_rows(self.engine, statement, params, batch_size=self.settings.batch_size)
        if self.generic.query:
            rows = query_rows(rows)
        group: list[tuple[ParsedRow, RowMapping]] = []  # rows of one run key (ordered by it)
        settled: set[str] = set()
        for row in rows:
            stats.rows_read += 1
            values = row._mapping
            if mark is not None:
                mark.see(values[WATERMARK])
            parsed = convert_row(self.decoder.decode, values)
            if isinstance(parsed, RecordError):
                yield self.decoder.bad_record(values, parsed)
                continue
            if parsed is None:
                stats.skip("status")
                continue
            if group and group[0][0].run_key != parsed.run_key:
                yield from self._settle(group, settled, stats)
                group = []
            group.append((parsed, values))
        if group:
            yield from self._settle(group, settled, stats)

    def _settle(
        self, group: list[tuple[ParsedRow, RowMapping]], settled: set[str], stats: SourceStats
    ) -> Iterator[ParsedRow | BadRecord]:
        """The rows of one run key: one run, or every differing row quarantined (never a pick)."""
        distinct: dict[tuple[str, ...], tuple[ParsedRow, RowMapping]] = {}
        for item in group:
            if distinct.setdefault(_fingerprint(item[1]), item) is not item:
                stats.skip("duplicate")  # the same row again (a join fan-out)
        run_key = group[0][0].run_key
        rows = list(distinct.values())
        if len(rows) == 1 and run_key not in settled:
            settled.add(run_key)
            yield rows[0][0]
            return
        machines = ", ".join(repr(parsed.operation.machine) for parsed, _ in rows)
        more = "" if len(rows) > 1 else " (a row further up already had it)"
        problem = FieldError(
            "run_key",
            f"run key {run_key!r} is on {len(rows)} differing rows{more} (machines {machines}); "
            "none is taken as the run until the mapping gives every row its own run key",
        )
        for _, values in rows:
            yield self.decoder.bad_record(values, problem, "duplicate_run_key")


def _fingerprint(values: RowMapping) -> tuple[str, ...]:
    return tuple(str(v) for k, v in values.items() if k != WATERMARK)


def _key_of(item: ParsedRow | BadRecord) -> str:
    return item.run_key if isinstance(item, ParsedRow) else item.record_key
