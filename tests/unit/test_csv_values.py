"""Export text values: decimal commas, thousands marks, US/EU dates, flags, headers, delimiters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from erpsync.adapters.erp.csv_file import (
    AUTO_ENCODING,
    HeaderMap,
    UnreadableFileError,
    column_index,
    inspect_file,
    iter_records,
    normalise_header,
)
from erpsync.adapters.erp.values import parse_bool, parse_datetime, parse_decimal
from erpsync.adapters.erp.visual_names import seq_text, visual_job_key, visual_job_name


@pytest.mark.parametrize(
    ("text", "sep", "expected"),
    [
        ("10", ".", Decimal(10)),
        ("0.0", ".", Decimal(0)),
        ("10.00000000", ",", Decimal(10)),
        ("1,5", ".", Decimal("1.5")),
        ("1,5", ",", Decimal("1.5")),
        ("1.234,56", ",", Decimal("1234.56")),
        ("1,234.56", ".", Decimal("1234.56")),
        ("1.234", ",", Decimal(1234)),
        ("1.234", ".", Decimal("1.234")),
        ("1,234", ".", Decimal(1234)),
        ("1,234", ",", Decimal("1.234")),
        ("0,500", ".", Decimal("0.5")),
        ("1.234.567", ".", Decimal(1234567)),
        ("1 234,5", ",", Decimal("1234.5")),
        ("1\u00a0234,5", ",", Decimal("1234.5")),
        ("1'234.5", ".", Decimal("1234.5")),
        ("-2,5", ",", Decimal("-2.5")),
        ("  7  ", ".", Decimal(7)),
    ],
)
def test_parse_decimal(text: str, sep: str, expected: Decimal) -> None:
    assert parse_decimal(text, sep) == expected


@pytest.mark.parametrize("text", ["", "   ", None])
def test_empty_numbers_are_none(text: str | None) -> None:
    assert parse_decimal(text) is None


@pytest.mark.parametrize("text", ["abc", "12abc", "1,2,3.4.5x", "NaN", "inf"])
def test_non_numbers_are_errors(text: str) -> None:
    with pytest.raises(ValueError, match="number"):
        parse_decimal(text)


@pytest.mark.parametrize(
    ("text", "order", "expected"),
    [
        ("2024-03-10", "mdy", datetime(2024, 3, 10)),
        ("2024-03-10 14:30:00", "mdy", datetime(2024, 3, 10, 14, 30)),
        ("2024-03-10T14:30:00.123", "mdy", datetime(2024, 3, 10, 14, 30, 0, 123000)),
        ("3/4/2024", "mdy", datetime(2024, 3, 4)),
        ("3/4/2024", "dmy", datetime(2024, 4, 3)),
        ("03/11/2024 01:05:09 PM", "mdy", datetime(2024, 3, 11, 13, 5, 9)),
        ("03/11/2024 12:05 AM", "mdy", datetime(2024, 3, 11, 0, 5)),
        ("03/11/2024 12:05 pm", "mdy", datetime(2024, 3, 11, 12, 5)),
        ("3/11/2024 14:05", "mdy", datetime(2024, 3, 11, 14, 5)),
        ("10.03.2024", "mdy", datetime(2024, 3, 10)),
        ("10.03.2024 07:15:30", "mdy", datetime(2024, 3, 10, 7, 15, 30)),
        ("10-03-2024", "dmy", datetime(2024, 3, 10)),
    ],
)
def test_parse_datetime_formats(text: str, order: str, expected: datetime) -> None:
    assert parse_datetime(text, order) == expected  # type: ignore[arg-type]


def test_offsets_are_kept() -> None:
    assert parse_datetime("2024-03-10T14:30:00Z") == datetime(2024, 3, 10, 14, 30, tzinfo=UTC)
    tz = timezone(timedelta(hours=2))
    assert parse_datetime("2024-03-10T14:30:00+02:00") == datetime(2024, 3, 10, 14, 30, tzinfo=tz)


@pytest.mark.parametrize(
    "text", ["1900-01-01", "1900-01-01 00:00:00", "1/1/1900", "01.01.1900 12:00", "", None]
)
def test_sentinel_and_empty_dates_are_none(text: str | None) -> None:
    assert parse_datetime(text) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2024-02-30", "impossible"),
        ("13/13/2024", "impossible"),
        ("31.02.2024", "impossible"),
        ("03/11/2024 13:05 PM", "AM/PM"),
        ("yesterday", "not a date"),
        ("12:00", "not a date"),
    ],
)
def test_bad_dates_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_datetime(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Yes", True), ("Y", True), ("TRUE", True), ("1", True), ("Ja", True), ("x", True),
     ("No", False), ("n", False), ("false", False), ("0", False), ("Nee", False), ("", None)],
)  # fmt: skip
def test_parse_bool(text: str, expected: bool | None) -> None:
    assert parse_bool(text) is expected


def test_unknown_flag_is_an_error() -> None:
    with pytest.raises(ValueError, match="yes/no"):
        parse_bool("maybe")


def test_header_normalisation() -> None:
    assert normalise_header("\ufeffWORKORDER_BASE_ID") == "workorder_base_id"
    assert normalise_header(" Run_Complete ") == "run_complete"
    assert normalise_header("SEQUENCE-NO") == "sequence_no"
    assert normalise_header("workorder  lot id") == "workorder_lot_id"
    assert normalise_header("tisfc010.pdno") == "tisfc010.pdno"


@pytest.mark.parametrize(("ref", "index"), [("column:A", 0), ("column:Z", 25), ("column:AP", 41),
                                            ("column:FO", 170), ("column:3", 2), ("PDNO", None)])  # fmt: skip
def test_column_references(ref: str, index: int | None) -> None:
    assert column_index(ref) == index


def test_header_map_prefers_overrides_then_alias_order() -> None:
    aliases = {"qty": ("CALC_END_QTY", "QTY"), "seq": ("SEQUENCE_NO",)}
    headers = ["QTY", "calc_end_qty", "Op"]
    mapping = HeaderMap.build(headers, aliases, {"seq": "op"}, [("seq",)], "f.csv")
    assert mapping.positions == {"qty": 1, "seq": 2}
    assert mapping.get(["1", "2", "10"], "qty") == "2"
    assert mapping.get(["1"], "seq") == ""  # short row
    assert mapping.header("seq") == "Op"


def test_header_map_missing_required_names_the_override_key() -> None:
    with pytest.raises(UnreadableFileError, match=r"header_overrides\.seq"):
        HeaderMap.build(["A"], {"seq": ("SEQUENCE_NO",)}, {}, [("seq",)], "f.csv")
    with pytest.raises(UnreadableFileError, match="matches no column"):
        HeaderMap.build(["A"], {"seq": ("SEQUENCE_NO",)}, {"seq": "column:C"}, [("seq",)], "f.csv")


@pytest.mark.parametrize(("content", "delimiter", "decimal"), [
    ("A,B,C\n1,2,3\n", ",", "."),
    ("A;B;C\n1;2,5;3\n", ";", ","),
    ("A\tB\tC\n1\t2\t3\n", "\t", ","),
    ("A|B|C\n1|2|3\n", "|", "."),
    ('A;B,x;C\n1;"2,5";3\n', ";", ","),
])  # fmt: skip
def test_delimiter_and_decimal_are_sniffed(
    tmp_path: Path, content: str, delimiter: str, decimal: str
) -> None:
    path = tmp_path / "f.csv"
    path.write_text(content, encoding="utf-8")
    info = inspect_file(path)
    assert (info.delimiter, info.decimal_separator, info.encoding) == (delimiter, decimal, AUTO_ENCODING)


def test_records_carry_their_first_physical_line(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(b'H1,H2\r\n"a\r\nb",1\r\n\r\n,\r\nc,2\r\n')
    assert [(r.line, r.cells) for r in iter_records(inspect_file(path))] == [
        (1, ["H1", "H2"]),
        (2, ["a\r\nb", "1"]),
        (6, ["c", "2"]),
    ]


def test_configured_encoding_is_pinned_and_a_line_that_does_not_fit_is_that_rows_problem(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes("A,B\nØ,1\nok,2\n".encode("cp1252"))
    records = list(iter_records(inspect_file(path, encoding="utf-8")))
    assert [r.undecodable is not None for r in records] == [False, True, False]
    assert records[1].undecodable and "source.csv.encoding" in records[1].undecodable
    assert inspect_file(path, encoding="cp1252").encoding == "cp1252"
    assert [r.cells for r in iter_records(inspect_file(path, encoding="cp1252"))][1] == ["Ø", "1"]
    with pytest.raises(UnreadableFileError, match="not a known encoding"):
        inspect_file(path, encoding="klingon")


def test_visual_names_and_sequences() -> None:
    key = visual_job_key("w ", " 1808412 ", "01", None, "")
    assert key == ("W", "1808412", "01", "0", "0")
    assert visual_job_name(key) == "1808412/01"
    assert visual_job_name(("W", "B", "1", "2", "3")) == "B/1/2-3"
    assert [seq_text(v) for v in ("0010", 10, "10.0", "10,00", " 20 ", "1O", "", "-5")] == [
        "10", "10", "10", "10", "20", None, None, None,
    ]  # fmt: skip
