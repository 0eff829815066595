"""One `generic-sql` row (its values labelled by canonical field) decoded into an operation and a run.

Run rule per row: with a `status` column, `status_map` decides (not_started / setup / production /
ended / skip; an unmapped value is a bad row). Without one: `end_at` set -> ENDED, else `start_at`
set -> SETUP when `in_setup` is true, else PRODUCTION; neither -> not started (operation only).
Run key: the `run_key` column, else `<job>|<operation>`. Job key: (`job`,). Timestamps without a
zone are local to `source.timezone`. A row that breaks a rule, or holds any bad value (NaN, 1e300,
a date outside 1900..2199: field_error.py), is a BadRecord naming the column, keyed by its run key.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, TypeVar

import structlog
from sqlalchemy import RowMapping

from erpsync.adapters.erp.field_error import FieldError, cell
from erpsync.adapters.erp.generic_mapping import WATERMARK
from erpsync.adapters.erp.snapshot import ParsedRow
from erpsync.adapters.erp.values import parse_bool, parse_datetime, parse_decimal
from erpsync.adapters.erp.visual_names import clean, named_operation
from erpsync.config import SourceSettings
from erpsync.domain.errors import ConfigError, RecordError
from erpsync.domain.model import BadRecord, RunState
from erpsync.domain.timezones import to_utc, zone_of
from erpsync.domain.units import (
    RunUnit,
    UnitError,
    duration_seconds,
    parse_run_unit,
    parse_time_unit,
    part_time_ms,
    quantity_required,
    to_decimal,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")

_STATES = {"setup": RunState.SETUP, "production": RunState.PRODUCTION, "ended": RunState.ENDED}


class GenericRowDecoder:
    """Decodes rows of one `generic-sql` source: its units, status map and time zone."""

    def __init__(self, settings: SourceSettings) -> None:
        self.name = settings.name
        self.generic = settings.generic
        self._zone = zone_of(settings.timezone)
        self._status_map = {clean(k).casefold(): v for k, v in self.generic.status_map.items()}
        self._run_unit: RunUnit | None = None
        g = self.generic
        if g.run_time_unit:
            try:
                self._run_unit = parse_run_unit(g.run_time_unit, settings.visual.run_type_aliases)
            except UnitError as exc:
                raise ConfigError(f"source.generic.run_time_unit: {exc}") from None
        elif "run_time" in g.columns and "run_unit" not in g.columns:
            raise ConfigError(
                "source.generic.run_time_unit: required when columns.run_time is mapped without "
                "columns.run_unit (e.g. 'MIN/PC')"
            )
        self._setup_unit = parse_time_unit(g.setup_time_unit)

    def decode(self, values: RowMapping) -> ParsedRow | None:
        """The row as a ParsedRow, None when its status says skip; RecordError when it is bad."""
        job, seq, machine = clean(values["job"]), clean(values["operation"]), clean(values["machine"])
        for key, value in (("job", job), ("operation", seq), ("machine", machine)):
            if not value:
                raise FieldError(key, f"{key} is empty")
        run_key = clean(values.get("run_key")) or f"{job}|{seq}"
        quantity = _guard(
            "quantity", lambda: quantity_required(self._number(values, "quantity")), values.get("quantity")
        )
        setup = _guard(
            "setup_time",
            lambda: duration_seconds(self._number(values, "setup_time"), self._setup_unit),
            values.get("setup_time"),
        )
        run = self._number(values, "run_time")
        unit = self._run_unit
        if clean(values.get("run_unit")):
            unit = _guard(
                "run_unit", lambda: parse_run_unit(clean(values.get("run_unit"))), values.get("run_unit")
            )
        if unit is None and run:
            raise FieldError("run_unit", "run time has no unit; the run_unit column is empty")
        raw_run = values.get("run_time")
        part_ms = (
            None if unit is None else _guard("run_time", lambda: part_time_ms(run, unit, quantity), raw_run)
        )
        start_at, end_at = self._time(values, "start_at"), self._time(values, "end_at")
        state = self._state(values, start_at, end_at)
        if state == "skip":
            return None
        operation = named_operation(
            (job,),
            seq,
            machine,
            job,
            (quantity, setup, part_ms),
            part_name=clean(values.get("part")),
            lot_name=clean(values.get("lot")),
            description=clean(values.get("description")),
            due_at=self._time(values, "due_at"),
            origin=f"{self.generic.table or 'query'}:{run_key}",
        )
        return ParsedRow(operation, state, run_key, start_at, end_at)

    def run_key(self, values: RowMapping) -> str:
        """The row's run key as `decode` makes it (the `run_key` column, else `<job>|<operation>`)."""
        return clean(values.get("run_key")) or f"{clean(values['job'])}|{clean(values['operation'])}"

    def bad_record(
        self, values: RowMapping, exc: RecordError, error_class: str = "invalid_record"
    ) -> BadRecord:
        """The quarantine record of a row `decode` refused: its key, the column at fault, its values."""
        field = exc.field if isinstance(exc, FieldError) else None
        key = self.run_key(values)
        log.warning("generic_row_quarantined", record_key=key, field=field, reason=str(exc))
        return BadRecord(
            source=self.name,
            record_key=key,
            reason=str(exc),
            error_class=error_class,
            field=self.generic.columns.get(field or "", field),
            raw={k: None if v is None else str(v) for k, v in values.items() if k != WATERMARK},
        )

    def _state(
        self, values: RowMapping, start_at: datetime | None, end_at: datetime | None
    ) -> RunState | Literal["skip"] | None:
        if "status" in self.generic.columns:
            raw = clean(values.get("status"))
            meaning = self._status_map.get(raw.casefold())
            if meaning is None:
                raise FieldError("status", f"status {raw!r} is not in source.generic.status_map; add it")
            return "skip" if meaning == "skip" else _STATES.get(meaning)
        if end_at is not None:
            return RunState.ENDED
        if start_at is not None:
            in_setup = _guard("in_setup", lambda: _flag(values.get("in_setup")), values.get("in_setup"))
            return RunState.SETUP if in_setup else RunState.PRODUCTION
        return None

    def _number(self, values: RowMapping, key: str) -> Decimal | None:
        value = values.get(key)
        if value is None or isinstance(value, Decimal | int | float):
            return cell(key, value, to_decimal, value, key)
        return cell(key, value, parse_decimal, str(value))

    def _time(self, values: RowMapping, key: str) -> datetime | None:
        value = values.get(key)
        return None if value is None else cell(key, value, self._utc, value)

    def _utc(self, value: Any) -> datetime | None:
        if not isinstance(value, datetime):
            value = parse_datetime(str(value))
            if value is None:
                return None
        return to_utc(value, self._zone)


def _flag(value: Any) -> bool:
    if value is None or isinstance(value, bool | int):
        return bool(value)
    try:
        return bool(parse_bool(str(value)))
    except ValueError as exc:
        raise UnitError(str(exc)) from None


def _guard(field: str, fn: Callable[[], T], raw: Any = None) -> T:
    return cell(field, raw, fn)
