"""The write-back rules, without a database: no data is never zero, never decrease, never clobber."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from erpsync.domain.model import PartCounts
from erpsync.domain.ticket_shares import AMBIGUOUS, CONFLICT, SHARE_SUMS_LIMIT, Shares, ticket_shares
from erpsync.domain.writeback_rules import (
    IN_DOUBT_LIMIT,
    CountValues,
    NoDataReason,
    Verdict,
    erp_verdict,
    plan_write,
    record_intent,
    sql_bind_names,
    unknown_sql_binds,
)


def pc(total: int, good: int, scrap: int = 0, nonconform: int = 0) -> PartCounts:
    return PartCounts(total=total, good=good, scrap=scrap, nonconform=nonconform)


def test_no_data_is_never_a_write_and_keeps_its_reason() -> None:
    plan = plan_write(None, pc(5, 5), allow_decrease=True, no_data_reason=NoDataReason.UNREACHABLE)
    assert plan.verdict is Verdict.NO_DATA
    assert plan.reason == "mm_unreachable"
    assert plan_write(None, None, allow_decrease=False).reason == "mm_not_found"


def test_zero_counts_from_mm_are_data_and_are_written_the_first_time() -> None:
    assert plan_write(pc(0, 0), None, allow_decrease=False).verdict is Verdict.WRITE


def test_unchanged_counts_are_not_written_again_even_if_times_differ() -> None:
    last = pc(10, 9, 1)
    new = PartCounts(total=10, good=9, scrap=1, nonconform=0, end_at=None)
    assert plan_write(new, last, allow_decrease=False).verdict is Verdict.UNCHANGED


def test_a_decrease_is_refused_with_the_fields_named_unless_allowed() -> None:
    last, new = pc(10, 10), pc(10, 8, 2)  # MM reclassified 2 good parts as scrap
    plan = plan_write(new, last, allow_decrease=False)
    assert plan.verdict is Verdict.DECREASE_REFUSED
    assert plan.decreased == ("good",)
    assert "good 10 -> 8" in plan.reason
    assert plan_write(new, last, allow_decrease=True).verdict is Verdict.WRITE


def test_growth_is_written() -> None:
    assert plan_write(pc(12, 11, 1), pc(10, 10), allow_decrease=False).verdict is Verdict.WRITE


def test_erp_verdicts() -> None:
    last = {"GOOD_QTY": 10, "BAD_QTY": 1}
    new = {"GOOD_QTY": 12, "BAD_QTY": 1}
    assert erp_verdict(current=last, expected=last, new=new) == "write"
    assert erp_verdict(current=None, expected=None, new=new) == "write"
    assert erp_verdict(current=new, expected=last, new=new) == "already_written"  # replay after a crash
    assert erp_verdict(current=new, expected=None, new=new) == "already_written"
    assert erp_verdict(current=new, expected=new, new=new) == "unchanged"
    assert erp_verdict(current={"GOOD_QTY": 11, "BAD_QTY": 1}, expected=last, new=new) == "conflict"
    assert erp_verdict(current=None, expected=last, new=new) == "conflict"  # row gone
    assert erp_verdict(current=last, expected=None, new=new) == "conflict"  # someone else's row


def test_a_value_erpsync_meant_to_write_before_a_crash_is_its_own_not_a_conflict() -> None:
    last = {"GOOD_QTY": 10, "BAD_QTY": 1}
    in_doubt = {"GOOD_QTY": 12, "BAD_QTY": 1}  # committed to the ERP, then killed before our commit
    new = {"GOOD_QTY": 15, "BAD_QTY": 2}  # MM counted on meanwhile
    assert erp_verdict(current=in_doubt, expected=last, new=new) == "conflict"  # the defect
    assert erp_verdict(current=in_doubt, expected=last, new=new, in_doubt=[in_doubt]) == "write"
    assert erp_verdict(current=last, expected=last, new=new, in_doubt=[in_doubt]) == "write"
    person = {"GOOD_QTY": 11, "BAD_QTY": 1}
    assert erp_verdict(current=person, expected=last, new=new, in_doubt=[in_doubt]) == "conflict"
    assert erp_verdict(current=in_doubt, expected=None, new=new, in_doubt=[in_doubt]) == "write"


def test_intents_accumulate_until_confirmed_and_are_bounded() -> None:
    intents: list[PartCounts] = []
    for n in range(IN_DOUBT_LIMIT + 3):
        intents = record_intent(intents, pc(n, n))
    assert len(intents) == IN_DOUBT_LIMIT
    assert intents[-1] == pc(IN_DOUBT_LIMIT + 2, IN_DOUBT_LIMIT + 2)  # the newest is always kept
    assert record_intent([pc(1, 1), pc(2, 2)], pc(1, 1)) == [pc(2, 2), pc(1, 1)]  # no repeats


def test_unchanged_counts_still_go_to_the_erp_while_a_write_is_in_doubt() -> None:
    last = pc(10, 10)
    assert plan_write(pc(10, 10), last, allow_decrease=False, confirmed=False).verdict is Verdict.WRITE


def test_erp_decimals_compare_equal_to_integers() -> None:
    current = {"GOOD_QTY": Decimal("10.00000000"), "BAD_QTY": Decimal("0E-8")}
    assert erp_verdict(
        current=current, expected={"GOOD_QTY": 10, "BAD_QTY": 0}, new={"GOOD_QTY": 11, "BAD_QTY": 0}
    ) == ("write")
    half = {"GOOD_QTY": Decimal("10.5"), "BAD_QTY": Decimal(0)}
    assert erp_verdict(
        current=half, expected={"GOOD_QTY": 10, "BAD_QTY": 0}, new={"GOOD_QTY": 11, "BAD_QTY": 0}
    ) == ("conflict")


counts_st = st.builds(pc, *(st.integers(min_value=0, max_value=10**6) for _ in range(4)))


@given(new=st.one_of(st.none(), counts_st), last=st.one_of(st.none(), counts_st), allow=st.booleans())
def test_no_plan_ever_writes_missing_data_or_lowers_a_count_when_not_allowed(
    new: PartCounts | None, last: PartCounts | None, allow: bool
) -> None:
    plan = plan_write(new, last, allow_decrease=allow)
    if plan.verdict is Verdict.WRITE:
        assert new is not None
        if last is not None and not allow:
            assert all(getattr(new, f) >= getattr(last, f) for f in ("total", "good", "scrap", "nonconform"))


def _q(value: int | None) -> dict[str, int] | None:
    return None if value is None else {"Q": value}


@given(
    current=st.one_of(st.none(), st.integers(0, 5)),
    expected=st.one_of(st.none(), st.integers(0, 5)),
    new=st.integers(0, 5),
)
def test_erp_verdict_writes_only_over_what_erpsync_wrote(
    current: int | None, expected: int | None, new: int
) -> None:
    verdict = erp_verdict(current=_q(current), expected=_q(expected), new={"Q": new})
    if verdict == "write":
        assert current == expected
    if current is not None and current not in (expected, new):
        assert verdict == "conflict"


def v(good: int | Decimal, bad: int | Decimal = 0) -> CountValues:
    """A labor ticket's value (or one run's part of it)."""
    return {"GOOD_QTY": good, "BAD_QTY": bad}


def own(*shares: CountValues) -> Shares:
    return Shares("own", shares)


def test_a_reopened_ticket_killed_after_its_erp_commit_holds_erpsync_s_own_sum() -> None:
    """Campaign finding F3. Generation 1 last wrote 38 and set out to write 45; generation 2 last
    wrote 14 and set out to write 21; one ERP transaction wrote both (66), then the state commit
    was lost. Each run's write in doubt beside the other's confirmed value (45 + 14, 38 + 21) does
    not make 66: only a combination of both runs' own values does."""
    first = [v(45, 2), v(38, 2)]  # MM did not count on: the new value is the one in doubt
    second = [v(24, 1), v(14, 1), v(21, 1)]  # MM counted on: new, last written, in doubt
    assert ticket_shares(v(66, 3), [first, second], []) == own(v(45, 2), v(21, 1))
    assert ticket_shares(v(52, 3), [first, second], []) == own(v(38, 2), v(14, 1))  # nothing committed
    assert ticket_shares(v(69, 3), [first, second], []) == own(v(45, 2), v(24, 1))  # already written
    assert ticket_shares(v(70, 3), [first, second], []) == CONFLICT  # a person typed 70
    assert ticket_shares(v(66, 4), [first, second], []) == CONFLICT  # or changed BAD_QTY
    decimal = v(Decimal("66.00000000"), Decimal("3.00000000"))  # VISUAL's decimal(20,8)
    assert ticket_shares(decimal, [first, second], []) == own(v(45, 2), v(21, 1))


def test_a_ticket_s_other_runs_count_with_every_value_erpsync_may_have_left_there() -> None:
    """A run not written now (its MM read failed) may hold its last value or one in doubt."""
    writing = [v(30), v(20)]
    idle = [v(10), v(15)]
    assert ticket_shares(v(35), [writing], [idle]) == own(v(20))  # the idle run holds 15
    assert ticket_shares(v(40), [writing], [idle]) == own(v(30))  # it holds 10: already written
    assert ticket_shares(v(31), [writing], [idle]) == CONFLICT


def test_two_combinations_leaving_the_other_runs_different_parts_are_never_guessed() -> None:
    """45 + 14 and 38 + 21 both make 59: written together, either way the ticket ends at the sum
    of the new counts; but with the second run not written now, its part would be a guess (7 parts
    lost or doubled), so nothing is written."""
    first, second = [v(45), v(38)], [v(14), v(21)]
    assert ticket_shares(v(59), [first], [second]) == AMBIGUOUS
    assert ticket_shares(v(59), [first], [[v(21)]]) == own(v(38))  # its part known: no doubt
    both = ticket_shares(v(59), [first, [v(21), *second]], [])
    assert both.verdict == "own" and v(sum(s["GOOD_QTY"] for s in both.writing)) == v(59)


def test_one_run_s_ticket_is_its_own_exactly_when_erp_verdict_says_so() -> None:
    last, doubt, new = v(10, 1), v(12, 1), v(15, 2)
    for current in (last, doubt, new, v(11, 1), v(0)):
        shares = ticket_shares(current, [[new, last, doubt]], [])
        verdict = erp_verdict(current=current, expected=last, new=new, in_doubt=[doubt])
        assert (shares == CONFLICT) == (verdict == "conflict")
        if verdict != "conflict":
            assert shares == own(current)


def test_too_many_combinations_are_no_match_never_an_overwrite() -> None:
    runs = [[v(0, 0), v(10**n, 0), v(0, 10**n), v(10**n, 10**n)] for n in range(7)]  # 4**7 sums
    assert SHARE_SUMS_LIMIT < 4**7
    assert ticket_shares(v(0, 0), runs, []) == own(*[v(0, 0)] * 7)  # pruned: sums above it lead nowhere
    assert ticket_shares(v(1111111, 1111111), runs, []) == CONFLICT


values_st = st.builds(v, st.integers(0, 6), st.integers(0, 2))
runs_st = st.lists(st.lists(values_st, min_size=1, max_size=3), max_size=3)


def _total(values: Sequence[CountValues]) -> tuple[int | Decimal, int | Decimal]:
    return sum(c["GOOD_QTY"] for c in values), sum(c["BAD_QTY"] for c in values)


@given(writing=runs_st.filter(bool), others=runs_st, data=st.data())
def test_ticket_shares_against_every_combination(
    writing: list[list[CountValues]], others: list[list[CountValues]], data: st.DataObject
) -> None:
    """Own exactly when one value per run adds up, and then only if what is left to the runs not
    written is the same for every such combination; the shares found are own values that add up."""
    current = v(data.draw(st.integers(0, 25)), data.draw(st.integers(0, 8)))
    left = {  # what each combination making the ticket's value leaves to the runs not written
        _total(combo[len(writing) :])
        for combo in itertools.product(*writing, *others)
        if _total(combo) == _total([current])
    }
    shares = ticket_shares(current, writing, others)
    assert shares.verdict == ("conflict" if not left else "ambiguous" if len(left) > 1 else "own")
    if shares.verdict == "own":
        assert all(share in values for share, values in zip(shares.writing, writing, strict=True))
        (kept,) = left
        assert tuple(a + b for a, b in zip(_total(shares.writing), kept, strict=True)) == _total([current])


@pytest.mark.parametrize(
    ("statement", "names"),
    [
        ("UPDATE T SET Q = :good_parts WHERE K = :run_key", ["good_parts", "run_key"]),
        (
            "UPDATE T SET Q = CAST(:good_parts AS INT), D = '12:30' WHERE K = :run_key",
            ["good_parts", "run_key"],
        ),
        ("UPDATE T SET Q = :good_parts::int WHERE K = :run_key", ["run_key"]),  # as SQLAlchemy reads it
        ("UPDATE T SET Q = :good_parts, R = :good_parts", ["good_parts"]),
        (r"SELECT '\:not_a_bind'", []),
    ],
)
def test_sql_bind_names(statement: str, names: list[str]) -> None:
    assert sql_bind_names(statement) == names


def test_bind_parsing_matches_sqlalchemy_text() -> None:
    statement = "UPDATE T SET Q = :good_parts, X = :a::int, D = '1:2' WHERE K = :run_key AND Z = \\:no"
    assert sql_bind_names(statement) == list(text(statement)._bindparams)


def test_unknown_sql_binds_are_named_in_order() -> None:
    assert unknown_sql_binds("UPDATE T SET A = :good_part, B = :prev_good_parts, C = :runid") == [
        "good_part",
        "runid",
    ]
