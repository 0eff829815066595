"""The plausibility check of MM's part counts (domain/plausible_counts.py), and its config key."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from erpsync.config import WritebackSettings
from erpsync.domain.model import PartCounts
from erpsync.domain.plausible_counts import (
    DEFAULT_MAX_PART_COUNT,
    IMPLAUSIBLE_CLASS,
    MAX_PART_COUNT_LIMIT,
    Implausible,
    check_counts,
    implausible_reason,
    implausible_record,
)
from erpsync.domain.writeback_rules import CountTarget

BOUND = 1_000_000


def raw(total: Any, good: Any = 0, scrap: Any = 0, nonconform: Any = 0) -> dict[str, Any]:
    return {"total": total, "good": good, "scrap": scrap, "nonconform": nonconform}


def broken(result: PartCounts | Implausible) -> str:
    assert isinstance(result, Implausible), result
    return "; ".join(result.broken)


def test_plausible_counts_become_part_counts_whole_floats_included() -> None:
    assert check_counts(raw(10, 7, 2, 1), bound=BOUND) == PartCounts(10, 7, 2, 1)
    assert check_counts(raw(12.0, 12.0, 0.0, 0), bound=BOUND) == PartCounts(12, 12, 0, 0)
    assert check_counts(raw(0), bound=BOUND) == PartCounts(0, 0, 0, 0)
    assert check_counts(raw(BOUND, BOUND), bound=BOUND) == PartCounts(BOUND, BOUND, 0, 0)
    checked = check_counts(raw(12.0, 12.0), bound=BOUND)
    assert isinstance(checked, PartCounts) and type(checked.total) is int


def test_fewer_judged_than_made_is_plausible() -> None:
    """`<=`, not `==`: MM never published good = total - scrap - nonconform."""
    assert check_counts(raw(10, 5, 1, 1), bound=BOUND) == PartCounts(10, 5, 1, 1)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        (raw(10**30, 10**30), f"totalParts ({10**30}) is above writeback.max_part_count ({BOUND})"),
        (raw(1e30), "totalParts (1e+30) is above writeback.max_part_count"),
        (raw(BOUND + 1), "totalParts (1000001) is above"),
        (raw(10, -5), "goodParts is negative (-5)"),
        (raw(-1.0), "totalParts is negative (-1.0)"),
        (raw(12.5, 12), "totalParts is not a whole number (12.5)"),
        (raw(float("nan")), "totalParts is not a finite number (nan)"),
        (raw(10, 0, float("inf")), "scrapParts is not a finite number (inf)"),
        (raw("12"), "totalParts is not a number ('12')"),
        (raw(True), "totalParts is not a number (True)"),
        (raw(None), "totalParts is not a number (None)"),
        (raw(10, 15), "goodParts (15) is more than totalParts (10)"),
        (raw(10, 8, 2, 1), "goodParts + scrapParts + nonconformParts (11) is more than totalParts (10)"),
        (raw(0, 0, 1, 0), "goodParts + scrapParts + nonconformParts (1) is more than totalParts (0)"),
    ],
)
def test_implausible_counts_name_the_rule_broken(counts: dict[str, Any], expected: str) -> None:
    assert expected in broken(check_counts(counts, bound=BOUND))


def test_every_broken_rule_is_named_and_the_values_are_kept_as_sent() -> None:
    result = check_counts(raw(10**30, -5, 12.5, float("nan")), bound=BOUND)
    assert isinstance(result, Implausible)
    assert len(result.broken) == 4  # one per count; the sum is not judged on counts already bad
    assert result.values == {
        "totalParts": 10**30,
        "goodParts": -5,
        "scrapParts": 12.5,
        "nonconformParts": "nan",  # NaN is not JSON: kept as text
    }
    assert json.loads(json.dumps(result.values, allow_nan=False)) == result.values  # audit JSON
    assert result.sent().startswith(f"totalParts={10**30}, goodParts=-5, scrapParts=12.5")


@given(
    st.tuples(*(st.integers(min_value=-5, max_value=BOUND + 5) for _ in range(4)))
    | st.tuples(*(st.floats(allow_nan=True, allow_infinity=True) for _ in range(4)))
)
def test_only_whole_bounded_consistent_counts_pass(values: tuple[float, float, float, float]) -> None:
    total, good, scrap, nonconform = values
    result = check_counts(raw(*values), bound=BOUND)
    ok = all(math.isfinite(v) and float(v).is_integer() and 0 <= v <= BOUND for v in values) and (
        good + scrap + nonconform <= total
    )
    assert isinstance(result, PartCounts) is ok
    if isinstance(result, PartCounts):
        assert (result.total, result.good, result.scrap, result.nonconform) == tuple(int(v) for v in values)
        assert result.good + result.scrap + result.nonconform <= result.total <= BOUND


def test_the_quarantine_entry_names_the_run_values_rule_and_fix() -> None:
    target = CountTarget(7, "erp:LT9", "LT9", "erp", "W100/1", "10", "HAAS-1", PartCounts(20, 18, 2, 0))
    result = check_counts(raw(10**30, 5), bound=BOUND)
    assert isinstance(result, Implausible)
    reason = implausible_reason(target, result)
    for part in (
        "erp:LT9",
        "W100/1 op 10 on HAAS-1",
        f"totalParts={10**30}",
        "above writeback.max_part_count",
        "Not written to the ERP",
        "total=20, good=18, scrap=2, nonconform=0",
        "raise writeback.max_part_count",
    ):
        assert part in reason
    record = implausible_record(target, result.values, reason)
    assert (record.source, record.record_key, record.error_class) == ("erp", "erp:LT9", IMPLAUSIBLE_CLASS)
    assert isinstance(record.raw, dict) and record.raw["mm_counts"]["totalParts"] == 10**30
    assert record.raw["last_written"] == {"total": 20, "good": 18, "scrap": 2, "nonconform": 0}
    assert "nothing was ever written" in implausible_reason(
        CountTarget(8, "erp:LT8", "LT8", "erp", "W", "10", "M", None), result
    )


def test_max_part_count_is_bounded_below_what_the_columns_hold() -> None:
    assert WritebackSettings().max_part_count == DEFAULT_MAX_PART_COUNT
    assert WritebackSettings(max_part_count=MAX_PART_COUNT_LIMIT).max_part_count == MAX_PART_COUNT_LIMIT
    # VISUAL's decimal(20,8) quantities hold < 10^12: 99 generations of a ticket at the limit fit
    assert 99 * MAX_PART_COUNT_LIMIT < 10**12 and MAX_PART_COUNT_LIMIT < 2**63 - 1
    for bad in (0, -1, MAX_PART_COUNT_LIMIT + 1, 1e12, float("inf"), float("nan"), "lots"):
        with pytest.raises(ValidationError, match="max_part_count"):
            WritebackSettings(max_part_count=bad)
