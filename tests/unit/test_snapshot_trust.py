"""Snapshot trust (domain/snapshot_trust.py): which vanished stops a reconcile plan may make."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from erpsync.domain.lifecycle import ActionKind, BoundRun
from erpsync.domain.model import JobOperationRun, RunState
from erpsync.domain.plan import Plan, StopAction
from erpsync.domain.reconcile import reconcile
from erpsync.domain.snapshot_trust import (
    MASS_MINIMUM,
    MASS_VANISH,
    STOPS_CONFIRMED,
    UNTRUSTED_SNAPSHOT,
    StopHold,
    trust_plan,
)
from tests.unit.reconcile_helpers import MAPPER, NOW, SOURCE, at, bind, bindings, run

PRODUCTION, ENDED = RunState.PRODUCTION, RunState.ENDED


def plan(
    desired: Iterable[JobOperationRun],
    bound: Mapping[str, BoundRun],
    *,
    policy: str = "stop",
    held: Collection[str] = (),
) -> Plan:
    return reconcile(
        desired,
        bound,
        source=SOURCE,
        mapper=MAPPER,
        snapshot_complete=True,
        vanished_policy=policy,  # type: ignore[arg-type]
        now=NOW,
        held=held,
    )


def shop(n: int) -> list[JobOperationRun]:
    """n runs in production, one per machine."""
    return [run(f"LT{i}", PRODUCTION, machine=f"M{i}") for i in range(1, n + 1)]


def stops(p: Plan) -> list[str]:
    return sorted(a.run_key for a in p.actions if a.kind is ActionKind.STOP)


def trust(
    p: Plan, *, suspect: str | None = None, open_runs: int, share: float = 0.5, confirmed: bool = False
) -> tuple[Plan, StopHold | None]:
    return trust_plan(
        p, source=SOURCE, suspect=suspect, open_runs=open_runs, max_share=share, confirmed=confirmed
    )


def test_a_trusted_snapshot_under_the_share_is_left_as_it_is() -> None:
    runs = shop(4)
    p = plan(runs[1:], bindings(*map(bind, runs)))  # one of four vanished
    assert stops(p) == ["LT1"]
    kept, hold = trust(p, open_runs=4)
    assert kept is p and hold is None


def test_a_suspect_snapshot_holds_every_vanished_stop_and_says_why() -> None:
    runs = shop(2)
    p = plan([], bindings(*map(bind, runs)))  # header-only export: both look vanished
    kept, hold = trust(p, suspect="orders.csv has a header and no rows", open_runs=2)
    assert stops(kept) == [] and stops(p) == ["LT1", "LT2"]  # the input plan is not changed
    assert hold is not None and hold.kind == UNTRUSTED_SNAPSHOT and hold.held == 2
    assert [s.mm_run_id for s in hold.stops] == ["erp:LT1", "erp:LT2"]
    [flag] = kept.flags
    assert flag.kind == UNTRUSTED_SNAPSHOT and flag.job == SOURCE and flag.mm_run_id == ""
    assert "orders.csv has a header and no rows" in flag.message
    assert "erpsync resync --confirm-stops" in flag.message
    assert flag.after is not None and flag.after["run_ids"] == ["erp:LT1", "erp:LT2"]
    assert (kept.stats.stopped, kept.stats.vanished, kept.stats.flagged) == (0, 0, 1)


def test_a_suspect_snapshot_still_stops_runs_the_erp_ended_and_starts_new_ones() -> None:
    r1, r2, r3 = shop(3)
    ended = run("LT1", ENDED, machine="M1", end=at(30))
    new = run("LT9", PRODUCTION, machine="M9")
    p = plan([ended, new], bindings(bind(r1), bind(r2), bind(r3)))
    kept, hold = trust(p, suspect="last line cut", open_runs=3)
    assert hold is not None and sorted(s.run_key for s in hold.stops) == ["LT2", "LT3"]
    assert stops(kept) == ["LT1"]  # a clock-out is not a vanished run
    assert [a.run_key for a in kept.actions if a.kind is ActionKind.START] == ["LT9"]


def test_a_suspect_snapshot_raises_no_vanished_flag_under_flag_policy() -> None:
    r1, r2 = shop(2)
    p = plan([r2], bindings(bind(r1), bind(r2)), policy="flag")
    assert [f.kind for f in p.flags] == ["vanished"]
    kept, hold = trust(p, suspect="last line cut", open_runs=2)
    assert hold is not None and hold.held == 0 and len(hold.flags) == 1
    assert [f.kind for f in kept.flags] == [UNTRUSTED_SNAPSHOT]  # the binding stays running
    assert (
        "nothing stopped" in kept.flags[0].message
        and "1 vanished flag(s) not raised" in kept.flags[0].message
    )


def test_a_suspect_snapshot_with_nothing_to_hold_is_still_flagged() -> None:
    runs = shop(1)
    p = plan(runs, bindings(*map(bind, runs)))
    kept, hold = trust(p, suspect="last line cut", open_runs=1)
    assert hold is not None and hold.held == 0
    assert [f.kind for f in kept.flags] == [UNTRUSTED_SNAPSHOT]


def test_three_of_four_vanishing_at_once_is_a_mass_vanish() -> None:
    runs = shop(4)
    p = plan(runs[:1], bindings(*map(bind, runs)))
    kept, hold = trust(p, open_runs=4, share=0.5)
    assert stops(kept) == [] and hold is not None and hold.kind == MASS_VANISH
    assert "3 of 4 open runs vanished" in hold.reason and "sync.max_vanished_share = 0.5" in hold.reason
    assert [f.kind for f in kept.flags] == [MASS_VANISH]
    # at a share of 0.75 three of four is not more than allowed
    kept, hold = trust(p, open_runs=4, share=0.75)
    assert kept is p and hold is None


def test_one_run_of_a_one_run_shop_may_vanish() -> None:
    runs = shop(1)
    p = plan([], bindings(*map(bind, runs)))
    assert MASS_MINIMUM == 2
    kept, hold = trust(p, open_runs=1, share=0.1)
    assert kept is p and hold is None and stops(kept) == ["LT1"]


def test_a_person_confirms_the_held_stops() -> None:
    runs = shop(2)
    p = plan([], bindings(*map(bind, runs)))
    kept, hold = trust(p, suspect="header only", open_runs=2, confirmed=True)
    assert stops(kept) == ["LT1", "LT2"]
    assert hold is not None and hold.confirmed and hold.held == 0 and len(hold.stops) == 2
    assert [f.kind for f in kept.flags] == [STOPS_CONFIRMED]
    assert "a person confirmed 2 stop(s)" in kept.flags[0].message
    # confirming a snapshot that holds nothing changes nothing and audits nothing
    quiet = plan(runs, bindings(*map(bind, runs)))
    assert trust(quiet, suspect="header only", open_runs=2, confirmed=True) == (quiet, None)


def test_a_row_that_turned_bad_is_not_a_vanished_run() -> None:
    runs = shop(2)
    p = plan(runs[1:], bindings(*map(bind, runs)), held={"LT1"})
    assert stops(p) == [] and p.flags == []


@pytest.mark.parametrize("share", [0.0, -0.5, 1.01])
def test_the_share_must_be_in_zero_to_one(share: float) -> None:
    with pytest.raises(ValueError, match="max_share"):
        trust(Plan(), open_runs=1, share=share)


@given(
    total=st.integers(min_value=0, max_value=12),
    vanished=st.integers(min_value=0, max_value=12),
    ended=st.integers(min_value=0, max_value=3),
    share=st.sampled_from([0.1, 0.25, 0.5, 0.75, 1.0]),
    suspect=st.sampled_from([None, "header only"]),
)
def test_holds_only_vanished_stops_and_only_when_untrusted_or_too_many(
    total: int, vanished: int, ended: int, share: float, suspect: str | None
) -> None:
    vanished = min(vanished, total)
    ended = min(ended, total - vanished)
    runs = shop(total)
    desired = [
        *(run(r.run_key, ENDED, machine=r.machine, end=at(10)) for r in runs[vanished : vanished + ended]),
        *runs[vanished + ended :],
    ]
    p = plan(desired, bindings(*map(bind, runs)))
    kept, hold = trust(p, suspect=suspect, open_runs=total, share=share)
    vanished_stops = [a for a in p.actions if isinstance(a, StopAction) and a.vanished]
    assert len(vanished_stops) == vanished
    should_hold = suspect is not None or (vanished >= MASS_MINIMUM and vanished > share * total)
    assert (hold is not None) == should_hold
    if hold is None:
        assert kept is p
        return
    # what is held is exactly the vanished stops; everything else goes ahead; one flag says why
    assert {id(s) for s in hold.stops} == {id(s) for s in vanished_stops}
    assert [a for a in kept.actions] == [
        a for a in p.actions if not (isinstance(a, StopAction) and a.vanished)
    ]
    assert len(stops(kept)) == ended and kept.stats.stopped == ended
    assert [f.kind for f in kept.flags][-1] == hold.kind
    confirmed, again = trust(p, suspect=suspect, open_runs=total, share=share, confirmed=True)
    assert stops(confirmed) == stops(p)
    assert (again is None) == (vanished == 0)
