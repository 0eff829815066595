"""Implausible counts through the service on fakes: the in-memory state keeps what the SQL state
keeps (tests/integration/test_writeback_plausible_counts.py runs the same over HTTP and databases)."""

from __future__ import annotations

from typing import cast

from erpsync.adapters.mm.fake import FakeMachineMetrics
from erpsync.adapters.state.memory import MemoryUnitOfWorkFactory
from erpsync.adapters.state.memory_tables import MemoryTables
from erpsync.domain.plausible_counts import IMPLAUSIBLE_CLASS
from erpsync.service.ports import UnitOfWorkFactory
from erpsync.service.writeback import WritebackPolicy, run_writeback
from erpsync.service.writeback_report import WritebackSummary
from tests.service.fakes import MemorySink
from tests.service.writeback.conftest import NOW, bind, counts

POLICY = WritebackPolicy(
    allow_decrease=False, settle_window_minutes=30, max_concurrency=4, max_part_count=1000
)


def run(uow: MemoryUnitOfWorkFactory, mm: FakeMachineMetrics, sink: MemorySink) -> WritebackSummary:
    return run_writeback(cast(UnitOfWorkFactory, uow), mm, sink, POLICY, now=NOW)


def test_one_implausible_run_costs_that_run_only_and_heals(
    uow: MemoryUnitOfWorkFactory, tables: MemoryTables, mm: FakeMachineMetrics, sink: MemorySink
) -> None:
    bind(tables, "r1")
    bind(tables, "r2")
    counts(mm, "r1", 10)
    counts(mm, "r2", 10)
    assert run(uow, mm, sink).written == 2

    counts(mm, "r1", 1001)  # above the bound
    counts(mm, "r2", 20)
    for cycle in range(2):  # the same answer twice: audited once, the entry seen twice
        summary = run(uow, mm, sink)
        assert (summary.implausible, summary.written) == (1, 1 if cycle == 0 else 0)
    assert sink.rows["r1"]["total"] == 10 and sink.rows["r2"]["total"] == 20
    assert tables.bindings["r1"]["last_total_parts"] == 10
    [entry] = tables.quarantine.values()
    assert (entry["error_class"], entry["status"], entry["attempts"]) == (IMPLAUSIBLE_CLASS, "open", 2)
    assert "totalParts (1001) is above writeback.max_part_count (1000)" in entry["message"]
    assert [row["outcome"] for row in tables.audit if row["mm_run_id"] == "r1"] == ["written", "implausible"]

    counts(mm, "r1", 1000)
    healed = run(uow, mm, sink)
    assert (healed.implausible, healed.written) == (0, 1) and sink.rows["r1"]["total"] == 1000
    assert entry["status"] == "resolved"
