"""The campaign's oracle (tests/campaign/oracle.py) on the documented examples, worked by hand.

Pure and fast, so part of the default run: the oracle judges erpsync in the campaign, so its own
reading of docs/architecture.md "Several tickets on one machine" is pinned here.
"""

from __future__ import annotations

import copy
from datetime import datetime

from erpsync.demo.visual_fixture import OperationKey, WorkOrderKey
from tests.campaign.oracle import Oracle, ORun, branches, utc
from tests.campaign.scenarios import Op, Ticket

X = Op(OperationKey(WorkOrderKey("W", "1001"), 10), "M1")
Y = Op(OperationKey(WorkOrderKey("W", "2002", "1", "2", "3"), 20), "M1")
Z = Op(OperationKey(WorkOrderKey("W", "3003"), 10), "M2")


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, 20, hour, minute, second)


class Floor:
    """Tickets and an oracle, one batch at a time."""

    def __init__(self, policy: str = "flag") -> None:
        self.tickets: dict[int, Ticket] = {}
        self.oracle = Oracle(vanished_policy=policy)

    def clock_in(self, op: Op, when: datetime, kind: str = "R") -> Ticket:
        t = Ticket(len(self.tickets) + 1, op, kind, when)
        self.tickets[t.id] = t
        return t

    def batch(self, now: datetime) -> dict[str, ORun]:
        self.oracle.apply(self.tickets, now)
        return self.oracle.runs

    def open_runs(self) -> dict[str, str]:
        return {r.run_id: r.machine for r in self.oracle.expected_open()}


def test_a_crew_is_one_run_from_the_first_clock_in_to_the_last_clock_out() -> None:
    f = Floor()
    a = f.clock_in(X, at(8), "S")
    b = f.clock_in(X, at(8, 30), "R")
    runs = f.batch(at(8, 31))
    assert list(runs) == ["erp:LT1"]
    assert (runs["erp:LT1"].start, runs["erp:LT1"].phase) == (utc(at(8)), "production")
    a.clock_out = at(9)
    f.batch(at(9))
    assert f.open_runs() == {"erp:LT1": "M1"}
    b.clock_out = at(9, 30)
    runs = f.batch(at(9, 30))
    assert runs["erp:LT1"].end == utc(at(9, 30))
    assert f.open_runs() == {}


def test_setup_then_run_switches_and_never_goes_back() -> None:
    f = Floor()
    f.clock_in(X, at(8), "S")
    assert f.batch(at(8))["erp:LT1"].phase == "setup"
    run = f.clock_in(X, at(8, 40), "R")
    assert f.batch(at(8, 40))["erp:LT1"].phase == "production"
    run.clock_out = at(9)
    assert f.batch(at(9))["erp:LT1"].phase == "production"  # MM cannot switch back to setup


def test_another_operation_takes_the_machine_and_the_first_is_shown_again_as_generation_2() -> None:
    f = Floor()
    f.clock_in(X, at(8))
    f.batch(at(8))
    c = f.clock_in(Y, at(9))
    runs = f.batch(at(9))
    assert runs["erp:LT1"].end == utc(at(9))
    assert runs["erp:LT2"].start == utc(at(9))
    c.clock_out = at(9, 45)
    runs = f.batch(at(9, 50))
    assert runs["erp:LT2"].end == utc(at(9, 45))
    assert runs["erp:LT1.g2"].start == utc(at(9, 45))  # when the machine was freed
    assert f.open_runs() == {"erp:LT1.g2": "M1"}


def test_after_a_gap_the_same_operation_is_a_new_run() -> None:
    f = Floor()
    a = f.clock_in(X, at(8))
    f.batch(at(8))
    a.clock_out = at(9)
    f.batch(at(9))
    f.clock_in(X, at(9, 30))
    runs = f.batch(at(9, 30))
    assert runs["erp:LT1"].end == utc(at(9))
    assert runs["erp:LT2"].start == utc(at(9, 30))


def test_a_reopened_ticket_is_its_next_generation_from_when_its_run_ended() -> None:
    f = Floor()
    a = f.clock_in(X, at(8))
    f.batch(at(8))
    a.clock_out = at(9)
    f.batch(at(9))
    a.clock_out = None
    runs = f.batch(at(9, 30))
    assert runs["erp:LT1.g2"].start == utc(at(9))
    assert f.open_runs() == {"erp:LT1.g2": "M1"}


def test_a_clock_out_entered_late_ends_the_run_when_it_says() -> None:
    f = Floor()
    a = f.clock_in(X, at(6))
    f.batch(at(6))
    a.clock_out = at(8)
    assert f.batch(at(10))["erp:LT1"].end == utc(at(8))


def test_a_clock_in_entered_late_behind_a_later_one_changes_nothing() -> None:
    f = Floor()
    f.clock_in(X, at(8))
    f.batch(at(8))
    f.clock_in(Y, at(7))  # entered at 9:00, clocked in before LT1
    f.batch(at(9))
    assert f.open_runs() == {"erp:LT1": "M1"}


def test_a_machine_edit_does_not_move_a_run() -> None:
    f = Floor()
    a = f.clock_in(X, at(8))
    f.batch(at(8))
    a.resource = "M2"
    f.batch(at(9))
    assert f.open_runs() == {"erp:LT1": "M1"}


def test_a_deleted_ticket_under_flag_stays_open_until_a_new_run_takes_the_machine() -> None:
    f = Floor("flag")
    a = f.clock_in(X, at(8))
    f.batch(at(8))
    a.deleted = True
    f.batch(at(9))
    assert f.open_runs() == {"erp:LT1": "M1"}
    f.clock_in(Y, at(9, 30))
    runs = f.batch(at(9, 30))
    assert runs["erp:LT1"].end == utc(at(9, 30))
    assert f.open_runs() == {"erp:LT2": "M1"}


def test_a_deleted_ticket_under_stop_ends_at_erpsyncs_now_and_the_observed_end_is_adopted() -> None:
    f = Floor("stop")
    a = f.clock_in(X, at(8))
    f.batch(at(8))
    a.deleted = True
    runs = f.batch(at(9))
    assert (runs["erp:LT1"].end, runs["erp:LT1"].end_after) == (None, utc(at(9)))
    mm = {"erp:LT1": mm_run("erp:LT1", "M1", "1001/1", at(8), end=at(9, 0, 2))}
    assert f.oracle.compare(mm, utc(at(9, 1))) == []
    f.oracle.adopt(mm)
    assert runs["erp:LT1"].end == utc(at(9, 0, 2))


def test_compare_names_every_difference() -> None:
    f = Floor()
    f.clock_in(Y, at(8), "S")
    f.batch(at(8))
    good = mm_run("erp:LT1", "M1", "2002/1/2-3", at(8), op_seq=20, phase="setup")
    assert f.oracle.compare({"erp:LT1": good}, utc(at(8, 1))) == []
    late = {**good, "start_at": "2026-11-20T14:05:00.000Z", "phase": "production"}
    stray = mm_run("erp:LT9", "M1", "9/1", at(8))
    found = f.oracle.compare({"erp:LT1": late, "erp:LT9": stray}, utc(at(8, 1)))
    assert len(found) == 3, found
    assert "start 2026-11-20T14:05:00.000Z" in found[0]
    assert "phase production, expected setup" in found[1]
    assert "erp:LT9" in found[2]
    assert f.oracle.compare({}, utc(at(8, 1)))[0].startswith("oracle: MM lacks erp:LT1")


def mm_run(
    rid: str,
    machine: str,
    job: str,
    start: datetime,
    *,
    end: datetime | None = None,
    op_seq: int = 10,
    phase: str = "production",
) -> dict[str, object]:
    """A run as the simulator's `runs()` describes it."""

    def wire(local: datetime | None) -> str | None:
        return None if local is None else utc(local).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    return {
        "run_id": rid,
        "machine_id": machine,
        "job_name": job,
        "operation_name": f"{job}|{op_seq}",
        "phase": phase,
        "start_at": wire(start),
        "end_at": wire(end),
        "ended_by": "stop" if end else None,
    }


def test_branches_cover_an_operation_erpsync_saw_or_missed_between_two_cycles() -> None:
    f = Floor()
    f.clock_in(X, at(8))
    f.batch(at(8))
    c = f.clock_in(Y, at(9))
    states = [(copy.deepcopy(f.tickets), at(9), utc(at(9)))]
    c.clock_out = at(9, 0, 20)
    states.append((copy.deepcopy(f.tickets), at(9, 0, 20), utc(at(9, 0, 20))))
    missed, seen = branches(f.oracle, states)
    assert [r.run_id for r in missed.expected_open()] == ["erp:LT1"]
    assert [r.run_id for r in seen.expected_open()] == ["erp:LT1.g2"]
    assert seen.runs["erp:LT2"].end == utc(at(9, 0, 20)) == seen.runs["erp:LT1.g2"].start
    assert [r.run_id for r in f.oracle.expected_open()] == ["erp:LT1"]  # the oracle itself is untouched


def test_a_clock_in_ahead_of_now_ends_no_earlier_than_it_started() -> None:
    f = Floor()
    a = f.clock_in(X, at(9, 5))  # a terminal whose clock runs ahead
    f.batch(at(9))
    a.clock_out = at(9, 5)  # clocked out at 9:01, never before the clock-in
    runs = f.batch(at(9, 1))
    assert (runs["erp:LT1"].end, runs["erp:LT1"].end_after) == (None, utc(at(9, 5)))
    mm = {"erp:LT1": mm_run("erp:LT1", "M1", "1001/1", at(9, 5), end=at(9, 5))}
    assert f.oracle.compare(mm, utc(at(9, 1, 3))) == []


def test_an_edited_anchor_whose_run_ends_moves_to_its_new_machine_in_the_same_state() -> None:
    f = Floor()
    a = f.clock_in(X, at(8))
    f.batch(at(8))
    a.op = Z  # edited to an operation on M2: its run stays on M1 while it lasts
    f.batch(at(8, 30))
    assert f.open_runs() == {"erp:LT1": "M1"}
    f.clock_in(Y, at(9))  # another operation takes M1: LT1's run ends, LT1 is now M2's
    runs = f.batch(at(9))
    assert runs["erp:LT1"].end == utc(at(9))
    assert f.open_runs() == {"erp:LT2": "M1", "erp:LT1.g2": "M2"}
    assert runs["erp:LT1.g2"].start == utc(at(8))


# -- MM-side faults (tests/campaign/mm_faults.py): drift, runs erpsync gave up, excused aspects ----------
def test_a_run_mm_ended_by_hand_under_restart_is_followed_by_the_next_generation_from_that_end() -> None:
    f = Floor()
    f.clock_in(X, at(8))
    f.batch(at(8))
    f.oracle.drift("erp:LT1", end=utc(at(9)), lost=False, heal="restart")
    runs = f.batch(at(9, 1))
    assert runs["erp:LT1"].end == utc(at(9))
    assert runs["erp:LT1.g2"].start == utc(at(9))
    assert f.open_runs() == {"erp:LT1.g2": "M1"}


def test_a_run_mm_lost_must_stay_absent_and_its_next_generation_starts_when_it_was_found_gone() -> None:
    f = Floor()
    f.clock_in(X, at(8))
    f.batch(at(8))
    f.oracle.drift("erp:LT1", end=utc(at(9, 0, 3)), lost=True, heal="restart")
    f.batch(at(9, 1))
    g2 = mm_run("erp:LT1.g2", "M1", "1001/1", at(9, 0, 3))
    assert f.oracle.compare({"erp:LT1.g2": g2}, utc(at(9, 2))) == []
    back = mm_run("erp:LT1", "M1", "1001/1", at(8))
    assert "which it lost" in f.oracle.compare({"erp:LT1": back, "erp:LT1.g2": g2}, utc(at(9, 2)))[0]


def test_under_flag_a_drifted_run_is_dead_its_anchor_blocked_but_another_operation_takes_the_machine() -> (
    None
):
    f = Floor()
    a = f.clock_in(X, at(8))
    f.batch(at(8))
    f.oracle.drift("erp:LT1", end=utc(at(9)), lost=False, heal="flag")
    f.batch(at(9, 1))
    assert f.open_runs() == {}  # nothing restarted: a person's job
    ended = mm_run("erp:LT1", "M1", "1001/1", at(8), end=at(9))
    assert f.oracle.compare({"erp:LT1": ended}, utc(at(9, 2))) == []
    assert f.oracle.compare({}, utc(at(9, 2))) == []  # or MM has lost it: a person's job either way
    c = f.clock_in(Y, at(9, 30))
    runs = f.batch(at(9, 30))
    assert runs["erp:LT2"].start == utc(at(9, 30))
    c.clock_out = at(10)
    f.batch(at(10))
    assert f.open_runs() == {}  # LT1 is shown again, but blocked: no generation 2
    a.clock_out = at(10, 30)
    assert f.open_runs() == {}


def test_a_crew_member_left_behind_a_dead_run_starts_its_own_after_the_run_ended() -> None:
    f = Floor()
    a = f.clock_in(X, at(8))
    f.clock_in(X, at(8, 30))
    f.batch(at(8, 30))
    a.clock_out = at(9)
    f.batch(at(9))
    assert f.oracle.kill("erp:LT1", "MM lost it, heal_drift = flag", end=utc(at(9, 15)))
    runs = f.batch(at(9, 20))
    assert runs["erp:LT2"].start == utc(at(9, 15))  # the crew's own run, after the dead one's end
    assert not f.oracle.kill("erp:LT99", "never asked for")


def test_excused_aspects_are_not_judged_and_the_rest_is() -> None:
    f = Floor()
    f.clock_in(X, at(8), "S")
    f.batch(at(8))
    f.clock_in(X, at(8, 30), "R")
    f.batch(at(8, 30))  # production by the rule
    setup = mm_run("erp:LT1", "M1", "1001/1", at(8), phase="setup")
    assert "phase setup" in f.oracle.compare({"erp:LT1": setup}, utc(at(9)))[0]
    assert f.oracle.excuse("erp:LT1", frozenset({"phase"}), "the switch MM refused, quarantined")
    assert f.oracle.compare({"erp:LT1": setup}, utc(at(9))) == []
    assert f.oracle.compare({}, utc(at(9)))[0].startswith("oracle: MM lacks erp:LT1")
    f.oracle.excuse("erp:LT1", frozenset({"presence"}), "a start given up unread")
    assert f.oracle.compare({}, utc(at(9))) == []
    moved = {**setup, "machine_id": "M2"}
    assert "machine 'M2'" in f.oracle.compare({"erp:LT1": moved}, utc(at(9)))[0]


def test_a_run_after_a_vanished_run_stopped_at_erpsyncs_now_starts_no_earlier_than_that_stop() -> None:
    f = Floor("stop")
    a = f.clock_in(X, at(8))
    f.batch(at(8))
    a.deleted = True
    f.batch(at(9))  # stopped at erpsync's now, some time after 9:00
    f.clock_in(Y, at(8, 30))  # entered late on the same machine
    runs = f.batch(at(9, 0, 5))
    assert runs["erp:LT2"].start_after == utc(at(9))
    vanished = mm_run("erp:LT1", "M1", "1001/1", at(8), end=at(9, 0, 2))
    late = mm_run("erp:LT2", "M1", "2002/1/2-3", at(9, 0, 2), op_seq=20)
    assert f.oracle.compare({"erp:LT1": vanished, "erp:LT2": late}, utc(at(9, 0, 6))) == []
    early = {**late, "start_at": vanished["start_at"]}
    assert (
        "expected between" in f.oracle.compare({"erp:LT1": vanished, "erp:LT2": early}, utc(at(9, 0, 6)))[0]
    )
    f.oracle.adopt({"erp:LT1": vanished, "erp:LT2": late})
    adopted = runs["erp:LT2"]
    assert adopted.start == utc(at(9, 0, 2)) and adopted.start_after is None
