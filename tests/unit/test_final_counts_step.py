"""`final_counts_step`: when a stopped run's final counts are in the ERP (issue 19, case 2)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from erpsync.domain.model import PartCounts
from erpsync.domain.writeback_rules import (
    CountTarget,
    FinalStep,
    Sibling,
    final_counts_mark,
    final_counts_step,
    may_share_ticket,
    with_cycle_writes,
    with_sibling_counts,
)

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


def test_a_tickets_runs_share_what_erpsync_wrote_for_the_others() -> None:
    """A reopened ticket's runs (LT7, LT7#g2) each carry the other's last-written counts and writes
    in doubt, so a sink that keeps one value per ticket writes their sum; a ticket with one run
    carries nothing."""

    def target(binding_id: int, run_key: str, source: str = "erp", **counts: Any) -> CountTarget:
        return replace(
            CountTarget(binding_id, f"{source}:{run_key}", run_key, source, "J", "10", "M1", None), **counts
        )

    first, second, alone = target(1, "LT7"), target(2, "LT7#g2"), target(3, "LT8")
    generations = [
        target(1, "LT7", last=PartCounts(40, 38, 2, 0)),
        target(2, "LT7#g2", last=PartCounts(15, 14, 1, 0), in_doubt=(PartCounts(20, 19, 1, 0),)),
        target(9, "LT7", "other", last=PartCounts(99, 99, 0, 0)),  # another source's LT7: not this ticket
    ]
    running, stopped = replace(first, status="running"), replace(first, status="stopped")
    assert [may_share_ticket(t) for t in (running, second, stopped)] == [False, True, True]
    shared = with_sibling_counts([first, second, alone], generations)
    assert [t.siblings for t in shared] == [
        (Sibling("erp:LT7#g2", PartCounts(15, 14, 1, 0), (PartCounts(20, 19, 1, 0),)),),
        (Sibling("erp:LT7", PartCounts(40, 38, 2, 0)),),
        (),
    ]


def test_an_earlier_erp_transaction_of_the_cycle_updates_the_siblings() -> None:
    """Another batch of the same cycle wrote a sibling: confirmed, the ticket holds its new counts;
    its transaction failed (perhaps at the commit), they are one more write in doubt."""
    target = CountTarget(3, "erp:LT7#g3", "LT7#g3", "erp", "J", "10", "M1", None)
    first, second = PartCounts(40, 38, 2, 0), PartCounts(15, 14, 1, 0)
    doubt = PartCounts(16, 15, 1, 0)
    target = replace(target, siblings=(Sibling("erp:LT7", first), Sibling("erp:LT7#g2", second, (doubt,))))
    sent = {"erp:LT7": PartCounts(47, 45, 2, 0), "erp:LT7#g2": PartCounts(22, 21, 1, 0), "erp:LT9": first}
    assert with_cycle_writes(target, sent, {"erp:LT7", "erp:LT9"}).siblings == (
        Sibling("erp:LT7", PartCounts(47, 45, 2, 0)),
        Sibling("erp:LT7#g2", second, (doubt, PartCounts(22, 21, 1, 0))),
    )
    assert with_cycle_writes(target, {"erp:LT9": first}, {"erp:LT9"}) is target
