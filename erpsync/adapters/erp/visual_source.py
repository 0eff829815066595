"""The `infor-visual` preset: job runs from VISUAL's labor tickets, operations from its routings.

What counts as a run (one per LABOR_TICKET row, run key `LT<TRANSACTION_ID>`):
- The ticket is on a work-order operation: WORKORDER_* key set (indirect tickets with a NULL key
  are skipped), the work order's TYPE is `W` (masters `M` and quotes `Q` are skipped), and the
  operation is not an outside service (SERVICE_ID or VENDOR_ID non-blank: skipped).
- Open tickets (CLOCK_OUT NULL) are active runs: SETUP when the ticket TYPE is in
  `visual.setup_ticket_types`, PRODUCTION when it is in `visual.run_ticket_types`; any other TYPE
  is quarantined (configure it rather than have erpsync guess).
- Closed tickets whose CLOCK_OUT is within `visual.closed_ticket_lookback_hours` are ENDED runs
  (end = CLOCK_OUT); `lookup_runs` finds any ticket by id, whatever its age.
- Work-order / operation status filters apply to `read_operations` (imports) only: an operator
  clocked in is a run whatever the statuses say, so a snapshot really holds every open ticket
  (`complete=True`).
- Machine: the ticket's RESOURCE_ID, else the operation's. Times: CLOCK_IN / CLOCK_OUT, local
  (`source.timezone`) -> UTC. Quantity: OPERATION.CALC_END_QTY, else WORK_ORDER.DESIRED_QTY.
  Setup: SETUP_HRS -> seconds. Part time: RUN + RUN_TYPE -> ms (VISUAL has one standard, used for
  both expected and ideal part time). Part: WORK_ORDER.PART_ID; description: PART.DESCRIPTION,
  else OPERATION.OPERATION_TYPE. Naming: see `visual_names`.
Tickets are read ordered by TRANSACTION_ID; a join fan-out repeating a ticket is collapsed (first
row wins).

Load that does not grow with history (VISUAL ships a primary key on TRANSACTION_ID, no index on
CLOCK_OUT, so "open or closed since" scans the whole table):
- A full read (the `runs` statement) is the first read of a process and then runs every
  `visual.full_read_interval_minutes` (0: every read is full).
- Between them a read takes MAX(TRANSACTION_ID) (one index probe), then re-reads BY ID the tickets
  the last read returned (open or closed within the lookback, chunked IN lists on the primary key)
  whose id is at most `watermark - visual.transaction_id_margin`, then every ticket above that id
  (a primary-key range). Same filter, same order, same rows as a full read: a clock-out, an edit,
  a delete, a reopen of a recently closed ticket and a new ticket are all seen in that read.
- Not seen until the next full read: a ticket committed with an id more than the margin below the
  highest id already read when it committed, and a ticket that was closed before the lookback at
  the last read and has since been reopened or had its CLOCK_OUT moved into the lookback.
- If MAX(TRANSACTION_ID) fell by more than the margin (the database was restored from a backup),
  the read is a full one.
- If the tickets to re-read are more than a tenth of the ids (`LOOKUPS_PER_FULL_READ`: a young
  or small database, or tens of thousands of open tickets), the read is a full one: one scan is
  then cheaper than that many primary-key lookups (measured: 100,000 open of 100,000 tickets,
  full read 2.1 s, by id 4.9 s).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Collection, Hashable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import structlog
from sqlalchemy import Row, RowMapping, Select
from sqlalchemy.exc import DBAPIError

from erpsync.adapters.erp.field_error import FieldError, cell, convert_row
from erpsync.adapters.erp.read_window import ReadWindow, WindowedSqlSource
from erpsync.adapters.erp.snapshot import StreamSnapshot, count_items
from erpsync.adapters.erp.sql_engine import stream_rows
from erpsync.adapters.erp.visual_names import (
    clean,
    named_operation,
    parse_ticket_run_key,
    ticket_run_key,
    visual_job_key,
    visual_job_name,
)
from erpsync.adapters.erp.visual_statements import (
    OP_RESOURCE,
    OPERATION_KEY_COLUMNS,
    TICKET_COLUMNS,
    is_outside_service,
    known_tickets_statement,
    latest_id_statement,
    lookup_statement,
    missing_table_message,
    new_tickets_statement,
    operations_statement,
    runs_statement,
)
from erpsync.adapters.state.db import is_missing_table
from erpsync.config import VisualPresetSettings
from erpsync.domain.errors import ConfigError, RecordError
from erpsync.domain.model import BadRecord, JobOperation, JobOperationRun, RunState, SourceStats
from erpsync.domain.timezones import local_cutoff, to_utc, zone_of
from erpsync.domain.units import (
    RunUnit,
    UnitError,
    parse_run_unit,
    part_time_ms,
    quantity_required,
    setup_hours_to_seconds,
)

KIND = "infor-visual"
LOOKUP_BATCH = 500
# Re-read by id only while the known tickets are at most 1/N of the ids (~ rows) in the table.
LOOKUPS_PER_FULL_READ = 10
STANDARDS_CACHE_SIZE = 10_000

log = structlog.get_logger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


class VisualSource(WindowedSqlSource):
    """Reads VISUAL through a read-only SQLAlchemy engine (SQL Server, PostgreSQL, MySQL, SQLite)."""

    visual: VisualPresetSettings

    def _configure(self) -> tuple[Hashable, ...]:
        v = self.visual = self.settings.visual
        self._zone = zone_of(self.settings.timezone)
        self._setup_types = {t.strip().upper() for t in v.setup_ticket_types}
        self._run_types = {t.strip().upper() for t in v.run_ticket_types}
        self._schema_map: dict[str | None, str | None] | None = (
            {None: v.schema_name} if v.schema_name else None
        )
        self._units: dict[str, RunUnit | UnitError] = {}
        self._standards_cache: dict[
            tuple[Any, ...], tuple[int | None, int | None, int | None] | FieldError
        ] = {}
        return (v.schema_name, v.site_id, v.closed_ticket_lookback_hours)

    # -- JobSource ---------------------------------------------------------------------------

    def read_runs(self) -> StreamSnapshot:
        """Every open ticket and the recently closed ones; always a complete snapshot.

        A full read or an incremental one (module docstring); both return the same rows.
        """
        now = self._clock()
        lookback = timedelta(hours=self.visual.closed_ticket_lookback_hours)
        params: dict[str, Any] = {"closed_since": local_cutoff(now, lookback, self._zone)}
        if self.visual.site_id:
            params["site_id"] = self.visual.site_id
        window = self._windows.get(self._window_key)
        if (
            window is None
            or window.full_read_due(now, self.visual.full_read_interval_minutes)
            or self._lookups_cost_more(window)
        ):
            return StreamSnapshot(lambda stats: self._full_read(params, stats, now), complete=True, kind=KIND)
        return StreamSnapshot(
            lambda stats: self._incremental_read(params, stats, now, window), complete=True, kind=KIND
        )

    def lookup_runs(self, run_keys: Collection[str]) -> Iterator[JobOperationRun | BadRecord]:
        """Current state of specific tickets, in batches of bound ids; missing ones are absent."""
        ids: set[int] = set()
        for key in run_keys:
            tid = parse_ticket_run_key(key)
            if tid is None:
                yield BadRecord(
                    source=self.name,
                    record_key=key,
                    reason=f"run key {key!r} is not a VISUAL labor ticket key (expected LT<TRANSACTION_ID>)",
                    field="run_key",
                )
            else:
                ids.add(tid)
        ordered = sorted(ids)
        statement = lookup_statement()
        for start in range(0, len(ordered), LOOKUP_BATCH):
            batch = ordered[start : start + LOOKUP_BATCH]
            yield from self._tickets(self._stream(statement, {"ids": batch}), SourceStats())

    def read_operations(self) -> Iterator[JobOperation | BadRecord]:
        """Machine operations of active work orders (status filters from `visual.*`)."""
        self.operation_stats = SourceStats()
        params: dict[str, Any] = {
            "wo_statuses": [s.strip().upper() for s in self.visual.work_order_statuses],
            "op_excluded": [s.strip().upper() for s in self.visual.excluded_operation_statuses],
        }
        if self.visual.site_id:
            params["site_id"] = self.visual.site_id
        rows = self._stream(operations_statement(self.visual), params)
        return count_items(self._operations(rows, self.operation_stats), self.operation_stats, KIND)

    def acknowledge(self, snapshot: object) -> None:
        """Nothing to advance: every read is a complete snapshot of open and recent tickets (the
        ticket window describes the ERP, not what erpsync did with it, so it moves on each read)."""

    # -- reading -------------------------------------------------------------------------------

    @staticmethod
    def _lookups_cost_more(window: ReadWindow) -> bool:
        """Many known tickets against a small table: one scan beats that many key lookups."""
        return len(window.known) * LOOKUPS_PER_FULL_READ > int(window.watermark)

    def _full_read(
        self, params: dict[str, Any], stats: SourceStats, now: datetime
    ) -> Iterator[JobOperationRun | BadRecord]:
        latest = self._latest_id()
        seen = array("q")
        yield from self._tickets(self._stream(runs_statement(self.visual), params), stats, seen)
        self._windows.put(self._window_key, ReadWindow(seen, latest, now))
        log.debug("visual_tickets_read", mode="full", rows=stats.rows_read, watermark=latest)

    def _incremental_read(
        self, params: dict[str, Any], stats: SourceStats, now: datetime, window: ReadWindow
    ) -> Iterator[JobOperationRun | BadRecord]:
        latest = self._latest_id()
        if latest < window.watermark - self.visual.transaction_id_margin:  # not just the newest deleted
            log.warning(
                "visual_ticket_ids_went_back", watermark=window.watermark, latest=latest, action="full read"
            )
            yield from self._full_read(params, stats, now)
            return
        seen = array("q")
        yield from self._tickets(self._window_rows(params, window), stats, seen)
        watermark = max(latest, window.watermark)
        self._windows.put(self._window_key, ReadWindow(seen, watermark, window.full_read_at))
        log.debug("visual_tickets_read", mode="incremental", rows=stats.rows_read, watermark=watermark)

    def _window_rows(self, params: dict[str, Any], window: ReadWindow) -> Iterator[Row[Any]]:
        """Known tickets at or below `after` by id, then every ticket above it: id order, no repeats."""
        after = window.watermark - self.visual.transaction_id_margin
        known = window.known
        assert isinstance(known, array)  # ascending: collected in TRANSACTION_ID order
        statement = known_tickets_statement(self.visual)
        end = bisect_right(known, after)
        for start in range(0, end, LOOKUP_BATCH):
            batch = known[start : min(start + LOOKUP_BATCH, end)].tolist()
            yield from self._stream(statement, {**params, "ids": batch})
        yield from self._stream(new_tickets_statement(self.visual), {**params, "after": after})

    def _latest_id(self) -> int:
        options: dict[str, Any] = {"schema_translate_map": self._schema_map} if self._schema_map else {}
        with self._tables_named(), self.engine.connect() as conn:
            latest = conn.execution_options(**options).execute(latest_id_statement()).scalar()
        return int(latest or 0)

    def _stream(self, statement: Select[Any], params: dict[str, Any]) -> Iterator[Row[Any]]:
        with self._tables_named():
            yield from stream_rows(
                self.engine,
                statement,
                params,
                batch_size=self.settings.batch_size,
                schema_map=self._schema_map,
            )

    @contextmanager
    def _tables_named(self) -> Iterator[None]:
        """A VISUAL table the database does not have is a configuration error that says where we looked."""
        try:
            yield
        except DBAPIError as exc:
            if is_missing_table(exc):
                raise ConfigError(missing_table_message(exc, self.visual.schema_name)) from None
            raise

    def _tickets(
        self, rows: Iterator[Row[Any]], stats: SourceStats, seen: array[int] | None = None
    ) -> Iterator[JobOperationRun | BadRecord]:
        """Rows in TRANSACTION_ID order as runs; `seen` collects every id read (skipped ones too),
        ascending, 8 bytes each (100,000 open tickets: 0.8 MB, a set of ints would be ~6 MB)."""
        last_id: int | None = None
        for row in rows:
            stats.rows_read += 1
            tid = int(row[0])  # TRANSACTION_ID
            if tid == last_id:
                stats.skip("duplicate_row")
                continue
            last_id = tid
            if seen is not None:
                seen.append(tid)
            item = self._ticket(row)
            if isinstance(item, str):
                stats.skip(item)
            else:
                yield item

    def _ticket(self, row: Row[Any]) -> JobOperationRun | BadRecord | str:
        """One ticket as a run, a bad record, or the reason it is skipped.

        Columns are unpacked by position (`_ticket_select` order): a no-change cycle maps every
        open ticket, and unpacking is ~6x cheaper than 24 look-ups by name. Any bad value of the
        ticket (field_error.py) is a BadRecord keyed `LT<TRANSACTION_ID>`.
        """
        (
            transaction_id,
            ticket_type,
            wo_type,
            wo_base,
            wo_lot,
            wo_split,
            wo_sub,
            operation_seq_no,
            ticket_resource,
            clock_in,
            clock_out,
            op_sequence_no,
        ) = row[:TICKET_COLUMNS]
        tid = int(transaction_id)
        if not clean(wo_base) or operation_seq_no is None:
            return "indirect_ticket"
        key = visual_job_key(wo_type, wo_base, wo_lot, wo_split, wo_sub)
        if key[0] != "W":
            return "not_work_order"
        standards = row[TICKET_COLUMNS:]
        if op_sequence_no is not None and is_outside_service(standards):
            return "outside_service"
        ticket = (ticket_type, ticket_resource, operation_seq_no, op_sequence_no)
        run = convert_row(self._run, key, tid, ticket, (clock_in, clock_out), standards)
        if isinstance(run, FieldError):
            return self._bad(ticket_run_key(tid), row._mapping, run)
        return run

    def _run(
        self,
        key: tuple[str, str, str, str, str],
        tid: int,
        ticket: tuple[Any, Any, Any, Any],
        times: tuple[Any, Any],
        standards: Sequence[Any],
    ) -> JobOperationRun:
        """The run of a work-order ticket; raises FieldError (or any value error) when it is bad."""
        ticket_type, ticket_resource, operation_seq_no, op_sequence_no = ticket
        clock_in, clock_out = times
        if op_sequence_no is None:
            raise FieldError(
                "OPERATION_SEQ_NO",
                f"ticket points to operation {visual_job_name(key)}|{operation_seq_no}, "
                "which does not exist in OPERATION",
            )
        state = self._state(ticket_type, clock_out)
        machine = clean(ticket_resource) or clean(standards[OP_RESOURCE])
        operation = self._operation(
            key, op_sequence_no, standards, machine, f"LABOR_TICKET.TRANSACTION_ID={tid}"
        )
        return JobOperationRun(
            run_key=ticket_run_key(tid),
            operation=operation,
            state=state,
            start_at=self._time("CLOCK_IN", clock_in),
            end_at=self._time("CLOCK_OUT", clock_out),
            origin=operation.origin,
        )

    def _time(self, column: str, value: Any) -> datetime | None:
        """A VISUAL datetime column (naive local) as UTC; out of range -> FieldError naming it."""
        return None if value is None else cell(column, value, to_utc, value, self._zone)

    def _state(self, ticket_type: Any, clock_out: Any) -> RunState:
        text = clean(ticket_type).upper()
        if text in self._setup_types:
            state = RunState.SETUP
        elif text in self._run_types:
            state = RunState.PRODUCTION
        else:
            raise FieldError(
                "TYPE",
                f"ticket TYPE {text!r} is in neither visual.setup_ticket_types "
                f"{sorted(self._setup_types)} nor visual.run_ticket_types {sorted(self._run_types)}; "
                "add it to one of them",
            )
        return RunState.ENDED if clock_out is not None else state

    def _operations(self, rows: Iterator[Row[Any]], stats: SourceStats) -> Iterator[JobOperation | BadRecord]:
        for row in rows:
            stats.rows_read += 1
            wo_type, wo_base, wo_lot, wo_split, wo_sub, op_sequence_no = row[:OPERATION_KEY_COLUMNS]
            standards = row[OPERATION_KEY_COLUMNS:]
            key = visual_job_key(wo_type, wo_base, wo_lot, wo_split, wo_sub)
            if is_outside_service(standards):
                stats.skip("outside_service")
                continue
            origin = f"OPERATION {visual_job_name(key)}|{op_sequence_no}"
            operation = convert_row(
                self._operation, key, op_sequence_no, standards, clean(standards[OP_RESOURCE]), origin
            )
            if isinstance(operation, FieldError):
                yield self._bad(f"{'/'.join(key)}|{op_sequence_no}", row._mapping, operation)
            else:
                yield operation

    def _operation(
        self,
        key: tuple[str, str, str, str, str],
        sequence_no: Any,
        standards: Sequence[Any],
        machine: str,
        origin: str,
    ) -> JobOperation:
        """The operation from its key and its `OP_COLUMNS` values (by position)."""
        if not machine:
            raise FieldError("RESOURCE_ID", "operation has no RESOURCE_ID (machine)")
        (
            _resource,
            setup_hrs,
            run,
            run_type,
            calc_end_qty,
            _service,
            _vendor,
            operation_type,
            part_id,
            desired_qty,
            want_date,
            part_description,
        ) = standards
        seq = str(int(sequence_no))
        job_name = visual_job_name(key)
        return named_operation(
            key,
            seq,
            machine,
            job_name,
            self._standards(calc_end_qty, desired_qty, setup_hrs, run, clean(run_type)),
            part_name=clean(part_id),
            lot_name=key[2],
            description=clean(part_description) or clean(operation_type),
            due_at=self._time("DESIRED_WANT_DATE", want_date),
            origin=origin,
        )

    def _standards(
        self, calc_end_qty: Any, desired_qty: Any, setup_hrs: Any, run: Any, run_type: str
    ) -> tuple[int | None, int | None, int | None]:
        """(quantity, setup s, ms per part), memoised: many operations share the same standards."""
        inputs = (calc_end_qty, desired_qty, setup_hrs, run, run_type)
        cached = self._standards_cache.get(inputs)
        if cached is None:
            try:
                quantity = cell("CALC_END_QTY", calc_end_qty, quantity_required, calc_end_qty)
                if quantity is None:
                    quantity = cell("DESIRED_QTY", desired_qty, quantity_required, desired_qty)
                part_ms = cell("RUN", run, part_time_ms, run, self._unit(run_type), quantity)
                cached = (quantity, cell("SETUP_HRS", setup_hrs, setup_hours_to_seconds, setup_hrs), part_ms)
            except FieldError as exc:
                cached = exc
            if len(self._standards_cache) >= STANDARDS_CACHE_SIZE:
                self._standards_cache.clear()
            self._standards_cache[inputs] = cached
        if isinstance(cached, FieldError):
            raise FieldError(cached.field, str(cached))
        return cached

    def _unit(self, run_type: Any) -> RunUnit:
        text = clean(run_type)
        cached = self._units.get(text)
        if cached is None:
            try:
                cached = parse_run_unit(text, self.visual.run_type_aliases)
            except UnitError as exc:
                cached = exc
            self._units[text] = cached
        if isinstance(cached, UnitError):
            raise FieldError("RUN_TYPE", str(cached))
        return cached

    def _bad(self, record_key: str, row: RowMapping, exc: RecordError) -> BadRecord:
        field = exc.field if isinstance(exc, FieldError) else None
        log.warning("visual_row_quarantined", record_key=record_key, field=field, reason=str(exc))
        return BadRecord(
            source=self.name,
            record_key=record_key,
            reason=str(exc),
            error_class="invalid_record",
            field=field,
            raw={k: None if v is None else str(v) for k, v in row.items()},
        )
