"""`final_counts_step`: when a stopped run's final counts are in the ERP (issue 19, case 2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from erpsync.domain.writeback_rules import FinalStep, final_counts_mark, final_counts_step

STOPPED = datetime(2026, 12, 7, 12, tzinfo=UTC)
WINDOW, MAX_AGE = timedelta(minutes=10), timedelta(hours=72)


def step(minutes: float, **outcome: bool) -> FinalStep:
    flags = {"failed": False, "changed": False, "ended": False, **outcome}
    return final_counts_step(
        STOPPED, STOPPED + timedelta(minutes=minutes), window=WINDOW, max_age=MAX_AGE, **flags
    )


@pytest.mark.parametrize(
    ("minutes", "outcome", "expected"),
    [
        (5, {"ended": True}, FinalStep(STOPPED)),  # within the window: MM may count on
        (10, {"ended": True}, FinalStep(None)),  # read after the window, run ended: done
        (600, {"ended": True}, FinalStep(None)),  # however late (outage): one read finishes it
        (600, {}, FinalStep(STOPPED)),  # MM still shows the run open: not final
        (3, {"changed": True, "ended": True}, FinalStep(STOPPED + timedelta(minutes=3))),
        (-1, {"changed": True, "ended": True}, FinalStep(STOPPED)),  # read began before the stop
        (600, {"failed": True}, FinalStep(STOPPED)),  # failing: still due
        (72 * 60, {"failed": True}, FinalStep(None, give_up=True)),  # bounded
    ],
)
def test_final_counts_step(minutes: float, outcome: dict[str, bool], expected: FinalStep) -> None:
    assert step(minutes, **outcome) == expected


def test_a_zero_window_finishes_with_the_first_read_after_the_stop() -> None:
    done = final_counts_step(
        STOPPED, STOPPED, window=timedelta(0), max_age=MAX_AGE, failed=False, changed=True, ended=True
    )
    assert done == FinalStep(None)


def test_only_a_stop_opens_the_window() -> None:
    assert final_counts_mark("stopped", STOPPED) == STOPPED
    assert final_counts_mark("vanished", STOPPED) is None and final_counts_mark(None, STOPPED) is None
