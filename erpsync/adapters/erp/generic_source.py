"""The `generic-sql` source: any table, view or SELECT, its columns mapped to canonical fields.

Configuration (`[source.generic]`): `table` (optionally `schema_name`) or `query`, and `columns`
mapping a canonical field to a column name. Fields:
- required: `job`, `operation`, `machine`
- optional: `run_key`, `part`, `lot`, `description`, `quantity`, `setup_time` (unit:
  `setup_time_unit`), `run_time` (unit: a `run_unit` column or `run_time_unit`), `due_at`, `start_at`,
  `end_at`, `in_setup` (yes/no), `status` (meaning from `status_map`).
Identifiers are never pasted into SQL: a table is reflected and every mapped column must exist in it
(a missing one is a ConfigError naming `source.generic.columns.<field>`); a query is wrapped as a
subquery whose columns are checked the same way; values (lookup keys) are always bound parameters.

Run rule per row: with a `status` column, `status_map` decides (not_started / setup / production /
ended / skip; an unmapped value is a bad row). Without one: `end_at` set -> ENDED, else `start_at`
set -> SETUP when `in_setup` is true, else PRODUCTION; neither -> not started (operation only).
Run key: the `run_key` column, else `<job>|<operation>`. Job key: (`job`,). Timestamps without a
zone are local to `source.timezone`. Rows are streamed ordered by run key.

Load: without `watermark` every read is a full read of the mapped table/view (its whole cost, every
sync cycle). With `watermark` naming a column that grows on every change of a row (an increasing
id, or a last-modified time the ERP sets), a full read is the first read of the process and then
runs every `full_read_interval_minutes`; between them a read takes the rows whose watermark is
above the highest value seen less `watermark_margin` (ids, or seconds for a time: late commits),
plus the runs still open at the last read, re-read by key. Ended runs that did not change are then
absent from the snapshot: erpsync already ended them (the service looks up any run MM still has
open that a read did not return). Rows with no watermark value, and a change that did not move it,
are seen at the next full read.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, TypeVar

import structlog
from sqlalchemy import (
    Engine,
    MetaData,
    Row,
    Select,
    Table,
    bindparam,
    column,
    false,
    literal_column,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError, NoSuchTableError
from sqlalchemy.sql import ColumnElement, FromClause

from erpsync.adapters.erp.read_window import PROCESS_WINDOWS, ReadWindow, ReadWindows
from erpsync.adapters.erp.readonly_sql import without_trailing_semicolon
from erpsync.adapters.erp.snapshot import ParsedRow, StreamSnapshot, count_items
from erpsync.adapters.erp.sql_engine import create_source_engine, is_statement_refusal, stream_rows
from erpsync.adapters.erp.values import parse_bool, parse_datetime, parse_decimal
from erpsync.adapters.erp.visual_names import clean, operation_name
from erpsync.config import SourceSettings
from erpsync.domain.errors import ConfigError, RecordError
from erpsync.domain.model import BadRecord, JobOperation, JobOperationRun, RunState, SourceStats
from erpsync.domain.timezones import to_utc, zone_of
from erpsync.domain.units import (
    RunUnit,
    TimeUnit,
    UnitError,
    duration_seconds,
    parse_run_unit,
    parse_time_unit,
    part_time_ms,
    quantity_required,
    to_decimal,
)

KIND = "generic-sql"
LOOKUP_BATCH = 500
REQUIRED_FIELDS = ("job", "operation", "machine")
OPTIONAL_FIELDS = (
    "run_key",
    "part",
    "lot",
    "description",
    "quantity",
    "setup_time",
    "run_time",
    "run_unit",
    "due_at",
    "start_at",
    "end_at",
    "in_setup",
    "status",
)
FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS
_STATES = {"setup": RunState.SETUP, "production": RunState.PRODUCTION, "ended": RunState.ENDED}
WATERMARK = "erpsync_watermark"  # label of the watermark column in the statement
DEFAULT_ID_MARGIN = 100
DEFAULT_TIME_MARGIN_SECONDS = 300

log = structlog.get_logger(__name__)
T = TypeVar("T")


class _FieldError(RecordError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _HighMark:
    """The highest watermark value among the rows read."""

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def see(self, value: Any) -> None:
        if value is not None and (self.value is None or value > self.value):
            self.value = value


def _utcnow() -> datetime:
    return datetime.now(UTC)


class GenericSqlSource:
    """Reads a user-mapped table, view or SELECT through a read-only engine."""

    def __init__(
        self,
        settings: SourceSettings,
        engine: Engine | None = None,
        *,
        clock: Callable[[], datetime] = _utcnow,
        windows: ReadWindows = PROCESS_WINDOWS,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self.generic = settings.generic
        self.operation_stats = SourceStats()
        self._zone = zone_of(settings.timezone)
        self._status_map = {clean(k).casefold(): v for k, v in self.generic.status_map.items()}
        self._run_unit, self._setup_unit = self._check_config()
        self.engine = engine or create_source_engine(settings)
        self._source: FromClause | None = None
        self._columns: dict[str, ColumnElement[Any]] = {}
        self._watermark: ColumnElement[Any] | None = None
        self._clock = clock
        self._windows = windows
        g = self.generic
        self._window_key = (
            self.name,
            self.engine.url.render_as_string(hide_password=True),
            g.table,
            g.query,
            g.watermark,
            tuple(sorted(g.columns.items())),
        )

    def _check_config(self) -> tuple[RunUnit | None, TimeUnit]:
        g = self.generic
        if not g.table and not g.query:
            raise ConfigError(
                "source.generic: set table (a table or view name) or query (a SELECT) for kind generic-sql"
            )
        for key in g.columns:
            if key not in FIELDS:
                raise ConfigError(
                    f"source.generic.columns.{key}: unknown field; expected one of {', '.join(FIELDS)}"
                )
        for key in REQUIRED_FIELDS:
            if not g.columns.get(key):
                raise ConfigError(f"source.generic.columns.{key}: required; name the column that holds it")
        if "status" in g.columns and not g.status_map:
            raise ConfigError(
                "source.generic.status_map: required when columns.status is mapped "
                "(value -> not_started, setup, production, ended or skip)"
            )
        run_unit = None
        if g.run_time_unit:
            try:
                run_unit = parse_run_unit(g.run_time_unit, self.settings.visual.run_type_aliases)
            except UnitError as exc:
                raise ConfigError(f"source.generic.run_time_unit: {exc}") from None
        elif "run_time" in g.columns and "run_unit" not in g.columns:
            raise ConfigError(
                "source.generic.run_time_unit: required when columns.run_time is mapped without "
                "columns.run_unit (e.g. 'MIN/PC')"
            )
        return run_unit, parse_time_unit(g.setup_time_unit)

    # -- statement -----------------------------------------------------------------------------

    def _resolve(self) -> FromClause:
        """Reflect the table (or probe the query) once and check every mapped column exists."""
        if self._source is not None:
            return self._source
        g = self.generic
        if g.table:
            schema, _, name = g.table.rpartition(".")
            try:
                source: FromClause = Table(
                    name, MetaData(), schema=schema or g.schema_name or None, autoload_with=self.engine
                )
            except NoSuchTableError:
                raise ConfigError(f"source.generic.table: table or view {g.table!r} not found") from None
            available = [c.name for c in source.columns]
            where = f"table {g.table!r}"
        else:
            assert g.query is not None
            # new lines around the query: a trailing "-- comment" must not swallow the closing ")"
            query = f"\n{without_trailing_semicolon(g.query)}\n"
            probe: Select[Any] = (
                select(literal_column("*")).select_from(text(f"({query}) erpsync_probe")).where(false())
            )
            with _refusal_names_the_query(), self.engine.connect() as conn:
                available = list(conn.execute(probe).keys())
            source = text(query).columns(*(column(name) for name in available)).subquery("erpsync_src")
            where = "the query's result"
        for key, wanted in g.columns.items():
            actual = _match(wanted, available)
            if actual is None:
                raise ConfigError(
                    f"source.generic.columns.{key}: column {wanted!r} not found in {where}; "
                    f"columns are: {', '.join(available)}"
                )
            self._columns[key] = source.c[actual]
        if g.watermark:
            actual = _match(g.watermark, available)
            if actual is None:
                raise ConfigError(
                    f"source.generic.watermark: column {g.watermark!r} not found in {where}; "
                    f"columns are: {', '.join(available)}"
                )
            self._watermark = source.c[actual]
        self._source = source
        return source

    def statement(self) -> Select[Any]:
        """SELECT of the mapped columns labelled by field, ordered by run key (or job, operation)."""
        source = self._resolve()
        selected = [col.label(key) for key, col in self._columns.items()]
        if self._watermark is not None:
            selected.append(self._watermark.label(WATERMARK))
        stmt = select(*selected).select_from(source)
        order = (
            [self._columns["run_key"]]
            if "run_key" in self._columns
            else [
                self._columns["job"],
                self._columns["operation"],
            ]
        )
        return stmt.order_by(*order)

    # -- JobSource -------------------------------------------------------------------------------

    def changed_statement(self) -> Select[Any]:
        """`statement` restricted to rows whose watermark is above `:after` (needs `watermark`)."""
        statement = self.statement()
        assert self._watermark is not None
        return statement.where(self._watermark > bindparam("after"))

    def lookup_statement(self) -> tuple[Select[Any], bool]:
        """`statement` restricted to `:keys` (expanding), and whether the keys are run keys (else jobs)."""
        base = self.statement()
        by_run_key = "run_key" in self._columns
        column_ = self._columns["run_key"] if by_run_key else self._columns["job"]
        return base.where(column_.in_(bindparam("keys", expanding=True))), by_run_key

    def statements(self) -> dict[str, Select[Any]]:
        """Every statement this source runs, by name (`erpsync sources sql`); reflects the table."""
        found = {"rows": self.statement()}
        if self._watermark is not None:
            found["changed_rows"] = self.changed_statement()
        found["lookup"] = self.lookup_statement()[0]
        return found

    def read_runs(self) -> StreamSnapshot:
        """Every row that is a run (open or ended): a full read, or with `watermark` set the rows
        changed since the last read plus the open runs (module docstring)."""
        statement = self.statement()
        if self._watermark is None:

            def produce(stats: SourceStats) -> Iterator[JobOperationRun | BadRecord]:
                return _runs(self._items(statement, {}, stats), open_runs=set())  # no next read to plan

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

    # -- reads with a watermark -----------------------------------------------------------------

    def _full_read(self, stats: SourceStats, now: datetime) -> Iterator[JobOperationRun | BadRecord]:
        mark = _HighMark()
        open_runs: set[str] = set()
        yield from _runs(self._items(self.statement(), {}, stats, mark), open_runs)
        self._windows.put(self._window_key, ReadWindow(frozenset(open_runs), mark.value, now))
        log.debug("generic_rows_read", mode="full", rows=stats.rows_read, watermark=str(mark.value))

    def _changed_read(self, stats: SourceStats, window: ReadWindow) -> Iterator[JobOperationRun | BadRecord]:
        mark = _HighMark(window.watermark)
        after = self._below(window.watermark)
        found: dict[str, ParsedRow | BadRecord] = {}
        for item in self._items(self.changed_statement(), {"after": after}, stats, mark):
            found.setdefault(_key_of(item), item)
        for item in self._lookup_items(window.known, stats):
            found.setdefault(_key_of(item), item)
        open_runs: set[str] = set()
        yield from _runs((found[key] for key in sorted(found)), open_runs)
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
        statement, by_run_key = self.lookup_statement()
        values = keys if by_run_key else sorted({k.rpartition("|")[0] for k in keys if "|" in k})
        wanted = set(keys)
        for start in range(0, len(values), LOOKUP_BATCH):
            params = {"keys": values[start : start + LOOKUP_BATCH]}
            for item in self._items(statement, params, stats):
                if isinstance(item, BadRecord) or (item.state is not None and item.run_key in wanted):
                    yield item

    def read_operations(self) -> Iterator[JobOperation | BadRecord]:
        """Rows that are not ended and not skipped, as operations to import."""
        self.operation_stats = SourceStats()
        statement = self.statement()

        def produce() -> Iterator[JobOperation | BadRecord]:
            for item in self._items(statement, {}, self.operation_stats):
                if isinstance(item, BadRecord):
                    yield item
                elif item.state is not RunState.ENDED:
                    yield item.operation

        return count_items(produce(), self.operation_stats, KIND)

    def acknowledge(self, snapshot: object) -> None:
        """Nothing to advance: every read is a full snapshot."""

    def close(self) -> None:
        self.engine.dispose()

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
            rows = _query_rows(rows)
        for row in rows:
            stats.rows_read += 1
            values = row._mapping
            if mark is not None:
                mark.see(values[WATERMARK])
            try:
                parsed = self._parse(values)
            except RecordError as exc:
                field = exc.field if isinstance(exc, _FieldError) else None
                key = clean(values.get("run_key")) or f"{clean(values['job'])}|{clean(values['operation'])}"
                log.warning("generic_row_quarantined", record_key=key, field=field, reason=str(exc))
                yield BadRecord(
                    source=self.name,
                    record_key=key,
                    reason=str(exc),
                    field=self.generic.columns.get(field or "", field),
                    raw={k: None if v is None else str(v) for k, v in values.items() if k != WATERMARK},
                )
                continue
            if parsed is None:
                stats.skip("status")
                continue
            yield parsed

    def _parse(self, values: Any) -> ParsedRow | None:
        job, seq, machine = clean(values["job"]), clean(values["operation"]), clean(values["machine"])
        for key, value in (("job", job), ("operation", seq), ("machine", machine)):
            if not value:
                raise _FieldError(key, f"{key} is empty")
        run_key = clean(values.get("run_key")) or f"{job}|{seq}"
        quantity = _guard("quantity", lambda: quantity_required(self._number(values, "quantity")))
        setup = _guard(
            "setup_time", lambda: duration_seconds(self._number(values, "setup_time"), self._setup_unit)
        )
        run = self._number(values, "run_time")
        unit = self._run_unit
        if clean(values.get("run_unit")):
            unit = _guard("run_unit", lambda: parse_run_unit(clean(values.get("run_unit"))))
        if unit is None and run:
            raise _FieldError("run_unit", "run time has no unit; the run_unit column is empty")
        part_ms = None if unit is None else _guard("run_time", lambda: part_time_ms(run, unit, quantity))
        start_at, end_at = self._time(values, "start_at"), self._time(values, "end_at")
        state = self._state(values, start_at, end_at)
        if state == "skip":
            return None
        operation = JobOperation(
            job_key=(job,),
            operation_seq=seq,
            machine=machine,
            job_name=job,
            operation_name=operation_name(job, seq),
            part_name=clean(values.get("part")),
            lot_name=clean(values.get("lot")),
            description=clean(values.get("description")),
            quantity_required=quantity,
            expected_setup_seconds=setup,
            ideal_part_ms=part_ms,
            expected_part_ms=part_ms,
            due_at=self._time(values, "due_at"),
            origin=f"{self.generic.table or 'query'}:{run_key}",
        )
        return ParsedRow(operation, state, run_key, start_at, end_at)

    def _state(
        self, values: Any, start_at: datetime | None, end_at: datetime | None
    ) -> RunState | Literal["skip"] | None:
        if "status" in self._columns:
            raw = clean(values.get("status"))
            meaning = self._status_map.get(raw.casefold())
            if meaning is None:
                raise _FieldError("status", f"status {raw!r} is not in source.generic.status_map; add it")
            return "skip" if meaning == "skip" else _STATES.get(meaning)
        if end_at is not None:
            return RunState.ENDED
        if start_at is not None:
            in_setup = _guard("in_setup", lambda: _flag(values.get("in_setup")))
            return RunState.SETUP if in_setup else RunState.PRODUCTION
        return None

    def _number(self, values: Any, key: str) -> Decimal | None:
        value = values.get(key)
        if value is None or isinstance(value, Decimal | int | float):
            return _guard(key, lambda: to_decimal(value, key))
        try:
            return parse_decimal(str(value))
        except ValueError as exc:
            raise _FieldError(key, str(exc)) from None

    def _time(self, values: Any, key: str) -> datetime | None:
        value = values.get(key)
        if value is None:
            return None
        if not isinstance(value, datetime):
            try:
                value = parse_datetime(str(value))
            except ValueError as exc:
                raise _FieldError(key, str(exc)) from None
            if value is None:
                return None
        return to_utc(value, self._zone)


def _runs(
    items: Iterable[ParsedRow | BadRecord], open_runs: set[str]
) -> Iterator[JobOperationRun | BadRecord]:
    """Parsed rows as runs (bad rows as they are); the keys of the open ones go into `open_runs`,
    which the next changed-rows read re-reads by key."""
    for item in items:
        if isinstance(item, BadRecord):
            yield item
        elif item.state is not None:
            if item.state is not RunState.ENDED:
                open_runs.add(item.run_key)
            yield item.run()


def _key_of(item: ParsedRow | BadRecord) -> str:
    return item.run_key if isinstance(item, ParsedRow) else item.record_key


@contextmanager
def _refusal_names_the_query() -> Iterator[None]:
    """A statement the database refuses (a write in the read-only session, a second statement, bad
    SQL) is a configuration error of `source.generic.query`; a connection failure stays what it is."""
    try:
        yield
    except DBAPIError as exc:
        if not is_statement_refusal(exc):
            raise
        raise ConfigError(
            f"source.generic.query: the ERP database refused it: {_first_line(exc)}; "
            "fix the query (exactly one SELECT that only reads; see docs/security.md)"
        ) from None


def _query_rows(rows: Iterator[Row[Any]]) -> Iterator[Row[Any]]:
    with _refusal_names_the_query():
        yield from rows


def _first_line(exc: DBAPIError) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _flag(value: Any) -> bool:
    if value is None or isinstance(value, bool | int):
        return bool(value)
    try:
        return bool(parse_bool(str(value)))
    except ValueError as exc:
        raise UnitError(str(exc)) from None


def _guard(field: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except UnitError as exc:
        raise _FieldError(field, f"{field}: {exc}") from None


def _match(wanted: str, available: list[str]) -> str | None:
    """The column name as the database spells it: exact, else the single case-insensitive match."""
    if wanted in available:
        return wanted
    folded = [name for name in available if name.casefold() == wanted.casefold()]
    return folded[0] if len(folded) == 1 else None
