"""Drift found by write-back's own reads (issue #15 case 7), on the fakes.

A run erpsync has running that MM lost (404) or that a person ended by hand in MM is recorded once
(`missing_in_mm` / `ended_in_mm`, by `sync.heal_drift`), and write-back stops asking MM about a
run it knows is gone instead of logging "no data" every cycle.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any, cast

import pytest

from erpsync.adapters.mm.fake import FakeMachineMetrics
from erpsync.adapters.state.memory import MemoryUnitOfWorkFactory
from erpsync.adapters.state.memory_tables import MemoryTables
from erpsync.domain.drift import HealDrift
from erpsync.service.ports import UnitOfWorkFactory
from erpsync.service.writeback import WritebackPolicy, run_writeback
from erpsync.service.writeback_report import WritebackSummary
from tests.service.fakes import MemorySink, call_count, hold, sent
from tests.service.writeback.conftest import NOW, bind, counts

POLICY = WritebackPolicy(allow_decrease=False, settle_window_minutes=10, max_concurrency=4)
BY_HAND = NOW - timedelta(minutes=20)


def run(
    uow: MemoryUnitOfWorkFactory,
    mm: FakeMachineMetrics,
    sink: MemorySink,
    at: Any = NOW,
    heal: HealDrift = "restart",
    **kw: Any,
) -> WritebackSummary:
    policy = replace(POLICY, heal_drift=heal)
    return run_writeback(cast(UnitOfWorkFactory, uow), mm, sink, policy, now=at, **kw)


def audit(tables: MemoryTables) -> list[tuple[str, str, str | None]]:
    return [(a["action"], a["outcome"], a["mm_run_id"]) for a in tables.audit]


def written(tables: MemoryTables, run_id: str, total: int) -> None:
    tables.bindings[run_id].update(
        last_total_parts=total, last_good_parts=total, last_scrap_parts=0, last_nonconform_parts=0
    )


@pytest.mark.parametrize(("heal", "status"), [("restart", "stopped"), ("flag", "failed")])
def test_a_run_mm_lost_is_recorded_once_and_not_read_again(
    uow: MemoryUnitOfWorkFactory,
    tables: MemoryTables,
    mm: FakeMachineMetrics,
    sink: MemorySink,
    heal: HealDrift,
    status: str,
) -> None:
    bind(tables, "r1")
    counts(mm, "r1", 5)
    run(uow, mm, sink, heal=heal)
    assert sink.rows["r1"]["total"] == 5
    mm.lose_run("r1")

    lost = run(uow, mm, sink, NOW + timedelta(minutes=1), heal=heal)

    assert (lost.drifted, lost.no_data, lost.written, lost.outcome) == (1, 0, 0, "ok")
    (row,) = lost.rows
    assert row.outcome == "missing_in_mm" and "has no run r1 that erpsync had open" in (row.message or "")
    binding = tables.bindings["r1"]
    assert (binding["status"], binding["mm_end_at"], binding["final_counts_since"]) == (
        status,
        NOW + timedelta(minutes=1),
        None,
    )
    assert binding["last_total_parts"] == 5 and sink.rows["r1"]["total"] == 5  # what was written stays
    assert audit(tables) == [("write_counts", "written", "r1"), ("missing_in_mm", "flagged", "r1")]
    drift_row = tables.audit[-1]
    assert drift_row["http_status"] == 404
    assert f'"heal_drift": "{heal}"' in drift_row["after_json"]
    assert ("not restarted" in drift_row["detail"]) is (heal == "flag")

    before = call_count(mm)
    for minute in (2, 3):  # no 404 every cycle, no second audit row
        assert run(uow, mm, sink, NOW + timedelta(minutes=minute), heal=heal).read == 0
    assert sent(mm, "get", after=before) == []
    assert len(tables.audit) == 2


def test_a_run_ended_by_hand_gets_its_counts_written_and_is_recorded_stopped(
    uow: MemoryUnitOfWorkFactory, tables: MemoryTables, mm: FakeMachineMetrics, sink: MemorySink
) -> None:
    bind(tables, "r1")
    counts(mm, "r1", 5)
    run(uow, mm, sink)
    counts(mm, "r1", 9)
    mm.end_run("r1", BY_HAND)

    ended = run(uow, mm, sink)

    assert (ended.drifted, ended.written) == (1, 1)
    assert sink.rows["r1"]["total"] == 9  # the counts MM ended with reach the ERP
    binding = tables.bindings["r1"]
    assert (binding["status"], binding["mm_end_at"], binding["final_counts_since"]) == (
        "stopped",
        BY_HAND,
        NOW,  # an ended run's final counts are read once more after the settle window
    )
    assert audit(tables) == [
        ("write_counts", "written", "r1"),
        ("write_counts", "written", "r1"),
        ("ended_in_mm", "flagged", "r1"),
    ]
    assert BY_HAND.isoformat() in tables.audit[-1]["detail"]

    again = run(uow, mm, sink, NOW + timedelta(minutes=10))  # the final read: unchanged, done
    assert (again.drifted, again.unchanged) == (0, 1)
    assert tables.bindings["r1"]["final_counts_since"] is None
    assert len(tables.audit) == 3
    assert run(uow, mm, sink, NOW + timedelta(minutes=11)).read == 0


def test_only_runs_erpsync_holds_open_are_drift(
    uow: MemoryUnitOfWorkFactory, tables: MemoryTables, mm: FakeMachineMetrics, sink: MemorySink
) -> None:
    """A stop in flight whose run MM lost is missing data, not drift; a stopped run MM ended is
    its final read."""
    bind(tables, "stopping", "stopping")
    bind(tables, "stopped", "stopped", mm_end_at=BY_HAND, final_counts_since=NOW - timedelta(minutes=1))
    hold(mm, "stopped", start_at=BY_HAND - timedelta(hours=1), machine="m2", end_at=BY_HAND)
    summary = run(uow, mm, sink)
    assert (summary.drifted, summary.no_data, summary.written) == (0, 1, 1)
    assert tables.bindings["stopping"]["status"] == "stopping"
    assert [a for a, _, _ in audit(tables)] == ["write_counts", "write_counts"]


def test_a_vanished_run_mm_lost_is_not_read_every_cycle(
    uow: MemoryUnitOfWorkFactory, tables: MemoryTables, mm: FakeMachineMetrics, sink: MemorySink
) -> None:
    """Left open in MM by `sync.vanished_runs = flag`, write-back reads it; once MM lost it too,
    nothing is left to read."""
    bind(tables, "v1", "vanished")
    assert run(uow, mm, sink).drifted == 1
    assert tables.bindings["v1"]["status"] == "stopped"
    assert run(uow, mm, sink).read == 0


def test_a_dry_run_shows_the_drift_and_records_nothing(
    uow: MemoryUnitOfWorkFactory, tables: MemoryTables, mm: FakeMachineMetrics, sink: MemorySink
) -> None:
    bind(tables, "r1")
    written(tables, "r1", 5)
    before = tables.snapshot()
    dry = run(uow, mm, sink, dry_run=True)
    assert (dry.drifted, [r.outcome for r in dry.rows]) == (1, ["missing_in_mm"])
    assert tables.snapshot() == before
