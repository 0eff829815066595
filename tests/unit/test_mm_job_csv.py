"""The MM job-import CSV: 22 columns, units, quoting, one row per job x workcenter, stable bytes."""

from __future__ import annotations

import csv
import io
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from erpsync.adapters.mm.job_csv import MM_JOB_CSV_COLUMNS, build_mm_job_csv, content_sha256
from erpsync.domain.machines import MachineMapper
from erpsync.domain.model import JobOperation
from tests.unit.reconcile_helpers import operation

MAPPER = MachineMapper()


def parse(data: bytes) -> list[dict[str, str]]:
    text = data.decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == MM_JOB_CSV_COLUMNS
    assert all(len(row) == len(MM_JOB_CSV_COLUMNS) for row in rows)
    return [dict(zip(MM_JOB_CSV_COLUMNS, row, strict=True)) for row in rows[1:]]


def op(job: str = "1808412", seq: str = "20", machine: str = "M1", **fields: Any) -> JobOperation:
    return operation(job, seq, machine, **fields)


def test_columns_are_the_22_of_the_template_in_order() -> None:
    assert MM_JOB_CSV_COLUMNS == (
        "name", "part", "operation", "lot", "description", "due_date", "quantity", "partvalue",
        "default_expectedcycletime", "default_idealcycletime", "default_setuptime",
        "default_partcountmultiplier", "default_actualparts", "warningpercent", "failurepercent",
        "workcenter", "expectedcycletime", "idealcycletime", "setuptime", "partcountmultiplier",
        "actualparts", "programname",
    )  # fmt: skip
    data, bad = build_mm_job_csv([], MAPPER)
    assert bad == []
    assert data == (",".join(MM_JOB_CSV_COLUMNS) + "\r\n").encode()


def test_a_row_carries_names_units_and_the_workcenter() -> None:
    due = datetime(2026, 5, 29, 17, 0, tzinfo=timezone(timedelta(hours=-5)))
    data, bad = build_mm_job_csv([op(due_at=due, machine=" HAAS 3 ")], MAPPER)
    assert bad == []
    [row] = parse(data)
    assert row == {
        "name": "1808412/1",
        "part": "BRACKET-7",
        "operation": "20",
        "lot": "1",
        "description": "bracket, machined",
        "due_date": "2026-05-29T22:00:00.000Z",
        "quantity": "120",
        "partvalue": "",
        "default_expectedcycletime": "50000",  # ms per part
        "default_idealcycletime": "45000",
        "default_setuptime": "1800",  # seconds
        "default_partcountmultiplier": "",
        "default_actualparts": "",
        "warningpercent": "",
        "failurepercent": "",
        "workcenter": "HAAS 3",  # the MM erpMachineId, after mapping
        "expectedcycletime": "50000",
        "idealcycletime": "45000",
        "setuptime": "1800",
        "partcountmultiplier": "",
        "actualparts": "",
        "programname": "",
    }


def test_unknown_values_are_empty_cells_never_zero() -> None:
    blank = op(
        part_name="",
        lot_name="",
        description="",
        quantity_required=None,
        expected_setup_seconds=None,
        ideal_part_ms=None,
        expected_part_ms=None,
    )
    [row] = parse(build_mm_job_csv([blank], MAPPER)[0])
    for column in ("part", "lot", "description", "due_date", "quantity", "default_expectedcycletime",
                   "default_idealcycletime", "default_setuptime", "expectedcycletime", "idealcycletime",
                   "setuptime"):  # fmt: skip
        assert row[column] == "", column


def test_zero_is_kept_and_negative_is_unknown() -> None:
    [row] = parse(build_mm_job_csv([op(ideal_part_ms=0, expected_part_ms=-5)], MAPPER)[0])
    assert row["idealcycletime"] == "0"
    assert row["expectedcycletime"] == ""


def test_setup_time_in_minutes() -> None:
    ops = [op(seq="10", expected_setup_seconds=90), op(seq="20", expected_setup_seconds=3600),
           op(seq="30", expected_setup_seconds=100)]  # fmt: skip
    rows = parse(build_mm_job_csv(ops, MAPPER, setup_time_unit="minutes")[0])
    assert [r["setuptime"] for r in rows] == ["1.5", "60", "1.667"]
    assert [r["default_setuptime"] for r in rows] == ["1.5", "60", "1.667"]


def test_bad_setup_unit_is_refused() -> None:
    with pytest.raises(ValueError, match="setup_time_unit"):
        build_mm_job_csv([], MAPPER, setup_time_unit="hours")  # type: ignore[arg-type]


def test_commas_quotes_and_newlines_are_quoted_rfc4180() -> None:
    tricky = op(description='Bracket, 2" x 4"\nsecond line', part_name="P,1")
    data, _ = build_mm_job_csv([tricky], MAPPER)
    assert b'"Bracket, 2"" x 4""\nsecond line"' in data
    assert b'"P,1"' in data
    [row] = parse(data)
    assert row["description"] == 'Bracket, 2" x 4"\nsecond line'
    assert row["part"] == "P,1"


def test_utf8_without_bom_and_crlf_line_ends() -> None:
    data, _ = build_mm_job_csv([op(description="Ø 12 µm ®")], MAPPER)
    assert not data.startswith(b"\xef\xbb\xbf")
    assert "Ø 12 µm ®".encode() in data
    assert data.count(b"\r\n") == 2 and data.endswith(b"\r\n")


def test_one_row_per_job_and_workcenter() -> None:
    ops = [op(machine="M1"), op(machine="M2"), op(seq="30", machine="M1")]
    rows = parse(build_mm_job_csv(ops, MAPPER)[0])
    assert [(r["operation"], r["workcenter"]) for r in rows] == [("20", "M1"), ("20", "M2"), ("30", "M1")]


def test_identical_duplicates_collapse_silently() -> None:
    data, bad = build_mm_job_csv([op(), op(), replace(op(), origin="other.csv:9")], MAPPER)
    assert len(parse(data)) == 1
    assert bad == []


def test_machines_that_map_to_one_workcenter_collapse() -> None:
    mapper = MachineMapper(normalize="trim-casefold")
    data, bad = build_mm_job_csv([op(machine="MILL 1"), op(machine=" mill 1")], mapper)
    assert [r["workcenter"] for r in parse(data)] == ["mill 1"]
    assert bad == []


def test_conflicting_duplicates_keep_one_row_and_report_the_other() -> None:
    full = op(job="A", quantity_required=100)
    sparse = op(job="B", quantity_required=None, job_name=full.job_name)  # same MM job name
    for ops in ([full, sparse], [sparse, full]):
        data, bad = build_mm_job_csv(ops, MAPPER)
        [row] = parse(data)
        assert row["quantity"] == "100"  # the row with most filled cells wins, in any order
        [report] = bad
        assert report.error_class == "duplicate_job"
        assert report.record_key == "W/B/1:20"
        assert "1808412" not in report.reason and "'A/1'" in report.reason


def test_blank_job_name_and_blank_machine_are_reported() -> None:
    data, bad = build_mm_job_csv([op(job="X", job_name="  "), op(job="Y", machine=" "), op(job="Z")], MAPPER)
    assert [r["name"] for r in parse(data)] == ["Z/1"]
    assert sorted((b.error_class, b.record_key, b.field) for b in bad) == [
        ("blank_job_name", "W/X/1:20", "job_name"),
        ("blank_machine", "W/Y/1:20", "machine"),
    ]
    assert all(b.source == "mm_job_import" for b in bad)


def test_ignored_machines_are_left_out_silently() -> None:
    data, bad = build_mm_job_csv([op(machine="SAW"), op(machine="M1")], MachineMapper(ignore=["SAW"]))
    assert [r["workcenter"] for r in parse(data)] == ["M1"]
    assert bad == []


def test_naive_due_date_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        build_mm_job_csv([op(due_at=datetime(2026, 5, 29))], MAPPER)


def test_bytes_and_hash_do_not_depend_on_input_order() -> None:
    ops = [
        op(job=f"{j}", seq=s, machine=m, description=f"d{j}{s}")
        for j in range(20)
        for s in ("10", "20")
        for m in ("M1", "M2")
    ]
    first, _ = build_mm_job_csv(ops, MAPPER)
    shuffled = ops[:]
    random.Random(7).shuffle(shuffled)
    second, _ = build_mm_job_csv(shuffled, MAPPER)
    assert first == second
    assert content_sha256(first) == content_sha256(second)
    rows = parse(first)
    keys = [(r["name"], r["part"], r["operation"], r["lot"], r["workcenter"]) for r in rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys) == 80


def test_content_sha256_is_hex_sha256() -> None:
    assert content_sha256(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert content_sha256(b"a") != content_sha256(b"b")


def test_due_date_keeps_milliseconds_in_utc() -> None:
    due = datetime(2026, 5, 29, 23, 59, 59, 987654, tzinfo=UTC)
    [row] = parse(build_mm_job_csv([op(due_at=due)], MAPPER)[0])
    assert row["due_date"] == "2026-05-29T23:59:59.987Z"
