"""The reconcile rules, one case each: desired ERP runs x bindings -> actions, flags, quarantine."""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from erpsync.domain.identity import mm_run_id_for, payload_fingerprint
from erpsync.domain.lifecycle import ActionKind, BindingStatus, BoundRun, MMRunState
from erpsync.domain.machines import MachineMapper
from erpsync.domain.model import JobOperationRun, RunState
from erpsync.domain.plan import FlagKind, Plan, StartAction, StopAction, import_action
from erpsync.domain.reconcile import reconcile
from erpsync.domain.resync import resync_plan
from tests.unit.reconcile_helpers import (
    MAPPER,
    NOW,
    SOURCE,
    T0,
    at,
    bind,
    bindings,
    flags,
    only,
    run,
    summary,
)

SETUP, PRODUCTION, ENDED = RunState.SETUP, RunState.PRODUCTION, RunState.ENDED


def plan(
    desired: Iterable[JobOperationRun],
    bound: Mapping[str, BoundRun] | None = None,
    *,
    snapshot_complete: bool = True,
    vanished_policy: str = "flag",
    mapper: MachineMapper = MAPPER,
    rejected: Collection[str] = (),
    exclude: Callable[[JobOperationRun], bool] | None = None,
    now: datetime = NOW,
    machine_ends: Mapping[str, datetime] | None = None,
) -> Plan:
    assert vanished_policy in ("stop", "flag")
    return reconcile(
        desired,
        bound or {},
        source=SOURCE,
        mapper=mapper,
        snapshot_complete=snapshot_complete,
        vanished_policy=vanished_policy,  # type: ignore[arg-type]
        now=now,
        rejected_machines=rejected,
        exclude=exclude,
        machine_ends=machine_ends,
    )


# --- starts ---------------------------------------------------------------------------------


def test_new_run_in_setup_is_started_in_setup() -> None:
    r = run("LT1", SETUP, job="1808412")
    p = plan([r])
    action = only(p)
    assert action.kind is ActionKind.START
    assert action.in_setup is True
    assert action.mm_run_id == "erp:LT1"
    assert action.idempotency_key == "start_run:erp:LT1:setup"
    assert action.reason == "clocked in on 1808412/1 op 20 (setup)"
    assert action.run is r
    assert action.mm_machine_id == "M1"
    assert action.erp_machine == "M1"
    assert (action.job, action.operation) == ("1808412/1", "20")
    assert action.payload_hash == payload_fingerprint(r, "M1")
    assert isinstance(action, StartAction) and not hasattr(action, "end_at")
    assert p.stats.started == 1
    assert p.flags == [] and p.quarantined == []


def test_new_run_in_production_is_started_in_production() -> None:
    action = only(plan([run("LT1", PRODUCTION)]))
    assert action.in_setup is False
    assert action.idempotency_key == "start_run:erp:LT1:production"


def test_ended_run_without_binding_is_never_started() -> None:
    p = plan([run("LT1", ENDED)])
    assert p.actions == []
    assert p.stats.skipped_ended == 1


def test_unchanged_runs_produce_nothing() -> None:
    a, b = run("LT1", SETUP), run("LT2", PRODUCTION, machine="M2")
    p = plan([a, b], bindings(bind(a), bind(b)))
    assert p.actions == [] and p.flags == [] and p.quarantined == []
    assert p.stats.unchanged == 2


@pytest.mark.parametrize("status", ["failed", "vanished", "stopping"])
def test_failed_vanished_or_stopping_binding_is_not_restarted(status: str) -> None:
    r = run("LT1", PRODUCTION)
    p = plan([r], bindings(bind(r, status)))
    assert p.actions == []
    assert p.stats.unchanged == 1


def test_stopped_binding_of_an_open_ticket_starts_the_next_generation() -> None:
    """A reopened ticket (or a run back after erpsync stopped it): a new MM run, never the old id."""
    r = run("LT1", PRODUCTION, start=at(0))
    stopped = replace(bind(r, "stopped"), mm_end_at=at(20))
    p = plan([r], bindings(stopped))
    (action,) = p.actions
    assert isinstance(action, StartAction)
    assert (action.run_key, action.mm_run_id) == ("LT1#g2", "erp:LT1.g2")
    assert action.run is not None and action.run.start_at == at(20)  # after the first run ended
    assert "generation 2" in action.reason


def test_starting_binding_is_not_started_again() -> None:
    r = run("LT1", SETUP)
    assert plan([r], bindings(bind(r, "starting"))).actions == []


def test_bound_run_keeps_its_recorded_mm_run_id() -> None:
    r = run("LT1", ENDED)
    bound = replace(bind(r), mm_run_id="legacy-id-7")
    action = only(plan([r], bindings(bound)))
    assert action.mm_run_id == "legacy-id-7"
    assert action.idempotency_key == "stop_run:legacy-id-7"


# --- stops ----------------------------------------------------------------------------------


def test_run_ended_in_the_erp_is_stopped_at_the_erp_end_time() -> None:
    started = run("LT1", PRODUCTION, start=at(0))
    ended = replace(started, state=ENDED, end_at=at(95))
    p = plan([ended], bindings(bind(started)))
    action = only(p)
    assert action.kind is ActionKind.STOP
    assert action.end_at == at(95)
    assert action.idempotency_key == "stop_run:erp:LT1"
    assert action.reason == "clocked out of JLT1/1 op 20 in the ERP"
    assert isinstance(action, StopAction) and not hasattr(action, "run")
    assert p.stats.stopped == 1


def test_ended_without_end_time_stops_now() -> None:
    started = run("LT1", PRODUCTION)
    ended = replace(started, state=ENDED, end_at=None)
    assert only(plan([ended], bindings(bind(started)))).end_at == NOW


def test_stop_is_never_before_the_mm_start() -> None:
    started = run("LT1", PRODUCTION, start=at(60))
    ended = replace(started, state=ENDED, end_at=at(30))
    assert only(plan([ended], bindings(bind(started)))).end_at == at(60)


def test_stop_is_never_in_the_future() -> None:
    started = run("LT1", PRODUCTION, start=at(0))
    ended = replace(started, state=ENDED, end_at=NOW + timedelta(hours=2))
    assert only(plan([ended], bindings(bind(started)))).end_at == NOW


def test_starting_binding_whose_run_ended_is_stopped() -> None:
    started = run("LT1", SETUP)
    ended = replace(started, state=ENDED, end_at=at(10))
    assert summary(plan([ended], bindings(bind(started, "starting")))) == [
        ("stop_run", "LT1", at(10).isoformat())
    ]


def test_stopping_binding_gets_no_second_stop() -> None:
    started = run("LT1", PRODUCTION)
    ended = replace(started, state=ENDED, end_at=at(10))
    assert plan([ended], bindings(bind(started, "stopping"))).actions == []


# --- setup -> production ---------------------------------------------------------------------


def test_setup_to_production_restarts_the_same_run_id_in_production() -> None:
    setup = run("LT1", SETUP)
    production = replace(setup, state=PRODUCTION)
    p = plan([production], bindings(bind(setup)))
    action = only(p)
    assert action.kind is ActionKind.START
    assert action.in_setup is False
    assert action.mm_run_id == "erp:LT1"
    assert action.idempotency_key == "start_run:erp:LT1:production"
    assert action.run is production
    assert "switching to production" in action.reason
    assert p.stats.switched == 1 and p.stats.started == 0


def test_switch_is_planned_while_the_setup_start_is_still_pending() -> None:
    setup = run("LT1", SETUP)
    p = plan([replace(setup, state=PRODUCTION)], bindings(bind(setup, "starting")))
    assert summary(p) == [("start_run", "LT1", "production")]


def test_switch_goes_to_the_machine_the_run_was_started_on() -> None:
    setup = run("LT1", SETUP, machine="M1")
    moved = replace(run("LT1", PRODUCTION, machine="M2"), start_at=setup.start_at)
    p = plan([moved], bindings(bind(setup)))
    assert only(p).mm_machine_id == "M1"
    assert flags(p) == [(FlagKind.JOB_FIELDS_CHANGED, "LT1")]


def test_production_to_setup_is_never_sent_but_flagged() -> None:
    production = run("LT1", PRODUCTION)
    p = plan([replace(production, state=SETUP)], bindings(bind(production)))
    assert p.actions == []
    assert flags(p) == [(FlagKind.PRODUCTION_TO_SETUP, "LT1")]
    assert p.flags[0].dedupe_key == "production_to_setup:erp:LT1"


# --- job field edits -------------------------------------------------------------------------


def test_job_field_edit_is_flagged_not_sent() -> None:
    original = run("LT1", PRODUCTION, quantity_required=120)
    edited = run("LT1", PRODUCTION, quantity_required=150)
    p = plan([edited], bindings(bind(original)))
    assert p.actions == []
    [flag] = p.flags
    assert flag.kind == FlagKind.JOB_FIELDS_CHANGED
    assert flag.payload_hash == payload_fingerprint(edited, "M1")
    assert flag.before is not None and flag.after is not None
    assert flag.before["payload_hash"] == payload_fingerprint(original, "M1")
    assert flag.after["quantityRequired"] == 150
    assert flag.dedupe_key == f"job_fields_changed:erp:LT1:{flag.payload_hash}"
    assert flag.binding_status is None
    # The service stores the new fingerprint: the same edit is not flagged again.
    again = plan([edited], bindings(replace(bind(original), payload_hash=flag.payload_hash)))
    assert again.flags == [] and again.actions == []


def test_state_and_times_are_not_job_edits() -> None:
    original = run("LT1", SETUP, start=at(0))
    later = replace(original, state=PRODUCTION, start_at=at(5))
    p = plan([later], bindings(bind(original)))
    assert p.flags == []


def test_unfingerprinted_binding_is_not_compared() -> None:
    original = run("LT1", PRODUCTION)
    p = plan([run("LT1", PRODUCTION, description="new")], bindings(bind(original, payload_hash=None)))
    assert p.flags == [] and p.actions == []


def test_changing_machine_overrides_is_not_an_erp_edit() -> None:
    r = run("LT1", PRODUCTION, machine="M1")
    remapped = MachineMapper(overrides={"M1": "MILL-1"})
    p = plan([r], bindings(bind(r)), mapper=remapped)
    assert p.flags == [] and p.actions == []


def test_run_moved_to_another_machine_is_flagged() -> None:
    r = run("LT1", PRODUCTION, machine="M1")
    p = plan([run("LT1", PRODUCTION, machine="M2")], bindings(bind(r)))
    assert p.actions == []
    [flag] = p.flags
    assert flag.after is not None and flag.after["erpMachineId"] == "M2"
    assert flag.before is not None and flag.before["erpMachineId"] == "M1"


# --- vanished --------------------------------------------------------------------------------


def test_vanished_run_is_flagged_once_under_flag_policy() -> None:
    r = run("LT1", PRODUCTION)
    p = plan([], bindings(bind(r)), vanished_policy="flag")
    assert p.actions == []
    [flag] = p.flags
    assert (flag.kind, flag.run_key, flag.binding_status) == ("vanished", "LT1", "vanished")
    assert p.stats.vanished == 1
    # the service records status "vanished": not flagged again, not stopped, not restarted
    again = plan([], bindings(bind(r, "vanished")), vanished_policy="flag")
    assert again.actions == [] and again.flags == []


def test_vanished_run_is_stopped_now_under_stop_policy() -> None:
    r = run("LT1", PRODUCTION)
    p = plan([], bindings(bind(r)), vanished_policy="stop")
    action = only(p)
    assert action.kind is ActionKind.STOP
    assert action.end_at == NOW
    assert "vanished from the ERP" in action.reason
    assert p.flags == []
    assert p.stats.vanished == 1


def test_incomplete_snapshot_never_vanishes_anything() -> None:
    r = run("LT1", PRODUCTION)
    for policy in ("stop", "flag"):
        p = plan([], bindings(bind(r)), snapshot_complete=False, vanished_policy=policy)
        assert p.actions == [] and p.flags == []


def test_flagged_vanished_run_is_stopped_when_policy_becomes_stop() -> None:
    r = run("LT1", PRODUCTION)
    assert summary(plan([], bindings(bind(r, "vanished")), vanished_policy="stop")) == [
        ("stop_run", "LT1", NOW.isoformat())
    ]


def test_vanished_run_reported_ended_later_is_stopped_at_its_end() -> None:
    r = run("LT1", PRODUCTION, start=at(0))
    ended = replace(r, state=ENDED, end_at=at(40))
    assert summary(plan([ended], bindings(bind(r, "vanished")))) == [("stop_run", "LT1", at(40).isoformat())]


def test_vanished_run_reappearing_is_managed_again_without_a_restart() -> None:
    r = run("LT1", PRODUCTION)
    p = plan([r], bindings(bind(r, "vanished")))
    assert p.actions == []
    assert [(f.kind, f.binding_status) for f in p.flags] == [(FlagKind.RETURNED, "running")]


# --- one run per machine ---------------------------------------------------------------------


def test_two_new_runs_on_one_machine_latest_wins() -> None:
    early, late = run("LT1", PRODUCTION, start=at(0)), run("LT2", PRODUCTION, start=at(30))
    p = plan([late, early])
    assert summary(p) == [("start_run", "LT2", "production")]
    assert flags(p) == [(FlagKind.SUPERSEDED, "LT1")]
    assert "likely forgotten clock-out" in p.flags[0].message
    assert p.stats.superseded == 1


def test_superseding_tie_breaks_on_run_key() -> None:
    a, b = run("LT1", PRODUCTION, start=at(0)), run("LT2", PRODUCTION, start=at(0))
    assert summary(plan([a, b])) == summary(plan([b, a])) == [("start_run", "LT2", "production")]


def test_run_without_start_time_loses_to_one_with() -> None:
    a, b = run("LT9", PRODUCTION, start=None), run("LT1", PRODUCTION, start=at(0))
    assert summary(plan([a, b])) == [("start_run", "LT1", "production")]


def test_new_run_stops_the_open_one_first_at_its_start() -> None:
    old = run("LT1", PRODUCTION, start=at(0))
    new = run("LT2", SETUP, start=at(50))
    p = plan([old, new], bindings(bind(old)))
    assert summary(p) == [("stop_run", "LT1", at(50).isoformat()), ("start_run", "LT2", "setup")]
    assert flags(p) == [(FlagKind.SUPERSEDED, "LT1")]  # the ERP still has LT1 active
    assert [a.kind for a in p.by_machine()["M1"]] == [ActionKind.STOP, ActionKind.START]


def test_open_bound_run_started_later_wins_over_new_one() -> None:
    bound = run("LT1", PRODUCTION, start=at(50))
    newcomer = run("LT2", PRODUCTION, start=at(10))
    p = plan([bound, newcomer], bindings(bind(bound)))
    assert p.actions == []
    assert flags(p) == [(FlagKind.SUPERSEDED, "LT2")]


def test_old_run_ended_in_erp_stops_at_its_own_end_before_the_new_start() -> None:
    old = run("LT1", PRODUCTION, start=at(0))
    old_ended = replace(old, state=ENDED, end_at=at(40))
    new = run("LT2", PRODUCTION, start=at(50))
    p = plan([old_ended, new], bindings(bind(old)))
    assert summary(p) == [("stop_run", "LT1", at(40).isoformat()), ("start_run", "LT2", "production")]
    assert p.flags == []


def test_new_run_stops_an_open_run_the_snapshot_does_not_show() -> None:
    old = run("LT1", PRODUCTION, start=at(0))
    new = run("LT2", PRODUCTION, start=at(50))
    p = plan([new], bindings(bind(old)), snapshot_complete=False)
    assert summary(p) == [("stop_run", "LT1", at(50).isoformat()), ("start_run", "LT2", "production")]
    assert "stopping the run still open there" in p.actions[0].reason
    assert p.flags == []


def test_new_run_stops_a_vanished_run_left_open() -> None:
    old = run("LT1", PRODUCTION, start=at(0))
    new = run("LT2", PRODUCTION, start=at(50))
    p = plan([new], bindings(bind(old, "vanished")))
    assert summary(p) == [("stop_run", "LT1", at(50).isoformat()), ("start_run", "LT2", "production")]


def test_vanished_under_stop_policy_and_new_run_stop_at_the_new_start() -> None:
    old = run("LT1", PRODUCTION, start=at(0))
    new = run("LT2", PRODUCTION, start=at(50))
    p = plan([new], bindings(bind(old)), vanished_policy="stop")
    assert summary(p) == [("stop_run", "LT1", at(50).isoformat()), ("start_run", "LT2", "production")]


def start_at(p: Plan, key: str) -> datetime | None:
    (action,) = [a for a in p.actions if isinstance(a, StartAction) and a.run_key == key]
    assert action.run is not None
    return action.run.start_at


def test_a_late_clock_in_starts_when_a_run_erpsync_ended_there_freed_the_machine() -> None:
    """Campaign finding F2: a run whose ticket the ERP lost (deleted, its run stopped at erpsync's
    now) is known only by its end on the machine; a ticket entered later with an earlier clock-in
    starts there, never before it."""
    late = run("LT2", PRODUCTION, start=at(30))
    p = plan([late], machine_ends={"M1": at(60)})
    assert start_at(p, "LT2") == at(60)
    assert summary(p) == [("start_run", "LT2", "production")]  # nothing else to stop


def test_a_new_generation_starts_after_a_later_run_erpsync_ended_on_the_machine() -> None:
    reopened = run("LT1", PRODUCTION, start=at(0))
    first = replace(bind(reopened, "stopped"), mm_end_at=at(20))
    p = plan([reopened], bindings(first), machine_ends={"M1": at(45)})
    assert start_at(p, "LT1#g2") == at(45)  # not at(20), when its own first run ended


def test_machine_ends_before_the_clock_in_elsewhere_or_ahead_of_now_change_nothing() -> None:
    ticket = run("LT2", SETUP, start=at(30))
    assert start_at(plan([ticket]), "LT2") == at(30)
    ends = {"M1": at(10), "M2": at(90)}  # freed before it clocked in; another machine
    assert start_at(plan([ticket], machine_ends=ends), "LT2") == at(30)
    ahead = {"M1": NOW + timedelta(minutes=5)}  # never a start in the future
    assert start_at(plan([ticket], machine_ends=ahead), "LT2") == at(30)


def test_a_bound_run_is_not_moved_by_a_machine_end() -> None:
    """Only starts are placed after the machine was freed: a run MM has open stays as it is."""
    ticket = run("LT2", PRODUCTION, start=at(30))
    assert plan([ticket], bindings(bind(ticket)), machine_ends={"M1": at(60)}).actions == []


def test_two_bound_active_runs_on_one_machine_the_earlier_is_stopped() -> None:
    a, b = run("LT1", PRODUCTION, start=at(0)), run("LT2", PRODUCTION, start=at(20))
    p = plan([a, b], bindings(bind(a), bind(b)))
    assert summary(p) == [("stop_run", "LT1", at(20).isoformat())]
    assert flags(p) == [(FlagKind.SUPERSEDED, "LT1")]


def test_stopping_run_on_the_machine_needs_no_second_stop() -> None:
    old = run("LT1", PRODUCTION, start=at(0))
    new = run("LT2", PRODUCTION, start=at(50))
    p = plan([new], bindings(bind(old, "stopping")), snapshot_complete=False)
    assert summary(p) == [("start_run", "LT2", "production")]


def test_machines_are_independent_and_ordered() -> None:
    a_old = run("LT1", PRODUCTION, machine="M2", start=at(0))
    a_new = run("LT2", PRODUCTION, machine="M2", start=at(30))
    b_new = run("LT3", SETUP, machine="M1", start=at(5))
    c_end = replace(run("LT4", PRODUCTION, machine="M3", start=at(0)), state=ENDED, end_at=at(9))
    p = plan([a_new, b_new, c_end, a_old], bindings(bind(a_old), bind(replace(c_end, state=PRODUCTION))))
    assert [(a.mm_machine_id, a.kind, a.run_key) for a in p.actions] == [
        ("M1", ActionKind.START, "LT3"),
        ("M2", ActionKind.STOP, "LT1"),
        ("M2", ActionKind.START, "LT2"),
        ("M3", ActionKind.STOP, "LT4"),
    ]
    by_machine = p.by_machine()
    assert list(by_machine) == ["M1", "M2", "M3"]
    assert [a.run_key for a in by_machine["M2"]] == ["LT1", "LT2"]


def test_plan_does_not_depend_on_input_order() -> None:
    runs = [run(f"LT{i}", PRODUCTION, machine=f"M{i % 3}", start=at(i * 7 % 11)) for i in range(12)]
    bound = bindings(*(bind(r) for r in runs[:4]))
    first = plan(runs, bound)
    shuffled = runs[:]
    random.Random(4).shuffle(shuffled)
    second = plan(shuffled, dict(reversed(list(bound.items()))))
    assert first.actions == second.actions
    assert first.flags == second.flags


def test_later_duplicate_in_desired_wins() -> None:
    active = run("LT1", PRODUCTION)
    ended = replace(active, state=ENDED, end_at=at(5))
    assert summary(plan([active, ended], bindings(bind(active)))) == [("stop_run", "LT1", at(5).isoformat())]
    assert plan([ended, active], bindings(bind(active))).actions == []


# --- machines --------------------------------------------------------------------------------


def test_ignored_machine_is_skipped_and_counted() -> None:
    p = plan([run("LT1", machine="SAW")], mapper=MachineMapper(ignore=["saw"], normalize="trim-casefold"))
    assert p.actions == [] and p.quarantined == []
    assert p.stats.skipped_ignored == 1


def test_blank_machine_is_quarantined() -> None:
    p = plan([run("LT1", machine="  ")])
    assert p.actions == []
    [bad] = p.quarantined
    assert (bad.source, bad.record_key, bad.error_class, bad.field) == (
        SOURCE,
        "LT1",
        "blank_machine",
        "machine",
    )
    assert "no machine" in bad.reason and "LT1" in bad.reason
    assert p.stats.quarantined == 1


def test_machine_rejected_by_mm_is_quarantined_with_the_fix() -> None:
    p = plan([run("LT1", machine="HAAS 3")], rejected={"HAAS 3"})
    assert p.actions == []
    [bad] = p.quarantined
    assert bad.error_class == "unknown_machine"
    assert "'HAAS 3'" in bad.reason
    assert "machines.overrides" in bad.reason and "ERP Machine ID" in bad.reason


def test_override_fixes_a_rejected_machine() -> None:
    mapper = MachineMapper(overrides={"HAAS 3": "haas-03"})
    action = only(plan([run("LT1", machine="HAAS 3")], rejected={"HAAS 3"}, mapper=mapper))
    assert action.mm_machine_id == "haas-03"
    assert action.erp_machine == "HAAS 3"


def test_quarantine_never_fails_the_cycle() -> None:
    p = plan([run("LT1", machine=""), run("LT2", machine="M2"), run("LT3", machine="BAD")], rejected={"BAD"})
    assert summary(p) == [("start_run", "LT2", "production")]
    assert [b.record_key for b in p.quarantined] == ["LT1", "LT3"]


def test_bound_run_on_a_now_rejected_machine_is_left_alone() -> None:
    r = run("LT1", PRODUCTION)
    assert plan([r], bindings(bind(r)), rejected={"M1"}).actions == []


# --- excluded operations ---------------------------------------------------------------------


def _outside(r: JobOperationRun) -> bool:
    return r.operation.operation_name.startswith("OS")


def test_excluded_operation_is_never_started() -> None:
    p = plan([run("LT1", seq="30", operation_name="OS-heat-treat")], exclude=_outside)
    assert p.actions == []
    assert p.stats.skipped_excluded == 1


def test_open_run_whose_operation_becomes_excluded_follows_the_vanished_policy() -> None:
    r = run("LT1", PRODUCTION)
    excluded = run("LT1", PRODUCTION, operation_name="OS-1")
    flagged = plan([excluded], bindings(bind(r)), exclude=_outside, vanished_policy="flag")
    assert flagged.actions == []
    assert [(f.kind, f.binding_status) for f in flagged.flags] == [("excluded", "vanished")]
    stopped = plan([excluded], bindings(bind(r)), exclude=_outside, vanished_policy="stop")
    assert summary(stopped) == [("stop_run", "LT1", NOW.isoformat())]
    assert "excluded" in stopped.actions[0].reason


def test_excluded_run_that_ended_is_still_stopped() -> None:
    r = run("LT1", PRODUCTION, start=at(0))
    ended = replace(run("LT1", ENDED, operation_name="OS-1", start=at(0)), end_at=at(20))
    assert summary(plan([ended], bindings(bind(r)), exclude=_outside)) == [
        ("stop_run", "LT1", at(20).isoformat())
    ]


# --- misc ------------------------------------------------------------------------------------


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        plan([], now=datetime(2026, 5, 4, 8, 0))


def test_bad_vanished_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="vanished_policy"):
        reconcile([], {}, source=SOURCE, mapper=MAPPER, snapshot_complete=True, vanished_policy="x", now=NOW)  # type: ignore[arg-type]


def test_reason_fits_the_journal_column() -> None:
    r = run("LT1", job="J" * 400)
    assert len(only(plan([r])).reason) <= 255


def test_stats_as_dict_lists_every_count() -> None:
    p = plan([run("LT1"), run("LT2", ENDED, machine="M2")])
    counts = p.stats.as_dict()
    assert counts["started"] == 1 and counts["skipped_ended"] == 1
    assert set(counts) >= {"started", "switched", "stopped", "unchanged", "vanished", "quarantined"}


def test_import_action_key_names_content_and_generation() -> None:
    action = import_action(source=SOURCE, content_sha256="ab" * 32, generation="r1", rows=10)
    assert action.kind is ActionKind.IMPORT
    assert action.idempotency_key == f"import_jobs:erp:{'ab' * 32}@r1"
    assert (action.source, action.content_sha256, action.rows) == (SOURCE, "ab" * 32, 10)
    assert action.reason == "job import: 10 rows, sha256 abababababab"
    with pytest.raises(ValueError, match="generation"):
        import_action(source=SOURCE, content_sha256="ab" * 32, generation="", rows=1)


def test_default_mm_run_id_is_the_identity_function() -> None:
    assert only(plan([run("W/1/0/20")])).mm_run_id == mm_run_id_for(SOURCE, "W/1/0/20")


def test_all_times_are_utc_aware() -> None:
    action = only(plan([replace(run("LT1", ENDED), end_at=None)], bindings(bind(run("LT1")))))
    assert action.end_at is not None and action.end_at.tzinfo is UTC
    assert T0.tzinfo is UTC


# --- resync ----------------------------------------------------------------------------------

GEN = "r20260504T140000000000Z"


def resync(
    desired: Iterable[JobOperationRun],
    bound: Mapping[str, BoundRun],
    mm_state: Mapping[str, MMRunState],
    *,
    selection: Callable[[str], bool] | None = None,
    rejected: Collection[str] = (),
) -> Plan:
    return resync_plan(
        desired,
        bound,
        source=SOURCE,
        mapper=MAPPER,
        mm_state={mm_run_id_for(SOURCE, k): v for k, v in mm_state.items()},
        generation=GEN,
        now=NOW,
        selection=selection,
        rejected_machines=rejected,
    )


@pytest.mark.parametrize("status", ["stopped", "failed", "stopping", "unconfirmed"])
def test_resync_restarts_a_run_mm_never_had_with_a_new_key(status: str) -> None:
    """A refused or given-up start, a stop in flight: no end of an MM run is known, no counts."""
    r = run("LT1", SETUP)
    p = resync([r], bindings(bind(r, status)), {"LT1": "missing"})
    action = only(p)
    assert action.kind is ActionKind.START and action.in_setup is True
    assert action.mm_run_id == "erp:LT1"
    assert action.idempotency_key == f"start_run:erp:LT1:setup@{GEN}"
    assert action.reason.startswith("resync:")


@pytest.mark.parametrize(
    ("status", "mm_end_at"), [("running", None), ("vanished", None), ("failed", at(10)), ("stopped", at(10))]
)
def test_resync_hands_a_run_mm_had_to_the_next_generation(status: str, mm_end_at: datetime | None) -> None:
    """MM had the run (running, left open, or its end is known: drift flagged by write-back, a
    stop): its counts may be in the ERP, so its old id is not started again; it is recorded stopped
    and the next sync cycle starts the ticket's next run generation (domain/drift.py)."""
    r = run("LT1", SETUP)
    p = resync([r], bindings(bind(r, status, mm_end_at=mm_end_at)), {"LT1": "missing"})
    assert p.actions == []
    if status == "stopped":  # already stopped: nothing to record, the next cycle takes it on
        assert p.flags == []
        return
    (flag,) = p.flags
    assert (flag.kind, flag.binding_status, flag.final_counts) == ("missing_in_mm", "stopped", False)
    assert flag.mm_end_at == (NOW if mm_end_at is None else None)  # a known end is kept
    assert "the next sync cycle starts a new MM run for it" in flag.message


def test_resync_starts_an_unbound_active_run() -> None:
    p = resync([run("LT1", PRODUCTION)], {}, {"LT1": "missing"})
    assert only(p).idempotency_key == f"start_run:erp:LT1:production@{GEN}"


def test_resync_leaves_a_run_open_in_both_alone() -> None:
    r = run("LT1", PRODUCTION)
    p = resync([r], bindings(bind(r)), {"LT1": "open"})
    assert p.actions == [] and p.flags == []


def test_resync_rebinds_a_run_mm_has_open_that_the_binding_calls_stopped() -> None:
    r = run("LT1", PRODUCTION)
    p = resync([r], bindings(bind(r, "stopped")), {"LT1": "open"})
    assert p.actions == []
    assert [(f.kind, f.binding_status) for f in p.flags] == [("rebind", "running")]


def test_resync_sends_a_pending_switch_with_a_new_key() -> None:
    setup = run("LT1", SETUP)
    p = resync([replace(setup, state=PRODUCTION)], bindings(bind(setup)), {"LT1": "open"})
    assert only(p).idempotency_key == f"start_run:erp:LT1:production@{GEN}"


def test_resync_sends_the_pending_switch_of_a_vanished_run_mm_still_has_open() -> None:
    # started in setup, flagged vanished, back in the ERP in production: MM has it open (in setup)
    setup = run("LT1", SETUP)
    p = resync([replace(setup, state=PRODUCTION)], bindings(bind(setup, "vanished")), {"LT1": "open"})
    action = only(p)
    assert (action.kind, action.mm_run_id, action.in_setup) == (ActionKind.START, "erp:LT1", False)
    assert action.idempotency_key == f"start_run:erp:LT1:production@{GEN}"
    # the switch's outcome records the binding running; the rebind flag only moves its generation
    assert [(f.kind, f.binding_status, f.generation) for f in p.flags] == [(FlagKind.REBIND, None, GEN)]


def test_resync_does_not_reopen_a_run_mm_ended() -> None:
    r = run("LT1", PRODUCTION)
    p = resync([r], bindings(bind(r)), {"LT1": "ended"})
    assert p.actions == []
    assert [(f.kind, f.binding_status) for f in p.flags] == [("ended_in_mm", "stopped")]
    ended = resync_plan(
        [r],
        bindings(bind(r)),
        source=SOURCE,
        mapper=MAPPER,
        mm_state={"erp:LT1": "ended"},
        mm_ends={"erp:LT1": at(20)},
        generation=GEN,
        now=NOW,
    )
    assert [(f.mm_end_at, f.final_counts) for f in ended.flags] == [(at(20), True)]  # MM's end


@pytest.mark.parametrize("status", ["vanished", "unconfirmed"])
def test_resync_records_stopped_a_run_left_open_that_mm_ended(status: str) -> None:
    """The ERP lost it and erpsync left it open in MM (or may have): MM ended it meanwhile."""
    r = run("LT1", PRODUCTION)
    p = resync([], bindings(bind(r, status)), {"LT1": "ended"})
    assert p.actions == []
    assert [(f.kind, f.binding_status) for f in p.flags] == [("ended_in_mm", "stopped")]


@pytest.mark.parametrize("status", ["running", "vanished", "unconfirmed"])
def test_resync_records_a_run_mm_ended_as_stopped_when_erpsync_thought_it_open(status: str) -> None:
    # the ERP ended the run too: nothing to send, but the binding stops looking open (an
    # unconfirmed start given up unread, or a vanished run, is settled by the read)
    r = run("LT1", PRODUCTION, start=at(0))
    ended = replace(r, state=ENDED, end_at=at(30))
    p = resync([ended], bindings(bind(r, status)), {"LT1": "ended"})
    assert p.actions == []
    assert [(f.kind, f.binding_status) for f in p.flags] == [("ended_in_mm", "stopped")]


def test_resync_stops_a_run_the_erp_ended_that_mm_has_open() -> None:
    r = run("LT1", PRODUCTION, start=at(0))
    ended = replace(r, state=ENDED, end_at=at(30))
    p = resync([ended], bindings(bind(r, "stopped")), {"LT1": "open"})
    action = only(p)
    assert (action.kind, action.end_at) == (ActionKind.STOP, at(30))
    assert action.idempotency_key == f"stop_run:erp:LT1@{GEN}"


def test_resync_stops_a_run_the_erp_lost_that_mm_has_open() -> None:
    r = run("LT1", PRODUCTION)
    action = only(resync([], bindings(bind(r, "vanished")), {"LT1": "open"}))
    assert (action.kind, action.end_at) == (ActionKind.STOP, NOW)
    assert "resync" in action.reason


def test_resync_never_starts_an_ended_run() -> None:
    r = run("LT1", PRODUCTION)
    ended = replace(r, state=ENDED, end_at=at(30))
    p = resync([ended], bindings(bind(r)), {"LT1": "missing"})
    assert p.actions == []
    assert [(f.kind, f.binding_status) for f in p.flags] == [("missing_in_mm", "stopped")]


def test_resync_touches_only_the_selection() -> None:
    a, b = run("LT1", PRODUCTION, machine="M1"), run("LT2", PRODUCTION, machine="M2")
    p = resync(
        [a, b],
        bindings(bind(a, "stopped"), bind(b, "stopped")),
        {"LT1": "missing", "LT2": "missing"},
        selection=lambda key: key == "LT2",
    )
    assert summary(p) == [("start_run", "LT2", "production")]


def test_resync_counts_runs_without_an_mm_answer_as_unknown() -> None:
    r = run("LT1", PRODUCTION)
    p = resync([r], bindings(bind(r, "stopped")), {})
    assert p.actions == []
    assert p.stats.unknown == 1


def test_resync_start_still_keeps_one_run_per_machine() -> None:
    other = run("LT1", PRODUCTION, start=at(0))  # not selected, open in MM
    lost = run("LT2", PRODUCTION, start=at(30))  # its start given up unread: MM never got it
    p = resync(
        [other, lost],
        bindings(bind(other), bind(lost, "unconfirmed")),
        {"LT2": "missing"},
        selection=lambda key: key == "LT2",
    )
    assert summary(p) == [("stop_run", "LT1", at(30).isoformat()), ("start_run", "LT2", "production")]
    assert p.actions[0].idempotency_key == f"stop_run:erp:LT1@{GEN}"


def test_resync_start_loses_to_a_later_open_run_outside_the_selection() -> None:
    other = run("LT1", PRODUCTION, start=at(40))
    lost = run("LT2", PRODUCTION, start=at(30))
    p = resync(
        [other, lost],
        bindings(bind(other), bind(lost, "unconfirmed")),
        {"LT2": "missing"},
        selection=lambda key: key == "LT2",
    )
    assert p.actions == []
    # not restarted: the binding is recorded stopped, so reconcile will not think it open
    assert flags(p) == [(FlagKind.MISSING_IN_MM, "LT2"), (FlagKind.SUPERSEDED, "LT2")]


def test_run_restarted_by_resync_gets_fresh_keys_afterwards() -> None:
    r = run("LT1", PRODUCTION, start=at(0))
    [start] = resync([r], bindings(bind(r, "stopped")), {"LT1": "missing"}).actions
    assert start.generation == GEN
    # the service records the start's generation; the ordinary stop later must not reuse
    # "stop_run:erp:LT1", which the journal may hold from the run's first life
    rebound = replace(bind(r), generation=start.generation)
    stop = only(plan([replace(r, state=ENDED, end_at=at(50))], bindings(rebound)))
    assert stop.idempotency_key == f"stop_run:erp:LT1@{GEN}"
    assert stop.generation == GEN


def test_rebind_carries_the_resync_generation() -> None:
    r = run("LT1", PRODUCTION)
    [flag] = resync([r], bindings(bind(r, "stopped")), {"LT1": "open"}).flags
    assert flag.generation == GEN


def test_flag_never_contradicts_a_stop_in_the_same_plan() -> None:
    # LT1 vanishes (flag policy would leave it open) but new LT2 takes its machine: stopped.
    old = run("LT1", PRODUCTION, start=at(0))
    new = run("LT2", PRODUCTION, start=at(30))
    p = plan([new], bindings(bind(old)), vanished_policy="flag")
    assert summary(p) == [("stop_run", "LT1", at(30).isoformat()), ("start_run", "LT2", "production")]
    assert p.flags == []
    assert "no longer in the ERP" in p.actions[0].reason


def test_resync_rebind_with_a_stop_leaves_the_status_to_the_stop() -> None:
    r = run("LT1", PRODUCTION, start=at(0))
    ended = replace(r, state=ENDED, end_at=at(30))
    p = resync([ended], bindings(bind(r, "stopped")), {"LT1": "open"})
    assert summary(p) == [("stop_run", "LT1", at(30).isoformat())]
    [flag] = p.flags
    assert (flag.kind, flag.binding_status) == ("rebind", None)


def test_resync_quarantines_a_rejected_machine() -> None:
    p = resync([run("LT1", PRODUCTION)], {}, {"LT1": "missing"}, rejected={"M1"})
    assert p.actions == [] and [b.record_key for b in p.quarantined] == ["LT1"]


def test_two_clock_ins_at_the_same_moment_show_the_ticket_the_erp_numbered_later() -> None:
    """Natural order of ticket keys: LT100000 is later than LT99999 (a plain string says otherwise)."""
    older = run("LT99999", PRODUCTION, start=at(0), job="A")
    newer = run("LT100000", PRODUCTION, start=at(0), job="B")
    assert summary(plan([older, newer])) == [("start_run", "LT100000", "production")]


def test_two_open_runs_of_one_operation_from_before_the_crew_rule_become_one() -> None:
    """State written before the multi-ticket rule: a crew's two tickets each had an MM run open.
    The run of the earlier binding key goes on; the other is stopped, not restarted."""
    a = run("LT1", PRODUCTION, start=at(0), job="A")
    b = run("LT2", PRODUCTION, start=at(10), job="A")
    p = plan([a, b], bindings(bind(a), bind(b)))
    assert [(x.kind, x.run_key) for x in p.actions] == [(ActionKind.STOP, "LT2")]


def test_resync_of_a_ticket_picks_its_current_run_generation() -> None:
    """`erpsync resync --run LT1` after LT1 was reopened: its open MM run is LT1#g2 (erp:LT1.g2),
    and the ticket's clock-out stops that run."""
    ticket = run("LT1", ENDED, start=at(0), end=at(90))
    first = bind(run("LT1", start=at(0)), "stopped")
    second = replace(first, run_key="LT1#g2", mm_run_id="erp:LT1.g2", status=BindingStatus.RUNNING)
    p = resync_plan(
        [ticket],
        bindings(first, second),
        source=SOURCE,
        mapper=MAPPER,
        mm_state={"erp:LT1": "ended", "erp:LT1.g2": "open"},
        generation=GEN,
        now=NOW,
        selection={"LT1"}.__contains__,
    )
    assert [(a.kind, a.mm_run_id) for a in p.actions] == [(ActionKind.STOP, "erp:LT1.g2")]
