"""The write-back decisions, end to end through the service, on fakes (no database, no HTTP).

What each test pins is a rule of docs/writeback.md: a count is written only when it changed, no
MM data is never a 0, a count does not go down unless allowed, a person's ERP edit is never
overwritten, and a crash between the ERP commit and the state commit is not taken for one.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

import pytest

from erpsync.adapters.mm.fake import FakeMachineMetrics
from erpsync.adapters.state.memory import MemoryUnitOfWorkFactory
from erpsync.adapters.state.memory_tables import MemoryTables
from erpsync.domain.writeback_rules import CONFLICT_CLASS
from erpsync.service.ports import UnitOfWorkFactory
from erpsync.service.writeback import WritebackPolicy, run_writeback
from erpsync.service.writeback_report import WritebackSummary
from tests.service.fakes import BareRunsMM, Crash, MemorySink, call_count, sent
from tests.service.writeback.conftest import NOW, bind, counts

POLICY = WritebackPolicy(allow_decrease=False, settle_window_minutes=30, max_concurrency=4)


def run(
    uow: MemoryUnitOfWorkFactory,
    mm: FakeMachineMetrics,
    sink: MemorySink,
    policy: WritebackPolicy = POLICY,
    **kw: Any,
) -> WritebackSummary:
    return run_writeback(cast(UnitOfWorkFactory, uow), mm, sink, policy, now=NOW, **kw)


def outcomes(tables: MemoryTables) -> list[tuple[str, str]]:
    return [(row["mm_run_id"], row["outcome"]) for row in tables.audit]


def test_writes_only_when_changed(
    uow: MemoryUnitOfWorkFactory, tables: MemoryTables, mm: FakeMachineMetrics, sink: MemorySink
) -> None:
    bind(tables, "r1")
    counts(mm, "r1", 10, scrap=1)
    assert run(uow, mm, sink).written == 1
    assert sink.rows["r1"] == {"total": 10, "good": 9, "scrap": 1, "nonconform": 0}
    assert tables.bindings["r1"]["last_total_parts"] == 10
    assert tables.sink_counts[(tables.bindings["r1"]["id"], "memory")]["last_good_parts"] == 9

    calls = sink.calls
    again = run(uow, mm, sink)
    assert (again.unchanged, again.written) == (1, 0)
    assert sink.calls == calls  # unchanged counts never reach the ERP
    assert outcomes(tables) == [("r1", "written")]  # unchanged is not audited

    counts(mm, "r1", 12, scrap=1)
    assert run(uow, mm, sink).written == 1
    assert sink.rows["r1"]["total"] == 12


@pytest.mark.parametrize("answer", ["not_found", "no_metrics", "unreachable"])
def test_no_data_is_never_written_as_zero(
    answer: str, uow: MemoryUnitOfWorkFactory, tables: MemoryTables, mm: FakeMachineMetrics, sink: MemorySink
) -> None:
    # a running run MM has no such run for is drift, not missing data (test_writeback_drift.py)
    status = "stopping" if answer == "not_found" else "running"
    written = {"last_total_parts": 5, "last_good_parts": 5, "last_scrap_parts": 0, "last_nonconform_parts": 0}
    bind(tables, "r1", status, **written)
    if answer == "no_metrics":
        mm = BareRunsMM({"r1"})
    if answer != "not_found":  # MM has the run, and counts a read would take for data
        counts(mm, "r1", 7)
    if answer == "unreachable":
        mm.set_faults({"kind": "error", "status": 503, "operation": "get"})
    summary = run(uow, mm, sink)
    assert (summary.no_data, summary.written) == (1, 0)
    assert summary.unreachable == (1 if answer == "unreachable" else 0)
    assert summary.outcome == ("failed" if answer == "unreachable" else "ok")
    assert sink.rows == {} and sink.calls == 0
    assert tables.bindings["r1"]["last_total_parts"] == 5


def test_decrease_refused_unless_allowed(
    uow: MemoryUnitOfWorkFactory, tables: MemoryTables, mm: FakeMachineMetrics, sink: MemorySink
) -> None:
    bind(tables, "r1")
    counts(mm, "r1", 10)
    run(uow, mm, sink)
    counts(mm, "r1", 10, scrap=3)  # good 10 -> 7
    refused = run(uow, mm, sink)
    assert (refused.refused, refused.written) == (1, 0)
    assert sink.rows["r1"]["good"] == 10
    [refusal] = [row for row in tables.audit if row["outcome"] == "decrease_refused"]
    assert "good 10 -> 7" in refusal["error_message"]

    allowing = WritebackPolicy(allow_decrease=True, settle_window_minutes=30, max_concurrency=4)
    assert run(uow, mm, sink, allowing).written == 1
    assert sink.rows["r1"]["good"] == 7


def test_conflict_is_quarantined_not_overwritten_and_blocks_the_run(
    uow: MemoryUnitOfWorkFactory, tables: MemoryTables, mm: FakeMachineMetrics, sink: MemorySink
) -> None:
    bind(tables, "r1")
    bind(tables, "r2")
    counts(mm, "r1", 10)
    counts(mm, "r2", 4)
    run(uow, mm, sink)
    sink.rows["r1"] = {"total": 10, "good": 8, "scrap": 2, "nonconform": 0}  # a person's edit
    counts(mm, "r1", 12)

    summary = run(uow, mm, sink)
    assert (summary.conflicts, summary.written, summary.unchanged) == (1, 0, 1)
    assert sink.rows["r1"]["good"] == 8
    [entry] = tables.quarantine.values()
    assert (entry["record_key"], entry["error_class"], entry["status"]) == ("r1", CONFLICT_CLASS, "open")

    before = call_count(mm)
    held = run(uow, mm, sink)
    assert (held.skipped, held.calls, held.conflicts) == (1, 1, 0)
    assert sent(mm, "get", after=before) == ["r2"]  # the blocked run is neither read nor written
    assert sink.rows["r1"]["good"] == 8
    assert [r.outcome for r in held.rows if r.mm_run_id == "r1"] == ["quarantined"]

    entry["status"] = "retry"  # a person released it (the ERP value is what erpsync last wrote)
    sink.rows["r1"] = {"total": 10, "good": 10, "scrap": 0, "nonconform": 0}
    assert run(uow, mm, sink).written == 1
    assert entry["status"] == "resolved"


@pytest.mark.parametrize("mm_moved_on", [True, False])
def test_write_in_doubt_after_crash_is_not_a_conflict(
    mm_moved_on: bool,
    uow: MemoryUnitOfWorkFactory,
    tables: MemoryTables,
    mm: FakeMachineMetrics,
    sink: MemorySink,
) -> None:
    bind(tables, "r1")
    counts(mm, "r1", 10)
    run(uow, mm, sink)
    counts(mm, "r1", 12)
    sink.crash_after_commit = True
    with pytest.raises(Crash):
        run(uow, mm, sink)  # the ERP holds 12, erpsync's state still says 10 (12 is in doubt)
    assert sink.rows["r1"]["total"] == 12
    assert tables.bindings["r1"]["last_total_parts"] == 10

    if mm_moved_on:
        counts(mm, "r1", 15)
    summary = run(uow, mm, sink)
    assert summary.conflicts == 0 and tables.quarantine == {}
    expected = ("written", 15) if mm_moved_on else ("already_written", 12)
    assert (summary.rows[0].outcome, sink.rows["r1"]["total"]) == expected
    row = tables.sink_counts[(tables.bindings["r1"]["id"], "memory")]
    assert (row["last_total_parts"], row["counts_in_doubt"]) == (expected[1], None)


def test_sink_switch_writes_current_counts_to_the_new_sink(
    uow: MemoryUnitOfWorkFactory, tables: MemoryTables, mm: FakeMachineMetrics, sink: MemorySink
) -> None:
    bind(tables, "r1")
    counts(mm, "r1", 10)
    run(uow, mm, sink)
    other = MemorySink("other")
    switched = run(uow, mm, other)
    assert switched.written == 1
    assert other.rows["r1"] == sink.rows["r1"]
    assert run(uow, mm, other).unchanged == 1


def test_repeated_outcomes_are_audited_once(
    uow: MemoryUnitOfWorkFactory, tables: MemoryTables, mm: FakeMachineMetrics, sink: MemorySink
) -> None:
    # MM has no such run: 404 every cycle (a stop in flight; a running run MM lost is drift, which
    # write-back records once and then reads no more: test_writeback_drift.py)
    bind(tables, "gone", "stopping")
    for _ in range(3):
        assert run(uow, mm, sink).no_data == 1
    assert outcomes(tables) == [("gone", "no_data")]
    counts(mm, "gone", 3)
    run(uow, mm, sink)
    assert outcomes(tables) == [("gone", "no_data"), ("gone", "written")]


def test_dry_run_writes_nothing(
    uow: MemoryUnitOfWorkFactory, tables: MemoryTables, mm: FakeMachineMetrics, sink: MemorySink
) -> None:
    bind(tables, "active")
    bind(tables, "ended-long-ago", status="stopped", updated_at=NOW - timedelta(days=3))
    counts(mm, "active", 10)
    counts(mm, "ended-long-ago", 5)
    before = tables.snapshot()
    dry = run(uow, mm, sink, dry_run=True)
    assert {r.mm_run_id: r.outcome for r in dry.rows} == {"active": "would_write"}
    assert (dry.sink_ready, dry.sink_check) == (True, "memory sink ready")
    assert sink.calls == 0 and tables.snapshot() == before
