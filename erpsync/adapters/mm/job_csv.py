"""Build MachineMetrics' job-import CSV (``type=mm``, the 22-column template) from job operations.

The file: UTF-8 without BOM, a header row, RFC 4180 quoting (fields with a comma, quote or line
break are quoted, quotes doubled) and CRLF line ends, as RFC 4180 specifies. One row per job x
workcenter pair (MM's "JobMachine"); a pair never appears twice. Rows are sorted, so the same
operations always give the same bytes and `content_sha256` tells whether an upload is needed.

Values: job, part, operation and lot names exactly as job dispatch sends them (MM matches jobs by
these four), the workcenter is the MM ``erpMachineId``; cycle times are integer milliseconds per
part; setup time in seconds (or minutes, ``setup_time_unit``; CSV-old does not state the unit); the
due date an ISO 8601 UTC instant. Unknown values are empty cells, never 0. Times are written both as
``default_*`` (used when MM creates the job/workcenter link) and per workcenter.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from erpsync.domain.machines import MachineMapper
from erpsync.domain.model import BadRecord, JobOperation

MM_JOB_CSV_COLUMNS: tuple[str, ...] = (
    "name",
    "part",
    "operation",
    "lot",
    "description",
    "due_date",
    "quantity",
    "partvalue",
    "default_expectedcycletime",
    "default_idealcycletime",
    "default_setuptime",
    "default_partcountmultiplier",
    "default_actualparts",
    "warningpercent",
    "failurepercent",
    "workcenter",
    "expectedcycletime",
    "idealcycletime",
    "setuptime",
    "partcountmultiplier",
    "actualparts",
    "programname",
)

SetupTimeUnit = Literal["seconds", "minutes"]
_Row = tuple[str, ...]
_KEY_WIDTH = 4  # name, part, operation, lot: how MM identifies a job


def build_mm_job_csv(
    operations: Iterable[JobOperation],
    mapper: MachineMapper,
    *,
    setup_time_unit: SetupTimeUnit = "seconds",
    source: str = "mm_job_import",
) -> tuple[bytes, list[BadRecord]]:
    """The CSV bytes and the operations left out, sorted.

    Left out: a blank job name or machine (BadRecord); an ignored machine (silently). Operations
    giving the same (name, part, operation, lot, workcenter) collapse to one row, chosen whatever
    the input order: identical rows silently; differing ones keep the row with most filled cells
    (then the smallest) and report each other as a ``duplicate_job`` BadRecord, to fix in the ERP.
    """
    if setup_time_unit not in ("seconds", "minutes"):
        raise ValueError(f"setup_time_unit must be 'seconds' or 'minutes', got {setup_time_unit!r}")
    bad: list[BadRecord] = []
    groups: dict[tuple[str, ...], dict[_Row, JobOperation]] = {}
    for op in operations:
        if not op.job_name.strip():
            bad.append(_bad(source, op, "has no job name (MM requires one)", "blank_job_name", "job_name"))
            continue
        if not op.machine.strip():
            bad.append(
                _bad(
                    source,
                    op,
                    "has no machine (the ERP resource id is blank); set the resource on the operation",
                    "blank_machine",
                    "machine",
                )
            )
            continue
        workcenter = mapper.map(op.machine)
        if workcenter is None:
            continue
        row = _row(op, workcenter, setup_time_unit)
        variants = groups.setdefault((*row[:_KEY_WIDTH], workcenter), {})
        held = variants.get(row)
        if held is None or _op_order(op) < _op_order(held):
            variants[row] = op
    rows: list[_Row] = []
    for pair, variants in groups.items():
        kept = min(variants, key=_preference)
        rows.append(kept)
        clash = (
            f"gives MM job {pair[0]!r} (part {pair[1]!r}, operation {pair[2]!r}, lot {pair[3]!r}) on "
            f"workcenter {pair[4]!r} with other values than another operation; one row per job and "
            "workcenter is imported, this one was left out"
        )
        bad.extend(
            _bad(source, variants[row], clash, "duplicate_job", None)
            for row in sorted(variants)
            if row != kept
        )
    rows.sort()
    bad.sort(key=lambda record: (record.error_class, record.record_key, record.reason))
    return _encode(rows), bad


def content_sha256(data: bytes) -> str:
    """Hex sha256 of an import file: equal files, equal hashes (the upload-needed test)."""
    return hashlib.sha256(data).hexdigest()


def _row(op: JobOperation, workcenter: str, setup_time_unit: SetupTimeUnit) -> _Row:
    expected = _int(op.expected_part_ms)
    ideal = _int(op.ideal_part_ms)
    setup = _setup(op.expected_setup_seconds, setup_time_unit)
    due = "" if op.due_at is None else _iso(op.due_at)
    quantity = _int(op.quantity_required)
    return (
        op.job_name,
        op.part_name,
        op.operation_name,
        op.lot_name,
        op.description,
        due,
        quantity,
        "",  # partvalue: not in the ERP model
        expected,
        ideal,
        setup,
        "",  # default_partcountmultiplier
        "",  # default_actualparts
        "",  # warningpercent
        "",  # failurepercent
        workcenter,
        expected,
        ideal,
        setup,
        "",  # partcountmultiplier
        "",  # actualparts
        "",  # programname: a program may belong to one job only; the ERP model has none
    )


def _preference(row: _Row) -> tuple[int, _Row]:
    """Most filled cells first, then the smallest row: the same winner in any input order."""
    return (-sum(1 for cell in row if cell), row)


def _op_order(op: JobOperation) -> tuple[tuple[str, ...], str, str]:
    return (op.job_key, op.operation_seq, op.origin)


def _int(value: int | None) -> str:
    return "" if value is None or value < 0 else str(int(value))


def _setup(seconds: int | None, unit: SetupTimeUnit) -> str:
    if seconds is None or seconds < 0:
        return ""
    if unit == "seconds":
        return str(int(seconds))
    minutes = (Decimal(int(seconds)) / 60).quantize(Decimal("0.001")).normalize()
    return format(minutes, "f")


def _iso(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("naive due date; the source must attach its time zone")
    utc = at.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _encode(rows: list[_Row]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(MM_JOB_CSV_COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _bad(source: str, op: JobOperation, problem: str, error_class: str, field: str | None) -> BadRecord:
    key = f"{op.job_key_text}:{op.operation_seq}"
    return BadRecord(
        source=source,
        record_key=key,
        reason=f"operation {op.operation_seq} of job {op.job_key_text} {problem}",
        error_class=error_class,
        field=field,
        raw={
            "job": op.job_key_text,
            "operation": op.operation_seq,
            "machine": op.machine,
            "origin": op.origin,
        },
    )
