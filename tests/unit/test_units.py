"""Run standards and setup times become MM units exactly; unknown units are refused, never guessed."""

from __future__ import annotations

from decimal import Decimal

import pytest

from erpsync.domain.errors import RecordError
from erpsync.domain.units import (
    RunUnit,
    TimeUnit,
    UnitError,
    duration_seconds,
    parse_run_unit,
    parse_time_unit,
    part_time_ms,
    quantity_required,
    setup_hours_to_seconds,
)


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        ("HRS/PC", RunUnit.HRS_PER_PC),
        ("hrs/pc", RunUnit.HRS_PER_PC),
        (" HRS / PC ", RunUnit.HRS_PER_PC),
        ("Hrs/Part", RunUnit.HRS_PER_PC),
        ("hours per piece", RunUnit.HRS_PER_PC),
        ("MIN/PC", RunUnit.MIN_PER_PC),
        ("Min/Part", RunUnit.MIN_PER_PC),
        ("min/ea", RunUnit.MIN_PER_PC),
        ("SEC/PC", RunUnit.SEC_PER_PC),
        ("Sec/Part", RunUnit.SEC_PER_PC),
        ("PCS/HR", RunUnit.PCS_PER_HR),
        ("Parts/Hr", RunUnit.PCS_PER_HR),
        ("pieces per hour", RunUnit.PCS_PER_HR),
        ("PCS/MIN", RunUnit.PCS_PER_MIN),
        ("PCS/SEC", RunUnit.PCS_PER_SEC),
        ("HRS/JOB", RunUnit.HRS_PER_JOB),
        ("hours/lot", RunUnit.HRS_PER_JOB),
        ("MIN/JOB", RunUnit.MIN_PER_JOB),
        ("min/stuk", RunUnit.MIN_PER_PC),
    ],
)
def test_parse_run_unit_accepts_the_unit_zoo(text: str, unit: RunUnit) -> None:
    assert parse_run_unit(text) is unit


@pytest.mark.parametrize("text", ["", "   ", "HRS", "PC/PC", "HRS/HRS", "KG/HR", "M/PC", "fortnights/pc"])
def test_unknown_units_are_refused_with_the_accepted_list(text: str) -> None:
    with pytest.raises(UnitError) as err:
        parse_run_unit(text)
    assert "HRS/PC" in str(err.value)
    assert isinstance(err.value, RecordError)


def test_configured_alias_maps_a_site_spelling() -> None:
    assert parse_run_unit("PC/H", {"pc/h": "PCS/HR"}) is RunUnit.PCS_PER_HR
    with pytest.raises(UnitError):
        parse_run_unit("PC/H", {"pc/h": "nonsense"})


@pytest.mark.parametrize(
    ("run", "unit", "qty", "expected_ms"),
    [
        ("0.5", "HRS/PC", None, 1_800_000),
        (Decimal("0.00833333"), "HRS/PC", None, 30_000),  # 29999.988 ms rounds to 30 s
        ("1.5", "MIN/PC", None, 90_000),
        ("12", "SEC/PC", None, 12_000),
        ("60", "PCS/HR", None, 60_000),
        ("7", "PCS/HR", None, 514_286),  # 514285.71 rounds half-up
        ("2", "PCS/MIN", None, 30_000),
        ("4", "PCS/SEC", None, 250),
        ("10", "HRS/JOB", 100, 360_000),
        ("30", "MIN/JOB", Decimal("12.5"), 144_000),
        ("10.00000000", "HRS/PC", None, 36_000_000),
    ],
)
def test_part_time_ms_for_every_unit(run: str, unit: str, qty: object, expected_ms: int) -> None:
    assert part_time_ms(run, unit, qty) == expected_ms  # type: ignore[arg-type]


@pytest.mark.parametrize("run", [None, "0", 0, Decimal("0.00000000")])
def test_missing_or_zero_standard_means_no_standard(run: object) -> None:
    assert part_time_ms(run, RunUnit.PCS_PER_HR) is None  # type: ignore[arg-type]


def test_per_job_units_need_a_quantity() -> None:
    assert part_time_ms("2", RunUnit.HRS_PER_JOB, None) is None
    assert part_time_ms("2", RunUnit.HRS_PER_JOB, 0) is None
    assert part_time_ms("2", RunUnit.HRS_PER_JOB, 4) == 1_800_000


def test_negative_and_non_numeric_standards_are_errors() -> None:
    with pytest.raises(UnitError, match="negative"):
        part_time_ms("-1", RunUnit.HRS_PER_PC)
    with pytest.raises(UnitError, match="not a number"):
        part_time_ms("abc", RunUnit.HRS_PER_PC)
    with pytest.raises(UnitError, match="finite"):
        part_time_ms("NaN", RunUnit.HRS_PER_PC)


def test_setup_hours_to_seconds() -> None:
    assert setup_hours_to_seconds(Decimal("1.250")) == 4500
    assert setup_hours_to_seconds("0.001") == 4  # 3.6 s rounds half-up
    assert setup_hours_to_seconds(None) is None
    assert setup_hours_to_seconds(0) == 0
    with pytest.raises(UnitError):
        setup_hours_to_seconds("-0.5")


def test_duration_seconds_in_each_time_unit() -> None:
    assert duration_seconds("2", TimeUnit.HOURS) == 7200
    assert duration_seconds("2.5", TimeUnit.MINUTES) == 150
    assert duration_seconds("7", TimeUnit.SECONDS) == 7


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        ("hours", TimeUnit.HOURS),
        ("HRS", TimeUnit.HOURS),
        ("minutes", TimeUnit.MINUTES),
        ("sec", TimeUnit.SECONDS),
    ],
)
def test_parse_time_unit(text: str, unit: TimeUnit) -> None:
    assert parse_time_unit(text) is unit


def test_parse_time_unit_rejects_unknown() -> None:
    with pytest.raises(UnitError, match="hours, minutes or seconds"):
        parse_time_unit("days")


def test_quantity_required_rounds_fractions_up() -> None:
    assert quantity_required(Decimal("10.00000000")) == 10
    assert quantity_required("12.5") == 13
    assert quantity_required(None) is None
    with pytest.raises(UnitError):
        quantity_required("-3")
