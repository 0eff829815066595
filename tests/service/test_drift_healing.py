"""Drift is healed, not just logged (issue #15 case 7): the heal-or-flag decision, on the fakes.

Write-back's read finds that MM lost (or a person ended) a run erpsync has running; by
`sync.heal_drift` the next sync cycle starts the ticket's next run generation, or nothing restarts
and a person is told. MM is the simulator's model in process.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest

from erpsync.adapters.mm.fake import FakeMachineMetrics
from erpsync.adapters.state.memory_tables import MemoryTables
from erpsync.domain.clock import utcnow
from erpsync.domain.drift import HealDrift
from erpsync.domain.identity import generation_run_id
from erpsync.domain.model import RunState
from erpsync.service.ports import UnitOfWorkFactory
from erpsync.service.sync import SyncService
from erpsync.service.writeback import WritebackPolicy, run_writeback
from erpsync.service.writeback_report import WritebackSummary
from tests.service.conftest import SOURCE, ListSource, binding, erp_run
from tests.service.fakes import MemorySink, call_count, calls

G2 = generation_run_id(SOURCE, "LT1", 2)


def writeback(
    uow_factory: UnitOfWorkFactory, mm: FakeMachineMetrics, sink: MemorySink, heal: HealDrift
) -> WritebackSummary:
    policy = WritebackPolicy(
        allow_decrease=False, settle_window_minutes=0, max_concurrency=2, heal_drift=heal
    )
    return run_writeback(uow_factory, mm, sink, policy)


def open_runs(mm: FakeMachineMetrics) -> list[str]:
    return sorted(run_id for run_id, run in mm.runs().items() if run["end_at"] is None)


def mm_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.parametrize("drift", ["lost", "ended"])
def test_restart_starts_the_next_generation_in_the_next_cycle(
    service: SyncService,
    source: ListSource,
    mm: FakeMachineMetrics,
    uow_factory: UnitOfWorkFactory,
    tables: MemoryTables,
    drift: str,
) -> None:
    sink = MemorySink()
    source.put(erp_run("LT1", "M1", RunState.PRODUCTION))
    service.run_cycle()
    mm.set_counts("erp:LT1", total=40)
    writeback(uow_factory, mm, sink, "restart")
    if drift == "lost":
        mm.lose_run("erp:LT1")
    else:
        mm.end_run("erp:LT1")
    found = utcnow()

    assert writeback(uow_factory, mm, sink, "restart").drifted == 1
    kind = "missing_in_mm" if drift == "lost" else "ended_in_mm"
    assert [a["action"] for a in tables.audit].count(kind) == 1
    assert binding(uow_factory, "LT1").status == "stopped"

    summary = service.run_cycle()

    assert summary.started == 1 and open_runs(mm) == [G2]
    started = mm_time(mm.runs()[G2]["start_at"])
    old_end = mm.runs().get("erp:LT1", {}).get("end_at")
    assert started >= (mm_time(old_end) if old_end else found.replace(microsecond=0))  # never overlaps
    reason = [a["detail"] for a in tables.audit if a["action"] == "start_run" and a["mm_run_id"] == G2]
    assert len(reason) == 1 and "new MM run (generation 2)" in str(reason[0])
    assert binding(uow_factory, "LT1#g2").status == "running"

    # the ticket's counts: the old run's 40 stay, the new run's add to them
    mm.set_counts(G2, total=7)
    writeback(uow_factory, mm, sink, "restart")
    assert sink.rows[G2]["total"] == 7 and sink.rows["erp:LT1"]["total"] == 40

    before = call_count(mm)
    quiet = service.run_cycle()
    assert (quiet.started, quiet.stopped, quiet.flagged) == (0, 0, 0)
    assert calls(mm, before) == []  # a no-change cycle asks MM nothing

    source.put(replace(erp_run("LT1", "M1", RunState.ENDED), end_at=utcnow()))
    assert service.run_cycle().stopped == 1
    assert open_runs(mm) == []


@pytest.mark.parametrize("drift", ["lost", "ended"])
def test_flag_restarts_nothing_and_says_so_once(
    service: SyncService,
    source: ListSource,
    mm: FakeMachineMetrics,
    uow_factory: UnitOfWorkFactory,
    tables: MemoryTables,
    drift: str,
) -> None:
    sink = MemorySink()
    source.put(erp_run("LT1", "M1", RunState.PRODUCTION))
    service.run_cycle()
    if drift == "lost":
        mm.lose_run("erp:LT1")
    else:
        mm.end_run("erp:LT1")
    writeback(uow_factory, mm, sink, "flag")
    assert binding(uow_factory, "LT1").status == "failed"

    before = call_count(mm)
    for _ in range(2):
        summary = service.run_cycle()
        assert (summary.started, summary.flagged) == (0, 0)
        writeback(uow_factory, mm, sink, "flag")
    # nothing started; a lost run is not read again, an ended one once more for its final counts
    final_read = [("get", "erp:LT1")] if drift == "ended" else []
    assert calls(mm, before) == final_read
    assert open_runs(mm) == []
    rows = [a for a in tables.audit if a["action"] in ("missing_in_mm", "ended_in_mm")]
    assert len(rows) == 1 and "erpsync resync --run LT1" in rows[0]["detail"]

    source.put(replace(erp_run("LT1", "M1", RunState.ENDED), end_at=utcnow()))
    assert service.run_cycle().stopped == 0  # nothing open in MM to stop
    assert open_runs(mm) == []
