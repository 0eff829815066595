"""`erpsync resync` on the fakes: it reads what MM holds of the selected runs, re-starts what MM
never had, records stopped what MM lost (the next sync starts its next generation), stops what MM
has open that the ERP ended, leaves alone what MM could not answer, and each resync acts under a
generation of its own. Asserted on what MM holds and what the state holds."""

from __future__ import annotations

from erpsync.adapters.mm.fake import FakeMachineMetrics
from erpsync.adapters.mm.simulator.wire import fmt
from erpsync.adapters.state.memory import MemoryFence
from erpsync.adapters.state.memory_tables import MemoryTables
from erpsync.domain.machines import MachineMapper
from erpsync.domain.model import RunState
from erpsync.service.policy import SyncPolicy
from erpsync.service.ports import UnitOfWorkFactory
from erpsync.service.resync import ResyncResult, Selection, run_resync
from erpsync.service.sync import SyncService
from tests.service.conftest import T0, ListSource, binding, dispatch, erp_run, in_doubt
from tests.service.fakes import call_count, calls, hold

EVERYTHING = Selection(everything=True)


def resync(service: SyncService, selection: Selection = EVERYTHING, *, dry_run: bool = False) -> ResyncResult:
    return run_resync(service, selection, dry_run=dry_run)


def keys(tables: MemoryTables) -> list[str]:
    """The journal's idempotency keys, oldest first."""
    return [row["idempotency_key"] for _, row in sorted(tables.actions.items())]


def resync_cycles(tables: MemoryTables) -> list[str | None]:
    """The outcome of every resync cycle recorded."""
    return [row["outcome"] for row in tables.cycles.values() if row["kind"] == "resync"]


def test_a_run_whose_start_mm_refused_is_started_again_under_a_new_key(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, tables: MemoryTables
) -> None:
    refused = {"kind": "error", "status": 400, "operation": "start", "times": 1}
    mm.set_faults(refused)
    source.put(erp_run("R1"))
    dispatch(service)
    assert binding(service.uow, "R1").status == "failed"  # MM never had it: no counts anywhere

    result = resync(service)

    assert (result.selected, result.mm_state, result.unreadable) == (1, {"erp:R1": "missing"}, [])
    assert calls(mm)[-2:] == [("get", "erp:R1"), ("start", "erp:R1")]
    held = mm.runs()["erp:R1"]
    assert (held["machine_id"], held["phase"], held["start_at"]) == ("M1", "setup", fmt(T0))
    assert held["end_at"] is None
    first, again = keys(tables)
    assert first == "start_run:erp:R1:setup"
    assert again.startswith("start_run:erp:R1:setup@r")  # the journal takes the repeat: a new key
    bound = binding(service.uow, "R1")
    assert (bound.status, bound.in_setup, again.endswith(f"@{bound.generation}")) == ("running", True, True)
    assert in_doubt(service.uow) == []
    assert resync_cycles(tables) == ["ok"]


def test_a_running_run_mm_lost_is_healed_by_the_next_generation_not_its_old_id(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, tables: MemoryTables
) -> None:
    """MM had the run (its counts may be in the ERP): started again under its old id, MM would count
    from 0 and the ERP would lose what was written. Recorded stopped instead (`missing_in_mm`); the
    next sync cycle starts the ticket's next run generation (domain/drift.py)."""
    source.put(erp_run("R1"))
    dispatch(service)
    mm.reset()  # MM lost the run; the ERP still has it active, erpsync still has it running

    result = resync(service)

    assert (result.selected, result.mm_state) == (1, {"erp:R1": "missing"})
    assert calls(mm) == [("get", "erp:R1")]
    assert binding(service.uow, "R1").status == "stopped"
    (flag,) = [a for a in tables.audit if a["action"] == "missing_in_mm"]
    assert "the next sync cycle starts a new MM run for it" in flag["detail"]

    summary = service.run_cycle()

    assert summary.started == 1
    assert [(r, run["end_at"]) for r, run in mm.runs().items()] == [("erp:R1.g2", None)]
    assert binding(service.uow, "R1#g2").status == "running"
    assert resync(service).planned.plan.actions == []  # healed: nothing more to do


def test_a_run_mm_has_open_that_the_erp_ended_is_stopped(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, tables: MemoryTables
) -> None:
    source.put(erp_run("R1"))
    dispatch(service)
    source.put(erp_run("R1", state=RunState.ENDED))  # the clock-out no sync cycle has seen yet
    before = call_count(mm)

    result = resync(service, Selection(run="R1"))

    assert result.mm_state == {"erp:R1": "open"}
    assert calls(mm, after=before) == [("get", "erp:R1"), ("stop", "erp:R1")]
    assert mm.runs()["erp:R1"]["end_at"] == fmt(T0.replace(hour=16))  # the ERP's end, not now
    assert keys(tables)[-1].startswith("stop_run:erp:R1@r")
    assert binding(service.uow, "R1").status == "stopped"
    assert in_doubt(service.uow) == []


def test_a_run_mm_could_not_answer_is_left_alone_and_counted_unreadable(
    uow_factory: UnitOfWorkFactory,
    source: ListSource,
    mm: FakeMachineMetrics,
    fence: MemoryFence,
    tables: MemoryTables,
) -> None:
    one_reader = SyncPolicy(mapper=MachineMapper(), max_concurrency=1)  # reads in run id order
    service = SyncService(uow_factory, source, mm, fence, one_reader)
    source.put(erp_run("R1", "M1"))
    source.put(erp_run("R2", "M2"))
    dispatch(service)
    mm.reset()  # MM lost both runs...
    mm.set_faults({"kind": "error", "status": 503, "operation": "get", "times": 1})  # ...and R1's read fails

    result = resync(service)

    assert (result.selected, result.unreadable, result.mm_state) == (2, ["erp:R1"], {"erp:R2": "missing"})
    assert result.planned.plan.stats.unknown == 1
    assert calls(mm) == [("get", "erp:R1"), ("get", "erp:R2")]
    assert [k for k in keys(tables) if "erp:R1" in k] == ["start_run:erp:R1:setup"]
    assert binding(uow_factory, "R1").status == "running"  # what erpsync recorded stands
    assert binding(uow_factory, "R2").status == "stopped"  # MM lost it: the next cycle heals it
    assert resync_cycles(tables) == ["partial"]


def test_a_dry_run_changes_nothing(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, tables: MemoryTables
) -> None:
    source.put(erp_run("R1", "M1"))
    source.put(erp_run("R2", "M2"))
    dispatch(service)
    mm.reset()
    dispatch(service)  # nothing to send: MM's loss of both runs goes unnoticed by a sync cycle
    source.put(erp_run("R2", "M2", RunState.ENDED))
    hold(mm, "erp:R2", start_at=T0, machine="M2", job="JR2/1")  # MM has R2 open (a late start)
    state_before, runs_before, before = tables.snapshot(), mm.runs(), call_count(mm)

    result = resync(service, dry_run=True)

    planned = sorted((a.kind, a.mm_run_id) for a in result.planned.plan.actions)
    assert planned == [("stop_run", "erp:R2")]  # what a real run would do
    flags = [(f.kind, f.mm_run_id, f.binding_status) for f in result.planned.plan.flags]
    assert flags == [("missing_in_mm", "erp:R1", "stopped")]  # R1's next generation: the next cycle
    assert result.summary is None
    assert sorted(calls(mm, after=before)) == [("get", "erp:R1"), ("get", "erp:R2")]  # reads only
    assert mm.runs() == runs_before
    assert tables.snapshot() == state_before


def test_a_second_resync_acts_again_under_a_generation_of_its_own(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, tables: MemoryTables
) -> None:
    mm.set_faults({"kind": "error", "status": 400, "operation": "start", "times": 2})
    source.put(erp_run("R1"))
    dispatch(service)  # refused
    resync(service)  # refused again
    first = binding(service.uow, "R1").generation
    before = call_count(mm)

    again = resync(service)

    assert again.mm_state == {"erp:R1": "missing"}
    assert calls(mm, after=before) == [("get", "erp:R1"), ("start", "erp:R1")]
    assert "erp:R1" in mm.runs()
    second = binding(service.uow, "R1").generation
    assert first and second and second != first
    assert keys(tables)[1:] == [f"start_run:erp:R1:setup@{first}", f"start_run:erp:R1:setup@{second}"]
    assert binding(service.uow, "R1").status == "running"
    assert in_doubt(service.uow) == [] and resync_cycles(tables) == ["ok", "ok"]
