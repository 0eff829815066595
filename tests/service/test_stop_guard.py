"""Snapshot trust in the sync cycle (service/stop_guard.py) on the in-memory fakes, with
``sync.vanished_runs = "stop"``: a suspect snapshot, a mass vanish and a row that turned bad stop
nothing in MM; the hold is audited once and the snapshot read again until a person confirms or a
good snapshot comes."""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client import REGISTRY

from erpsync.adapters.mm.fake import FakeMachineMetrics
from erpsync.adapters.state.memory import MemoryFence
from erpsync.adapters.state.memory_tables import MemoryTables
from erpsync.domain.model import BadRecord, RunState
from erpsync.service.policy import SyncPolicy
from erpsync.service.ports import UnitOfWorkFactory
from erpsync.service.resync import Selection, run_resync
from erpsync.service.sync import SyncService
from tests.service.conftest import SOURCE, ListSource, binding, erp_run, open_quarantine
from tests.service.fakes import call_count, sent

KEYS = ("R1", "R2", "R3")


@pytest.fixture
def stop_policy(policy: SyncPolicy) -> SyncPolicy:
    return replace(policy, vanished_runs="stop")


@pytest.fixture
def stopper(
    uow_factory: UnitOfWorkFactory,
    source: ListSource,
    mm: FakeMachineMetrics,
    fence: MemoryFence,
    stop_policy: SyncPolicy,
) -> SyncService:
    return SyncService(uow_factory, source, mm, fence, stop_policy)


def running(service: SyncService, source: ListSource, keys: tuple[str, ...] = KEYS) -> None:
    for i, key in enumerate(keys, start=1):  # one run per machine: R1 on M1, ...
        source.put(erp_run(key, f"M{i}", RunState.PRODUCTION))
    assert service.run_cycle().started == len(keys)


def open_in_mm(mm: FakeMachineMetrics) -> list[str]:
    return sorted(run_id for run_id, run in mm.runs().items() if run["end_at"] is None)


def audited(tables: MemoryTables, action: str) -> list[str]:
    return [row["detail"] for row in tables.audit if row["action"] == action]


def gauge(reason: str) -> float | None:
    return REGISTRY.get_sample_value("erpsync_stops_held", {"reason": reason})


def test_a_suspect_snapshot_stops_nothing_until_a_good_one_comes(
    stopper: SyncService, source: ListSource, mm: FakeMachineMetrics, tables: MemoryTables
) -> None:
    running(stopper, source)
    acknowledged = source.acknowledged
    kept = dict(source.runs)
    source.runs.clear()  # a header-only export
    source.suspect = "orders.csv has a header and no rows"
    before = call_count(mm)

    for _ in range(2):  # read again each cycle, audited once
        summary = stopper.run_cycle()
        assert (summary.stopped, summary.held_stops) == (0, 3)
        assert "3 stops held" in summary.line()
    assert sent(mm, "stop", after=before) == []
    assert open_in_mm(mm) == ["erp:R1", "erp:R2", "erp:R3"]
    assert {binding(stopper.uow, k).status for k in KEYS} == {"running"}
    [detail] = audited(tables, "untrusted_snapshot")
    assert "orders.csv has a header and no rows" in detail and "3 stop(s)" in detail
    assert source.acknowledged == acknowledged  # not acknowledged: read again next cycle
    assert gauge("untrusted_snapshot") == 3

    source.runs.update(kept)  # the next export is good
    source.suspect = None
    summary = stopper.run_cycle()
    assert (summary.started, summary.stopped, summary.held_stops) == (0, 0, 0)
    assert source.acknowledged == acknowledged + 1
    assert open_in_mm(mm) == ["erp:R1", "erp:R2", "erp:R3"]
    assert gauge("untrusted_snapshot") == 0
    assert len(audited(tables, "untrusted_snapshot")) == 1


def test_a_person_confirms_the_held_stops(
    stopper: SyncService, source: ListSource, mm: FakeMachineMetrics, tables: MemoryTables
) -> None:
    running(stopper, source)
    source.runs.clear()
    source.suspect = "orders.csv has a header and no rows"
    assert stopper.run_cycle().held_stops == 3
    acknowledged = source.acknowledged

    stopper.confirm_stops = True
    summary = stopper.run_cycle()

    assert (summary.stopped, summary.held_stops) == (3, 0)
    assert open_in_mm(mm) == []
    assert {binding(stopper.uow, k).status for k in KEYS} == {"stopped"}
    [detail] = audited(tables, "stops_confirmed")
    assert "a person confirmed 3 stop(s)" in detail
    [actor] = [row["actor"] for row in tables.audit if row["action"] == "stops_confirmed"]
    assert actor and "@" in actor  # who confirmed (user@host); the row has its time
    assert source.acknowledged == acknowledged + 1
    assert gauge("untrusted_snapshot") == 0


def test_a_mass_vanish_is_held_until_confirmed(
    stopper: SyncService, source: ListSource, mm: FakeMachineMetrics, tables: MemoryTables
) -> None:
    mm.set_machines(("M1", "M2", "M3", "M4"))
    running(stopper, source, ("R1", "R2", "R3", "R4"))
    for key in ("R1", "R2", "R3"):  # 3 of 4 at once, sync.max_vanished_share = 0.5
        del source.runs[key]
    before = call_count(mm)

    held = stopper.run_cycle()
    assert (held.stopped, held.held_stops) == (0, 3)
    assert sent(mm, "stop", after=before) == []
    assert open_in_mm(mm) == ["erp:R1", "erp:R2", "erp:R3", "erp:R4"]
    [detail] = audited(tables, "mass_vanish")
    assert "3 of 4 open runs vanished" in detail
    assert gauge("mass_vanish") == 3
    assert stopper.run_cycle().held_stops == 3  # still gone, still not trusted: held again
    assert len(audited(tables, "mass_vanish")) == 1

    stopper.confirm_stops = True
    confirmed = stopper.run_cycle()
    assert confirmed.stopped == 3
    assert open_in_mm(mm) == ["erp:R4"]
    assert sorted(sent(mm, "stop", after=before)) == ["erp:R1", "erp:R2", "erp:R3"]
    assert gauge("mass_vanish") == 0


def test_one_vanished_run_of_several_is_stopped_as_before(
    stopper: SyncService, source: ListSource, mm: FakeMachineMetrics, tables: MemoryTables
) -> None:
    running(stopper, source)
    del source.runs["R1"]
    summary = stopper.run_cycle()
    assert (summary.stopped, summary.held_stops) == (1, 0)
    assert open_in_mm(mm) == ["erp:R2", "erp:R3"]
    assert audited(tables, "mass_vanish") == audited(tables, "untrusted_snapshot") == []


def test_a_row_that_turned_bad_keeps_its_run(
    stopper: SyncService,
    source: ListSource,
    mm: FakeMachineMetrics,
    uow_factory: UnitOfWorkFactory,
    tables: MemoryTables,
) -> None:
    running(stopper, source)
    bound = binding(uow_factory, "R2")
    del source.runs["R2"]
    source.bad.append(BadRecord(source=SOURCE, record_key="R2", reason="RUN_TYPE: unknown unit 'HRS/PCC'"))

    summary = stopper.run_cycle()

    assert (summary.stopped, summary.held_stops, summary.bad_rows) == (0, 0, 1)
    assert open_in_mm(mm) == ["erp:R1", "erp:R2", "erp:R3"]
    assert binding(uow_factory, "R2") == bound  # kept as it is
    assert open_quarantine(uow_factory) == 1
    [entry] = tables.quarantine.values()
    assert (entry["record_key"], entry["status"]) == ("R2", "open") and "RUN_TYPE" in entry["message"]

    source.bad.clear()
    source.put(erp_run("R2", "M2", RunState.PRODUCTION))  # the typo is fixed
    summary = stopper.run_cycle()
    assert (summary.started, summary.stopped) == (0, 0)
    assert binding(uow_factory, "R2") == bound
    assert open_in_mm(mm) == ["erp:R1", "erp:R2", "erp:R3"]  # the same MM run, never restarted


def test_a_resync_holds_the_stops_too_unless_confirmed(
    stopper: SyncService, source: ListSource, mm: FakeMachineMetrics, tables: MemoryTables
) -> None:
    running(stopper, source)
    source.runs.clear()
    source.suspect = "orders.csv has a header and no rows"
    before = call_count(mm)

    held = run_resync(stopper, Selection(everything=True), dry_run=False)
    assert held.planned.hold is not None and held.planned.hold.held == 3
    assert held.summary is not None and (held.summary.stopped, held.summary.held_stops) == (0, 3)
    assert sent(mm, "stop", after=before) == [] and len(open_in_mm(mm)) == 3

    confirmed = run_resync(stopper, Selection(everything=True), dry_run=False, confirm_stops=True)
    assert confirmed.summary is not None and confirmed.summary.confirmed_stops == 3
    assert open_in_mm(mm) == []
    assert len(audited(tables, "stops_confirmed")) == 1
