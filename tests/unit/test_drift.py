"""domain/drift.py: which reads show drift, and what `sync.heal_drift` records for it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from erpsync.domain.drift import DRIFT_STATUSES, Drift, DriftKind, HealDrift, bound_after_drift, drift_of
from erpsync.domain.lifecycle import BindingStatus, BoundRun, MMRunState

NOW = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
MM_END = NOW - timedelta(minutes=25)


def read(
    status: str, state: MMRunState, heal: HealDrift = "restart", end_at: datetime | None = MM_END
) -> Drift | None:
    return drift_of(
        status,
        state,
        mm_run_id="erp:LT1",
        run_key="LT1",
        what="1808401/1 op 10 on HAAS-1",
        end_at=end_at if state == "ended" else None,
        now=NOW,
        heal=heal,
    )


@pytest.mark.parametrize("status", [str(s) for s in BindingStatus])
def test_an_open_run_is_never_drift(status: str) -> None:
    assert read(status, "open") is None


@pytest.mark.parametrize("status", [str(s) for s in BindingStatus if s not in DRIFT_STATUSES])
def test_only_runs_erpsync_holds_open_can_drift(status: str) -> None:
    """starting/stopping: an answer in flight settles them; stopped/failed/unconfirmed: not open."""
    assert read(status, "missing") is None
    assert read(status, "ended") is None


def test_a_lost_run_is_recorded_stopped_from_now_with_no_final_counts() -> None:
    drift = read("running", "missing")
    assert drift is not None
    assert (drift.kind, drift.was, drift.status) == (
        DriftKind.MISSING_IN_MM,
        BindingStatus.RUNNING,
        BindingStatus.STOPPED,
    )
    # the next generation starts when erpsync found the run gone: MM never counts a minute twice
    assert (drift.mm_end_at, drift.final_counts_since) == (NOW, None)
    assert "has no run erp:LT1 that erpsync had open (1808401/1 op 10 on HAAS-1)" in drift.message
    assert "next sync cycle starts a new MM run" in drift.message
    assert drift.after() == {"status": "stopped", "mm_end_at": NOW.isoformat(), "heal_drift": "restart"}
    assert drift.before() == {"status": "running"}


def test_a_run_ended_in_mm_is_recorded_stopped_at_mms_end_with_its_final_counts_due() -> None:
    drift = read("running", "ended")
    assert drift is not None
    assert (drift.kind, drift.status) == (DriftKind.ENDED_IN_MM, BindingStatus.STOPPED)
    assert (drift.mm_end_at, drift.final_counts_since) == (MM_END, NOW)
    assert f"ended at {MM_END.isoformat()}" in drift.message
    no_end = read("running", "ended", end_at=None)
    assert no_end is not None and no_end.mm_end_at == NOW


@pytest.mark.parametrize("state", ["missing", "ended"])
def test_flag_records_the_run_failed_for_a_person(state: MMRunState) -> None:
    drift = read("running", state, heal="flag")
    assert drift is not None
    assert drift.status is BindingStatus.FAILED and drift.heal == "flag"
    assert "not restarted (sync.heal_drift = flag)" in drift.message
    assert "`erpsync resync --run LT1`" in drift.message


def test_a_vanished_run_mm_lost_is_drift_too() -> None:
    """Left open in MM by `sync.vanished_runs = flag`: write-back still reads it, so a lost one
    would answer 404 every cycle."""
    drift = read("vanished", "missing")
    assert drift is not None and drift.was is BindingStatus.VANISHED


def test_the_binding_changes_only_while_it_still_has_the_status_read() -> None:
    bound = BoundRun("LT1", "erp:LT1", "HAAS-1", "HAAS-1", BindingStatus.RUNNING, False, "h")
    drift = read("running", "ended")
    assert drift is not None
    after = bound_after_drift(bound, drift)
    assert (after.status, after.mm_end_at) == (BindingStatus.STOPPED, MM_END)
    stopping = replace(bound, status=BindingStatus.STOPPING)  # a stop got there first
    assert bound_after_drift(stopping, drift) is stopping
    other = replace(bound, mm_run_id="erp:LT2")
    assert bound_after_drift(other, drift) is other
