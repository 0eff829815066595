"""ERP local times become UTC with the documented DST rule: ambiguous -> first, gap -> forward."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from erpsync.domain.timezones import (
    is_ambiguous,
    is_nonexistent,
    local_cutoff,
    local_naive,
    optional_utc,
    to_utc,
)

CHICAGO = "America/Chicago"
AMSTERDAM = ZoneInfo("Europe/Amsterdam")


def test_plain_local_time_converts_with_the_zone_offset() -> None:
    assert to_utc(datetime(2024, 7, 1, 8, 0), CHICAGO) == datetime(2024, 7, 1, 13, 0, tzinfo=UTC)
    assert to_utc(datetime(2024, 1, 15, 8, 0), CHICAGO) == datetime(2024, 1, 15, 14, 0, tzinfo=UTC)


def test_spring_forward_gap_is_shifted_forward() -> None:
    missing = datetime(2024, 3, 10, 2, 30)  # 02:00-03:00 does not exist in Chicago that night
    assert is_nonexistent(missing, CHICAGO)
    assert not is_ambiguous(missing, CHICAGO)
    result = to_utc(missing, CHICAGO)
    assert result == datetime(2024, 3, 10, 8, 30, tzinfo=UTC)
    assert local_naive(result, CHICAGO) == datetime(2024, 3, 10, 3, 30)  # 03:30 CDT


def test_fall_back_ambiguous_hour_takes_the_first_occurrence() -> None:
    twice = datetime(2024, 11, 3, 1, 30)  # happens at 06:30 UTC (CDT) and 07:30 UTC (CST)
    assert is_ambiguous(twice, CHICAGO)
    assert not is_nonexistent(twice, CHICAGO)
    assert to_utc(twice, CHICAGO) == datetime(2024, 11, 3, 6, 30, tzinfo=UTC)


def test_both_transitions_in_europe() -> None:
    assert to_utc(datetime(2024, 3, 31, 2, 30), AMSTERDAM) == datetime(2024, 3, 31, 1, 30, tzinfo=UTC)
    assert to_utc(datetime(2024, 10, 27, 2, 30), AMSTERDAM) == datetime(2024, 10, 27, 0, 30, tzinfo=UTC)
    assert is_ambiguous(datetime(2024, 10, 27, 2, 30), AMSTERDAM)
    assert is_nonexistent(datetime(2024, 3, 31, 2, 30), AMSTERDAM)


def test_times_next_to_the_transitions_are_normal() -> None:
    assert not is_ambiguous(datetime(2024, 11, 3, 2, 30), CHICAGO)
    assert not is_nonexistent(datetime(2024, 3, 10, 3, 30), CHICAGO)
    assert to_utc(datetime(2024, 11, 3, 2, 30), CHICAGO) == datetime(2024, 11, 3, 8, 30, tzinfo=UTC)


def test_aware_values_are_converted_not_reinterpreted() -> None:
    aware = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert to_utc(aware, CHICAGO) == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def test_utc_zone_and_none() -> None:
    assert to_utc(datetime(2024, 5, 1, 12, 0), "UTC") == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert optional_utc(None, CHICAGO) is None


def test_local_cutoff_for_lookback_filters() -> None:
    now = datetime(2024, 7, 3, 12, 0, tzinfo=UTC)
    assert local_cutoff(now, timedelta(hours=72), CHICAGO) == datetime(2024, 6, 30, 7, 0)
