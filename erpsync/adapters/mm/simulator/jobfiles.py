"""Parsing of job import files, as strictly as the documented MM job CSV allows.

``mm`` format (MM's documented job CSV; see docs/machinemetrics.md): a header row naming columns
from the 22-column template, matched case-insensitively, with the newer ``*parttime`` spellings
accepted for the ``*cycletime`` ones. Only ``name`` is required (as a column and as a value);
other columns may be left out but not misspelt. Each row is one job-workcenter pair: a pair may
not repeat, and a program name belongs to one job only. Numbers must be numbers (times and counts
whole and not negative); ``due_date`` is an ISO date/date-time or M/D/YYYY. Jobs are keyed by
(name, part, operation, lot), the fields MM matches a job on.

``inforVisual`` / ``inforLN``: their columns are not public, so the file only has to be a
well-formed CSV with a header; rows are kept raw, keyed by their first ``key_columns`` values.

Any problem raises `JobFileError` naming the row (the line in the file; 1 is the header) and the
reason.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from erpsync.adapters.mm.job_csv import MM_JOB_CSV_COLUMNS

MM_COLUMNS: Final = MM_JOB_CSV_COLUMNS  # the 22-column template, defined once (adapters/mm/job_csv.py)
COLUMN_ALIASES: Final = {
    "default_expectedparttime": "default_expectedcycletime",
    "default_idealparttime": "default_idealcycletime",
    "expectedparttime": "expectedcycletime",
    "idealparttime": "idealcycletime",
}
WHOLE_COLUMNS: Final = frozenset(
    {
        "quantity",
        "default_expectedcycletime",
        "default_idealcycletime",
        "default_setuptime",
        "default_actualparts",
        "expectedcycletime",
        "idealcycletime",
        "setuptime",
        "actualparts",
    }
)
DECIMAL_COLUMNS: Final = frozenset(
    {"partvalue", "default_partcountmultiplier", "warningpercent", "failurepercent", "partcountmultiplier"}
)
_WORKCENTER = MM_COLUMNS.index("workcenter")
# job-level columns (after the name/part/operation/lot key) and the per-workcenter ones after it
JOB_COLUMNS: Final = MM_COLUMNS[4:_WORKCENTER]
WORKCENTER_COLUMNS: Final = MM_COLUMNS[_WORKCENTER + 1 :]
US_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
WHOLE = re.compile(r"^\d+$")

JobKey = tuple[str, str, str, str]


class JobFileError(ValueError):
    """A job file MM would refuse: ``row`` (the line in the file, 1 = the header; None = the whole
    file) and ``reason``."""

    def __init__(self, reason: str, row: int | None = None) -> None:
        super().__init__(f"row {row}: {reason}" if row is not None else reason)
        self.row = row
        self.reason = reason


def _rows(data: bytes) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the non-blank data rows (with their row numbers) of a CSV file."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise JobFileError(f"file is not UTF-8 text (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise JobFileError(f"not a well-formed CSV file: {exc}", reader.line_num) from None
    if not rows:
        raise JobFileError("file is empty; a header row is required")
    (header_row, header), data_rows = rows[0], rows[1:]
    for number, row in data_rows:
        if len(row) != len(header):
            raise JobFileError(f"has {len(row)} columns, the header has {len(header)}", number)
    if header_row != 1:
        raise JobFileError("the header must be the first line", header_row)
    return header, data_rows


def _mm_header(header: list[str]) -> list[str]:
    columns: list[str] = []
    for raw in header:
        name = raw.strip().lower()
        name = COLUMN_ALIASES.get(name, name)
        if name not in MM_COLUMNS:
            raise JobFileError(f"unknown column {raw.strip()!r}; expected columns of the MM job template", 1)
        if name in columns:
            raise JobFileError(f"column {raw.strip()!r} appears twice (counting *parttime = *cycletime)", 1)
        columns.append(name)
    if "name" not in columns:
        raise JobFileError("the required column 'name' is missing", 1)
    return columns


def _value(column: str, raw: str, row: int) -> Any:
    value = raw.strip()
    if value == "":
        return None
    if column in WHOLE_COLUMNS:
        if not WHOLE.match(value):
            raise JobFileError(f"{column} {value!r} is not a whole number of at least 0", row)
        return int(value)
    if column in DECIMAL_COLUMNS:
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise JobFileError(f"{column} {value!r} is not a number", row) from None
        if not number.is_finite() or number < 0:
            raise JobFileError(f"{column} {value!r} is not a number of at least 0", row)
        return str(number)
    if column == "due_date":
        return _date(value, row)
    return value


def _date(value: str, row: int) -> str:
    match = US_DATE.match(value)
    try:
        if match:
            month, day, year = (int(g) for g in match.groups())
            return date(year, month, day).isoformat()
        if "T" in value or " " in value:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).isoformat()
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise JobFileError(f"due_date {value!r} is not a date (YYYY-MM-DD or M/D/YYYY)", row) from None


def parse_mm_jobs(data: bytes) -> dict[JobKey, dict[str, Any]]:
    """Jobs of an ``mm`` file, each with its job fields and its workcenters."""
    header, rows = _rows(data)
    columns = _mm_header(header)
    jobs: dict[JobKey, dict[str, Any]] = {}
    program_owner: dict[str, JobKey] = {}
    for number, row in rows:
        values = dict.fromkeys(MM_COLUMNS) | {
            column: _value(column, raw, number) for column, raw in zip(columns, row, strict=True)
        }
        if values["name"] is None:
            raise JobFileError("name is required", number)
        key: JobKey = (values["name"], values["part"] or "", values["operation"] or "", values["lot"] or "")
        job = jobs.setdefault(
            key,
            {"name": key[0], "part": key[1], "operation": key[2], "lot": key[3], "workcenters": {}},
        )
        for column in JOB_COLUMNS:
            if job.get(column) is None:
                job[column] = values[column]
        workcenter = values["workcenter"] or ""
        if workcenter in job["workcenters"]:
            where = f"workcenter {workcenter!r}" if workcenter else "no workcenter"
            raise JobFileError(f"job {key[0]!r} appears twice with {where}", number)
        job["workcenters"][workcenter] = {c: values[c] for c in WORKCENTER_COLUMNS}
        program = values["programname"]
        if program is not None:
            owner = program_owner.setdefault(program, key)
            if owner != key:
                raise JobFileError(f"program {program!r} already belongs to job {owner[0]!r}", number)
    return jobs


def parse_raw_jobs(data: bytes, key_columns: int) -> dict[tuple[str, ...], dict[str, str]]:
    """Rows of an ``inforVisual`` / ``inforLN`` file, raw, keyed by their first columns."""
    header, rows = _rows(data)
    names = [h.strip() for h in header]
    width = min(key_columns, len(names))
    jobs: dict[tuple[str, ...], dict[str, str]] = {}
    for number, row in rows:
        key = tuple(cell.strip() for cell in row[:width])
        if not key[0]:
            raise JobFileError(f"the first column ({names[0]!r}) is empty", number)
        jobs[key] = dict(zip(names, row, strict=True))
    return jobs
