"""A stopped run's final counts, through the service on fakes (issue 19, case 2).

The settle window counts from when erpsync stopped the run (or last saw its counts change), never
from MM's end time; a run stays a candidate until a read after the window was processed with MM
showing it ended; failing final reads are bounded (quarantined with what to do).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from erpsync.adapters.mm.fake import FakeMachineMetrics
from erpsync.adapters.state.memory import MemoryUnitOfWorkFactory
from erpsync.adapters.state.memory_tables import MemoryTables
from erpsync.adapters.state.tables import utcnow
from erpsync.domain.lifecycle import (
    ActionKind,
    ActionStatus,
    AuditOutcome,
    BindingStatus,
    Intent,
    JournalStamp,
    Outcome,
    RunRef,
)
from erpsync.domain.writeback_rules import FINAL_COUNTS_CLASS
from erpsync.service.ports import UnitOfWorkFactory
from erpsync.service.writeback import WritebackPolicy, run_writeback
from erpsync.service.writeback_report import WritebackSummary
from tests.service.fakes import MemorySink, call_count, hold, sent
from tests.service.writeback.conftest import NOW, bind

POLICY = WritebackPolicy(
    allow_decrease=False, settle_window_minutes=10, max_concurrency=4, final_counts_max_hours=6
)
LATE = NOW - timedelta(hours=3)  # the clock-out a supervisor entered the next morning


def run(
    uow: MemoryUnitOfWorkFactory, mm: FakeMachineMetrics, sink: MemorySink, at: Any = NOW, **kw: Any
) -> WritebackSummary:
    return run_writeback(cast(UnitOfWorkFactory, uow), mm, sink, POLICY, now=at, **kw)


def ended_run(mm: FakeMachineMetrics, run_id: str, total: int) -> None:
    """MM holds the run stopped with the late end time, `total` parts counted."""
    hold(mm, run_id, start_at=LATE - timedelta(hours=5), machine=f"m-{run_id}", end_at=LATE)
    mm.set_counts(run_id, total=total)


def written_5(tables: MemoryTables, run_id: str) -> None:
    """What the last write-back before the stop left: 5 parts written."""
    row = tables.bindings[run_id]
    row.update(last_total_parts=5, last_good_parts=5, last_scrap_parts=0, last_nonconform_parts=0)


def test_a_late_clock_out_still_gets_its_final_counts(
    uow: MemoryUnitOfWorkFactory, tables: MemoryTables, mm: FakeMachineMetrics, sink: MemorySink
) -> None:
    # stopped by erpsync a minute ago with an endAt three hours ago; 9 parts, 5 written before
    bind(tables, "r1", "stopped", mm_end_at=LATE, final_counts_since=NOW - timedelta(minutes=1))
    written_5(tables, "r1")
    sink.rows["r1"] = {"total": 5, "good": 5, "scrap": 0, "nonconform": 0}
    ended_run(mm, "r1", 9)

    first = run(uow, mm, sink)
    assert first.written == 1 and sink.rows["r1"]["total"] == 9
    assert tables.bindings["r1"]["final_counts_since"] == NOW  # counts changed: the window restarts
    assert [(a["mm_run_id"], a["outcome"]) for a in tables.audit] == [("r1", "written")]

    within = run(uow, mm, sink, NOW + timedelta(minutes=5))
    assert within.unchanged == 1 and tables.bindings["r1"]["final_counts_since"] == NOW

    settled = run(uow, mm, sink, NOW + timedelta(minutes=10))
    assert settled.unchanged == 1 and tables.bindings["r1"]["final_counts_since"] is None
    before = call_count(mm)
    assert run(uow, mm, sink, NOW + timedelta(minutes=11)).read == 0  # done: not read again
    assert sent(mm, "get", after=before) == []


def test_an_outage_longer_than_the_window_still_writes_the_final_counts(
    uow: MemoryUnitOfWorkFactory, tables: MemoryTables, mm: FakeMachineMetrics, sink: MemorySink
) -> None:
    bind(tables, "r1", "stopped", mm_end_at=LATE, final_counts_since=NOW)
    written_5(tables, "r1")
    sink.rows["r1"] = {"total": 5, "good": 5, "scrap": 0, "nonconform": 0}
    ended_run(mm, "r1", 12)

    back = run(uow, mm, sink, NOW + timedelta(hours=2))  # write-back was down for two hours
    assert back.written == 1 and sink.rows["r1"]["total"] == 12
    again = run(uow, mm, sink, NOW + timedelta(hours=2, minutes=10))
    assert again.unchanged == 1 and tables.bindings["r1"]["final_counts_since"] is None


def test_a_failing_final_read_keeps_the_run_then_is_quarantined_with_a_reason(
    uow: MemoryUnitOfWorkFactory, tables: MemoryTables, mm: FakeMachineMetrics, sink: MemorySink
) -> None:
    bind(tables, "r1", "stopped", mm_end_at=LATE, final_counts_since=NOW)
    written_5(tables, "r1")
    sink.rows["r1"] = {"total": 5, "good": 5, "scrap": 0, "nonconform": 0}
    ended_run(mm, "r1", 8)
    mm.set_faults({"kind": "error", "status": 503, "operation": "get"})

    for hours in (1, 3, 5):
        failing = run(uow, mm, sink, NOW + timedelta(hours=hours))
        assert (failing.no_data, failing.unreachable, failing.final_quarantined) == (1, 1, 0)
        assert tables.bindings["r1"]["final_counts_since"] == NOW  # still a candidate
    assert tables.quarantine == {}

    given_up = run(uow, mm, sink, NOW + timedelta(hours=6))
    assert given_up.final_quarantined == 1
    assert tables.bindings["r1"]["final_counts_since"] is None
    [entry] = tables.quarantine.values()
    assert (entry["record_key"], entry["error_class"], entry["status"]) == ("r1", FINAL_COUNTS_CLASS, "open")
    assert "did not reach the ERP 6 h after erpsync stopped the run" in entry["message"]
    assert "erpsync writeback --run r1" in entry["message"] and "503" in entry["message"]
    assert [a["outcome"] for a in tables.audit] == ["no_data", "quarantined"]
    assert run(uow, mm, sink, NOW + timedelta(hours=7)).read == 0  # no longer a candidate

    mm.set_faults()  # MM answers again: the person's `erpsync writeback --run r1`
    by_hand = run(uow, mm, sink, NOW + timedelta(hours=8), run_id="r1")
    assert by_hand.written == 1 and sink.rows["r1"]["total"] == 8
    assert entry["status"] == "resolved"


def test_confirmed_no_data_finishes_a_stopped_run_and_an_open_run_in_mm_is_kept(
    uow: MemoryUnitOfWorkFactory, tables: MemoryTables, mm: FakeMachineMetrics, sink: MemorySink
) -> None:
    bind(tables, "gone", "stopped", final_counts_since=NOW)  # MM has no such run (404)
    bind(tables, "open", "stopped", final_counts_since=NOW)  # MM still shows it open
    hold(mm, "open", start_at=LATE, machine="m-open")
    mm.set_counts("open", total=4)

    run(uow, mm, sink, NOW + timedelta(minutes=10))
    assert tables.bindings["gone"]["final_counts_since"] is None
    assert tables.bindings["open"]["final_counts_since"] == NOW + timedelta(minutes=10)  # written
    later = run(uow, mm, sink, NOW + timedelta(hours=12))  # past the limit, but nothing failed
    assert later.read == 1 and later.final_quarantined == 0 and tables.quarantine == {}
    assert tables.bindings["open"]["final_counts_since"] is not None


def test_a_dry_run_leaves_the_marker(
    uow: MemoryUnitOfWorkFactory, tables: MemoryTables, mm: FakeMachineMetrics, sink: MemorySink
) -> None:
    bind(tables, "r1", "stopped", mm_end_at=LATE, final_counts_since=NOW)
    ended_run(mm, "r1", 3)
    dry = run(uow, mm, sink, NOW + timedelta(hours=1), dry_run=True)
    assert dry.would_write == 1 and tables.bindings["r1"]["final_counts_since"] == NOW


def test_settling_a_stop_marks_the_final_counts_due(
    uow: MemoryUnitOfWorkFactory, tables: MemoryTables
) -> None:
    bind(tables, "r1", "stopping")
    settled_after = utcnow()
    with uow() as work:
        [action] = work.actions.record([_stop_intent()], _stamp())
        outcome = Outcome(
            action,
            ActionStatus.SUCCEEDED,
            AuditOutcome.SUCCEEDED,
            binding_status=BindingStatus.STOPPED,
            mm_end_at=LATE,
        )
        work.actions.settle([outcome], fencing_token=None)
    row = tables.bindings["r1"]
    assert row["status"] == "stopped" and row["mm_end_at"] == LATE
    # when erpsync settled the stop, not MM's (late) end time
    assert row["final_counts_since"] is not None and row["final_counts_since"] >= settled_after


def _stop_intent() -> Intent:
    return Intent(
        idempotency_key="stop:r1",
        kind=ActionKind.STOP,
        source="erp",
        ref=RunRef("erp", "key-r1", "r1", "J-r1", "10", "MILL-1"),
        reason="clocked out",
        payload={"erpJobOperationRunId": "r1", "endAt": LATE.isoformat()},
        binding_status=BindingStatus.STOPPING,
    )


def _stamp() -> JournalStamp:
    return JournalStamp(fencing_token=None, correlation_id=None, trigger="schedule", claim_until=NOW)
