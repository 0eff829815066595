"""What an Infor VISUAL or Infor LN operation-export row means: an operation, maybe a running one.

An operation export has no labor tickets, so a row becomes a run by this rule (both kinds):
1. The row's status says ENDED (VISUAL `C`/`X`, `Run_Complete = Yes`, a CLOSE_DATE; LN `Completed`,
   `Closed`, `gereed`, `afgehandeld`, ...; or the LN order status is ended): an ENDED run.
2. The status says what is happening (`Active`, `actief` -> production; `setup` words -> setup; or
   `csv.status_map`): a run in that state.
3. Otherwise the row is "open" (VISUAL U/F/R, LN Planned/Released..., blank) and evidence decides:
   setup completed, a completed/good quantity > 0 or actual run hours -> PRODUCTION; actual setup
   hours or an actual start date -> SETUP; none of these -> not started: an operation only (it is
   imported, not run). `csv.status_map` may force `not_started` or `skip` for a status.
4. An unknown status is a bad row (quarantined, says which key to set), never a guess.
Skipped (counted in stats.skipped): VISUAL rows whose WORKORDER_TYPE is not `W`, LN lines without an
operation number and without an order or machine (totals, comments), and outside-service rows
(VISUAL SERVICE_ID / VENDOR_ID, LN subcontracted / supplier).
Run keys: VISUAL `W/BASE/LOT/SPLIT/SUB|SEQ` (the job key + sequence), LN `ORDER|OPNO`;
origin `file.csv:17`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo

from erpsync.adapters.erp.field_error import FieldError, cell
from erpsync.adapters.erp.snapshot import ParsedRow
from erpsync.adapters.erp.values import DateOrder, parse_bool, parse_datetime, parse_decimal
from erpsync.adapters.erp.visual_names import (
    clean,
    named_operation,
    seq_text,
    visual_job_key,
    visual_job_name,
)
from erpsync.domain.model import RunState
from erpsync.domain.timezones import to_utc
from erpsync.domain.units import (
    RunUnit,
    TimeUnit,
    duration_seconds,
    parse_run_unit,
    part_time_ms,
    quantity_required,
)

Meaning = Literal["open", "not_started", "setup", "production", "ended", "skip"]
Getter = Callable[[str], str]
T = TypeVar("T")


class RowSkipped(Exception):
    """The row is not a machine operation of a work order; `reason` is counted in stats.skipped."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RowContext:
    """Per-file parsing settings."""

    file_name: str
    zone: ZoneInfo
    date_order: DateOrder
    decimal_separator: str
    run_unit: RunUnit | None
    setup_unit: TimeUnit | None
    statuses: Mapping[str, Meaning]
    run_unit_aliases: Mapping[str, str]


_ENDED = (
    "c x completed complete closed close finished done cancelled canceled gereed gereedgemeld "
    "afgehandeld afgesloten gesloten gearchiveerd archived geannuleerd vervallen abgeschlossen fertig "
    "erledigt storniert skipped overgeslagen"
)
_ACTIVE = (
    "active actief in_progress in_process started gestart running busy in_bewerking aktiv to_be_completed"
)
_SETUP = "setup set_up in_setup instellen omstellen rüsten"
_OPEN = (
    "u f r planned gepland scheduled ingepland documents_printed printed afgedrukt released vrijgegeven "
    "created aangemaakt modify wijzigen free open unreleased firmed geplant freigegeben not_started"
)
BUILTIN_STATUSES: dict[str, Meaning] = {
    **dict.fromkeys(_OPEN.split(), "open"),
    **dict.fromkeys(_SETUP.split(), "setup"),
    **dict.fromkeys(_ACTIVE.split(), "production"),
    **dict.fromkeys(_ENDED.split(), "ended"),
}


def status_key(text: str) -> str:
    """Status text as looked up: casefolded, spaces/dashes as `_`."""
    return "_".join(clean(text).casefold().replace("-", " ").split())


def meaning_of(raw: str, statuses: Mapping[str, Meaning], field: str) -> Meaning:
    """What a status value means; blank is open; unknown is a FieldError."""
    key = status_key(raw)
    if not key:
        return "open"
    meaning = statuses.get(key)
    if meaning is None:
        raise FieldError(
            field,
            f"unknown status {clean(raw)!r}; add it to source.csv.status_map as not_started, setup, "
            "production, ended or skip",
        )
    return meaning


def _decimal(get: Getter, field: str, ctx: RowContext) -> Decimal | None:
    raw = get(field)
    if not raw:
        return None  # most optional cells are empty: no guard needed to read nothing
    return cell(field, raw, parse_decimal, raw, ctx.decimal_separator)


def _to_utc(raw: str, ctx: RowContext) -> datetime | None:
    value = parse_datetime(raw, ctx.date_order)
    return None if value is None else to_utc(value, ctx.zone)


def _date(get: Getter, field: str, ctx: RowContext) -> datetime | None:
    raw = get(field)
    if not raw:
        return None
    return cell(field, raw, _to_utc, raw, ctx)


def _flag(get: Getter, field: str) -> bool:
    raw = get(field)
    if not raw:
        return False
    return bool(cell(field, raw, parse_bool, raw))


def _duration(field: str, value: Decimal | None, unit: TimeUnit) -> int | None:
    return None if value is None else cell(field, value, duration_seconds, value, unit)


def _quantity(get: Getter, field: str, ctx: RowContext) -> int | None:
    value = _decimal(get, field, ctx)
    return None if value is None else cell(field, value, quantity_required, value)


def _run_unit(get: Getter, ctx: RowContext, value: Decimal | None, run_field: str) -> RunUnit | None:
    text = get("run_type")
    if text:
        return cell("run_type", text, parse_run_unit, text, ctx.run_unit_aliases)
    if ctx.run_unit is None and value:
        raise FieldError(
            run_field,
            f"run time {get(run_field)!r} has no unit (no unit column); "
            "set source.csv.run_time_unit, e.g. 'MIN/PC' or 'HRS/JOB'",
        )
    return ctx.run_unit


def _state(meaning: Meaning, *, active: bool, setting_up: bool) -> RunState | None:
    if meaning == "ended":
        return RunState.ENDED
    if meaning == "production":
        return RunState.PRODUCTION
    if meaning == "setup":
        return RunState.SETUP
    if meaning == "not_started":
        return None
    if active:
        return RunState.PRODUCTION
    return RunState.SETUP if setting_up else None


class VisualCsvPreset:
    """Infor VISUAL work-order operation exports (e.g. "VISUAL - Work Order Operations Data.csv")."""

    kind = "infor-visual-csv"
    aliases: Mapping[str, tuple[str, ...]] = {
        "wo_type": ("WORKORDER_TYPE", "WO_TYPE", "TYPE"),
        "base": ("WORKORDER_BASE_ID", "BASE_ID", "WO_BASE_ID", "WORK_ORDER", "WORKORDER", "WO"),
        "lot": ("WORKORDER_LOT_ID", "LOT_ID", "LOT"),
        "split": ("WORKORDER_SPLIT_ID", "SPLIT_ID", "SPLIT"),
        "sub": ("WORKORDER_SUB_ID", "SUB_ID", "SUB"),
        "seq": ("SEQUENCE_NO", "SEQ_NO", "OPERATION_SEQ_NO", "OP_SEQ", "SEQUENCE", "OPERATION_SEQ"),
        "resource": ("RESOURCE_ID", "RESOURCE", "MACHINE", "MACHINE_ID", "WORK_CENTER", "WORKCENTER"),
        "operation_type": ("OPERATION_TYPE", "OP_TYPE"),
        "op_description": ("OP_DESCRIPTION", "OPERATION_DESCRIPTION", "OP_DESC"),
        "part": ("PART_ID", "PART", "PART_NUMBER"),
        "description": ("PART_DESCRIPTION", "DESCRIPTION"),
        "calc_end_qty": ("CALC_END_QTY", "END_QTY"),
        "desired_qty": ("DESIRED_QTY", "ORDER_QTY", "QUANTITY", "QTY"),
        "completed_qty": ("COMPLETED_QTY", "QTY_GOOD", "GOOD_QTY", "QTY_COMPLETED"),
        "setup_hrs": ("SETUP_HRS", "SETUP_HOURS"),
        "run": ("RUN", "RUN_RATE", "RUN_STANDARD"),
        "run_type": ("RUN_TYPE", "RUN_UNIT", "RUN_UM"),
        "act_setup_hrs": ("ACT_SETUP_HRS", "ACTUAL_SETUP_HRS"),
        "act_run_hrs": ("ACT_RUN_HRS", "ACTUAL_RUN_HRS"),
        "status": ("STATUS", "OPERATION_STATUS", "OP_STATUS"),
        "setup_completed": ("SETUP_COMPLETED", "SETUP_COMPLETE"),
        "run_complete": ("RUN_COMPLETE", "RUN_COMPLETED", "OPERATION_COMPLETE", "COMPLETE"),
        "service_id": ("SERVICE_ID", "VENDOR_SERVICE_ID"),
        "vendor_id": ("VENDOR_ID", "VENDOR"),
        "started_at": ("ACT_START_DATE", "ACTUAL_START_DATE", "STARTED_AT", "START_DATE"),
        "closed_at": ("CLOSE_DATE", "ACT_FINISH_DATE", "ACTUAL_FINISH_DATE", "COMPLETED_DATE"),
        "due_at": ("DESIRED_WANT_DATE", "DUE_DATE", "WANT_DATE", "SCHED_FINISH_DATE"),
    }
    required: tuple[tuple[str, ...], ...] = (("base",), ("lot",), ("seq",), ("resource",))

    def run_key(self, get: Getter) -> str | None:
        """`W/BASE/LOT/SPLIT/SUB|SEQ` when the row's key cells can be read, else None."""
        key = visual_job_key(clean(get("wo_type")) or "W", get("base"), get("lot"), get("split"), get("sub"))
        seq = seq_text(get("seq"))
        return f"{'/'.join(key)}|{seq}" if key[1] and seq is not None else None

    def parse(self, get: Getter, ctx: RowContext, origin: str) -> ParsedRow:
        """Map one row (see module rules); raises FieldError or RowSkipped."""
        wo_type = clean(get("wo_type")).upper() or "W"
        if wo_type != "W":
            raise RowSkipped("not_work_order")
        key = visual_job_key(wo_type, get("base"), get("lot"), get("split"), get("sub"))
        if not key[1]:
            raise FieldError("base", "work order BASE_ID is empty")
        seq = seq_text(get("seq"))
        if seq is None:
            raise FieldError("seq", f"operation sequence {get('seq')!r} is not a whole number")
        if clean(get("service_id")) or clean(get("vendor_id")):
            raise RowSkipped("outside_service")
        machine = clean(get("resource"))
        if not machine:
            raise FieldError("resource", "RESOURCE_ID (machine) is empty")
        quantity = _quantity(get, "calc_end_qty", ctx)
        if quantity is None:
            quantity = _quantity(get, "desired_qty", ctx)
        run = _decimal(get, "run", ctx)
        unit = _run_unit(get, ctx, run, "run")
        part_ms = None if unit is None else cell("run", get("run"), part_time_ms, run, unit, quantity)
        setup = _duration("setup_hrs", _decimal(get, "setup_hrs", ctx), TimeUnit.HOURS)

        meaning = meaning_of(get("status"), ctx.statuses, "status")
        if meaning == "skip":
            raise RowSkipped("status")
        closed_at = _date(get, "closed_at", ctx)
        if _flag(get, "run_complete") or (closed_at is not None and meaning == "open"):
            meaning = "ended"
        active = (
            _flag(get, "setup_completed")
            or (_decimal(get, "completed_qty", ctx) or 0) > 0
            or (_decimal(get, "act_run_hrs", ctx) or 0) > 0
        )
        started_at = _date(get, "started_at", ctx)
        setting_up = (_decimal(get, "act_setup_hrs", ctx) or 0) > 0 or started_at is not None
        job_name = visual_job_name(key)
        operation = named_operation(
            key,
            seq,
            machine,
            job_name,
            (quantity, setup, part_ms),
            part_name=clean(get("part")),
            lot_name=key[2],
            description=clean(get("description"))
            or clean(get("op_description"))
            or clean(get("operation_type")),
            due_at=_date(get, "due_at", ctx),
            origin=origin,
        )
        return ParsedRow(
            operation=operation,
            state=_state(meaning, active=active, setting_up=setting_up),
            run_key=f"{'/'.join(key)}|{seq}",  # = run_key(get)
            start_at=started_at,
            end_at=closed_at,
        )


class LnCsvPreset:
    """Infor LN production-order operation exports (tisfc001/tisfc010 fields, English or Dutch)."""

    kind = "infor-ln-csv"
    aliases: Mapping[str, tuple[str, ...]] = {
        "order": (
            "tisfc010.pdno", "tisfc001.pdno", "pdno", "t_pdno", "t$pdno", "ordernummer", "productieorder",
            "productieordernummer", "production order", "production_order", "order number", "order",
            "fertigungsauftrag", "auftrag",
        ),
        "operation": (
            "tisfc010.opno", "opno", "t_opno", "t$opno", "bewerking", "bewerkingsnummer", "operatie",
            "operation", "operation number", "arbeitsgang",
        ),
        "machine": ("tisfc010.mcno", "mcno", "t_mcno", "t$mcno", "machine", "machinenummer", "maschine"),
        "work_center": (
            "tisfc010.cwoc", "cwoc", "t_cwoc", "t$cwoc", "werkplek", "werkcentrum", "work center",
            "work centre", "workcenter", "arbeitsplatz",
        ),
        "task": ("tisfc010.tano", "tano", "taak", "task"),
        "op_status": (
            "tisfc010.opst", "opst", "t_opst", "t$opst", "bewerkingsstatus", "operation status", "status",
        ),
        "order_status": ("tisfc001.osta", "osta", "t_osta", "t$osta", "orderstatus", "order status"),
        "item": (
            "tisfc001.mitm", "mitm", "t_mitm", "t$mitm", "artikel", "artikelnummer", "item", "item code",
        ),
        "description": ("tisfc010.dsca", "dsca", "omschrijving", "beschrijving", "description"),
        "planned_qty": (
            "tisfc010.qplo", "qplo", "t_qplo", "tisfc001.qrdr", "qrdr", "tisfc001.qntl", "qntl",
            "tisfc140.qty", "gepland aantal", "geplande hoeveelheid", "planned quantity", "aantal",
            "quantity", "qty",
        ),
        "completed_qty": (
            "tisfc010.qcmp", "qcmp", "t_qcmp", "gereed aantal", "aantal gereed", "gereedgemeld aantal",
            "completed quantity", "quantity completed", "qty completed",
        ),
        "run_time": (
            "tisfc010.prtm", "prtm", "t_prtm", "tisfc140.prtm", "productietijd", "production time",
            "run time", "cyclustijd", "cycle time",
        ),
        "run_type": ("tijdseenheid", "time unit", "run unit"),
        "setup_time": (
            "tisfc010.sutm", "sutm", "t_sutm", "insteltijd", "omsteltijd", "setup time", "set-up time",
        ),
        "started_at": ("actual start", "werkelijke start", "werkelijke startdatum", "started at"),
        "closed_at": (
            "tisfc010.cmdt", "cmdt", "t_cmdt", "completion date", "gereedmelddatum", "datum gereed",
        ),
        "due_at": (
            "tisfc001.pldt", "pldt", "tisfc010.pfdt", "pfdt", "planned delivery date", "planned finish",
            "leverdatum", "einddatum",
        ),
        "subcontracted": ("subcontracted", "subcontracting", "uitbesteed", "uitbesteding", "tisfc010.subc"),
        "supplier": ("tisfc010.suno", "suno", "leverancier", "supplier"),
    }  # fmt: skip
    required: tuple[tuple[str, ...], ...] = (("order",), ("operation",), ("machine", "work_center"))

    def run_key(self, get: Getter) -> str | None:
        """`ORDER|OPNO` when the row's key cells can be read, else None."""
        order, seq = clean(get("order")), seq_text(get("operation"))
        return f"{order}|{seq}" if order and seq is not None else None

    def parse(self, get: Getter, ctx: RowContext, origin: str) -> ParsedRow:
        """Map one row (see module rules); raises FieldError or RowSkipped."""
        order = clean(get("order"))
        raw_op = clean(get("operation"))
        machine = clean(get("machine")) or clean(get("work_center"))
        if not raw_op and (not order or not machine):
            raise RowSkipped("not_work_order")  # totals, comments, order header lines
        if not order:
            raise FieldError("order", "production order number is empty")
        seq = seq_text(raw_op)
        if seq is None:
            raise FieldError("operation", f"operation number {raw_op!r} is not a whole number")
        if _flag(get, "subcontracted") or clean(get("supplier")):
            raise RowSkipped("outside_service")
        if not machine:
            raise FieldError("machine", "neither machine (mcno) nor work center (cwoc) is set")
        quantity = _quantity(get, "planned_qty", ctx)
        run = _decimal(get, "run_time", ctx)
        unit = _run_unit(get, ctx, run, "run_time")
        raw_run = get("run_time")
        part_ms = None if unit is None else cell("run_time", raw_run, part_time_ms, run, unit, quantity)
        setup_value = _decimal(get, "setup_time", ctx)
        if setup_value and ctx.setup_unit is None:
            raise FieldError(
                "setup_time",
                f"setup time {get('setup_time')!r} has no unit; set source.csv.setup_time_unit "
                "(hours, minutes or seconds)",
            )
        setup = _duration("setup_time", setup_value, ctx.setup_unit or TimeUnit.HOURS)

        order_meaning = meaning_of(get("order_status"), ctx.statuses, "order_status")
        meaning = meaning_of(get("op_status"), ctx.statuses, "op_status")
        if "skip" in (order_meaning, meaning):
            raise RowSkipped("status")
        closed_at = _date(get, "closed_at", ctx)
        if order_meaning == "ended" or (closed_at is not None and meaning == "open"):
            meaning = "ended"
        active = (_decimal(get, "completed_qty", ctx) or 0) > 0
        started_at = _date(get, "started_at", ctx)
        operation = named_operation(
            (order,),
            seq,
            machine,
            order,
            (quantity, setup, part_ms),
            part_name=clean(get("item")),
            description=clean(get("description")),
            due_at=_date(get, "due_at", ctx),
            origin=origin,
        )
        return ParsedRow(
            operation=operation,
            state=_state(meaning, active=active, setting_up=started_at is not None),
            run_key=f"{order}|{seq}",  # = run_key(get)
            start_at=started_at,
            end_at=closed_at,
        )


CsvPreset = VisualCsvPreset | LnCsvPreset
PRESETS: dict[str, CsvPreset] = {p.kind: p for p in (VisualCsvPreset(), LnCsvPreset())}
