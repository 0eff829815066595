"""Bounds on ERP values, the one conversion guard, line-by-line decoding and suspect CSV exports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from erpsync.adapters.erp.csv_file import AUTO_ENCODING, decode_line
from erpsync.adapters.erp.csv_source import CsvSource
from erpsync.adapters.erp.field_error import VALUE_SHOWN, FieldError, cell, convert_row
from erpsync.adapters.erp.visual_schema import create_visual_schema
from erpsync.adapters.erp.visual_source import VisualSource
from erpsync.config import CsvSettings, SourceSettings
from erpsync.domain.model import BadRecord, JobOperationRun
from erpsync.domain.timezones import TimestampRangeError, to_utc
from erpsync.domain.units import (
    MAX_PART_MS,
    MAX_QUANTITY,
    MAX_SETUP_SECONDS,
    TimeUnit,
    UnitError,
    duration_seconds,
    part_time_ms,
    quantity_required,
    setup_hours_to_seconds,
)
from erpsync.observability.scrub import register_secret

HEADER = "WORKORDER_TYPE,WORKORDER_BASE_ID,WORKORDER_LOT_ID,SEQUENCE_NO,RESOURCE_ID,QTY_GOOD,PART_ID\n"


# -- units ----------------------------------------------------------------------------------------


def test_quantity_bound_is_named() -> None:
    assert quantity_required(MAX_QUANTITY) == MAX_QUANTITY
    for value in (MAX_QUANTITY + 1, Decimal("1E30"), "1" * 29, 1e300):
        with pytest.raises(UnitError, match=r"above the bound of 10\^9 pieces"):
            quantity_required(value)


def test_setup_time_bound_is_named() -> None:
    assert duration_seconds(Decimal(MAX_SETUP_SECONDS) / 60, TimeUnit.MINUTES) == MAX_SETUP_SECONDS
    assert setup_hours_to_seconds(Decimal(MAX_SETUP_SECONDS) / 3600) == MAX_SETUP_SECONDS
    for value in (Decimal("1e30"), Decimal("87601"), Decimal("1E999999")):
        with pytest.raises(UnitError, match="above the bound of 10 years"):
            setup_hours_to_seconds(value)


@pytest.mark.parametrize(
    ("run", "unit"),
    [
        (Decimal("1e-30"), "PCS/HR"),
        (Decimal("1E-999999"), "PCS/SEC"),
        (Decimal("1e30"), "HRS/PC"),
        (1e300, "MIN/PC"),
        (Decimal("1e30"), "HRS/JOB"),
    ],
)
def test_part_time_bound_is_named(run: Decimal | float, unit: str) -> None:
    with pytest.raises(UnitError, match="10 years"):
        part_time_ms(run, unit, 5)


def test_part_time_at_the_bound_and_ordinary_values_still_convert() -> None:
    assert part_time_ms(Decimal(MAX_PART_MS) / 3_600_000, "HRS/PC") == MAX_PART_MS
    assert part_time_ms(Decimal("0.05"), "HRS/PC") == 180_000
    assert part_time_ms(Decimal("20"), "PCS/HR") == 180_000


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), Decimal("NaN"), "sNaN"])
def test_nan_and_infinity_are_not_numbers(value: object) -> None:
    with pytest.raises(UnitError, match="finite"):
        quantity_required(value)  # type: ignore[arg-type]


# -- time zones -----------------------------------------------------------------------------------


def test_timestamps_are_bounded_as_wall_time_in_the_erps_zone() -> None:
    assert to_utc(datetime(1900, 1, 1), "Asia/Tokyo") == datetime(1899, 12, 31, 15, tzinfo=UTC)
    assert to_utc(datetime(2199, 12, 31, 23, 59), "America/Chicago").year == 2200
    for value, zone in (
        (datetime(9999, 12, 31, 23, 59), "America/Chicago"),
        (datetime(1, 1, 1), "Asia/Tokyo"),
        (datetime(1899, 12, 31, 23, 59), "UTC"),
        (datetime(2200, 1, 1), "UTC"),
        (datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-5))), "UTC"),
    ):
        with pytest.raises(TimestampRangeError, match=r"outside the bound 1900-01-01\.\.2199-12-31"):
            to_utc(value, zone)


# -- the conversion guard -------------------------------------------------------------------------


def test_cell_names_field_value_and_reason_for_any_value_error() -> None:
    def explode(exc: Exception) -> None:
        raise exc

    cases: list[tuple[Exception, str]] = [
        (InvalidOperation("quantize"), "InvalidOperation"),
        (OverflowError("date value out of range"), "OverflowError"),
        (ValueError("bad"), "bad"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "UnicodeDecodeError"),
        (UnitError("quantity 5 is negative"), "quantity 5 is negative"),
    ]
    for exc, reason in cases:
        with pytest.raises(FieldError) as caught:
            cell("CALC_END_QTY", "1E30", explode, exc)
        assert caught.value.field == "CALC_END_QTY"
        assert reason in str(caught.value)
        assert "'1E30'" in str(caught.value)  # the value, when the reason does not quote it


def test_cell_scrubs_and_cuts_the_value_shown() -> None:
    register_secret("hunter2-secret-value")

    def refuse(_: str) -> None:
        raise ValueError("not a number")

    with pytest.raises(FieldError) as caught:
        cell("QTY", "hunter2-secret-value" + "9" * 100, refuse, "x")
    message = str(caught.value)
    assert "hunter2" not in message
    assert len(message) <= len("not a number (value '')") + VALUE_SHOWN


def test_convert_row_returns_the_rows_problem_instead_of_raising() -> None:
    def overflow() -> None:
        Decimal("1E30").quantize(Decimal(1))

    problem = convert_row(overflow)
    assert isinstance(problem, FieldError)
    assert problem.field == "row" and "InvalidOperation" in str(problem)
    assert convert_row(lambda: 5) == 5


# -- decoding -------------------------------------------------------------------------------------


def test_lines_decode_on_their_own() -> None:
    utf8 = "W,MÜLLER,1,10,M1\n".encode()
    assert decode_line(utf8, AUTO_ENCODING) == "W,MÜLLER,1,10,M1\n"
    assert decode_line("W,Ø-1,1,10,M1\n".encode("cp1252"), AUTO_ENCODING) == "W,Ø-1,1,10,M1\n"
    mixed = "MÜLLER,".encode() + "Ø\n".encode("cp1252")  # UTF-8 and one cp1252 byte in one line
    assert decode_line(mixed, AUTO_ENCODING) == "MÜLLER,Ø\n"
    with pytest.raises(UnicodeDecodeError):
        decode_line(b"M\x81\n", AUTO_ENCODING)


def csv_source(path: Path) -> CsvSource:
    return CsvSource(
        SourceSettings(kind="infor-visual-csv", name="t", csv=CsvSettings(path=path, settle_seconds=0))
    )


def read(path: Path, content: bytes) -> tuple[list[JobOperationRun | BadRecord], str | None]:
    path.write_bytes(content)
    snapshot = csv_source(path).read_runs()
    assert snapshot is not None
    items = list(snapshot)
    return items, snapshot.suspect


def test_one_cp1252_byte_elsewhere_does_not_change_a_utf8_row(tmp_path: Path) -> None:
    row = "W,MÜLLER-7,1,10,M1,5,P1\n".encode()
    alone, _ = read(tmp_path / "a.csv", HEADER.encode() + row)
    mixed, _ = read(tmp_path / "b.csv", HEADER.encode() + row + "W,9,1,10,M2,5,Ø\n".encode("cp1252"))
    first = [i for i in alone if isinstance(i, JobOperationRun)]
    second = [i for i in mixed if isinstance(i, JobOperationRun)]
    assert [(r.run_key, r.operation.job_name) for r in first] == [("W/MÜLLER-7/1/0/0|10", "MÜLLER-7/1")]
    assert (second[0].run_key, second[0].operation.job_name) == (first[0].run_key, "MÜLLER-7/1")
    assert second[1].operation.part_name == "Ø"


# -- CSV: suspect exports and bad-row keys --------------------------------------------------------


def test_a_complete_export_is_not_suspect(tmp_path: Path) -> None:
    items, suspect = read(tmp_path / "ok.csv", (HEADER + "W,1,1,10,M1,5,P\nW,2,1,10,M2,5,P").encode())
    assert suspect is None  # no final newline, but every field is there
    assert len([i for i in items if isinstance(i, JobOperationRun)]) == 2


def test_a_cut_off_last_line_is_suspect_and_its_row_held_by_run_key(tmp_path: Path) -> None:
    items, suspect = read(tmp_path / "cut.csv", (HEADER + "W,1,1,10,M1,5,P\nW,2,1,10,M2").encode())
    assert suspect is not None and "cut off" in suspect and "2 fields" not in suspect
    assert "5 of the header's 7 fields" in suspect
    bad = [i for i in items if isinstance(i, BadRecord)]
    assert [(b.record_key, b.line) for b in bad] == [("W/2/1/0/0|10", 3)]


def test_an_unterminated_quote_at_the_end_is_suspect(tmp_path: Path) -> None:
    items, suspect = read(tmp_path / "q.csv", (HEADER + 'W,1,1,10,M1,5,P\nW,2,1,10,M2,5,"P-').encode())
    assert suspect is not None and "quoted field" in suspect
    assert [i.record_key for i in items if isinstance(i, BadRecord)] == ["W/2/1/0/0|10"]


def test_header_only_and_empty_exports_are_suspect(tmp_path: Path) -> None:
    items, suspect = read(tmp_path / "h.csv", HEADER.encode())
    assert items == [] and suspect is not None and "no rows" in suspect
    items, suspect = read(tmp_path / "e.csv", b"")
    assert suspect is not None and "empty" in suspect
    assert [i.error_class for i in items if isinstance(i, BadRecord)] == ["unreadable_file"]


def test_a_bad_rows_record_key_is_its_run_key_when_the_key_cells_read(tmp_path: Path) -> None:
    header = HEADER.replace("QTY_GOOD", "CALC_END_QTY")
    content = header + "W,1,1,10,M1,1E30,P\nW,2,1,1O,M1,1E30,P\n"
    items, suspect = read(tmp_path / "k.csv", content.encode())
    bad = {b.line: b for b in items if isinstance(b, BadRecord)}
    assert suspect is None
    assert bad[2].record_key == "W/1/1/0/0|10" and bad[2].field == "CALC_END_QTY"
    assert bad[3].record_key == "k.csv:3" and bad[3].field == "SEQUENCE_NO"  # no readable key


def test_an_idle_visual_database_is_not_suspect(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    engine = create_engine(url)
    create_visual_schema(engine)
    engine.dispose()
    source = VisualSource(SourceSettings(kind="infor-visual", url=url))
    snapshot = source.read_runs()
    assert list(snapshot) == [] and snapshot.suspect is None
    source.close()
